"""The shim installed in-process (``segwatch.shim.install`` / ``uninstall``) on tiny trainings,
and its statistics and emitter on their own. Real torch, no mocks."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

import segwatch
from segwatch import shim as S
from segwatch.protocol import read_events
from segwatch.shim import stats as ST
from segwatch.shim.emitter import FALLBACK_NAME, MemoryEmitter, ThreadEmitter

C = 5


pytestmark = pytest.mark.usefixtures("torch_one_thread_shim_uninstalled")


class Net(nn.Module):
    def __init__(self, c=C):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.cls = nn.Conv2d(8, c, 1)

    def forward(self, x):
        return self.cls(F.relu(self.bn(self.conv(x))))


def loader(n=16, size=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return DataLoader(TensorDataset(torch.randn(n, 3, size, size, generator=g),
                                    torch.randint(0, C, (n, size, size), generator=g)), batch_size=4)


def train(model, dl, steps, nan_at=None, on_step=None):
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    n = 0
    while n < steps:
        for x, y in dl:
            loss = F.cross_entropy(model(x), y)
            if nan_at is not None and n + 1 >= nan_at:
                loss = loss * float("nan")
            opt.zero_grad()
            loss.backward()
            opt.step()
            n += 1
            if on_step:
                on_step(n)
            if n >= steps:
                return opt
    return opt


def install(**kw):
    kw.setdefault("config", {"dataset": {"num_classes": C, "ignore_index": 255}})
    kw.setdefault("emitter", MemoryEmitter(encode_events=True))
    kw.setdefault("script", __file__)
    return S.install(**kw)


def test_no_global_forward_hooks_after_discovery_and_clean_uninstall():
    from torch.nn.modules import module as M
    from torch.utils.data import dataloader as DL
    before = (DL.DataLoader.__iter__, DL._BaseDataLoaderIter.__next__, torch.Tensor.backward,
              torch.autograd.backward, nn.Module.load_state_dict)
    s = install()
    assert len(M._global_forward_hooks) == 1 and len(M._global_forward_pre_hooks) == 1   # discovery
    model = Net()
    train(model, loader(), 3)
    assert s.emitter.of_type("model")
    assert len(M._global_forward_hooks) == 0 and len(M._global_forward_pre_hooks) == 0
    assert len(model._forward_hooks) == 1          # one instance hook on the root only
    assert all(len(m._forward_hooks) == 0 for m in model.modules() if m is not model)
    S.uninstall()
    assert len(model._forward_hooks) == 0
    after = (DL.DataLoader.__iter__, DL._BaseDataLoaderIter.__next__, torch.Tensor.backward,
             torch.autograd.backward, nn.Module.load_state_dict)
    assert after == before
    assert s.emitter.items[-1]["type"] == "bye"


class RaisingSide(nn.Module):
    """A side module whose forward raises after its input is ready; the model catches it."""

    def forward(self, x):
        raise ValueError("side branch not available")


class NetWithCaughtError(Net):
    def __init__(self):
        super().__init__()
        self.side = RaisingSide()

    def forward(self, x):
        y = super().forward(x)
        try:
            self.side(y)
        except ValueError:
            pass
        return y


def test_forward_raising_during_discovery_prints_no_warning():
    # torch calls global always_call hooks as (module, args, output) when a forward raises,
    # even for a with_kwargs hook: the shim must take both, or torch warns into the user's output
    import warnings
    s = install()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train(NetWithCaughtError(), loader(), 3)
    assert not [w for w in caught if "always_call" in str(w.message)], [str(w.message) for w in caught]
    models = s.emitter.of_type("model")
    assert models and models[0].get("head") not in (None, "side")


def test_recreated_model_is_rediscovered():
    s = install()
    dl = loader()
    train(Net(), dl, 4)
    train(Net(), dl, 8)
    models = s.emitter.of_type("model")
    assert len(models) == 2
    from torch.nn.modules import module as M
    assert len(M._global_forward_hooks) == 0


class Wide(nn.Module):
    """Steps of a few tens of ms on one CPU thread: a (small) realistic training step."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 32, 3, padding=1)
        self.b = nn.Conv2d(32, 32, 3, padding=1)
        self.c = nn.Conv2d(32, C, 1)

    def forward(self, x):
        return self.c(F.relu(self.b(F.relu(self.a(x)))))


@pytest.mark.slow
def test_nan_loss_reported_within_ten_steps():
    s = install()
    seen_at = {}

    def on_step(n):
        if "nan" not in seen_at and any(e["type"] == "step" and e.get("loss_nonfinite_total", 0) > 0
                                        for e in s.emitter.items[-20:]):
            seen_at["nan"] = n

    train(Wide(), loader(size=96), 90, nan_at=70, on_step=on_step)
    assert 70 <= seen_at["nan"] <= 80, (seen_at, s.sampler.intervals(), s.sampler.cost)


