"""The shim on real tiny trainings: ``python -m segwatch.shim tests/shim_scripts/train_tiny.py``.

No socket: events land in ``RUN_DIR/events.shim.jsonl`` and are read back with
``segwatch.protocol.read_events``.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from segwatch.protocol import as_float, read_events

HERE = Path(__file__).parent
SCRIPTS = HERE / "shim_scripts"
TINY = SCRIPTS / "train_tiny.py"
ROOT = HERE.parent


def run_shim(tmp_path: Path, script: Path, *args: str, config: dict | None = None,
             env: dict | None = None, timeout: float = 120) -> tuple[subprocess.CompletedProcess, list[dict]]:
    run_dir = tmp_path / "run"
    e = dict(os.environ)
    for k in ("SEGWATCH_SOCKET", "SEGWATCH_CONFIG", "SEGWATCH_DEBUG", "SEGWATCH_FAULT_INJECT"):
        e.pop(k, None)
    e["SEGWATCH_RUN_DIR"] = str(run_dir)
    e["OMP_NUM_THREADS"] = "1"
    if config is not None:
        e["SEGWATCH_CONFIG"] = json.dumps(config)
    e.update(env or {})
    proc = subprocess.run([sys.executable, "-m", "segwatch.shim", str(script), *args], cwd=str(ROOT),
                          env=e, capture_output=True, text=True, timeout=timeout)
    path = run_dir / "events.shim.jsonl"
    events = list(read_events(path.open("rb"))) if path.exists() else []
    return proc, events


def cfg(C: int, ignore=255) -> dict:
    return {"dataset": {"num_classes": C, "ignore_index": ignore, "class_names": None},
            "sampling": {"overhead_budget": 0.01}}


def of(events, type_):
    return [e for e in events if e["type"] == type_]


@pytest.mark.slow
def test_hello_first_bye_last_and_steps(tmp_path):
    proc, ev = run_shim(tmp_path, TINY, "--steps", "12", config=cfg(5))
    assert proc.returncode == 0, proc.stderr
    assert ev[0]["type"] == "hello" and ev[-1]["type"] == "bye"
    assert ev[0]["pid"] > 0 and ev[0]["config"]["dataset"]["num_classes"] == 5
    bye = ev[-1]
    assert bye["step"] == 12 and bye["dropped"] == 0 and bye["disabled"] == []
    steps = of(ev, "step")
    assert steps, "no step events"
    assert max(e["step"] for e in steps) == 12
    last = max(steps, key=lambda e: e["step"])
    assert last["backward_total"] == 12 and last["optimizer_steps_total"] == 12
    # the first steps are sampled densely, with a gradient norm
    s1 = [e for e in steps if e["step"] == 1][0]
    assert s1["grad_norm"] is not None and s1["grad_norm"] > 0
    assert s1["with_grad"] > 0 and s1["lr"] == [0.1]
    m = of(ev, "model")
    assert len(m) == 1 and m[0]["cls"] == "Net" and m[0]["out_channels"] == 5 and m[0]["site"] == "root"
    preds = of(ev, "preds")
    assert preds and preds[0]["phase"] == "train" and len(preds[0]["hist"]) == 5
    assert preds[0]["gt_hist"] is not None and preds[0]["valid"] == 2 * 32 * 32
    batches = of(ev, "batch")
    assert batches[0]["phase"] == "train" and batches[0]["labels"]["hist"] is not None
    assert sum(batches[0]["labels"]["hist"]) == batches[0]["labels"]["total"]


@pytest.mark.slow
def test_exit_code_propagates(tmp_path):
    proc, ev = run_shim(tmp_path, TINY, "--steps", "2", "--exit", "3", config=cfg(5))
    assert proc.returncode == 3
    assert ev[-1]["type"] == "bye"


@pytest.mark.slow
def test_exception_propagates_with_script_traceback(tmp_path):
    proc, ev = run_shim(tmp_path, TINY, "--steps", "2", "--raise-at-end", config=cfg(5))
    assert proc.returncode == 1
    assert "ValueError: boom at the end" in proc.stderr
    assert "train_tiny.py" in proc.stderr and "runpy" not in proc.stderr
    assert ev[-1]["type"] == "bye" and "ValueError" in ev[-1]["reason"]


@pytest.mark.slow
def test_script_sees_argv_name_and_path(tmp_path):
    info = tmp_path / "info.json"
    proc, _ = run_shim(tmp_path, TINY, "--steps", "1", "--info-out", str(info))
    assert proc.returncode == 0, proc.stderr
    got = json.loads(info.read_text())
    assert got["name"] == "__main__"
    assert got["argv"] == [str(TINY), "--steps", "1", "--info-out", str(info)]
    assert got["path0"] == str(SCRIPTS)


@pytest.mark.slow
def test_label_value_equal_to_num_classes_is_out_of_range(tmp_path):
    proc, ev = run_shim(tmp_path, TINY, "--classes", "37", "--labels", "oor", "--steps", "4", config=cfg(37, ignore=255))
    assert proc.returncode == 0, proc.stderr
    labs = [e["labels"] for e in of(ev, "batch") if e["phase"] == "train"]
    assert labs and all(l["oor"].get("37", 0) > 0 for l in labs)
    assert all(l["max"] == 37 and l["oor_total"] == l["oor"]["37"] for l in labs)
    assert len(labs[0]["hist"]) == 37 and sum(labs[0]["hist"]) + labs[0]["oor_total"] == labs[0]["total"]


@pytest.mark.slow
def test_ignore_255_with_configured_minus_one(tmp_path):
    proc, ev = run_shim(tmp_path, TINY, "--classes", "37", "--labels", "ignore255", "--steps", "4", "--eval",
                        config=cfg(37, ignore=-1))
    assert proc.returncode == 0, proc.stderr
    lab = of(ev, "batch")[0]["labels"]
    assert lab["ignore_value"] == -1 and lab["ignore"] == 0
    assert lab["oor"] == {"255": 2 * 32 * 3}
    e = of(ev, "eval")[0]
    assert e["oor"] == 3 * 2 * 32 * 3 and e["ignore_index"] == -1


@pytest.mark.slow
def test_dformer_style_loss_in_model_preds_from_decode_head(tmp_path):
    proc, ev = run_shim(tmp_path, TINY, "--dict-batch", "--loss-in-model", "--steps", "6", "--eval", config=cfg(5))
    assert proc.returncode == 0, proc.stderr
    m = of(ev, "model")[0]
    assert m["site"] == "decode_head" and m["out_channels"] == 5
    train = [e for e in of(ev, "preds") if e["phase"] == "train"]
    assert len(train) >= 5
    assert all(e["shape"] == [2, 5, 16, 16] and e["site"] == "decode_head" for e in train)
    assert all(e["gt_hist"] is not None and e["valid"] == 2 * 16 * 16 for e in train)
    # dict batches: images and depth found by key, labels by key
    b = of(ev, "batch")[0]
    assert [i["key"] for i in b["inputs"]] == ["data", "modal_x"] and b["labels"]["key"] == "label"
    # at evaluation the root returns full-size logits: the matrix is counted at full size
    e = of(ev, "eval")[0]
    assert e["aborted"] is False and e["pixels"] == 3 * 2 * 32 * 32 and e["size_mismatch"] == 0


@pytest.mark.slow
def test_eval_matrix_equals_the_scripts_own(tmp_path):
    ref_path = tmp_path / "ref.json"
    proc, ev = run_shim(tmp_path, TINY, "--steps", "5", "--eval", "--ref-out", str(ref_path), config=cfg(5))
    assert proc.returncode == 0, proc.stderr
    ref = json.loads(ref_path.read_text())
    evals = of(ev, "eval")
    assert len(evals) == 1
    e = evals[0]
    assert e["matrix"] == ref
    assert e["batches"] == 3 and e["expected"] == 3 and e["aborted"] is False and e["exception"] is None
    assert e["num_classes"] == 5 and e["step"] == 5
    val_batches = [b for b in of(ev, "batch") if b["phase"] == "val"]
    assert len(val_batches) == 3                       # every evaluation batch is observed
    assert len([p for p in of(ev, "preds") if p["phase"] == "val"]) == 3


@pytest.mark.slow
def test_nan_loss_counted_and_reported_quickly(tmp_path):
    proc, ev = run_shim(tmp_path, TINY, "--steps", "40", "--nan-at", "30", config=cfg(5))
    assert proc.returncode == 0, proc.stderr
    steps = sorted(of(ev, "step"), key=lambda e: e["step"])
    nan_steps = [e for e in steps if as_float(e["loss"]) is not None and as_float(e["loss"]) != as_float(e["loss"])]
    assert nan_steps and nan_steps[0]["step"] == 30   # the first NaN step is reported as such
    assert ev[-1]["loss_nonfinite_total"] == 11
    # timely: an event with the NaN was emitted within 10 steps of its appearance
    first = next(i for i, e in enumerate(ev) if e["type"] == "step" and e.get("loss_nonfinite_total", 0) > 0)
    later = [e["step"] for e in ev[:first] if e["type"] == "step"]
    assert max(later, default=0) < 30 + 10


@pytest.mark.slow
def test_amp_gradscaler_skips_every_step(tmp_path):
    proc, ev = run_shim(tmp_path, TINY, "--steps", "12", "--amp-nan", config=cfg(5))
    assert proc.returncode == 0, proc.stderr
    last = max(of(ev, "step"), key=lambda e: e["step"])
    assert last["backward_total"] == 12 and last["optimizer_steps_total"] == 0
    assert ev[-1]["optimizer_steps_total"] == 0 and ev[-1]["backward_total"] == 12
    sampled = [e for e in of(ev, "step") if e.get("scale") is not None]
    assert sampled and sampled[0]["scale"] == 65536.0
    assert sampled[1]["scale"] < sampled[0]["scale"]   # the scaler backs off on every skipped step
    assert all(e["grad_nonfinite"] > 0 for e in sampled)


@pytest.mark.slow
def test_swallowed_eval_exception_reported_as_aborted(tmp_path):
    proc, ev = run_shim(tmp_path, TINY, "--steps", "3", "--eval", "--eval-raise", config=cfg(5))
    assert proc.returncode == 0, proc.stderr
    assert "evaluation failed" in proc.stderr           # the script logged and swallowed it
    e = of(ev, "eval")[0]
    assert e["aborted"] is True and e["batches"] == 2 and e["expected"] == 3
    assert e["exception"]["type"] == "IndexError"
    assert e["exception"]["where"].startswith("train_tiny.py:")
    assert "out of bounds" in e["exception"]["message"]


@pytest.mark.slow
def test_load_state_dict_module_prefix_loads_nothing(tmp_path):
    proc, ev = run_shim(tmp_path, TINY, "--steps", "1", "--lsd-prefix", config=cfg(5))
    assert proc.returncode == 0, proc.stderr
    assert "10 missing 11 unexpected" in proc.stdout    # return value unchanged
    sd = of(ev, "state_dict")[0]
    assert sd["loaded"] == 0 and sd["strict"] is False and sd["module"] == "Net"
    assert sd["unexpected"] == 11 and sd["total"] == 11 and sd["missing"] == 10
    assert sd["examples_missing"][0] == "stem.0.weight"


@pytest.mark.slow
def test_injected_probe_failure_training_continues(tmp_path):
    proc, ev = run_shim(tmp_path, TINY, "--steps", "8", "--eval", config=cfg(5),
                        env={"SEGWATCH_FAULT_INJECT": "preds"})
    assert proc.returncode == 0, proc.stderr
    probes = of(ev, "probe")
    assert [(p["name"], p["status"]) for p in probes] == [("preds", "disabled")]
    assert "fault injected" in probes[0]["error"]
    assert not of(ev, "preds")
    assert ev[-1]["type"] == "bye" and ev[-1]["disabled"] == ["preds"] and ev[-1]["step"] == 8
    assert of(ev, "eval")[0]["matrix"] is not None      # other probes keep working


@pytest.mark.slow
def test_head_with_more_channels_than_classes_is_found(tmp_path):
    proc, ev = run_shim(tmp_path, TINY, "--classes", "37", "--head", "40", "--steps", "3", "--eval",
                        config=cfg(37))
    assert proc.returncode == 0, proc.stderr
    m = of(ev, "model")[0]
    assert m["out_channels"] == 40 and m["num_classes"] == 37
    p = of(ev, "preds")[0]
    assert p["channels"] == 40 and len(p["hist"]) == 37


@pytest.mark.slow
def test_no_config_num_classes_from_logits(tmp_path):
    proc, ev = run_shim(tmp_path, TINY, "--steps", "3")
    assert proc.returncode == 0, proc.stderr
    assert of(ev, "model")[0]["num_classes"] == 5
    b = of(ev, "batch")[0]
    assert len(b["labels"]["hist"]) == 5               # deferred until the class count was known


@pytest.mark.slow
def test_socket_mode(tmp_path):
    import socket
    import threading

    path = str(tmp_path / "s.sock")
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(1)
    chunks: list[bytes] = []

    def serve():
        conn, _ = srv.accept()
        with conn:
            while True:
                data = conn.recv(65536)
                if not data:
                    break
                chunks.append(data)

    th = threading.Thread(target=serve, daemon=True)
    th.start()
    proc, file_events = run_shim(tmp_path, TINY, "--steps", "4", config=cfg(5), env={"SEGWATCH_SOCKET": path})
    th.join(10)
    srv.close()
    assert proc.returncode == 0, proc.stderr
    assert file_events == []                              # everything went over the socket
    ev = list(read_events(b"".join(chunks).splitlines(keepends=True)))
    assert ev[0]["type"] == "hello" and ev[-1]["type"] == "bye"
    assert any(e["type"] == "step" for e in ev)


@pytest.mark.slow
def test_unreachable_socket_falls_back_to_file(tmp_path):
    proc, ev = run_shim(tmp_path, TINY, "--steps", "2", config=cfg(5),
                        env={"SEGWATCH_SOCKET": str(tmp_path / "nobody.sock")})
    assert proc.returncode == 0, proc.stderr
    assert ev[0]["type"] == "hello" and ev[-1]["type"] == "bye"
