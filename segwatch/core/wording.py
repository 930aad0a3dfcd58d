"""Evidence as a reader of another language reads it: labels for evidence keys, and the fixed
phrases the rules put in evidence values (``why``, ``source``, ``unit``...), in Chinese.

The rules write evidence in English (it is also the JSON report's data). ``evidence_label``
and ``evidence_value`` turn it into ``--lang zh`` text for headless lines and reports;
numbers, ids, class names and code words (``ignore_index``, ``optimizer.step()``) stay.
A phrase missing here shows up as English in ``tests/test_newuser.py``'s zh test.
"""
from __future__ import annotations

import re
from typing import Any

#: evidence key -> Chinese label
LABELS_ZH: dict[str, str] = {
    "why": "原因", "source": "来源", "samples": "样本数", "step": "步", "class": "类别",
    "batches": "批次数", "share": "占比", "key": "输入", "eval_index": "评估序号",
    "since_step": "起始步", "class_name": "类别名", "p_c": "p_c", "formula": "公式",
    "expected_miou": "预期 mIoU", "threshold": "阈值", "steps": "步", "pixels": "像素数",
    "observed_miou": "观测 mIoU", "num_classes": "类别数", "lr": "学习率", "loss": "损失",
    "last_step": "最后一步", "grad_norm": "梯度范数", "factor": "倍数", "evaluations": "评估次数",
    "with_grad": "有梯度的参数", "stray_classes": "零星类别数", "pred_classes": "预测类别数",
    "mean": "均值", "gt_classes": "真实类别数", "expected_lr": "期望学习率", "dtype": "数据类型",
    "best_step": "最佳步", "best": "最佳值", "window": "窗口", "tolerance": "容差", "site": "位置",
    "silent_for_s": "静默秒数", "scale": "缩放", "ratio": "比值", "rank": "进程",
    "prefer_mirror": "镜像更匹配的样本", "predicted": "预测", "optimizer_steps_total": "优化器步数",
    "no_grad": "无梯度的参数", "n": "数量", "min_share": "最低占比", "min_pred_classes": "最少预测类别数",
    "kind": "类型", "inputs": "输入", "ignore_index": "ignore 值", "grad_nonfinite": "非有限梯度",
    "frozen_share": "冻结比例", "first": "首个", "backward_total": "backward 次数",
    "window_means": "窗口均值", "where": "位置", "values": "取值", "value_range": "取值范围",
    "value": "值", "valid_range": "有效范围", "val_share": "验证集占比",
    "val_out_of_range": "验证集越界像素", "val_label_pixels": "验证集标签像素",
    "val_ignored": "验证集忽略像素", "val_classes": "验证集类别",
    "val_batches_not_comparable": "不可比的验证批次", "val_batches": "验证批次",
    "unit": "单位", "unique": "不同取值数", "unexpected": "多余的键", "trainable": "可训练参数",
    "train_values": "训练集取值", "train_batches": "训练批次", "total": "总数", "suggest": "建议配置",
    "strict": "strict", "stray": "零星", "steps_diverged": "发散步数", "step_reporting": "报告步",
    "std": "标准差", "spread": "离散度", "skipped": "跳过", "size_mismatch_batches": "尺寸不一致的批次",
    "typical": "典型值",
    "size_mismatch": "尺寸不一致", "shape": "形状", "segwatch_miou_mmseg": "segwatch mIoU（mmseg 口径）",
    "segwatch_miou_guide": "segwatch mIoU（指南口径）", "script_miou": "脚本 mIoU",
    "scheduler": "调度器", "scale_last": "最后缩放", "scale_first": "最初缩放",
    "scale_falling": "缩放下降", "reporting_rank": "报告进程", "ratio_last_to_first": "末/首比值",
    "ranks": "进程", "per_row": "按行", "peak_step": "峰值步", "peak_lr": "峰值学习率",
    "params_nonfinite": "非有限参数", "params": "参数", "out_channels": "输出通道",
    "optimizer_steps": "优化器步数", "oor": "越界像素", "one_batch": "单个批次", "now": "当前值",
    "note": "说明", "norm_modules": "归一化层", "nonfinite_total": "非有限总数", "nonfinite": "非有限",
    "no_optim": "不在优化器中", "never_stepped": "从未更新", "module": "模块", "missing": "缺失的键",
    "min": "最小值", "message": "消息", "measured": "测量值", "max_lr_seen": "最大学习率",
    "max_grad_norm": "最大梯度范数", "max": "最大值", "match": "匹配方式", "lr_history": "学习率历史",
    "lowest_window_mean": "最低窗口均值", "lowest_loss": "最低损失", "loss_nonfinite_total": "非有限损失次数",
    "loss_median_by_rank": "各进程损失中位数", "loaded": "已加载", "line": "输出行", "limits": "界限",
    "last_step_by_rank": "各进程最后一步", "labelled_pixels": "有标注像素", "label_size": "标签尺寸",
    "label_min": "标签最小值", "label_max": "标签最大值", "image_size": "图像尺寸",
    "ignored_pixels": "忽略像素", "ignored": "忽略", "ignore_value": "ignore 值",
    "ignore_inferred": "ignore 值为推断", "identical_batches": "相同批次", "gt_share": "真实占比",
    "grad_norm_min": "梯度范数下限", "grad_norm_max": "梯度范数上限", "grad_norm_by_rank": "各进程梯度范数",
    "grad_before_backward": "backward 前的梯度", "grace_steps": "宽限步数", "fractional": "非整数像素",
    "first_loss": "初始损失", "expected": "预期", "exception": "异常", "examples_missing": "缺失示例",
    "eval_step": "评估步", "eval_modules": "评估模块", "difference": "差值", "data_value": "数据中的值",
    "configured": "配置值", "collapsed_evaluations": "塌缩的评估次数", "classes": "类别",
    "channel_sum_dev": "通道和偏差", "boundary_share": "边界占比", "batch_index": "批次序号",
    "backwards_since_step": "该步以来的 backward 次数", "backward_passes": "backward 次数", "amp": "AMP",
    "all_silent": "全部静默", "all": "全部", "align_val": "验证集对齐度", "align_train": "训练集对齐度",
    "align_flipped": "翻转后对齐度", "align": "对齐度", "abs_mean": "绝对值均值", "abs_max": "绝对值最大值",
    "eval": "评估", "phase": "阶段", "best_eval": "最佳评估", "rule": "规则", "stage": "阶段",
    # GPU side (resource.*, perf.data_bound)
    "from_step": "起始步", "to_step": "结束步", "allocated_from_mib": "起始已分配显存 (MiB)",
    "allocated_to_mib": "结束已分配显存 (MiB)", "growth_mib_per_step": "每步增长 (MiB)",
    "rising_steps": "上升的步数", "reserved_mib": "已保留显存 (MiB)", "likely_causes": "可能原因",
    "batch_size": "batch size", "crop": "裁剪尺寸", "peak_allocated_mib": "峰值显存 (MiB)",
    "gpu_total_mib": "GPU 总显存 (MiB)", "data_wait_share": "等待数据占比", "data_wait_s": "等待数据秒数",
    "wall_s": "总秒数", "num_workers": "num_workers", "pin_memory": "pin_memory", "images_per_s": "图像/秒",
    # the loss as a cause (diagnosis/lossfn.py)
    "loss_fn": "损失函数", "loss_cause": "可能原因", "loss_weight_class": "最大权重类别",
    "loss_weight_class_name": "最大权重类别名", "loss_weight_ratio": "权重/中位数", "loss_weight_max": "最大权重",
    "loss_ignore_index": "损失的 ignore_index", "data_ignore": "标签的 ignore 值", "target_values": "越界目标值",
    "loss_label_smoothing": "标签平滑", "loss_calls_per_step": "每步损失调用次数", "model_output": "模型输出",
    "label_top_class": "标签最多的类别", "label_top_class_name": "标签最多的类别名", "label_top_share": "其像素占比",
}

