"""A dataset registered the way mmseg's own are (``mmseg/datasets/ade.py`` and friends):
a ``BaseSegDataset`` with its classes and palette in ``METAINFO``, reading
``img_dir/{train,val}/*.png`` and ``ann_dir/{train,val}/*.png``."""
from mmseg.datasets import BaseSegDataset
from mmseg.registry import DATASETS


@DATASETS.register_module()
class SynthStreetDataset(BaseSegDataset):
    METAINFO = dict(
        classes=("sky", "tree", "road", "car", "person", "building"),
        palette=[[70, 130, 180], [107, 142, 35], [128, 64, 128], [0, 0, 142], [220, 20, 60], [70, 70, 70]])

    def __init__(self, img_suffix=".png", seg_map_suffix=".png", reduce_zero_label=False, **kwargs) -> None:
        super().__init__(img_suffix=img_suffix, seg_map_suffix=seg_map_suffix,
                         reduce_zero_label=reduce_zero_label, **kwargs)
