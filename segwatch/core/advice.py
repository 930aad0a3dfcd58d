"""Short titles and concrete advice for every finding id, in English and Chinese.

``finding_title(id, lang)`` and ``advice_text(id, lang)``; unknown ids and languages fall
back to English / a generic text, never raise.
"""
from __future__ import annotations

LANGS = ("en", "zh")

TITLES: dict[str, dict[str, str]] = {
    "pred.collapse": {"en": "Predictions collapsed to one class", "zh": "预测塌缩为单一类别"},
    "pred.low_diversity": {"en": "Too few predicted classes", "zh": "预测类别过少"},
    "metric.cm_empty": {"en": "Confusion matrix is empty", "zh": "混淆矩阵为空"},
    "metric.miou_stuck": {"en": "mIoU does not change", "zh": "mIoU 停滞不变"},
    "metric.single_class_signature": {"en": "mIoU is the one-class signature p_c/C", "zh": "mIoU 等于单类特征值 p_c/C"},
    "metric.script_disagrees": {"en": "Script's mIoU differs from segwatch's", "zh": "脚本打印的 mIoU 与 segwatch 计算的不一致"},
    "metric.eval_aborted": {"en": "Evaluation raised an exception", "zh": "评估过程抛出异常"},
    "label.out_of_range": {"en": "Label values out of range", "zh": "标签值越界"},
    "label.ignore_mismatch": {"en": "Ignore value differs from the config", "zh": "ignore 值与配置不一致"},
    "label.all_ignored": {"en": "A batch is entirely ignore", "zh": "整个批次都是 ignore 像素"},
    "label.shape_mismatch": {"en": "Label size differs from image/prediction", "zh": "标签尺寸与图像/预测不一致"},
    "label.interpolated": {"en": "Labels were interpolated", "zh": "标签被插值缩放过"},
    "label.misaligned": {"en": "Labels misaligned with images", "zh": "标签与图像未对齐"},
    "label.class_imbalance": {"en": "One class dominates the labels", "zh": "单一类别占据绝大多数像素"},
    "label.last_class_missing": {"en": "Labels shifted down once too often", "zh": "标签被多减了一次"},
    "config.num_classes_mismatch": {"en": "Output channels != num_classes", "zh": "输出通道数与 num_classes 不符"},
    "loss.nonfinite": {"en": "Loss is NaN/Inf", "zh": "Loss 出现 NaN/Inf"},
    "loss.ignore_index_mismatch": {"en": "Loss ignore_index differs from the labels' ignore value",
                                   "zh": "损失函数的 ignore_index 与标签的 ignore 值不一致"},
    "loss.plateau": {"en": "Loss is not falling", "zh": "Loss 不下降"},
    "loss.diverging": {"en": "Loss is rising", "zh": "Loss 持续上升"},
    "grad.vanishing": {"en": "Gradients vanish", "zh": "梯度消失"},
    "grad.exploding": {"en": "Gradients explode", "zh": "梯度爆炸"},
    "grad.nonfinite": {"en": "Gradients hold NaN/Inf", "zh": "梯度含 NaN/Inf"},
    "optim.lr_suspicious": {"en": "Suspicious learning rate", "zh": "学习率可疑"},
    "optim.params_not_stepped": {"en": "Parameters never updated by the optimizer", "zh": "参数未被优化器更新"},
    "optim.steps_skipped": {"en": "Optimizer steps are skipped", "zh": "优化器步骤被跳过"},
    "model.eval_mode_in_training": {"en": "Modules in eval mode during training", "zh": "训练时模块处于 eval 模式"},
    "model.pretrained_not_loaded": {"en": "Pretrained weights not loaded", "zh": "预训练权重未加载"},
    "model.frozen": {"en": "Model is frozen", "zh": "模型参数被冻结"},
    "data.nonfinite": {"en": "Input holds NaN/Inf", "zh": "输入数据含 NaN/Inf"},
    "data.not_normalized": {"en": "Inputs not normalized", "zh": "输入未归一化"},
    "metric.miou_regressed": {"en": "mIoU fell below half of its best", "zh": "mIoU 跌到最好值的一半以下"},
    "optim.grads_accumulate": {"en": "Gradients are never reset", "zh": "梯度从未清零"},
    "optim.lr_schedule": {"en": "Learning-rate schedule is wrong", "zh": "学习率调度有误"},
    "model.output_is_probability": {"en": "Loss receives probabilities, not logits", "zh": "损失函数收到的是概率而非 logits"},
    "label.single_value": {"en": "Training labels hold one or two values", "zh": "训练标签只有一两个取值"},
    "dist.rank_divergence": {"en": "Ranks disagree", "zh": "各进程(rank)结果不一致"},
    "dist.same_batches": {"en": "Ranks see identical batches", "zh": "各进程读取了相同的批次"},
    "dist.rank_silent": {"en": "A rank stopped reporting", "zh": "某个进程停止上报"},
    "resource.memory_growing": {"en": "CUDA memory keeps growing", "zh": "CUDA 显存持续增长"},
    "resource.cuda_oom": {"en": "CUDA out of memory", "zh": "CUDA 显存不足（OOM）"},
    "perf.data_bound": {"en": "Training waits on the DataLoader", "zh": "训练在等待 DataLoader"},
}