#: English phrases of evidence values -> Chinese; ``{n}`` matches a number (or word) and is kept
PHRASES_ZH: list[tuple[str, str]] = [
    ("evaluation confusion matrix", "评估混淆矩阵"), ("training predictions", "训练预测"),
    ("script output and validation labels", "脚本输出与验证标签"), ("script output", "脚本输出"),
    ("script mIoU = p_c / C (predictions not observed)", "脚本 mIoU = p_c / C（未观测到预测）"),
    ("segwatch evaluations", "segwatch 评估"), ("evaluation", "评估"), ("gradients", "梯度"),
    ("batch", "批次"), ("requires_grad", "requires_grad"),
    ("a param group has lr 0", "有参数组的学习率为 0"),
    ("gradients are non-zero when the first backward after optimizer.step() begins",
     "optimizer.step() 之后第一次 backward 开始时梯度不为零"),
    ("labels match the images better when mirrored (every sample)", "标签镜像后与图像更匹配（每个样本）"),
    ("many training samples match their label better when mirrored: the image is flipped without its label",
     "许多训练样本镜像后与标签更匹配：图像被翻转而标签没有"),
    ("suspicious learning rate", "学习率可疑"), ("loss blew up", "损失爆炸"), ("loss keeps rising", "损失持续上升"), ("loss rose and stays high", "损失升高后一直居高不下"),
    ("lr more than 10x above expected_lr", "学习率比 expected_lr 高 10 倍以上"),
    ("lr more than 10x below expected_lr", "学习率比 expected_lr 低 10 倍以上"),
    ("the model's output lies in [0, 1] and sums to 1 over the classes (softmax applied)",
     "模型输出在 [0, 1] 之间且各类别之和为 1（已做 softmax）"),
    ("training batches align far worse than validation batches of the same size",
     "训练批次的对齐度远差于同尺寸的验证批次"),
    ("training labels hold only these values while evaluation labels hold many classes",
     "训练标签只有这些取值，而评估标签包含许多类别"),
    ("every validation label pixel is the ignore value", "所有验证标签像素都是 ignore 值"),
    ("no logits were paired with labels", "没有 logits 与标签配对"),
    ("no pixel was counted", "没有统计到任何像素"),
    ("no validation label pixel of this evaluation is a valid class (all ignore or out of range)",
     "本次评估没有一个验证标签像素是有效类别（全部为 ignore 或越界）"),
    ("{n} label pixels equal the inferred ignore value {n}", "{0} 个标签像素等于推断的 ignore 值 {1}"),
    ("{n} label pixels outside 0..C-1 were not counted", "{0} 个超出 0..C-1 的标签像素未被统计"),
    ("{n} batches had prediction/label size mismatches", "{0} 个批次的预测与标签尺寸不一致"),
    ("in-between values on class borders across batches", "多个批次的类别边界上有中间值"),
    ("in-between values on class borders in this batch", "本批次的类别边界上有中间值"),
    ("non-integer label values", "标签值不是整数"),
    ("reduce_zero_label on labels that are already 0-based", "对本来就从 0 开始的标签做了 reduce_zero_label"),
    ("framework", "框架"), ("config", "配置"),
    ("parameters with gradients are in no optimizer group", "有梯度的参数不在任何优化器参数组中"),
    ("parameters with gradients never change across optimizer steps", "有梯度的参数在优化器步骤之间从不变化"),
    ("backward() runs but none of the tracked parameters gets a gradient: the optimizer holds other "
     "parameters than the ones being trained",
     "backward() 在运行，但被跟踪的参数都没有梯度：优化器持有的不是正在训练的参数"),
    ("pixels per row", "每行像素数"), ("share of pixels", "像素占比"),
    ("ignore_index: {n} (or auto)", "ignore_index: {0}（或 auto）"),
    ("mIoU = 100 * p_c / C", "mIoU = 100 * p_c / C"),
    ("tensors kept across steps (a list of outputs or losses that still hold their graph)",
     "张量在步与步之间被保留（仍带计算图的输出或 loss 列表）"),
    ("a loss accumulated with its graph (total += loss instead of loss.item())",
     "带计算图累加 loss（total += loss，而不是 loss.item()）"),
    ("metrics computed on tensors that require grad", "在需要梯度的张量上计算指标"),
]

