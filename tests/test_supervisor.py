"""The supervisor with real processes: a fake child that speaks the protocol (no shim)."""
from __future__ import annotations

import io
import json
import os
import signal
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

from segwatch.supervisor import RunClient, RunStore, Supervisor, socket_path_for
from segwatch.supervisor.store import MAX_SOCKET_PATH

from test_supervisor_fake import alive, meta_of, read_events, segwatch_cmd, wait_for, write_fake

REPORT_KEYS = {"schema", "script", "exit_code", "steps", "action", "findings", "checklist", "miou"}


def _sup(tmp_path, mode, *args, **kw):
    fake = write_fake(tmp_path)
    out, err = io.BytesIO(), io.BytesIO()
    kw.setdefault("interval", 0.3)
    sup = Supervisor(str(fake), [mode, *args], run_dir=tmp_path / "run", use_shim=False, out=out, err=err,
                     install_signals=False, **kw)
    return sup, out, err


@pytest.mark.slow
def test_normal_exit_run_dir_contents(tmp_path):
    sup, out, err = _sup(tmp_path, "normal", "3", report_path=str(tmp_path / "r" / "rep.json"))
    code = sup.run()
    assert code == 3
    run = tmp_path / "run"
    assert stat.S_IMODE(os.stat(run).st_mode) == 0o700
    for name in ("meta.json", "events.jsonl", "stdout.log", "stderr.log", "report.json"):
        assert stat.S_IMODE(os.stat(run / name).st_mode) == 0o600, name
    meta = meta_of(run)
    for key in ("supervisor_pid", "child_pid", "socket", "status", "started", "ended", "script", "argv"):
        assert key in meta, key
    assert meta["status"] == "failed" and meta["exit_code"] == 3
    assert os.path.isabs(meta["socket"]) and meta["socket"] == str(run.resolve() / "sock")
    assert not os.path.exists(meta["socket"])  # removed at the end
    # the child saw its socket with mode 0600
    assert "sockmode 600" in (run / "stdout.log").read_text()
    assert "a warning" in (run / "stderr.log").read_text()
    assert b"step 1 loss" in out.getvalue()           # echoed (headless)
    evs = read_events(run)
    types = [e["type"] for e in evs]
    assert types[0] == "status" and evs[-1]["type"] == "status" and evs[-1]["status"] == "failed"
    assert evs[-1]["exit_code"] == 3
    assert "hello" in types and types.count("step") == 5 and "bye" in types
    outs = [e for e in evs if e["type"] == "output"]
    assert any(e["stream"] == "stderr" and e["line"] == "a warning" for e in outs)
    sm = [e for e in evs if e["type"] == "script_metric"]
    assert sm and sm[0]["value"] == 12.5 and sm[0]["source"] == "output"
    rep = json.loads((run / "report.json").read_text())
    assert REPORT_KEYS <= set(rep)
    assert rep["schema"] == "segwatch.report/1" and rep["exit_code"] == 3 and rep["steps"] == 5
    assert rep["action"] is None
    assert json.loads((tmp_path / "r" / "rep.json").read_text()) == rep
    assert b"[segwatch]" in err.getvalue()


def test_exit_zero_is_finished(tmp_path):
    sup, _, _ = _sup(tmp_path, "normal", "0")
    assert sup.run() == 0
    assert meta_of(tmp_path / "run")["status"] == "finished"


@pytest.mark.slow
def test_death_by_signal_is_128_plus_n(tmp_path):
    sup, _, _ = _sup(tmp_path, "selfkill", str(int(signal.SIGKILL)))
    assert sup.run() == 128 + signal.SIGKILL
    rep = json.loads((tmp_path / "run" / "report.json").read_text())
    assert rep["exit_code"] == 137
    last = read_events(tmp_path / "run")[-1]
    assert last["status"] == "failed" and last["signal"] == signal.SIGKILL


@pytest.mark.slow
def test_policy_kill_on_collapse(tmp_path):
    sup, _, err = _sup(tmp_path, "collapse", "400", on_collapse="kill", kill_timeout=2.0)
    t0 = time.monotonic()
    code = sup.run()
    assert time.monotonic() - t0 < 40  # generous: the test machine is shared
    assert code == 128 + signal.SIGTERM
    rep = json.loads((tmp_path / "run" / "report.json").read_text())
    assert rep["action"]["kind"] == "kill" and rep["action"]["finding"] == "pred.collapse"
    assert 100 < rep["action"]["step"] < 400
    assert any(f["id"] == "pred.collapse" for f in rep["findings"])
    evs = read_events(tmp_path / "run")
    assert any(e["type"] == "finding" and e["id"] == "pred.collapse" for e in evs)
    acts = [e for e in evs if e["type"] == "action"]
    assert acts[0]["kind"] == "kill" and acts[0]["by"] == "policy"
    assert evs[-1]["status"] == "killed"
    assert b"ERROR pred.collapse" in err.getvalue()


