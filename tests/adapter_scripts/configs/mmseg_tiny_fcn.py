# A tiny mmsegmentation config for the CPU tests: FCNHead on a ResNetV1c-18 with 8 base
# channels, 64x64 synthetic images (mmseg_data.py), 60 iterations, warm-up then poly decay to 0.
# data_root and reduce_zero_label are set by the test with --cfg-options.
default_scope = "mmseg"
num_classes = 6
data_root = "data/synth"
reduce_zero_label = False
classes = ("sky", "tree", "road", "car", "person", "building")
palette = [[70, 130, 180], [107, 142, 35], [128, 64, 128], [0, 0, 142], [220, 20, 60], [70, 70, 70]]
norm_cfg = dict(type="BN", requires_grad=True)
data_preprocessor = dict(type="SegDataPreProcessor", mean=[123.675, 116.28, 103.53],
                         std=[58.395, 57.12, 57.375], bgr_to_rgb=True, pad_val=0, seg_pad_val=255,
                         size=(64, 64))
model = dict(
    type="EncoderDecoder",
    data_preprocessor=data_preprocessor,
    backbone=dict(type="ResNetV1c", depth=18, stem_channels=8, base_channels=8, num_stages=4,
                  out_indices=(3,), dilations=(1, 1, 2, 4), strides=(1, 2, 1, 1),
                  norm_cfg=norm_cfg, contract_dilation=True),
    decode_head=dict(type="FCNHead", in_channels=64, in_index=0, channels=16, num_convs=1,
                     concat_input=False, dropout_ratio=0.0, num_classes=num_classes,
                     norm_cfg=norm_cfg, align_corners=False,
                     loss_decode=dict(type="CrossEntropyLoss", use_sigmoid=False, loss_weight=1.0)),
    train_cfg=dict(),
    test_cfg=dict(mode="whole"))

train_pipeline = [dict(type="LoadImageFromFile"), dict(type="LoadAnnotations"),
                  dict(type="RandomFlip", prob=0.5), dict(type="PackSegInputs")]
test_pipeline = [dict(type="LoadImageFromFile"), dict(type="LoadAnnotations"), dict(type="PackSegInputs")]
dataset = dict(type="BaseSegDataset", data_root=data_root, img_suffix=".png", seg_map_suffix=".png",
               metainfo=dict(classes=classes, palette=palette), reduce_zero_label=reduce_zero_label)
train_dataloader = dict(
    batch_size=4, num_workers=0, persistent_workers=False,
    sampler=dict(type="InfiniteSampler", shuffle=True),
    dataset=dict(dataset, data_prefix=dict(img_path="img_dir/train", seg_map_path="ann_dir/train"),
                 pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=1, num_workers=0, persistent_workers=False,
    sampler=dict(type="DefaultSampler", shuffle=False),
    dataset=dict(dataset, data_prefix=dict(img_path="img_dir/val", seg_map_path="ann_dir/val"),
                 pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(type="IoUMetric", iou_metrics=["mIoU"])
test_evaluator = val_evaluator

optim_wrapper = dict(type="OptimWrapper",
                     optimizer=dict(type="AdamW", lr=0.01, weight_decay=0.0005))
param_scheduler = [
    dict(type="LinearLR", start_factor=1e-3, by_epoch=False, begin=0, end=10),
    dict(type="PolyLR", eta_min=0.0, power=1.0, begin=10, end=60, by_epoch=False),
]
train_cfg = dict(type="IterBasedTrainLoop", max_iters=60, val_interval=20)
val_cfg = dict(type="ValLoop")
test_cfg = dict(type="TestLoop")
default_hooks = dict(
    timer=dict(type="IterTimerHook"),
    logger=dict(type="LoggerHook", interval=10, log_metric_by_epoch=False),
    param_scheduler=dict(type="ParamSchedulerHook"),
    checkpoint=dict(type="CheckpointHook", by_epoch=False, interval=100000, save_last=False),
    sampler_seed=dict(type="DistSamplerSeedHook"))
env_cfg = dict(cudnn_benchmark=False, mp_cfg=dict(mp_start_method="fork"), dist_cfg=dict(backend="gloo"))
log_level = "WARNING"
randomness = dict(seed=0)
load_from = None
resume = False
