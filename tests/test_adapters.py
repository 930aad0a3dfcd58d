"""Adapters (``segwatch.adapters``): the DFormer-style replica through the real CLI, plus
no-op behaviour outside segwatch and the auto-detection machinery.

The framework adapters (Lightning, Hugging Face, mmengine) have their own test files that
skip when the framework is not installed.  Runs through the CLI rely on the shim arming the
adapters itself (``autodetect(cfg)`` at shim start-up); ``autodetect=False`` runs the same
script with a copy of the config that says ``adapter: none``, so that only what the script
adds by hand is attached.
"""
from __future__ import annotations

import builtins
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = ROOT / "tests" / "adapter_scripts"
DFORMER = SCRIPTS / "dformer"


def run_cli(tmp_path: Path, script: Path, config: Path, *args: str, autodetect: bool = True,
            timeout: int = 120, env_extra: dict | None = None):
    """``python -m segwatch run --headless`` on a script; returns (report, events, proc)."""
    report = tmp_path / "r.json"
    run_dir = tmp_path / "run"
    env = os.environ.copy()
    env.pop("SEGWATCH_RUN_DIR", None)
    env.pop("SEGWATCH_SOCKET", None)
    if not autodetect:
        text = Path(config).read_text()
        assert "adapter: auto" in text, config
        config = tmp_path / ("no_adapter_" + Path(config).name)
        config.write_text(text.replace("adapter: auto", "adapter: none"))
    env["HF_HUB_OFFLINE"] = "1"
    env["TRANSFORMERS_OFFLINE"] = "1"
    env["OMP_NUM_THREADS"] = "1"
    env.update(env_extra or {})
    cmd = [sys.executable, "-m", "segwatch", "run", "--headless", "--report", str(report),
           "--run-dir", str(run_dir), "--config", str(config), str(script)]
    if args:
        cmd += ["--", *args]
    proc = subprocess.run(cmd, cwd=str(ROOT), capture_output=True, text=True, timeout=timeout, env=env)
    assert report.exists(), f"no report; rc={proc.returncode}\n{proc.stderr[-4000:]}"
    rep = json.loads(report.read_text())
    events = []
    ev_file = run_dir / "events.jsonl"
    if ev_file.exists():
        for line in ev_file.read_text().splitlines():
            try:
                events.append(json.loads(line))
            except ValueError:
                pass
    return rep, events, proc


def describe(rep: dict) -> str:
    return "; ".join(f"{f['id']}({f['severity']}@{f.get('first_step')})" for f in rep.get("findings", [])) or "none"


def errors(rep: dict) -> list[str]:
    return [f["id"] for f in rep.get("findings", []) if f["severity"] == "error"]


def stderr_of(events: list[dict]) -> str:
    return "\n".join(e.get("line", "") for e in events if e.get("type") == "output" and e.get("stream") == "stderr")


def adapter_disagreements(rep: dict) -> list[dict]:
    """``metric.script_disagrees`` raised from an adapter's metric (not from a parsed printed
    line: those are stamped with the step at which the line arrived, which can race the
    shim's events; that is the supervisor's business, not the adapters')."""
    return [f for f in rep.get("findings", []) if f["id"] == "metric.script_disagrees"
            and not (f["evidence"].get("line") or "").lower().startswith(("epoch", "miou"))]


def probes(events: list[dict]) -> list[dict]:
    return [e for e in events if e.get("type") == "probe" and str(e.get("name", "")).startswith("adapter")]


def assert_healthy_adapter_run(rep: dict, absent: frozenset[str] | set[str] = frozenset()) -> None:
    """What every framework's healthy run shows first: exit 0, no error-level finding, none of
    the ``absent`` ids, no disagreement with the adapter's own metric."""
    assert rep["exit_code"] == 0, describe(rep)
    assert errors(rep) == [], describe(rep)
    assert not {f["id"] for f in rep["findings"]} & absent, describe(rep)
    assert adapter_disagreements(rep) == [], describe(rep)


def adapter_metrics(events: list[dict]) -> list[dict]:
    """The ``script_metric`` events an adapter sent: the framework's own mIoU."""
    return [e for e in events if e.get("type") == "script_metric" and e.get("source") == "adapter"]