_NUM = r"([-+]?\d[\d.,eE+-]*|\w+)"
_COMPILED: list = []   # compiled at first use: the supervisor imports this module at start


def _compiled() -> list:
    if not _COMPILED:
        _COMPILED.extend((re.compile("^" + re.escape(en).replace(re.escape("{n}"), _NUM) + "$"), zh)
                         for en, zh in PHRASES_ZH)
    return _COMPILED


def evidence_label(key: str, lang: str = "en") -> str:
    """The evidence key ``key`` as a label in ``lang`` (the key itself in English or when unnamed)."""
    if lang == "zh":
        return LABELS_ZH.get(key, key)
    return key


def _phrase(text: str) -> str | None:
    for rx, zh in _compiled():
        m = rx.match(text.strip())
        if m:
            return zh.format(*m.groups())
    return None


def evidence_value(value: Any, lang: str = "en") -> Any:
    """A string evidence value in ``lang``: known phrases translated (``; ``-joined lists of
    them too); anything else (numbers, ids, class names) as it is."""
    if lang != "zh" or not isinstance(value, str):
        return value
    whole = _phrase(value)
    if whole is not None:
        return whole
    parts = value.split("; ")
    if len(parts) > 1:
        return "；".join(_phrase(p) or p for p in parts)
    return value
