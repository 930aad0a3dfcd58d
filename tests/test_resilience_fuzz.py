"""10,000 bad lines on the sockets of a real run: the supervisor stays up, counts every kind
exactly (report.supervisor.protocol), and the run's state equals that of the same seeded
run without them."""
from __future__ import annotations

import json
import random
import socket
import subprocess
import threading
import time

import pytest

pytest.importorskip("torch")

from segwatch.protocol import LineDecoder, encode, make_event  # noqa: E402
from segwatch.supervisor import send_control  # noqa: E402

from test_resilience import CFG, TRAIN  # noqa: E402
from test_supervisor_fake import meta_of, read_events, segwatch_cmd, wait_for  # noqa: E402

pytestmark = pytest.mark.slow

def _start(tmp_path, name, go):
    script = tmp_path / "train_tiny.py"
    script.write_text(TRAIN)
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(CFG)
    run = tmp_path / name
    p = subprocess.Popen(segwatch_cmd("run", "--headless", "--debug", "--listen", "127.0.0.1:0", "--config", str(cfg),
                                      "--run-dir", str(run), str(script), "--",
                                      "--steps", "40", "--sleep", "0.02", "--hold-at", "10", "--go", str(go)),
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    return p, run


def _finish(p):
    try:
        _, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
    return p.returncode, err


def _fuzz_lines(rng: random.Random) -> dict[str, list[bytes]]:
    """The bad lines, by kind; each ends with a newline (the last cut line is sent without)."""
    valid = [encode(make_event("step", step=i, loss=1.5, grad_norm=0.3, lr=[0.05], rank=0, world_size=1,
                               layer_norms=[["conv", 1.0]])) for i in range(1, 50)]
    kinds: dict[str, list[bytes]] = {}
    kinds["garbled"] = [b'{"v":1,"type":"step","t":1,"step":%d,' % i + bytes(rng.choice(b"{}[]:,\"'abc123 ")
                                                                            for _ in range(rng.randint(1, 60))) + b"\n"
                        for i in range(2000)]
    cut = []
    for i in range(2000):
        line = valid[i % len(valid)]
        cut.append(line[: rng.randint(1, len(line) - 2)] + b"\n")
    cut[-1] = cut[-1][:-1]                                  # the very last one: cut by the connection's end
    kinds["truncated"] = cut
    junk = bytes(b for b in range(256) if b not in (10, 13, 32, 9, 11, 12))
    kinds["binary"] = [b"\xff" + bytes(rng.choice(junk) for _ in range(rng.randint(1, 300))) + b"\n"
                       for _ in range(2000)]
    kinds["oversized"] = [b'{"v":1,"type":"step","t":1,"step":1,"pad":"' + b"x" * (3 << 19) + b'"}\n'
                          for _ in range(5)]
    wrong = [b'{"v":"1","type":"step","t":1,"step":1}', b'{"v":1,"type":"step","t":"now","step":1}',
             b'{"v":1,"type":"step","t":1,"step":"3"}', b'{"v":1,"type":"hello","t":1,"pid":"x"}',
             b'{"v":1,"type":"batch","t":1,"step":1,"phase":7}', b"[1,2,3]", b'{"v":1,"type":7,"t":1}',
             b'{"v":99,"type":"step","t":1,"step":1}', b'{"v":1,"type":"step","t":1,"step":true}',
             b'{"v":1,"type":"eval","t":1}', b"null", b'"step"', b"123"]
    kinds["wrong_types"] = [wrong[i % len(wrong)] + b"\n" for i in range(1500)]
    kinds["unknown_types"] = [encode({"v": 1, "type": f"nosuch_{i % 7}", "t": 1.0, "step": i}) for i in range(1000)]
    # valid training events from a process that is not the training: would raise loss.nonfinite,
    # grad.exploding and pred.collapse if they were believed
    spoof = []
    for i in range(500):
        if i % 2:
            spoof.append(encode(make_event("step", step=1000 + i, loss="nan", grad_norm=1e9, rank=0, world_size=1)))
        else:
            spoof.append(encode(make_event("preds", step=1000 + i, phase="train", shape=[4, 4, 16, 16], channels=4,
                                           hist=[1024, 0, 0, 0], gt_hist=[256, 256, 256, 256], unique=1,
                                           rank=0, world_size=1)))
    kinds["spoofed_unix"], kinds["spoofed_tcp"] = spoof[:400], spoof[400:]
    kinds["supervisor_types"] = [encode(make_event(t, **f)) for t, f in (
        ("status", {"status": "killed", "exit_code": 9}), ("action", {"kind": "kill", "by": "policy"}),
        ("output", {"stream": "stdout", "line": "mIoU: 99.9"}), ("finding", {"id": "pred.collapse", "severity": "error"}),
    ) for _ in range(75)]
    return kinds


def _send_unix(path: str, lines: list[bytes], rng: random.Random) -> None:
    data = b"".join(lines)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect(path)
        i = 0
        while i < len(data):     # odd piece sizes: lines cut across sends
            n = rng.randint(1, 200000)
            s.sendall(data[i:i + n])
            i += n


def test_ten_thousand_bad_lines_change_nothing(tmp_path):
    rng = random.Random(1234)
    kinds = _fuzz_lines(rng)
    tcp_controls = [encode(make_event("control", cmd=("pause", "kill", "resume", "subscribe")[i % 4]))
                    for i in range(400)]
    tcp_controls += [encode(make_event("control", cmd=("kill", "pause")[i % 2], token=f"guess-{i}"))
                     for i in range(295)]
    sent = sum(len(v) for v in kinds.values()) + len(tcp_controls)
    assert sent == 10_000

    # the reference: the same seeded run, no fuzz
    go = tmp_path / "go"
    go.touch()
    p, clean_run = _start(tmp_path, "clean", go)
    code, err = _finish(p)
    assert code == 0, err[-3000:]
    clean = json.loads((clean_run / "report.json").read_text())

    go.unlink()
    p, run = _start(tmp_path, "fuzzed", go)   # the training holds at step 10 until the fuzz is over
    acks: list[dict] = []
    try:
        wait_for(lambda: meta_of(run).get("tcp") and any(e["type"] == "step" and e["step"] >= 10
                                                         for e in read_events(run)), timeout=30)
        meta = meta_of(run)
        child = meta["child_pid"]
        unix_parts = [kinds["garbled"] + kinds["binary"][:1000], kinds["binary"][1000:] + kinds["wrong_types"],
                      kinds["oversized"] + kinds["unknown_types"] + kinds["spoofed_unix"] + kinds["supervisor_types"],
                      kinds["truncated"]]   # ends with a cut line

        def tcp_sender():
            host, port = meta["tcp"].rsplit(":", 1)
            with socket.create_connection((host, int(port))) as s:
                s.sendall(b"".join(kinds["spoofed_tcp"]) + b"".join(tcp_controls))
                dec = LineDecoder()
                s.settimeout(20)
                while len(acks) < len(tcp_controls):
                    data = s.recv(65536)
                    if not data:
                        break
                    acks.extend(e for e in dec.feed(data) if e["type"] == "ack")

        threads = [threading.Thread(target=_send_unix, args=(meta["socket"], part, random.Random(i)))
                   for i, part in enumerate(unix_parts)] + [threading.Thread(target=tcp_sender)]
        t0 = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=30)
        fuzz_s = time.monotonic() - t0
        # the supervisor is up and answers; the training was never paused or stopped
        ack = send_control(meta["socket"], "ping")
        assert ack["ok"] and ack["status"] == "running", (ack, fuzz_s)
        assert meta_of(run)["status"] == "running"
        go.touch()
        code, err = _finish(p)
    finally:
        if p.poll() is None:
            p.kill()
    assert code == 0, err[-3000:]
    assert len(acks) == len(tcp_controls) and not any(a["ok"] for a in acks)
    assert {a["error"] for a in acks} == {"bad or missing token"}
    rep = json.loads((run / "report.json").read_text())
    proto = rep["supervisor"]["protocol"]
    counted = {k: proto[k] for k in ("invalid", "oversized", "foreign", "rejected_types", "unauthorized")}
    assert counted == {
        "invalid": sum(len(kinds[k]) for k in ("garbled", "truncated", "binary", "oversized", "wrong_types",
                                               "unknown_types")),   # 8505
        "oversized": 5,
        "foreign": 500,
        "rejected_types": 300,
        "unauthorized": 695,
    }
    assert sum(counted.values()) - counted["oversized"] == sent
    assert clean["supervisor"]["protocol"]["invalid"] == 0
    # the run itself is unharmed: same as the clean one
    assert rep["status"] == "finished" and rep["exit_code"] == 0 and rep["action"] is None and not rep["actions"]
    for key in ("steps", "miou", "checklist"):
        assert rep[key] == clean[key], key
    assert [(f["id"], f["first_step"]) for f in rep["findings"]] == [(f["id"], f["first_step"]) for f in clean["findings"]]
    ids = {f["id"] for f in rep["findings"]}
    assert not ids & {"loss.nonfinite", "grad.exploding", "pred.collapse"}
    evs = read_events(run)
    assert max(e["step"] for e in evs if e["type"] == "step") == 40
    assert not any(e["type"] == "output" and "99.9" in e["line"] for e in evs)
    assert [e["status"] for e in evs if e["type"] == "status"] == ["starting", "running", "finished"]