@pytest.mark.slow
def test_policy_on_nonfinite(tmp_path):
    sup, _, err = _sup(tmp_path, "nan", on_nonfinite="kill", kill_timeout=2.0)
    assert sup.run() == 128 + signal.SIGTERM
    rep = json.loads((tmp_path / "run" / "report.json").read_text())
    assert rep["action"]["kind"] == "kill" and rep["action"]["finding"] == "loss.nonfinite"
    assert rep["action"]["step"] >= 20
    # warn (the default) only reports
    (tmp_path / "w").mkdir()
    sup, _, err = _sup(tmp_path / "w", "nan")
    assert sup.run() == 0
    rep = json.loads((tmp_path / "w" / "run" / "report.json").read_text())
    assert rep["action"] is None and any(f["id"] == "loss.nonfinite" for f in rep["findings"])
    assert b"ERROR loss.nonfinite" in err.getvalue()


@pytest.mark.slow
def test_pause_then_resume_via_control(tmp_path):
    sup, _, err = _sup(tmp_path, "collapse", "160", on_collapse="pause")
    th = threading.Thread(target=sup.run)
    th.start()
    run = tmp_path / "run"
    try:
        wait_for(lambda: meta_of(run).get("status") == "paused", timeout=20)
        child = psutil.Process(meta_of(run)["child_pid"])
        wait_for(lambda: child.status() == psutil.STATUS_STOPPED, timeout=5)
        n = len(read_events(run))
        time.sleep(0.4)
        assert not any(e["type"] == "step" for e in read_events(run)[n:])  # really stopped
        client = RunClient(run)
        ack = client.control("ping")
        assert ack["ok"] and ack["status"] == "paused"
        ack = client.control("resume")
        assert ack["ok"] is True and ack["cmd"] == "resume"
        wait_for(lambda: not alive(child.pid) or child.status() != psutil.STATUS_STOPPED, timeout=5)
    finally:
        th.join(timeout=30)
    assert sup.exit_code == 0
    rep = json.loads((run / "report.json").read_text())
    assert rep["action"]["kind"] == "pause" and rep["action"]["finding"] == "pred.collapse"
    kinds = [(e["kind"], e["by"]) for e in read_events(run) if e["type"] == "action"]
    assert kinds == [("pause", "policy"), ("resume", "user")]
    assert b"PAUSED" in err.getvalue()


@pytest.mark.slow
def test_control_kill_and_unknown(tmp_path):
    sup, _, _ = _sup(tmp_path, "slow", "30", kill_timeout=2.0)
    th = threading.Thread(target=sup.run)
    th.start()
    run = tmp_path / "run"
    try:
        wait_for(lambda: meta_of(run).get("status") == "running")
        client = RunClient(run)
        with pytest.raises(ValueError):
            client.control("explode")
        from segwatch.supervisor import send_control
        ack = send_control(meta_of(run)["socket"], "kill")
        assert ack["ok"]
    finally:
        th.join(timeout=20)
    assert sup.exit_code == 128 + signal.SIGTERM
    rep = json.loads((run / "report.json").read_text())
    assert rep["action"] == {"kind": "kill", "finding": None, "step": rep["action"]["step"], "by": "user"}
    assert meta_of(run)["status"] == "killed"


@pytest.mark.slow
def test_garbage_on_socket_is_counted_not_fatal(tmp_path):
    sup, _, _ = _sup(tmp_path, "garbage", "5000")
    assert sup.run() == 0
    rep = json.loads((tmp_path / "run" / "report.json").read_text())
    proto = rep["supervisor"]["protocol"]
    assert proto["invalid"] >= 5000 + 3 and proto["oversized"] >= 1
    evs = read_events(tmp_path / "run")
    assert [e["step"] for e in evs if e["type"] == "step"] == [1, 2, 3]


@pytest.mark.slow
def test_sigint_stops_tree_and_writes_report(tmp_path):
    fake = write_fake(tmp_path)
    run = tmp_path / "run"
    p = subprocess.Popen(segwatch_cmd("run", "--headless", "--no-shim", "--run-dir", str(run), str(fake), "workers"),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tmp_path)
    try:
        def workers():
            f = run / "stdout.log"
            if f.exists():
                for line in f.read_text().splitlines():
                    if line.startswith("workers "):
                        return [int(x) for x in line.split()[1:]]
        wpids = wait_for(workers, timeout=20)
        child = meta_of(run)["child_pid"]
        assert all(alive(w) for w in wpids) and alive(child)
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=20)
    finally:
        if p.poll() is None:
            p.kill()
    assert not alive(child) and not any(alive(w) for w in wpids)
    assert p.returncode == 128 + signal.SIGINT  # the script died of the forwarded SIGINT
    rep = json.loads((run / "report.json").read_text())
    assert rep["action"]["kind"] == "kill" and rep["action"]["by"] == "user"
    assert meta_of(run)["status"] == "killed"
    assert b"SIGINT" in err