ADVICE: dict[str, dict[str, str]] = {
    "pred.collapse": {
        "en": "The network outputs the same class everywhere. Lower the learning rate (e.g. 4x), "
              "add or lengthen warmup, check that the loss gets logits (not probabilities) and the "
              "right ignore_index, and consider class weights or OHEM for dominant classes.",
        "zh": "网络在所有位置都输出同一个类别。请把学习率降低（例如降到四分之一），增加或延长 warmup，"
              "确认损失函数接收的是 logits 而非概率、ignore_index 设置正确，并考虑为占比大的类别设置类别权重或使用 OHEM。",
    },
    "pred.low_diversity": {
        "en": "Only a handful of classes are ever predicted although the labels contain more. "
              "Check class weights and sampling of rare classes, try a smaller learning rate, and "
              "verify the decoder head is trained (not frozen, right num_classes).",
        "zh": "标签中类别很多，但模型只预测出少数几类。检查类别权重和稀有类的采样，尝试更小的学习率，"
              "并确认解码头在参与训练（未被冻结、num_classes 正确）。",
    },
    "metric.cm_empty": {
        "en": "No pixel was counted at evaluation, so every IoU is 0. Make sure metrics.update() is "
              "called for every batch, that ignore_index matches the label files (255 vs -1), and that "
              "predictions are resized to the label size before comparing.",
        "zh": "评估时没有任何像素被计入，所以所有 IoU 都是 0。确认每个 batch 都调用了 metrics.update()，"
              "ignore_index 与标签文件一致（255 还是 -1），并在比较前把预测缩放到标签尺寸。",
    },
    "metric.miou_stuck": {
        "en": "mIoU is bit-for-bit identical across evaluations: the weights are probably not changing "
              "(optimizer steps skipped, lr 0, frozen model) or the printed value is stale (an "
              "exception swallowed during evaluation). Look at the other findings for the cause.",
        "zh": "多次评估的 mIoU 完全相同：权重很可能没有变化（优化器步骤被跳过、学习率为 0、模型被冻结），"
              "或者打印的是旧值（评估中的异常被吞掉）。请结合其它发现定位原因。",
    },
    "metric.single_class_signature": {
        "en": "The mIoU equals one class's IoU divided by num_classes: the model predicts a single class "
              "c and mIoU = p_c / C (2.7% = 100/37 only when that class covers every labelled pixel). "
              "Treat it as a collapse: lower the LR, add warmup, check the loss and class weights.",
        "zh": "mIoU 恰好等于某一类的 IoU 除以类别数：模型只预测类别 c，mIoU = p_c / C"
              "（只有当该类覆盖全部有标注像素时才是 100/37 ≈ 2.7%）。按塌缩处理：降低学习率、加 warmup、检查损失和类别权重。",
    },
    "metric.script_disagrees": {
        "en": "The mIoU printed by the script is not what the predictions give in either convention "
              "(guide: NaN→0 over all classes; mmseg: mean over present classes). The script's metric "
              "is likely broken: update() not called, reset at the wrong time, or a stale value printed.",
        "zh": "脚本打印的 mIoU 与按预测计算的结果在两种口径下都对不上（指南口径：NaN 记 0 后对全部类别求平均；"
              "mmseg 口径：只对出现的类别求平均）。脚本的指标实现可能有误：未调用 update()、reset 时机不对或打印了旧值。",
    },
    # by evidence["outcome"] (see advice_text): not yet known whether the script went on
    "metric.eval_aborted": {
        "en": "Evaluation stopped on an exception. If the script catches it and trains on, the mIoU it "
              "prints afterwards is the previous one. Fix the error named in the evidence rather than "
              "hiding it behind a broad try/except.",
        "zh": "评估因异常而中断。如果脚本捕获该异常后继续训练，之后打印的 mIoU 是上一次的旧值。"
              "请修复证据中指出的错误，不要用宽泛的 try/except 掩盖它。",
    },
    "metric.eval_aborted/ended_run": {
        "en": "The run ended with an exception raised during evaluation: the script did not catch it and "
              "the process stopped there. Fix the error named in the evidence.",
        "zh": "运行因评估中抛出的异常而终止：脚本没有捕获它，进程在此处结束。请修复证据中指出的错误。",
    },
    "metric.eval_aborted/swallowed": {
        "en": "Evaluation raised an exception that the script caught and logged, so the printed mIoU is "
              "the previous one. Remove the broad try/except around evaluation or re-raise, then fix the "
              "error named in the evidence.",
        "zh": "评估过程中抛出了异常，脚本捕获后只记了日志，因此打印的 mIoU 是上一次的旧值。去掉评估外层宽泛的 "
              "try/except 或重新抛出异常，再修复证据中指出的错误。",
    },
    "label.out_of_range": {
        "en": "Labels contain values >= num_classes (or negative) that are not the ignore value. Check "
              "num_classes, the label offset (e.g. gt - 1 or reduce_zero_label) and the label encoding "
              "(palette/RGB PNGs must be mapped to class ids; Cityscapes-style raw label ids, up to 33, "
              "must go through the dataset's id-to-train-id table: 19 classes, 255 for the rest).",
        "zh": "标签中有大于等于 num_classes（或为负）且不是 ignore 值的数值。检查 num_classes、标签偏移"
              "（例如 gt - 1 或 reduce_zero_label）以及标签编码（调色板/RGB 格式的 PNG 需要先映射为类别 id；"
              "Cityscapes 这类原始 label id（最大 33）需要经过数据集的 id→train id 映射表：19 个类别，其余为 255）。",
    },
    "label.ignore_mismatch": {
        "en": "The labels mark unlabeled pixels with a different value than the configured ignore_index. "
              "Set ignore_index to the value the data uses (e.g. ignore_index: 255) or to auto, in the "
              "loss and in the metric alike.",
        "zh": "数据中未标注像素使用的值与配置的 ignore_index 不同。请把损失函数和评估指标中的 ignore_index "
              "都改为数据实际使用的值（例如 ignore_index: 255），或设为 auto。",
    },
    "label.all_ignored": {
        "en": "Every pixel of a batch is ignore, so it contributes nothing to loss or metric. Check the "
              "label path/loader (wrong files, all-zero PNGs shifted to 255), crop settings and ignore_index.",
        "zh": "某个批次的所有像素都是 ignore，对损失和指标没有任何贡献。检查标签路径和读取方式（读错文件、"
              "全 0 的 PNG 被偏移成 255）、裁剪设置和 ignore_index。",
    },
    "label.shape_mismatch": {
        "en": "Labels do not have the image's (or prediction's) spatial size. Apply the same resize/crop to "
              "image and label, and upsample logits to the label size before loss and metric.",
        "zh": "标签的空间尺寸与图像（或预测）不一致。对图像和标签使用相同的缩放/裁剪，并在计算损失和指标前把 "
              "logits 上采样到标签尺寸。",
    },
    "label.interpolated": {
        "en": "Label maps contain non-integer or in-between values at class borders: they were resized "
              "with bilinear/bicubic interpolation. Resize labels with nearest-neighbour interpolation only.",
        "zh": "标签图在类别边界出现非整数或介于两类之间的数值：说明它们被双线性/双三次插值缩放过。标签只能用最近邻插值缩放。",
    },
    "label.misaligned": {
        "en": "Image edges and label edges disagree: an augmentation (flip, crop, rotation) is applied to "
              "the image but not to the label, or with different random parameters. Apply geometric "
              "transforms jointly to image, extra modality and label.",
        "zh": "图像边缘与标签边缘不吻合：某个数据增强（翻转、裁剪、旋转）只作用在图像上而没有作用在标签上，"
              "或两者使用了不同的随机参数。几何变换必须同时作用于图像、其它模态和标签。",
    },
    "label.last_class_missing": {
        "en": "The loader reduces zero labels (reduce_zero_label=True or gt - 1: 0 becomes ignore, every "
              "other id k becomes k - 1), yet the last class id never appears in the labels: the annotations "
              "are probably already 0-based (0..C-1, 255 for unlabeled). Class 0 is then trained as ignore and "
              "every class name is off by one. Set reduce_zero_label=False (or drop the gt - 1) for these "
              "annotations.",
        "zh": "数据加载时做了 reduce_zero_label（reduce_zero_label=True 或 gt - 1：0 变为 ignore，其余类别 id k 变为 k - 1），"
              "但标签中从未出现最后一个类别 id：标注很可能本来就是从 0 开始的（0..C-1，未标注为 255）。这样类别 0 被当作 ignore，"
              "所有类别名都错位一个。对这类标注请设置 reduce_zero_label=False（或去掉 gt - 1）。",
    },
    "label.class_imbalance": {
        "en": "One class covers almost all labelled pixels; a model can score well on loss by predicting it "
              "everywhere. Use class weights, OHEM or a Lovasz/Dice term, and check the labels are not "
              "mostly background by mistake.",
        "zh": "单一类别几乎覆盖了全部有标注像素，模型只预测它也能让损失很低。使用类别权重、OHEM 或 Lovasz/Dice 损失，"
              "并确认标签不是因为错误而几乎全是背景。",
    },
    "config.num_classes_mismatch": {
        "en": "The model's output channels differ from the configured num_classes. Set the decode head's "
              "num_classes to the dataset's class count (SUNRGBD: 37) and match the config.",
        "zh": "模型输出通道数与配置的 num_classes 不同。把解码头的 num_classes 设为数据集的类别数（SUNRGBD 为 37），并与配置保持一致。",
    },
    "loss.nonfinite": {
        "en": "The loss became NaN or Inf. Lower the learning rate (e.g. 10x), clip gradients, check inputs "
              "for NaN (depth holes) and normalization, and under AMP compute the loss in float32.",
        "zh": "Loss 变成了 NaN 或 Inf。把学习率降低（例如 10 倍），使用梯度裁剪，检查输入是否含 NaN（深度图空洞）"
              "以及是否归一化；使用 AMP 时请用 float32 计算损失。",
    },
    "loss.ignore_index_mismatch": {
        "en": "The loss receives label values outside 0..C-1 that are not its ignore_index: the labels "
              "mark unlabeled pixels with one value (often 255) and the loss ignores another "
              "(CrossEntropyLoss defaults to -100). On CPU the loss raises 'Target 255 is out of bounds', "
              "on CUDA a device-side assert. Pass the labels' ignore value to the loss "
              "(CrossEntropyLoss(ignore_index=255)) and use the same value in the metric.",
        "zh": "损失函数收到了超出 0..C-1 且不等于其 ignore_index 的标签值：标签用一个值（通常是 255）标记未标注像素，"
              "而损失函数忽略的是另一个值（CrossEntropyLoss 默认为 -100）。在 CPU 上会报错 'Target 255 is out of bounds'，"
              "在 CUDA 上会触发 device-side assert。请把标签的 ignore 值传给损失函数（CrossEntropyLoss(ignore_index=255)），"
              "并在评估指标中使用同一个值。",
    },
    "loss.plateau": {
        "en": "The loss has not fallen over the first steps. Check the learning rate (too small? scheduler "
              "starting at 0?), that pretrained weights loaded, that BN layers are not frozen and that "
              "parameters are in the optimizer.",
        "zh": "前期训练中 Loss 没有下降。检查学习率（是否过小、调度器是否从 0 开始），预训练权重是否加载，"
              "BN 层是否被冻结，以及参数是否都加入了优化器。",
    },
    "loss.diverging": {
        "en": "The loss keeps rising. Lower the learning rate, add warmup and gradient clipping, and check "
              "for a scheduler that increases the LR by mistake.",
        "zh": "Loss 持续上升。降低学习率，加入 warmup 和梯度裁剪，并检查学习率调度器是否错误地增大了学习率。",
    },
    "grad.vanishing": {
        "en": "The total gradient norm is below grad_norm_min. Check the learning rate and loss scale, "
              "detach()/no_grad in the forward path, saturated activations, and that the loss depends "
              "on the logits.",
        "zh": "梯度总范数低于 grad_norm_min。检查学习率和 loss 缩放，前向中是否有 detach()/no_grad，"
              "激活是否饱和，以及 loss 是否真正依赖于 logits。",
    },
    "grad.exploding": {
        "en": "The total gradient norm is above grad_norm_max. Lower the learning rate, clip gradients "
              "(clip_grad_norm_ to e.g. 1-10), add warmup and check input normalization. If the loss has "
              "class weights (e.g. inverse frequency), huge weights on rare classes inflate the gradients: "
              "normalize them (mean 1) or cap them.",
        "zh": "梯度总范数超过 grad_norm_max。降低学习率，使用梯度裁剪（clip_grad_norm_ 设为 1 到 10 左右），加 warmup，并检查输入归一化。"
              "如果损失函数带类别权重（例如按频率取倒数），稀有类别的超大权重会放大梯度：请把权重归一化（均值为 1）或设上限。",
    },
    "grad.nonfinite": {
        "en": "Some gradients hold NaN or Inf. Find the first non-finite input or loss, lower the LR, clip "
              "gradients, and with AMP keep the GradScaler and compute sensitive ops in float32.",
        "zh": "部分梯度含有 NaN 或 Inf。先找到第一个非有限的输入或 loss，降低学习率、使用梯度裁剪；"
              "使用 AMP 时保留 GradScaler，并让敏感运算在 float32 下进行。",
    },
    "optim.lr_suspicious": {
        "en": "The learning rate is zero or more than 10x away from expected_lr. Check the LR value, "
              "the scheduler (warmup from 0, wrong total iterations) and the param-group multipliers.",
        "zh": "学习率为 0 或与 expected_lr 相差 10 倍以上。检查学习率数值、调度器（warmup 从 0 开始、总迭代数写错）以及参数组的学习率倍率。",
    },
    "optim.params_not_stepped": {
        "en": "Parameters receive gradients but the optimizer never changes them: they are in no param "
              "group (optimizer built before the head was replaced, or from a filtered list). Build the "
              "optimizer from model.parameters() after the model is final.",
        "zh": "部分参数有梯度，但优化器从未更新它们：它们不在任何参数组里（在替换解码头之前就创建了优化器，或参数列表被过滤）。"
              "请在模型定型后用 model.parameters() 创建优化器。",
    },
    "optim.steps_skipped": {
        "en": "backward() runs but optimizer steps are skipped, so the weights never change and mIoU "
              "repeats. Typical cause: AMP GradScaler skipping every step on NaN/Inf gradients. Fix the "
              "non-finite loss (lower LR, float32 loss, clip) or check the step() call path.",
        "zh": "backward() 在执行，但优化器步骤被跳过，权重从不变化，mIoU 也因此重复。常见原因：AMP 的 GradScaler "
              "因 NaN/Inf 梯度跳过了每一步。请先解决非有限 loss（降低学习率、用 float32 计算 loss、梯度裁剪），或检查 step() 的调用路径。",
    },
    "model.eval_mode_in_training": {
        "en": "BatchNorm/Dropout modules are in eval mode while training: BN statistics are frozen. "
              "Call model.train() at the start of each epoch (after evaluation), unless the freeze is "
              "intended (norm_eval).",
        "zh": "训练时 BatchNorm/Dropout 模块处于 eval 模式：BN 统计量被冻结。每个 epoch 开始（评估之后）调用 "
              "model.train()，除非是有意冻结（norm_eval）。",
    },
    "model.pretrained_not_loaded": {
        "en": "load_state_dict matched few keys, so the backbone starts from random weights. Check the "
              "checkpoint path and key prefixes ('module.', 'backbone.'), and load with strict=True once "
              "to see the mismatches.",
        "zh": "load_state_dict 只匹配上很少的键，主干网络实际上是随机初始化。检查权重路径和键名前缀"
              "（'module.'、'backbone.'），并用 strict=True 加载一次查看不匹配的键。",
    },
    "model.frozen": {
        "en": "Almost no parameter receives a gradient. Check requires_grad (a frozen backbone plus a "
              "head-only optimizer), torch.no_grad() or detach() around the forward pass.",
        "zh": "几乎没有参数得到梯度。检查 requires_grad（主干被冻结且只优化解码头）、前向外面是否包了 torch.no_grad() 或用了 detach()。",
    },
    "data.nonfinite": {
        "en": "An input tensor holds NaN or Inf (often depth maps with holes). Replace invalid values "
              "(e.g. nan_to_num(0)) before normalization.",
        "zh": "输入张量含有 NaN 或 Inf（常见于带空洞的深度图）。在归一化之前替换无效值（例如 nan_to_num(0)）。",
    },
    "data.not_normalized": {
        "en": "Inputs look like raw 0..255 (or metric-depth) values. Normalize with the pretrained "
              "model's mean/std (divide by 255 first) for every modality.",
        "zh": "输入看起来是原始的 0..255（或以毫米为单位的深度）数值。对每种模态都按预训练模型的均值/方差归一化（先除以 255）。",
    },
    "metric.miou_regressed": {
        "en": "mIoU was much higher at an earlier evaluation and has fallen below half of it: the model "
              "collapsed or diverged mid-run. Look at what changed at that step (a stage switch, an LR "
              "jump or restart of the schedule, unfrozen layers, a new augmentation), lower the LR of the "
              "new stage, and keep the checkpoint of the best evaluation.",
        "zh": "mIoU 在之前的评估中高得多，现在已跌到最好值的一半以下：模型在训练中途塌缩或发散。检查该步发生了什么变化"
              "（切换训练阶段、学习率跳变或调度器重启、解冻层、新加的数据增强），降低新阶段的学习率，并保留最好一次评估的权重。",
    },
    "optim.grads_accumulate": {
        "en": "Gradients are already non-zero when the first backward after optimizer.step() begins, on "
              "several steps: zero_grad() is never called (or called before the wrong optimizer), so every "
              "update adds up all gradients since the start. Call optimizer.zero_grad() (or "
              "model.zero_grad()) once per optimizer step; for intended accumulation, reset every k backwards.",
        "zh": "在 optimizer.step() 之后第一次 backward 开始时，梯度已经不为零，且在多个步骤上都是如此：从未调用 zero_grad()"
              "（或对错误的优化器调用），每次更新都叠加了从开始以来的全部梯度。每个优化器步骤调用一次 optimizer.zero_grad()"
              "（或 model.zero_grad()）；如果是有意的梯度累积，请每 k 次 backward 清零一次。",
    },
    "optim.lr_schedule": {
        "en": "The learning rate does not follow a sensible schedule: it sits near zero while training goes "
              "on, an epoch scheduler (StepLR/MultiStepLR/ExponentialLR) is stepped every iteration so it "
              "decays far too early, or the LR is set after optimizer.step() so step 1 runs at the full base "
              "rate (warm-up skipped) and step 2 at the wrong value. Step epoch schedulers once per epoch "
              "(or convert milestones to iterations), and set the LR before optimizer.step().",
        "zh": "学习率没有按合理的调度变化：训练仍在进行时学习率接近 0；按 epoch 设计的调度器（StepLR/MultiStepLR/ExponentialLR）"
              "每个迭代都调用 step()，导致过早衰减；或者在 optimizer.step() 之后才设置学习率，使第 1 步以完整的基础学习率运行"
              "（跳过了 warm-up）、第 2 步使用了错误的值。按 epoch 的调度器每个 epoch 调用一次（或把里程碑换算成迭代数），"
              "并在 optimizer.step() 之前设置学习率。",
    },
    "model.output_is_probability": {
        "en": "The tensor given to the loss lies in [0, 1] and sums to 1 over the class dimension: softmax "
              "(or sigmoid) is applied in the model and CrossEntropyLoss applies log-softmax again, which "
              "flattens the gradients (loss stuck near log C). Return raw logits from the model and apply "
              "softmax only for inference/visualisation.",
        "zh": "送入损失函数的张量取值在 [0, 1] 之间，且在类别维上求和为 1：模型里已经做了 softmax（或 sigmoid），"
              "CrossEntropyLoss 又做了一次 log-softmax，梯度被压平（loss 停在 log C 附近）。模型应返回原始 logits，"
              "softmax 只在推理/可视化时使用。",
    },
    "label.single_value": {
        "en": "Training labels hold only one or two distinct values over many batches while evaluation labels "
              "hold many classes: the training labels were scaled or mis-decoded (ToTensor divides by 255 and "
              "turns class ids into 0, a palette PNG read as grey). Load label maps with "
              "torch.as_tensor(np.array(img), dtype=torch.long), never ToTensor, and map palette colours to ids.",
        "zh": "训练标签在多个批次中只有一两个取值，而评估标签包含很多类别：训练标签被缩放或解码错误"
              "（ToTensor 会除以 255，把类别 id 变成 0；调色板 PNG 被按灰度读取）。请用 "
              "torch.as_tensor(np.array(img), dtype=torch.long) 读取标签图，不要用 ToTensor，并把调色板颜色映射为类别 id。",
    },
    "dist.rank_divergence": {
        "en": "Ranks report different gradient norms or losses beyond tolerance: gradients may not be "
              "synchronized (no DDP wrapper, find_unused_parameters issues, SyncBN missing).",
        "zh": "各 rank 的梯度范数或 loss 差异超出容差：梯度可能没有同步（未使用 DDP 包装、find_unused_parameters 问题、缺少 SyncBN）。",
    },
    "dist.same_batches": {
        "en": "All ranks see identical batches, so extra GPUs add nothing. Use a DistributedSampler "
              "and call sampler.set_epoch(epoch) each epoch.",
        "zh": "所有 rank 读到的批次完全相同，多卡没有带来任何收益。请使用 DistributedSampler，并在每个 epoch 调用 sampler.set_epoch(epoch)。",
    },
    "dist.rank_silent": {
        "en": "A rank stopped reporting while others continue: it may be hung in a collective or dead. "
              "Check that rank's output and NCCL timeouts.",
        "zh": "某个 rank 停止上报而其它 rank 仍在运行：它可能卡在集合通信中或已退出。检查该 rank 的输出以及 NCCL 超时设置。",
    },
    "resource.memory_growing": {
        "en": "GPU memory allocated after each step keeps rising: something keeps tensors alive across "
              "steps. Look for a loss accumulated with its graph (total += loss; use loss.item() or "
              "loss.detach()), lists of outputs/logits kept for logging, and metrics computed on tensors "
              "that require grad (check `x.grad_fn` on what the script keeps). Variable image sizes "
              "also grow the allocator's cache: use a fixed crop.",
        "zh": "每步之后已分配的显存持续上升：有张量在步与步之间被保留。检查是否把带计算图的 loss 累加（total += loss；"
              "应使用 loss.item() 或 loss.detach()）、为记录日志保留了输出/logits 列表、在需要梯度的张量上计算指标"
              "（对脚本保留的对象检查 `x.grad_fn`）。图像尺寸不固定也会让缓存增长：使用固定的裁剪尺寸。",
    },
    "resource.cuda_oom": {
        "en": "The training ran out of GPU memory. Lower the batch size (keep the effective batch with "
              "gradient accumulation) or the crop size, train with AMP (torch.autocast + GradScaler, "
              "about half the activation memory), or enable gradient checkpointing in the backbone. "
              "If it happens after many steps, memory was growing: look for tensors kept across steps.",
        "zh": "训练耗尽了显存。减小 batch size（可用梯度累积保持等效 batch）或裁剪尺寸，使用 AMP 混合精度训练"
              "（torch.autocast + GradScaler，激活显存约减半），或在主干网络中开启梯度检查点（gradient checkpointing）。"
              "如果在训练很多步之后才出现，说明显存在持续增长：检查是否有张量在步与步之间被保留。",
    },
    "perf.data_bound": {
        "en": "A large share of each step is spent waiting for the next batch: the GPU idles while the "
              "DataLoader decodes and augments. Raise num_workers (about the CPU cores per GPU), set "
              "pin_memory=True and persistent_workers=True, keep prefetch_factor >= 2, and move costly "
              "decoding (large PNGs, resizing) out of __getitem__ or cache decoded data.",
        "zh": "每一步都有很大比例的时间在等待下一个批次：DataLoader 解码和增强数据时 GPU 处于空闲。增大 num_workers"
              "（约为每块 GPU 对应的 CPU 核数），设置 pin_memory=True 和 persistent_workers=True，保持 prefetch_factor >= 2，"
              "并把耗时的解码（大 PNG、缩放）移出 __getitem__ 或缓存解码后的数据。",
    },
}

