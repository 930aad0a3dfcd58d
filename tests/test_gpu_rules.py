"""GPU-side rules (issue 19) on synthetic event streams of the shim contract:
``step.cuda_mem``, ``step.data_wait`` / ``step.wall``, output lines naming CUDA OOM."""
from __future__ import annotations

import random

from segwatch.core.advice import advice_text
from segwatch.core.state import RunState

MIB = 1 << 20


def _hello(**extra):
    return {"v": 1, "type": "hello", "t": 1.0, "pid": 1, **extra}


def _step(step, t=None, **fields):
    return {"v": 1, "type": "step", "t": t if t is not None else 100.0 + step, "step": step,
            "loss": 1.0, **fields}


def _mem(alloc, reserved=None, peak=None):
    return {"allocated": int(alloc), "reserved": int(reserved or alloc * 1.2),
            "max_allocated": int(peak or alloc * 1.5)}


def _ids(state):
    return set(state.findings)


def _run(events):
    st = RunState()
    st.ingest_many(events)
    return st


def test_memory_growing_leak_is_found_with_causes():
    # a loss kept with its graph: + 40 MiB per step on top of 2 GiB of weights and states
    rng = random.Random(0)
    evs = [_hello()]
    for s in range(1, 41):
        evs.append(_step(s, cuda_mem=_mem(2048 * MIB + s * 40 * MIB + rng.randint(0, 2 * MIB))))
    st = _run(evs)
    f = st.findings.get("resource.memory_growing")
    assert f is not None and f.severity == "warning"
    assert f.evidence["allocated_to_mib"] > f.evidence["allocated_from_mib"] + 400
    assert "total += loss" in f.evidence["likely_causes"]
    assert "MiB" in advice_text(f.id, "en", f.evidence) and "显存" in advice_text(f.id, "zh", f.evidence)


def test_memory_steady_with_noise_and_first_step_jump_is_healthy():
    # step 1 has no optimizer state yet (Adam doubles memory at step 2); then flat with
    # allocator noise of +-30 MiB (variable crops) for 200 steps
    rng = random.Random(1)
    evs = [_hello(), _step(1, cuda_mem=_mem(1024 * MIB))]
    for s in range(2, 200):
        evs.append(_step(s, cuda_mem=_mem(2048 * MIB + rng.randint(-30, 30) * MIB)))
    assert "resource.memory_growing" not in _ids(_run(evs))


def test_memory_small_steady_creep_below_noise_is_healthy():
    # +1 MiB per step over 12 samples: 11 MiB, far below the 64 MiB floor
    evs = [_hello()] + [_step(s, cuda_mem=_mem(4096 * MIB + s * MIB)) for s in range(1, 30)]
    assert "resource.memory_growing" not in _ids(_run(evs))


def test_memory_growing_needs_rising_trend_not_one_jump():
    # one jump of 1 GiB (a bigger eval batch, a new stage) then flat: not a leak
    evs = [_hello()]
    for s in range(1, 60):
        evs.append(_step(s, cuda_mem=_mem((2048 if s < 30 else 3072) * MIB)))
    assert "resource.memory_growing" not in _ids(_run(evs))


def test_no_cuda_mem_raises_nothing():
    evs = [_hello()] + [_step(s, cuda_mem=None) for s in range(1, 50)]
    st = _run(evs)
    assert not {"resource.memory_growing", "perf.data_bound"} & _ids(st)
    assert st.cuda_allocated.total == 0 and st.data_wait_share is None


def _output(line, stream="stderr"):
    return {"v": 1, "type": "output", "t": 200.0, "stream": stream, "line": line}


def _batch(step, shape):
    return {"v": 1, "type": "batch", "t": 150.0, "step": step, "phase": "train",
            "inputs": [{"key": "rgb", "shape": shape, "dtype": "torch.float32", "mean": 0.0,
                        "std": 1.0, "min": -2.0, "max": 2.0, "nonfinite": 0}],
            "image_shape": shape[2:], "num_workers": 4, "pin_memory": True}


def test_cuda_oom_from_traceback_line_with_shapes_and_peak():
    evs = [_hello(), _batch(0, [16, 3, 512, 1024]), _step(5, cuda_mem=_mem(30000 * MIB, peak=78000 * MIB)),
           _batch(6, [16, 3, 512, 1024]),
           _output("Traceback (most recent call last):"),
           _output("torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; "
                   "79.35 GiB total capacity)")]
    st = _run(evs)
    f = st.findings.get("resource.cuda_oom")
    assert f is not None and f.severity == "error"
    assert f.first_step == 6
    assert f.evidence["batch_size"] == 16 and f.evidence["crop"] == [512, 1024]
    assert f.evidence["peak_allocated_mib"] == 78000.0
    assert "batch size" in advice_text(f.id, "en") and "AMP" in advice_text(f.id, "zh")