def test_watch_and_log_eval_api():
    assert segwatch.active() is False
    segwatch.log_metric("miou", 1.0)               # no-ops without the shim
    segwatch.log_eval(torch.zeros(1, C, 2, 2), torch.zeros(1, 2, 2, dtype=torch.long))
    s = install(config={})
    assert segwatch.active() is True
    model = Net(c=4)
    segwatch.watch(model, num_classes=4, ignore_index=255)
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        model(x)
    m = s.emitter.of_type("model")[0]
    assert m["cls"] == "Net" and m["out_channels"] == 4
    logits = torch.randn(2, 4, 8, 8)
    labels = torch.randint(0, 4, (2, 8, 8))
    labels[0, 0, 0] = 255
    segwatch.log_eval(logits, labels)
    segwatch.log_eval(logits, labels)
    segwatch.end_eval()
    ev = s.emitter.of_type("eval")[0]
    pred = logits.argmax(1)
    ref = torch.zeros(4, 4, dtype=torch.long)
    ok = labels != 255
    ref += torch.bincount(labels[ok] * 4 + pred[ok], minlength=16).reshape(4, 4)
    assert ev["matrix"] == (2 * ref).tolist() and ev["explicit"] is True and ev["aborted"] is False
    segwatch.log_metric("miou", 42.5, step=3)
    sm = s.emitter.of_type("script_metric")[0]
    assert sm["value"] == 42.5 and sm["step"] == 3 and sm["source"] == "adapter"


def test_import_segwatch_does_not_import_torch():
    code = "import sys, segwatch; segwatch.log_metric('miou', 1); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "False", out.stderr


def test_eval_ended_by_train_batch_is_aborted_without_exception():
    s = install()
    model = Net()
    dl, val = loader(), loader(seed=1)
    train(model, dl, 2)
    with torch.no_grad():
        for i, (x, y) in enumerate(val):
            model(x)
            if i == 1:
                break                                  # the script stops early
    train(model, dl, 2)
    ev = s.emitter.of_type("eval")[0]
    assert ev["aborted"] is True and ev["batches"] == 2 and ev["expected"] == 4 and ev["exception"] is None


# --------------------------------------------------------------------------- statistics
def test_classify_batch_layouts():
    img = torch.zeros(2, 3, 8, 8)
    depth = torch.zeros(2, 1, 8, 8)
    gt = torch.zeros(2, 8, 8, dtype=torch.long)
    text = torch.zeros(2, 77)
    images, label = ST.classify_batch((img, depth, gt, text))
    assert [k for k, _ in images] == ["0", "1"] and label[0] == "2"
    images, label = ST.classify_batch({"data": img, "modal_x": depth, "label": gt})
    assert [k for k, _ in images] == ["data", "modal_x"] and label[0] == "label"
    images, label = ST.classify_batch([img, gt[:, None].float()])
    assert label is None                                   # an unnamed float map is an image...
    images, label = ST.classify_batch({"img": img, "gt_semantic_seg": gt[:, None].float()})
    assert label[0] == "gt_semantic_seg"                   # ...a named one is a label