#: One more sentence naming this run's values, filled from the finding's evidence
#: (left out when a value is missing).
DETAIL: dict[str, dict[str, str]] = {
    "pred.collapse": {"en": "Here: class {class} ({class_name}) covers {share:.1%} of the predicted pixels.",
                      "zh": "本次：类别 {class}（{class_name}）占预测像素的 {share:.1%}。"},
    "metric.single_class_signature": {"en": "Here: p_c = {p_c:.4f} for class {class}, so mIoU = {expected_miou:.3f}%.",
                                      "zh": "本次：类别 {class} 的 p_c = {p_c:.4f}，因此 mIoU = {expected_miou:.3f}%。"},
    "loss.ignore_index_mismatch": {"en": "Here: {loss_fn} has ignore_index={loss_ignore_index} and receives {target_values}; use {suggest}.",
                                   "zh": "本次：{loss_fn} 的 ignore_index={loss_ignore_index}，却收到了 {target_values}；请使用 {suggest}。"},
    "label.ignore_mismatch": {"en": "Here: the labels use {data_value}, the config says {configured}.",
                              "zh": "本次：标签使用 {data_value}，配置为 {configured}。"},
    "label.last_class_missing": {"en": "Here: class {class} ({class_name}) never appears in {batches} training batches; {ignored:.1%} of the label pixels are ignore.",
                                 "zh": "本次：类别 {class}（{class_name}）在 {batches} 个训练批次中从未出现；{ignored:.1%} 的标签像素为 ignore。"},
    "label.out_of_range": {"en": "Here: values {values} outside {valid_range}.",
                           "zh": "本次：取值 {values} 超出 {valid_range}。"},
    "config.num_classes_mismatch": {"en": "Here: the model outputs {out_channels} channels, the config says {num_classes}.",
                                    "zh": "本次：模型输出 {out_channels} 个通道，配置为 {num_classes}。"},
    "metric.eval_aborted": {"en": "Here: {exception} at {where}: {message}",
                            "zh": "本次：{where} 处抛出 {exception}：{message}"},
    "metric.eval_aborted/ended_run/cause": {
        "en": "Here: {exception} at {where} ({message}); its cause is the finding {cause}: act on that one.",
        "zh": "本次：{where} 处抛出 {exception}（{message}）；其原因见发现 {cause}，请按该发现处理。"},
    "metric.script_disagrees": {"en": "Here: the script printed {script_miou}, segwatch computed {segwatch_miou_guide:.2f}.",
                                "zh": "本次：脚本打印 {script_miou}，segwatch 计算得到 {segwatch_miou_guide:.2f}。"},
    "metric.miou_regressed": {"en": "Here: best {best:.2f} at step {best_step}, now {now:.2f} at step {step}.",
                              "zh": "本次：第 {best_step} 步最好为 {best:.2f}，第 {step} 步降为 {now:.2f}。"},
    "optim.lr_schedule": {"en": "Here: {why}.", "zh": "本次：{why_zh}。"},
    "data.nonfinite": {"en": "Here: input '{key}'.", "zh": "本次：输入 '{key}'。"},
    "data.not_normalized": {"en": "Here: input '{key}'.", "zh": "本次：输入 '{key}'。"},
    "model.pretrained_not_loaded": {"en": "Here: {loaded} of {total} keys loaded.",
                                    "zh": "本次：{total} 个键中只加载了 {loaded} 个。"},
    "resource.memory_growing": {"en": "Here: {allocated_from_mib} MiB at step {from_step} -> {allocated_to_mib} MiB at step {to_step}.",
                                "zh": "本次：第 {from_step} 步 {allocated_from_mib} MiB -> 第 {to_step} 步 {allocated_to_mib} MiB。"},
    "resource.cuda_oom": {"en": "Here: batch size {batch_size}, crop {crop}.",
                          "zh": "本次：batch size {batch_size}，裁剪尺寸 {crop}。"},
    "perf.data_bound": {"en": "Here: {data_wait_share:.0%} of wall time waiting for batches (num_workers={num_workers}).",
                        "zh": "本次：{data_wait_share:.0%} 的时间在等待批次（num_workers={num_workers}）。"},
}

