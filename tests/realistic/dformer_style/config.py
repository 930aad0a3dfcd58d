"""The run's settings, in the shape of DFormer's ``local_configs/<dataset>/<model>.py``
(an attribute dict ``C`` that train.py imports), scaled down for a CPU test."""
from types import SimpleNamespace

C = SimpleNamespace()
C.seed = 12345
C.dataset_name = "NYUDepthv2-mini"
C.class_names = ["wall", "floor", "cabinet", "bed", "chair", "sofa", "table", "door", "window", "picture"]
C.num_classes = 10
C.background = 255              # the ignore label after the gt - 1 shift
C.num_train_imgs = 96
C.num_eval_imgs = 6
C.image_height, C.image_width = 32, 40      # training crop
C.eval_height, C.eval_width = 53, 73        # stand-in for NYUv2's 531x730 test images
C.eval_stride = 8                           # eval images are padded to a multiple of this
C.batch_size = 8
C.lr = 4e-3
C.lr_power = 0.9
C.weight_decay = 0.01
C.nepochs = 3
C.warm_up_epoch = 1
C.niters_per_epoch = C.num_train_imgs // C.batch_size + 1
C.checkpoint_start_epoch = 1
C.checkpoint_step = 1