def trains_without_segwatch(script: Path, *args: str, env: dict | None = None) -> str:
    """Run ``script`` plainly, without segwatch, from the repo root; it must exit 0. Its stdout."""
    proc = subprocess.run([sys.executable, str(script), *args], cwd=str(ROOT),
                          capture_output=True, text=True, timeout=110, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


# -- outside segwatch: harmless no-ops ------------------------------------------------------------

def test_import_is_light():
    code = ("import sys, segwatch.adapters as a; "
            "assert 'torch' not in sys.modules, 'torch imported'; "
            "assert a.autodetect() == []; print('ok')")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEGWATCH_")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 0 and "ok" in out.stdout, out.stderr


def test_metrics_class_patch_is_transparent_without_shim():
    torch = pytest.importorskip("torch")
    from segwatch.adapters import dformer

    sys.path.insert(0, str(DFORMER))
    try:
        from utils.metrics_new import Metrics
    finally:
        sys.path.remove(str(DFORMER))
    ref = Metrics(3, 255, "cpu")
    assert dformer.patch_metrics_class(Metrics) is True
    assert dformer.patch_metrics_class(Metrics) is False      # once
    m = Metrics(3, 255, "cpu")
    logits = torch.randn(2, 3, 4, 4)
    labels = torch.randint(0, 3, (2, 4, 4))
    labels[0, 0, 0] = 255
    m.update(logits, labels)
    type(ref).update.__wrapped__(ref, logits, labels)
    assert torch.equal(m.hist, ref.hist)
    assert m.compute_iou() == type(ref).compute_iou.__wrapped__(ref)


def test_metric_from_hist_matches_guide_convention():
    np = pytest.importorskip("numpy")
    from segwatch.adapters.dformer import metric_from_hist

    h = np.array([[5, 1, 0], [0, 3, 0], [0, 0, 0]])
    miou, pixels, matrix, C = metric_from_hist(h)
    assert C == 3 and pixels == 9 and matrix == h.tolist()
    assert miou == pytest.approx(100 * (5 / 6 + 3 / 4 + 0) / 3)


def test_find_miou_keys():
    from segwatch.adapters._base import find_miou, to_percent

    assert find_miou({"val_loss": 1.0, "val/miou": 0.5}) == ("val/miou", 0.5)
    assert find_miou({"eval_loss": 1.0, "eval_mean_iou": 0.25, "eval_mean_accuracy": 0.5}) == ("eval_mean_iou", 0.25)
    assert find_miou({"mIoU": 42.0, "aAcc": 80.0}) == ("mIoU", 42.0)
    assert find_miou({"IoU.wall": 3.0, "val_iou_3": 1.0}) is None
    assert find_miou({"loss": 1.0}) is None
    assert to_percent(0.5) == 50.0 and to_percent(42.0) == 42.0


def test_class_hook_sees_classes_and_uninstalls(monkeypatch):
    from segwatch.adapters import _autodetect as A

    before = builtins.__build_class__
    monkeypatch.setattr(A, "_ENABLED", {"dformer"})
    A.install_class_hook()
    try:
        ns: dict = {}
        exec("class M:\n    def update(self, p, t): pass\n    def compute_iou(self): return [], 1.0\n", ns)
        assert getattr(ns["M"], "__segwatch_metrics_patched__", False)
        exec("class N:\n    def update(self): pass\n", ns)
        assert not hasattr(ns["N"], "__segwatch_metrics_patched__")
    finally:
        A.uninstall_class_hook()
    assert builtins.__build_class__ is before


def test_autodetect_respects_adapter_none():
    from segwatch.adapters import _autodetect as A

    assert A._setting({"adapter": "none"}) == "none"
    assert A._setting({"segwatch": {"adapter": "hf"}}) == "hf"
    assert A.autodetect({"adapter": "none"}, force=True) == []


# -- the DFormer-style replica through the real CLI -------------------------------------------------

def _metrics_class_events(events):
    return [e for e in events if e.get("type") == "script_metric" and e.get("source") == "metrics_class"]


@pytest.mark.slow
@pytest.mark.timeout(150)
def test_dformer_healthy(tmp_path):
    rep, events, proc = run_cli(tmp_path, DFORMER / "train.py", DFORMER / "segwatch.yaml")
    assert rep["exit_code"] == 0, proc.stderr[-2000:]
    assert errors(rep) == [], describe(rep)
    assert adapter_disagreements(rep) == [], describe(rep)
    mc = _metrics_class_events(events)
    assert len(mc) == 4, mc
    evals = [e for e in events if e.get("type") == "eval"]
    assert len(evals) == 4
    for m, e in zip(mc, evals):
        assert m["updates"] == 2 and m["pixels"] == e["pixels"] > 0
        assert m["matrix"] == e["matrix"]          # the script's hist equals segwatch's own
        assert m["step"] == e["step"]
    assert mc[-1]["value"] > mc[0]["value"] + 10
    assert probes(events) == []


@pytest.mark.slow
@pytest.mark.timeout(150)
def test_dformer_sliding_window_eval_is_paired_through_metrics_update(tmp_path):
    rep, events, proc = run_cli(tmp_path, DFORMER / "train.py", DFORMER / "segwatch.yaml", "--sliding")
    assert errors(rep) == [], describe(rep)
    evals = [e for e in events if e.get("type") == "eval"]
    assert evals and all(e["explicit"] and e["pixels"] > 0 and not e["aborted"] for e in evals), evals
    mc = _metrics_class_events(events)
    assert [m["fed_to_segwatch"] for m in mc] == [2] * len(evals)
    assert [m["matrix"] for m in mc] == [e["matrix"] for e in evals]
    assert adapter_disagreements(rep) == [], describe(rep)


@pytest.mark.slow
@pytest.mark.timeout(150)
def test_dformer_collapse_is_found(tmp_path):
    rep, events, proc = run_cli(tmp_path, DFORMER / "train.py", DFORMER / "segwatch.yaml", "--fault", "collapse")
    assert "pred.collapse" in {f["id"] for f in rep["findings"]}, describe(rep)


@pytest.mark.slow
@pytest.mark.timeout(150)
def test_dformer_metrics_update_never_called_with_sliding_eval(tmp_path):
    # segwatch cannot pair crops with full labels and the script feeds nothing: both matrices
    # are empty, and the report says so
    rep, events, proc = run_cli(tmp_path, DFORMER / "train.py", DFORMER / "segwatch.yaml",
                                "--fault", "no-update", "--sliding")
    ids = {f["id"] for f in rep["findings"]}
    assert ids & {"metric.cm_empty", "metric.script_disagrees"}, describe(rep)
    mc = _metrics_class_events(events)
    assert mc and all(m["pixels"] == 0 and m["updates"] == 0 for m in mc), mc


@pytest.mark.slow
@pytest.mark.timeout(150)
def test_dformer_metrics_update_never_called(tmp_path):
    rep, events, proc = run_cli(tmp_path, DFORMER / "train.py", DFORMER / "segwatch.yaml", "--fault", "no-update")
    ids = {f["id"] for f in rep["findings"]}
    assert "metric.script_disagrees" in ids, describe(rep)
    mc = _metrics_class_events(events)
    assert mc and all(m["pixels"] == 0 and m["updates"] == 0 and m["value"] == 0 for m in mc), mc
    # segwatch's own matrix is not empty: the model is fine, the script's metric is not
    assert all(e["pixels"] > 0 for e in events if e.get("type") == "eval")


# -- in-process with the real shim (fast) -------------------------------------------------------

@pytest.fixture
def shim_mem():
    torch = pytest.importorskip("torch")
    torch.set_num_threads(1)
    from segwatch import shim as S

    cfg = {"dataset": {"num_classes": 3, "ignore_index": 255}}
    s = S.install(config=cfg, emitter=S.MemoryEmitter(encode_events=True), hello=False)
    try:
        yield s
    finally:
        S.uninstall(finish=False)


def _fresh_metrics_class():
    ns: dict = {}
    src = (DFORMER / "utils" / "metrics_new.py").read_text()
    exec(compile(src, "metrics_new_copy.py", "exec"), ns)
    return ns["Metrics"]


def test_metrics_class_under_the_shim_emits_script_metric(shim_mem):
    import torch
    from segwatch.adapters import dformer

    Metrics = _fresh_metrics_class()
    dformer.patch_metrics_class(Metrics)
    m = Metrics(3, 255, "cpu")
    logits = torch.zeros(2, 3, 4, 4)
    logits[:, 1] = 1.0                       # predicts class 1 everywhere
    labels = torch.ones(2, 4, 4, dtype=torch.long)
    labels[0, 0] = 255
    with torch.no_grad():                    # val_mm.evaluate is @torch.no_grad()
        m.update(logits, labels)             # no pass open: fed explicitly to segwatch
        ious, miou = m.compute_iou()
    evs = shim_mem.emitter.of_type("eval")
    sms = shim_mem.emitter.of_type("script_metric")
    assert len(evs) == 1 and evs[0]["explicit"] and evs[0]["pixels"] == 28
    assert len(sms) == 1
    sm = sms[0]
    assert sm["source"] == "metrics_class" and sm["value"] == miou == pytest.approx(100 / 3, abs=0.01)
    assert sm["pixels"] == 28 and sm["updates"] == 1 and sm["matrix"] == evs[0]["matrix"]
    m.compute_iou()                          # the same matrix again: no second event
    assert len(shim_mem.emitter.of_type("script_metric")) == 1


def test_adapter_errors_are_reported_once_and_never_raise(shim_mem, monkeypatch):
    import torch
    from segwatch.adapters import _base as B
    from segwatch.adapters import dformer

    Metrics = _fresh_metrics_class()
    dformer.patch_metrics_class(Metrics)

    def boom(*a, **k):
        raise RuntimeError("adapter bug")

    monkeypatch.setattr(dformer, "metric_from_hist", boom)
    monkeypatch.setattr(B, "_failed", set())
    m = Metrics(3, 255, "cpu")
    m.update(torch.zeros(1, 3, 2, 2), torch.zeros(1, 2, 2, dtype=torch.long))
    for _ in range(3):
        assert m.compute_iou()[1] == pytest.approx(100 / 3, abs=0.01)   # the script's own result
    probes = [e for e in shim_mem.emitter.of_type("probe") if e["name"].startswith("adapter")]
    assert len(probes) == 1 and "adapter bug" in probes[0]["error"]


def test_autodetect_patches_an_already_imported_framework_class(shim_mem, monkeypatch):
    from segwatch.adapters import _autodetect as A

    mod = type(sys)("fake_lightning_trainer")
    exec("class Trainer:\n    def __init__(self, callbacks=None):\n        self.callbacks = list(callbacks or [])\n",
         mod.__dict__)
    mod.Trainer.__module__ = "lightning.pytorch.trainer.trainer"
    monkeypatch.setitem(sys.modules, "lightning.pytorch.trainer.trainer", mod)
    attached = []
    monkeypatch.setattr(A, "_attach", lambda name, obj: attached.append((name, obj)))
    monkeypatch.setattr(A, "_ENABLED", set())
    monkeypatch.setattr(builtins, "__build_class__", builtins.__build_class__)
    monkeypatch.setattr(A, "_ORIG_BUILD_CLASS", None)
    assert A.autodetect({"adapter": "lightning"}) == ["lightning"]
    t = mod.Trainer()
    assert attached == [("lightning", t)]
    A.uninstall_class_hook()


def test_training_time_metrics_instance_is_not_reported(shim_mem):
    import torch
    from segwatch.adapters import dformer

    Metrics = _fresh_metrics_class()
    dformer.patch_metrics_class(Metrics)
    m = Metrics(3, 255, "cpu")
    logits = torch.randn(2, 3, 4, 4, requires_grad=True)
    m.update(logits.detach(), torch.zeros(2, 4, 4, dtype=torch.long))   # grad enabled, no pass open
    m.compute_iou()
    assert shim_mem.emitter.of_type("script_metric") == []
    assert shim_mem.emitter.of_type("eval") == []
