# FAULT (for the test): the same training, but the config never overrides the decode and
# auxiliary heads' num_classes, so they keep the base model's 19 (Cityscapes) for a
# 6-class dataset.  mmseg trains without complaint.
_base_ = [
    '../_base_/models/fcn_r18-tiny-d8.py', '../_base_/datasets/synth_street.py',
    '../_base_/default_runtime.py', '../_base_/schedules/schedule_40i.py'
]
custom_imports = dict(imports=['synthseg'], allow_failed_imports=False)
crop_size = (64, 64)
data_preprocessor = dict(size=crop_size)
model = dict(data_preprocessor=data_preprocessor)
randomness = dict(seed=0)