#: The loss as the likely cause (evidence ``loss_cause``, set by diagnosis/lossfn.py): a
#: sentence put before the finding's advice, filled from its evidence.
CAUSES: dict[str, dict[str, str]] = {
    "class_weight": {
        "en": "Likely cause: the loss ({loss_fn}) weights class {loss_weight_class} ({loss_weight_class_name}) "
              "{loss_weight_ratio}x the median class weight; check the class weights first (normalize them to "
              "mean 1, cap them, or use sqrt inverse frequency) before changing the learning rate.",
        "zh": "可能的原因：损失函数（{loss_fn}）给类别 {loss_weight_class}（{loss_weight_class_name}）的权重是类别权重中位数的 "
              "{loss_weight_ratio} 倍；请先检查类别权重（归一化到均值 1、设上限，或改用频率倒数的平方根），再考虑调整学习率。",
    },
    "dominant_class_weight": {
        "en": "Likely cause: the dominant predicted class {loss_weight_class} ({loss_weight_class_name}) also has "
              "the largest class weight in the loss ({loss_fn}, {loss_weight_ratio}x the median): check that the "
              "weights are not inverted (frequency instead of inverse frequency) or mis-ordered.",
        "zh": "可能的原因：占主导的预测类别 {loss_weight_class}（{loss_weight_class_name}）在损失函数（{loss_fn}）中的类别权重也最大"
              "（是中位数的 {loss_weight_ratio} 倍）：请检查权重是否被弄反（用了频率而不是频率的倒数）或顺序错位。",
    },
    "no_class_weights": {
        "en": "Likely cause: the loss ({loss_fn}) has no class weights while class {label_top_class} "
              "({label_top_class_name}) covers {label_top_share:.0%} of the labelled pixels: add class weights "
              "(inverse or sqrt inverse frequency) or a focal / Dice term.",
        "zh": "可能的原因：损失函数（{loss_fn}）没有类别权重，而类别 {label_top_class}（{label_top_class_name}）占有标注像素的 "
              "{label_top_share:.0%}：请加入类别权重（频率倒数或其平方根），或加入 focal / Dice 损失项。",
    },
    "loss_ignore": {
        "en": "The loss ({loss_fn}) ignores {loss_ignore_index}, the labels' ignore value is {data_ignore}: "
              "set ignore_index={data_ignore} in the loss.",
        "zh": "损失函数（{loss_fn}）忽略的是 {loss_ignore_index}，而标签的 ignore 值是 {data_ignore}：请在损失函数中设置 "
              "ignore_index={data_ignore}。",
    },
}