@pytest.mark.slow
def test_sigterm_to_segwatch(tmp_path):
    fake = write_fake(tmp_path)
    run = tmp_path / "run"
    p = subprocess.Popen(segwatch_cmd("run", "--headless", "--no-shim", "--run-dir", str(run), str(fake), "slow", "30"),
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=tmp_path)
    try:
        wait_for(lambda: meta_of(run).get("status") == "running", timeout=20)
        child = meta_of(run)["child_pid"]
        p.send_signal(signal.SIGTERM)
        p.communicate(timeout=20)
    finally:
        if p.poll() is None:
            p.kill()
    assert not alive(child)
    assert p.returncode == 128 + signal.SIGTERM
    assert (run / "report.json").exists()


@pytest.mark.slow
def test_client_follow_equals_store_and_ends(tmp_path):
    sup, _, _ = _sup(tmp_path, "slow", "1.0")
    th = threading.Thread(target=sup.run)
    th.start()
    run = tmp_path / "run"
    wait_for(lambda: (run / "events.jsonl").exists())
    client = RunClient(run)
    got = list(client.events(follow=True))
    th.join(timeout=20)
    stored = list(RunStore(run, create=False).events())
    assert got == stored
    assert got[-1]["type"] == "status" and got[-1]["status"] == "finished"