def test_cuda_oom_from_bye_reason_and_not_from_other_errors():
    st = _run([_hello(), {"v": 1, "type": "bye", "t": 3.0, "step": 12,
                          "reason": "exception: OutOfMemoryError: CUDA out of memory. Tried to allocate"}])
    assert st.findings["resource.cuda_oom"].first_step == 12
    st = _run([_hello(), _output("RuntimeError: CUDA error: device-side assert triggered"),
               _output("MemoryError"), {"v": 1, "type": "bye", "t": 3.0, "step": 12,
                                        "reason": "exception: RuntimeError: shape mismatch"}])
    assert "resource.cuda_oom" not in _ids(st)


def test_cuda_oom_message_is_the_error_not_the_traceback_source_line():
    # the traceback's source line names the class first; on a loaded machine it can reach the
    # supervisor before the bye reason (seen in CI): the message must still be the error's
    src = '        raise torch.cuda.OutOfMemoryError('
    msg = "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB"
    st = _run([_hello(), _output("Traceback (most recent call last):"), _output(src), _output(msg)])
    assert st.findings["resource.cuda_oom"].evidence["message"] == msg
    st = _run([_hello(), _output(src), {"v": 1, "type": "bye", "t": 3.0, "step": 12,
                                        "reason": "exception: " + msg}])
    assert "CUDA out of memory" in st.findings["resource.cuda_oom"].evidence["message"]
    st = _run([_hello(), _output("    except torch.cuda.OutOfMemoryError:"), _output(src)])
    assert "resource.cuda_oom" not in _ids(st)


def _waits(n, wait, wall, start=1, every=1):
    return [_step(start + i * every, data_wait=wait, wall=wall) for i in range(n)]


def test_data_bound_with_loader_facts():
    evs = [_hello(num_workers=0), _batch(0, [8, 3, 64, 64])] + _waits(40, wait=0.06, wall=0.1)
    st = _run(evs)
    f = st.findings.get("perf.data_bound")
    assert f is not None and f.severity == "warning"
    assert abs(f.evidence["data_wait_share"] - 0.6) < 1e-6
    assert f.evidence["num_workers"] == 4 and f.evidence["pin_memory"] is True   # the batch's facts
    assert abs(st.data_wait_share - 0.6) < 1e-6
    assert "num_workers" in advice_text(f.id, "en", f.evidence)


def test_data_bound_healthy_and_first_batch_startup_ignored():
    # the first batch waits 5 s for worker start-up; then 5 % of each step
    evs = [_hello()] + _waits(1, wait=5.0, wall=5.2) + _waits(60, wait=0.005, wall=0.1, start=2)
    assert "perf.data_bound" not in _ids(_run(evs))


def test_data_bound_needs_two_windows_and_real_wall_time():
    # one slow window (an epoch boundary re-spawning workers) is forgiven
    evs = [_hello()] + _waits(9, 0.01, 0.1) + _waits(8, 0.09, 0.1, start=10) + _waits(32, 0.01, 0.1, start=18)
    assert "perf.data_bound" not in _ids(_run(evs))
    # microsecond steps: timer noise, not a finding
    evs = [_hello()] + _waits(40, wait=0.0006, wall=0.001)
    assert "perf.data_bound" not in _ids(_run(evs))


def test_images_per_second_from_batch_and_step_rate():
    evs = [_hello(), _batch(0, [8, 3, 64, 64])] + [_step(s, t=float(s) / 4) for s in range(1, 20)]
    st = _run(evs)
    assert abs(st.images_per_sec - 32.0) < 1e-6   # 4 steps/s x 8 images


def test_evidence_reads_in_chinese():
    from segwatch.core.wording import evidence_label, evidence_value

    evs = [_hello()] + [_step(s, cuda_mem=_mem(2048 * MIB + s * 40 * MIB)) for s in range(1, 41)]
    f = _run(evs).findings["resource.memory_growing"]
    causes = evidence_value(f.evidence["likely_causes"], "zh")
    assert "total += loss" in causes and "计算图" in causes and "tensors" not in causes
    for key in f.evidence:
        assert evidence_label(key, "zh") != key or key in ("num_workers", "pin_memory")
