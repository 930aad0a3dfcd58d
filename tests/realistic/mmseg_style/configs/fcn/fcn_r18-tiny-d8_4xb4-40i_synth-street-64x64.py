_base_ = [
    '../_base_/models/fcn_r18-tiny-d8.py', '../_base_/datasets/synth_street.py',
    '../_base_/default_runtime.py', '../_base_/schedules/schedule_40i.py'
]
custom_imports = dict(imports=['synthseg'], allow_failed_imports=False)
crop_size = (64, 64)
data_preprocessor = dict(size=crop_size)
model = dict(
    data_preprocessor=data_preprocessor,
    decode_head=dict(num_classes=6),
    auxiliary_head=dict(num_classes=6))
randomness = dict(seed=0)