@pytest.mark.slow
def test_relay_over_a_pipe(tmp_path):
    sup, _, _ = _sup(tmp_path, "slow", "2.0")
    th = threading.Thread(target=sup.run)
    th.start()
    run = tmp_path / "run"
    wait_for(lambda: meta_of(run).get("status") == "running")
    p = subprocess.Popen(segwatch_cmd("relay", str(run)), stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    p.stdin.write(b'{"v":1,"type":"control","t":1,"cmd":"ping"}\n')
    p.stdin.flush()
    out, _ = p.communicate(timeout=25)
    th.join(timeout=20)
    lines = [json.loads(x) for x in out.splitlines()]
    acks = [e for e in lines if e["type"] == "ack"]
    assert acks and acks[0]["ok"] and acks[0]["cmd"] == "ping"
    evs = [e for e in lines if e["type"] != "ack"]
    assert evs == list(RunStore(run, create=False).events())
    assert p.returncode == 0


@pytest.mark.slow
def test_lost_supervisor_is_reported(tmp_path):
    run = tmp_path / "run"
    store = RunStore(run)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    store.write_meta(supervisor_pid=dead.pid, status="running", socket=str(run / "sock"))
    from segwatch.protocol import make_event
    store.append(make_event("status", status="running"))
    evs = list(RunClient(run).events(follow=True))
    assert evs[-1]["type"] == "status" and evs[-1]["status"] == "lost"


@pytest.mark.slow
def test_long_run_dir_socket_fallback(tmp_path):
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    path = socket_path_for(deep)
    assert len(path.encode()) <= MAX_SOCKET_PATH
    assert not path.startswith(str(deep))
    parent = Path(path).parent
    assert stat.S_IMODE(os.stat(parent).st_mode) == 0o700
    assert socket_path_for(deep) == path  # stable
    sup, _, _ = _sup(tmp_path, "normal", "0")
    sup.store = RunStore(deep)
    sup.run_dir = str(sup.store.path)
    assert sup.run() == 0
    assert meta_of(deep)["socket"] == path


@pytest.mark.slow
def test_shim_fallback_file_is_merged(tmp_path):
    from segwatch.protocol import encode, make_event
    sup, _, _ = _sup(tmp_path, "normal", "0")
    fb = tmp_path / "run" / "events.shim.jsonl"
    fb.write_bytes(encode(make_event("step", step=99, loss=0.1, rank=0, world_size=1)))
    assert sup.run() == 0
    evs = read_events(tmp_path / "run")
    assert any(e["type"] == "step" and e["step"] == 99 for e in evs)
    assert not fb.exists() and (tmp_path / "run" / "events.shim.jsonl.merged").exists()
    assert evs[-1]["type"] == "status"


@pytest.mark.slow
def test_gpu_memory_from_nvidia_smi(tmp_path, monkeypatch):
    from segwatch.supervisor.process import GpuMemProbe

    fake = tmp_path / "nvidia-smi"
    fake.write_text(f"#!/bin/sh\necho '{os.getpid()}, 1024'\necho '1, 5'\n")
    fake.chmod(0o755)
    probe = GpuMemProbe(exe=str(fake))
    assert probe.poll_once()
    assert probe.total([os.getpid(), 999999]) == 1024 << 20
    assert probe.total([999999]) is None
    assert GpuMemProbe(exe=str(tmp_path / "absent")).poll_once() is False
    # in a run: the child's pid is reported by the stand-in, and proc events carry it
    script = tmp_path / "nvidia-smi-child"
    script.write_text(f"#!{sys.executable}\nimport psutil\n"
                      "for p in psutil.process_iter(['cmdline']):\n"
                      "    if any('fake_train.py' in a for a in p.info['cmdline'] or []):\n"
                      "        print(f'{p.pid}, 10')\n")
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    os.replace(script, fake)
    sup, _, _ = _sup(tmp_path, "slow", "3", proc_interval=0.5)
    assert sup.run() == 0
    mems = [e["gpu_mem"] for e in read_events(tmp_path / "run") if e["type"] == "proc"]
    assert (10 << 20) in mems


@pytest.mark.slow
def test_output_lines_tqdm_and_colours(tmp_path):
    script = tmp_path / "plain.py"
    script.write_text(
        "import sys, time\n"
        "for i in range(3):\n"
        "    sys.stderr.write(f'\\r{i}/3 [progress]'); sys.stderr.flush()\n"
        "sys.stderr.write('\\n')\n"
        "print('\\x1b[32mval mIoU: 33.3\\x1b[0m', flush=True)\n"
        "sys.stdout.write('no newline at the end')\n"
    )
    out, err = io.BytesIO(), io.BytesIO()
    sup = Supervisor(str(script), [], run_dir=tmp_path / "run", use_shim=False, out=out, err=err,
                     install_signals=False)
    assert sup.run() == 0
    evs = read_events(tmp_path / "run")
    lines = [(e["stream"], e["line"]) for e in evs if e["type"] == "output"]
    assert ("stderr", "2/3 [progress]") in lines and ("stderr", "0/3 [progress]") in lines
    assert ("stdout", "val mIoU: 33.3") in lines            # colours stripped in the event
    assert ("stdout", "no newline at the end") in lines
    assert [e["value"] for e in evs if e["type"] == "script_metric"] == [33.3]
    assert b"\x1b[32m" in out.getvalue()                     # ... but passed through unchanged
    assert (tmp_path / "run" / "stdout.log").read_bytes().endswith(b"no newline at the end")


@pytest.mark.slow
def test_ctrl_z_suspends_the_training_too(tmp_path):
    fake = write_fake(tmp_path)
    run = tmp_path / "run"
    # the training lives until the test says so: a fixed 3 s could end it before the SIGTSTP
    # is handled on a loaded machine (it did in CI), and then nothing is left to suspend
    done = tmp_path / "done"
    p = subprocess.Popen(segwatch_cmd("run", "--headless", "--no-shim", "--run-dir", str(run), str(fake), "until",
                                      str(done)),
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_for(lambda: meta_of(run).get("status") == "running", timeout=60)
        child = psutil.Process(meta_of(run)["child_pid"])
        p.send_signal(signal.SIGTSTP)
        wait_for(lambda: psutil.Process(p.pid).status() == psutil.STATUS_STOPPED, timeout=60)
        assert child.status() == psutil.STATUS_STOPPED and meta_of(run)["status"] == "paused"
        p.send_signal(signal.SIGCONT)
        done.touch()
        _, err = p.communicate(timeout=60)
    finally:
        done.touch()
        if p.poll() is None:
            p.kill()
    assert p.returncode == 0, err
    kinds = [(e["kind"], e["by"]) for e in read_events(run) if e["type"] == "action"]
    assert kinds == [("pause", "user"), ("resume", "user")]
    assert b"suspended with the training" in err


@pytest.mark.slow
def test_policy_messages_in_chinese(tmp_path):
    sup, _, err = _sup(tmp_path, "collapse", "400", on_collapse="kill", kill_timeout=2.0, lang="zh")
    assert sup.run() == 128 + signal.SIGTERM
    text = err.getvalue().decode()
    assert "[segwatch] 错误 pred.collapse @ 第 " in text
    assert "[segwatch] 正在终止训练，由策略发起（pred.collapse，第 " in text
    assert "已终止：退出码 143" in text and "KILLING" not in text


def test_a_reused_supervisor_pid_is_still_lost(tmp_path):
    import psutil as _ps

    from segwatch.supervisor.store import effective_status

    me = _ps.Process()
    meta = {"status": "running", "supervisor_pid": me.pid, "started": me.create_time() + 5}
    assert effective_status(meta) == "running"          # our process existed when the run started
    meta["started"] = me.create_time() - 100            # a process born after the run started: not its supervisor
    assert effective_status(meta) == "lost"