def _blocks(size=64):
    lab = torch.zeros(size, size, dtype=torch.long)
    lab[:, size // 4: size // 2] = 3
    lab[size // 2:, size // 2:] = 7
    lab[: size // 3, 3 * size // 4:] = 1
    return lab


def test_boundary_detects_bilinear_resized_labels():
    lab = _blocks()[None].float()[None]
    nearest = F.interpolate(lab, size=(100, 100), mode="nearest")[:, 0].long()
    bilinear = F.interpolate(lab, size=(100, 100), mode="bilinear", align_corners=False)[:, 0]
    st_n = ST.label_stats(nearest, 10, 255)
    assert float(st_n["boundary"]) == 0.0 and int(st_n["fractional"]) == 0
    st_b = ST.label_stats(bilinear, 10, 255)
    assert int(st_b["fractional"]) > 0
    st_r = ST.label_stats(bilinear.round().long(), 10, 255)
    assert float(st_r["boundary"]) > 0.0


def test_align_healthy_above_flipped_and_flags_image_only_flip():
    torch.manual_seed(0)
    lab = _blocks(96)
    palette = torch.rand(10, 3)
    img = palette[lab].permute(2, 0, 1) + 0.05 * torch.randn(3, 96, 96)
    good = ST.align_from_sums(ST.align_sums(img[None], lab[None]).tolist())
    assert good[0] > good[1] and good[0] > 0.6
    # a random flip applied to both keeps them aligned
    both = ST.align_from_sums(ST.align_sums(img.flip(-1)[None], lab.flip(-1)[None]).tolist())
    assert both[0] > both[1]
    # the image flipped alone: the mirrored label fits better
    alone = ST.align_from_sums(ST.align_sums(img.flip(-1)[None], lab[None]).tolist())
    assert alone[1] > alone[0]


def test_oor_values_and_hist():
    lab = torch.tensor([[[0, 1, 2, 255], [37, 37, -1, 4]]])
    st = ST.label_stats(lab, 5, 255)
    assert st["hist"].tolist() == [1, 1, 1, 0, 1]
    assert int(st["ignore"]) == 1 and int(st["oor_total"]) == 3
    assert ST.host_oor_values(lab, 5, 255) == {"37": 2, "-1": 1}
    assert ST.host_oor_values(lab, 5, -1) == {"37": 2, "255": 1}


def test_input_stats_count_nonfinite():
    x = torch.ones(2, 1, 16, 16)
    x[1, 0, :4, :4] = float("nan")
    x[0, 0, 0, 0] = float("inf")
    mean, std, mn, mx, nonfinite = ST.input_stats(x).tolist()
    assert nonfinite == 17 and mean == 1.0 and std == 0.0 and mn == 1.0 and mx == 1.0


# --------------------------------------------------------------------------- emitter
def test_emitter_never_blocks_and_counts_drops(tmp_path):
    em = ThreadEmitter(None, None, maxsize=10)     # no sink at all
    for i in range(1000):
        em.emit({"v": 1, "type": "probe", "t": 1.0, "name": "x"})
    em.close(1.0)
    assert em.events + em.dropped >= 1000 and em.dropped > 0


def test_emitter_socket_break_falls_back_to_file(tmp_path):
    path = str(tmp_path / "s.sock")
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(1)
    got = []

    def serve():
        conn, _ = srv.accept()
        got.append(conn.recv(65536))
        conn.close()                                   # the supervisor goes away

    th = threading.Thread(target=serve, daemon=True)
    th.start()
    em = ThreadEmitter(path, str(tmp_path))
    assert em.mode == "socket"
    em.emit({"v": 1, "type": "probe", "t": 1.0, "name": "first"})
    th.join(5)
    srv.close()
    os.unlink(path)
    for i in range(50):
        em.emit({"v": 1, "type": "probe", "t": 1.0, "name": f"n{i}"})
        time.sleep(0.002)
    em.close(2.0)
    assert b"first" in got[0]
    lines = list(read_events((tmp_path / FALLBACK_NAME).open("rb")))
    names = [e["name"] for e in lines]
    assert names[-1] == "n49" and len(names) >= 45     # at most the in-flight ones are lost
    assert em.fallbacks == 1


def test_root_found_when_called_on_a_tensor_made_from_the_batch():
    s = install()
    g = torch.Generator().manual_seed(0)
    ds = TensorDataset(torch.randn(16, 3, 16, 16, generator=g), torch.randn(16, 1, 16, 16, generator=g),
                       torch.randint(0, C, (16, 16, 16), generator=g))
    model = nn.Sequential(nn.Conv2d(4, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, C, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    for rgb, depth, label in DataLoader(ds, batch_size=4):
        loss = F.cross_entropy(model(torch.cat([rgb, depth], 1)), label)
        opt.zero_grad()
        loss.backward()
        opt.step()
    S.uninstall()
    m = s.emitter.of_type("model")
    assert len(m) == 1 and m[0]["cls"] == "Sequential" and m[0]["step"] == 0
    preds = [p for p in s.emitter.of_type("preds") if p["phase"] == "train"]
    assert preds and preds[0]["step"] == 0 and preds[0]["valid"] == 4 * 16 * 16


def test_evaluation_on_an_ema_copy_is_paired():
    import copy
    s = install()
    model = Net()
    ema = copy.deepcopy(model).eval()
    dl, val = loader(), loader(seed=1)
    train(model, dl, 3)
    ref = torch.zeros(C, C, dtype=torch.long)
    with torch.no_grad():
        for x, y in val:
            p = ema(x).argmax(1)
            ref += torch.bincount(y.flatten() * C + p.flatten(), minlength=C * C).reshape(C, C)
    train(model, dl, 1)
    S.uninstall()
    ev = s.emitter.of_type("eval")[0]
    assert ev["aborted"] is False and ev["paired"] == 4
    assert ev["matrix"] == ref.tolist()
    assert len(s.emitter.of_type("model")) == 1          # the training root stays hooked
    assert any("EMA" in (p.get("message") or "") for p in s.emitter.of_type("probe"))


def test_load_state_dict_with_a_module_prefix_is_reported_and_returned_unchanged():
    """In-process twin of test_shim.py's CLI test (slow): the state_dict probe in the fast set."""
    s = install()
    model = Net()
    sd = {"module." + k: v for k, v in Net().state_dict().items()}
    own = list(model.state_dict())
    result = model.load_state_dict(sd, strict=False)
    # torch does not count BatchNorm's num_batches_tracked as missing (older checkpoints lack it)
    assert set(result.missing_keys) == set(own) - {"bn.num_batches_tracked"}
    assert len(result.unexpected_keys) == len(sd)
    e = s.emitter.of_type("state_dict")[0]
    assert e["module"] == "Net" and e["loaded"] == 0 and e["strict"] is False and e["error"] is None
    assert e["missing"] == len(result.missing_keys) and e["total"] == len(own) and e["unexpected"] == len(sd)
    assert e["examples_missing"][0] == "conv.weight" and e["examples_unexpected"][0] == "module.conv.weight"
    with pytest.raises(RuntimeError):
        model.load_state_dict(sd)              # strict: torch raises; the probe reports, then re-raises
    e = s.emitter.of_type("state_dict")[1]
    assert e["strict"] is True and e["loaded"] == 0 and e["error"]