_GENERIC = {"en": "See the evidence for details.", "zh": "详情见证据。"}


def _pick(table: dict[str, str], lang: str) -> str:
    return table.get(lang) or table.get("en") or ""


def advice_text(finding_id: str, lang: str = "en", evidence: dict | None = None) -> str:
    """The advice for an id; with ``evidence``, followed by a sentence naming its values."""
    keys = _variants(finding_id, evidence or {})
    text = _pick(next((ADVICE[k] for k in keys if k in ADVICE), _GENERIC), lang)
    cause = CAUSES.get(str((evidence or {}).get("loss_cause")))
    if cause:
        try:
            first = _pick(cause, lang).format_map({k: ("?" if v is None else v) for k, v in evidence.items()})
        except (KeyError, ValueError, TypeError, IndexError):
            first = ""
        if first:
            text = f"{first} {text}" if lang != "zh" else f"{first}{text}"
    tmpl = next((DETAIL[k] for k in keys if k in DETAIL), None)
    if evidence and tmpl:
        ev = {k: ("?" if v is None else v) for k, v in evidence.items()}
        try:
            detail = _pick(tmpl, lang).format_map(ev)
        except (KeyError, ValueError, TypeError, IndexError):
            detail = ""
        if detail:
            text = f"{text} {detail}" if lang != "zh" else f"{text}{detail}"
    return text


def _variants(finding_id: str, evidence: dict) -> list[str]:
    """Table keys for a finding, most specific first: ``id/outcome/cause`` when the evidence
    names a cause, ``id/outcome``, then ``id`` (metric.eval_aborted: what the run did next)."""
    outcome = evidence.get("outcome")
    if not outcome:
        return [finding_id]
    keys = [f"{finding_id}/{outcome}", finding_id]
    if evidence.get("cause"):
        keys.insert(0, f"{finding_id}/{outcome}/cause")
    return keys


def finding_title(finding_id: str, lang: str = "en") -> str:
    t = TITLES.get(finding_id)
    return _pick(t, lang) if t else finding_id
