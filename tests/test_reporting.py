"""segwatch.reporting: the Markdown report (report.md + SVG charts) and the help-request bundle.

Checked on the recorded SUNRGBD fixture (collapsed run, paused by policy) and on a real tiny
run made through the CLI (``python -m segwatch run --headless``): 130 iterations, a
checkpoint passed in argv and loaded with ``load_state_dict``, two evaluations.
"""
from __future__ import annotations

import ast
import hashlib
import json
import math
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tarfile
import textwrap
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from segwatch.reporting import make_bundle, render_markdown
from segwatch.reporting import charts
from segwatch.reporting.bundle import FALLBACK_LINES, cut_outputs, truncate_log

ROOT = pathlib.Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests" / "data" / "recorded_run"
FAULTS = ROOT / "tests" / "faults"
SVG_NS = "{http://www.w3.org/2000/svg}"

EN_HEADINGS = [
    "## Run", "## Policy action", "## mIoU: printed by the script vs measured by segwatch", "## Findings",
    "## Checklist", "## Curves", "## Confusion matrix (last evaluation)", "## Per-class IoU (last evaluation)",
    "## Pretrained weights",
]
ZH_HEADINGS = ["## 运行概况", "## 策略动作", "## mIoU：脚本打印值 vs segwatch 测量值", "## 诊断发现",
               "## 检查清单", "## 训练曲线", "## 混淆矩阵（最后一次评估）", "## 各类别 IoU（最后一次评估）",
               "## 预训练权重"]


# ---------------------------------------------------------------------- helpers
def _copy_fixture(tmp_path: pathlib.Path) -> pathlib.Path:
    dst = tmp_path / "recorded_run"
    shutil.copytree(FIXTURE, dst)
    return dst


def _svg_root(path: pathlib.Path) -> ET.Element:
    root = ET.parse(path).getroot()
    assert root.tag == f"{SVG_NS}svg", f"{path.name}: root is {root.tag}"
    for attr in ("width", "height", "viewBox"):
        assert root.get(attr), f"{path.name}: no {attr}"
    w, h = float(root.get("width")), float(root.get("height"))
    assert root.get("viewBox").split() == ["0", "0", f"{w:g}", f"{h:g}"]
    return root


def _count(root: ET.Element, tag: str) -> int:
    return len(root.findall(f".//{SVG_NS}{tag}"))


def _images(md_text: str) -> list[str]:
    return re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md_text)


def _check_images(md_path: pathlib.Path) -> dict[str, ET.Element]:
    text = md_path.read_text(encoding="utf-8")
    roots = {}
    for ref in _images(text):
        p = md_path.parent / ref
        assert p.is_file(), f"report.md references {ref}, which does not exist"
        roots[ref] = _svg_root(p)
    return roots


def _headings(text: str) -> list[str]:
    return [l for l in text.splitlines() if l.startswith("## ")]


def _section(text: str, heading: str) -> str:
    start = text.index(heading)
    nxt = text.find("\n## ", start + len(heading))
    return text[start: nxt if nxt >= 0 else len(text)]


def _open_bundle(path: pathlib.Path) -> tuple[str, dict[str, bytes]]:
    with tarfile.open(path, "r:gz") as tar:
        members = tar.getmembers()
        assert members and all(m.isfile() for m in members)
        tops = {m.name.split("/", 1)[0] for m in members}
        assert len(tops) == 1, tops
        top = tops.pop()
        files = {m.name.split("/", 1)[1]: tar.extractfile(m).read() for m in members}
    return top, files


def _check_manifest(files: dict[str, bytes]) -> dict:
    manifest = json.loads(files["MANIFEST.json"])
    assert manifest["schema"] == "segwatch.bundle/1"
    listed = {f["path"]: f for f in manifest["files"]}
    assert set(listed) == set(files) - {"MANIFEST.json"}
    for path, entry in listed.items():
        assert entry["size"] == len(files[path]), path
        assert entry["sha256"] == hashlib.sha256(files[path]).hexdigest(), path
    return manifest


def _check_report_json(data: bytes) -> dict:
    rep = json.loads(data)
    assert rep["schema"] == "segwatch.report/1"
    for key in ("script", "exit_code", "steps", "action", "findings", "checklist", "miou"):
        assert key in rep, key
    assert len(rep["checklist"]) == 9
    for f in rep["findings"]:
        assert {"id", "severity", "first_step", "phase", "evidence", "advice"} <= set(f)
        assert f["severity"] in ("error", "warning", "info")
    for c in rep["checklist"]:
        assert c["state"] in ("ok", "warn", "fail", "pending")
    return rep


# ---------------------------------------------------------------------- the recorded fixture
def test_markdown_of_recorded_fixture(tmp_path):
    out = tmp_path / "md"
    md = render_markdown(FIXTURE, out)
    assert md == out / "report.md"
    text = md.read_text(encoding="utf-8")
    assert text.startswith("# segwatch report: `train.py`")
    heads = _headings(text)
    for h in EN_HEADINGS:
        assert any(x.startswith(h) for x in heads), f"missing {h!r} in {heads}"
    assert "## Findings (4)" in heads
    # run facts
    facts = _section(text, "## Run")
    for word in ("`train.py`", "`--lr 8e-5`", "finished", "| exit code | 0 |", "| 120", "cpu", "2.13.0",
                 "0.64 %", "21.2 s", "37 / -1 (inferred 255)"):
        assert word in facts, word
    # findings: every id, with severity, first step, an evidence table and the advice
    findings = _section(text, "## Findings")
    for fid in ("pred.collapse", "metric.single_class_signature", "label.ignore_mismatch", "metric.miou_stuck"):
        assert f"`{fid}`" in findings
    assert "### ERROR `pred.collapse` — Predictions collapsed to one class" in findings
    assert "| evidence | value |" in findings and "| `data_value` | 255 |" in findings
    assert findings.count("> **advice:**") == 4
    # errors before warnings
    assert findings.index("metric.miou_stuck") > findings.index("pred.collapse")
    # checklist: 9 rows with state and evidence
    checklist = _section(text, "## Checklist")
    rows = [l for l in checklist.splitlines() if re.match(r"\| \d \|", l)]
    assert len(rows) == 9
    assert "ignore_label" in rows[1] and "fail" in rows[1] and "data uses 255" in rows[1]
    # the policy action
    action = _section(text, "## Policy action")
    assert "pause `pred.collapse` @ step 42 (by policy)" in action
    assert "| resume |" in action
    # the script's mIoU next to segwatch's, both conventions
    miou = _section(text, "## mIoU")
    assert miou.count("| 0.75 % | 0.75 % | 0.75 % |") == 3
    assert "matches" in miou
    # per-class IoU and the collapse signature p_c / C
    per_class = _section(text, "## Per-class IoU")
    assert "| # | class | GT px | Pred px | Correct px | IoU % |" in per_class
    assert "| 0 | wall | 275905 | 1000000 | 275905 | 27.59 |" in per_class
    assert "| 36 | bag |" in per_class
    assert "mIoU (guide: NaN→0, mean over all 37 classes): **0.75 %**" in per_class
    assert "mmseg: nanmean" in per_class
    assert "Collapse signature" in per_class and "p_c / C = 27.59% / 37 = **0.746%**" in per_class
    # top-k classes in the heatmap, said so
    conf = _section(text, "## Confusion matrix")
    assert "Only the 20 of 37 classes" in conf
    # pretrained weights
    assert "| 0 | DFormer | 408 / 412 | 4 | 0 | False | `decode_head.conv_seg.weight`" in _section(text, "## Pretrained weights")

    roots = _check_images(md)
    assert set(roots) == {"loss.svg", "grad_norm.svg", "miou.svg", "confusion.svg"}
    for name in ("loss.svg", "grad_norm.svg", "miou.svg"):
        assert _count(roots[name], "polyline") >= 1, name
        assert _count(roots[name], "rect") >= 1, name
        assert _count(roots[name], "text") >= 5, name          # ticks and labels
    # 20 drawn classes: 20 x 21 cells (with the "(other)" column) + outlines
    assert _count(roots["confusion.svg"], "rect") >= 20 * 21
    labels = [t.text for t in roots["confusion.svg"].iter(f"{SVG_NS}text")]
    assert "0 wall" in labels and "(other)" in labels
    # grad norm is on a log axis: tick labels are powers of ten
    ticks = [t.text for t in roots["grad_norm.svg"].iter(f"{SVG_NS}text")]
    assert "1" in ticks and "0.001" in ticks and "1e-4" in ticks


def test_markdown_chinese_default_out_dir(tmp_path):
    run = _copy_fixture(tmp_path)
    md = render_markdown(run, lang="zh")
    assert md == run / "report" / "report.md"
    text = md.read_text(encoding="utf-8")
    assert text.startswith("# segwatch 运行报告")
    heads = _headings(text)
    for h in ZH_HEADINGS:
        assert any(x.startswith(h) for x in heads), f"missing {h!r} in {heads}"
    assert not any(x.startswith(h) for h in EN_HEADINGS for x in heads)
    # findings and checklist come translated from core
    assert "错误 `pred.collapse`" in text
    assert "预测类别多样" in text
    assert "单类塌缩特征" in text
    _check_images(md)
    assert "混淆矩阵" in (run / "report" / "confusion.svg").read_text(encoding="utf-8")


def test_render_markdown_rejects_unknown_language(tmp_path):
    with pytest.raises(ValueError):
        render_markdown(FIXTURE, tmp_path, lang="fr")


def test_bundle_of_recorded_fixture(tmp_path):
    run = _copy_fixture(tmp_path)
    path = make_bundle(run)
    assert path == run / "segwatch-bundle-recorded_run.tar.gz"
    top, files = _open_bundle(path)
    assert top == "segwatch-bundle-recorded_run"
    manifest = _check_manifest(files)
    for name in ("README.md", "logs/stdout.log", "logs/stderr.log", "diagnostics/report.json",
                 "diagnostics/report.md", "diagnostics/confusion.svg", "diagnostics/run.json", "weights.json"):
        assert name in files, name
    # no raw logs in the fixture: the lines come from the output events, cut at step 100
    log = files["logs/stdout.log"].decode()
    iters = [int(e) * 60 + int(i) for e, i in re.findall(r"Epoch (\d+) iter (\d+)/60", log)]
    assert iters and max(iters) <= 100 and max(iters) >= 90
    assert "Eval 2" not in log
    assert manifest["log_cut"]["method"].startswith("step_counter")
    readme = files["README.md"].decode()
    assert "How the log was cut" in readme and "step_counter" in readme
    rep = _check_report_json(files["diagnostics/report.json"])
    assert rep["action"] == {"kind": "pause", "finding": "pred.collapse", "step": 42, "by": "policy"}
    assert {f["id"] for f in rep["findings"]} >= {"pred.collapse", "label.ignore_mismatch"}
    # no config file on disk: the resolved config from the hello event
    assert json.loads(files["config/segwatch-config.json"])["dataset"]["num_classes"] == 37
    weights = json.loads(files["weights.json"])
    assert weights["load_state_dict"][0]["module"] == "DFormer"
    assert weights["load_state_dict"][0]["loaded"] == 408 and weights["load_state_dict"][0]["total"] == 412
    assert weights["checkpoints"] == []
    # meta.json (socket, pids, tokens) is not copied
    assert "meta.json" not in files
    assert oct(path.stat().st_mode & 0o777) == oct(0o600)
    # the run dir itself is left as it was (report.md goes to a temporary folder)
    assert not (run / "report").exists()


# ---------------------------------------------------------------------- charts
def test_line_chart_marks_nonfinite_and_log_axis():
    xs = list(range(1, 11))
    ys = [1.0, 0.5, float("nan"), 0.2, float("inf"), 0.1, 0.05, None, 0.02, 0.01]
    svg = charts.line_chart([("loss", xs, ys)], title="t", ylabel="loss", log_y=True)
    root = ET.fromstring(svg)
    assert root.tag == f"{SVG_NS}svg" and root.get("viewBox")
    # three non-finite points: crosses, and the line broken around them
    assert len([g for g in root.iter(f"{SVG_NS}g") if g.get("class") == "nonfinite"]) == 3
    assert _count(root, "polyline") == 3   # [1, .5], [.2], [.1, .05], [.02, .01] -> 3 lines + 1 dot
    texts = [t.text for t in root.iter(f"{SVG_NS}text")]
    assert "loss (3 non-finite)" in texts
    assert "0.01" in texts and "1" in texts
    assert "loss (log)" in texts
    # a negative value is non-finite on a log axis too; on a linear axis it is plotted
    lin = ET.fromstring(charts.line_chart([("g", [1, 2, 3], [1.0, -1.0, 2.0])]))
    assert not [g for g in lin.iter(f"{SVG_NS}g") if g.get("class") == "nonfinite"]
    # nothing to draw is still a valid SVG
    empty = ET.fromstring(charts.line_chart([("x", [], [])], empty_label="no data"))
    assert "no data" in [t.text for t in empty.iter(f"{SVG_NS}text")]


def test_nice_ticks():
    assert charts.nice_ticks(0, 100, 5) == [0, 20, 40, 60, 80, 100]
    assert charts.nice_ticks(0.0, 1.0, 5) == [0, 0.2, 0.4, 0.6, 0.8, 1.0]
    t = charts.nice_ticks(3, 3)
    assert t and min(t) <= 3 <= max(t)


def test_heatmap_top_k_and_row_normalisation():
    C = 40
    m = np.zeros((C, C), dtype=np.int64)
    m[np.arange(C), np.arange(C)] = np.arange(C) + 1    # class 39 has the most pixels
    m[5, 39] = 1000                                      # class 5 mostly predicted as 39
    cls = charts.top_classes(m, 10)
    assert len(cls) == 10 and 39 in cls and 5 in cls and cls == sorted(cls)
    names = [f"c{i}" for i in range(C)]
    root = ET.fromstring(charts.heatmap(m, names, title="cm", classes=cls))
    _ = root.get("viewBox")
    cells = [r for r in root.iter(f"{SVG_NS}rect") if r.find(f"{SVG_NS}title") is not None]
    assert len(cells) == 10 * 11
    tips = [r.find(f"{SVG_NS}title").text for r in cells]
    assert any(t.startswith("GT 5 c5 -> pred 39 c39: 1000 px (99.4% of row)") for t in tips)
    texts = [t.text for t in root.iter(f"{SVG_NS}text")]
    assert "(other)" in texts and "39 c39" in texts
    # a small matrix: every class drawn, no "(other)" column
    small = ET.fromstring(charts.heatmap(np.eye(3, dtype=np.int64) * 5, ["a", "b", "c"]))
    assert "(other)" not in [t.text for t in small.iter(f"{SVG_NS}text")]


# ---------------------------------------------------------------------- log cut
def test_cut_outputs_rules():
    # step counter: cut before the first line seen after step 100
    outs = [("stdout", f"loss {i}", i) for i in range(0, 120, 5)]
    n, info = cut_outputs(outs)
    assert all(s <= 100 for _, _, s in outs[:n]) and outs[n][2] > 100
    assert info["method"] == "step_counter"
    # a lagging counter (step events trail the output): the printed iteration decides
    lag = [("stdout", f"iter {i}/500 loss 1.0", max(0, i - 9)) for i in range(1, 131)]
    n, info = cut_outputs(lag)
    assert lag[n - 1][1].startswith("iter 100/") and info["method"] == "step_counter+printed_iteration"
    # a resumed run prints iteration 5001...: not trusted, the counter decides
    resumed = [("stdout", f"Iter [{5000 + i}/9000]", i) for i in range(1, 131)]
    n, info = cut_outputs(resumed)
    assert n == 100 and info["method"] == "step_counter"
    # no step counter: the first lines
    n, info = cut_outputs([("stdout", "x", 0)] * (FALLBACK_LINES + 50))
    assert n == FALLBACK_LINES and info["method"] == "first_lines"
    assert cut_outputs([]) == (0, {"method": "none", "detail": "no output events"})


def test_truncate_log_splits_like_the_supervisor():
    data = b"a\n\nb\r\x1b[0m\nprogress 1\rprogress 2\rc\npartial"
    # non-blank lines: a, b, progress 1, progress 2, c, partial (the escape-only line is blank)
    assert truncate_log(data, 2, False) == b"a\n\nb\r"
    assert truncate_log(data, 4, False) == b"a\n\nb\r\x1b[0m\nprogress 1\rprogress 2\r"
    assert truncate_log(data, 6, False) == data
    assert truncate_log(data, 99, False) == data
    assert truncate_log(data, 0, False) == b""
    assert truncate_log(data, 1, True) == data


# ---------------------------------------------------------------------- layers
def test_reporting_imports_no_torch_textual_or_plotting():
    bad = []
    for f in sorted((ROOT / "segwatch" / "reporting").rglob("*.py")):
        tree = ast.parse(f.read_text())
        for node in ast.walk(tree):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module] if isinstance(node, ast.ImportFrom) and node.module and node.level == 0
                     else [])
            for n in names:
                if n.split(".")[0] in ("torch", "textual", "matplotlib", "PIL"):
                    bad.append(f"{f.name}:{node.lineno} {n}")
    assert not bad, bad
    code = ("import sys; sys.modules['torch'] = None; sys.modules['textual'] = None\n"
            "from segwatch.reporting import render_markdown, make_bundle\n"
            f"render_markdown({str(FIXTURE)!r}, sys.argv[1])\n")
    out = pathlib.Path(os.environ.get("TMPDIR", "/tmp"))
    r = subprocess.run([sys.executable, "-c", code, str(out / f"seg-rep-{os.getpid()}")],
                       capture_output=True, text=True, timeout=120, cwd=ROOT)
    shutil.rmtree(out / f"seg-rep-{os.getpid()}", ignore_errors=True)
    assert r.returncode == 0, r.stderr


# ---------------------------------------------------------------------- a real run
TRAIN = textwrap.dedent('''
    """Tiny training for tests/test_reporting.py: loads a checkpoint, 130 iterations."""
    import argparse, sys
    sys.path.insert(0, {faults!r})
    import torch
    import torch.nn as nn
    from _synth import TinySegNet, evaluate, loaders, seed_all

    p = argparse.ArgumentParser()
    p.add_argument("--weights")
    p.add_argument("--iters", type=int, default=130)
    args = p.parse_args()
    seed_all(0)
    train_loader, val_loader = loaders(13)
    model = TinySegNet(4, 13)
    state = torch.load(args.weights, map_location="cpu")
    res = model.load_state_dict(state, strict=False)
    print(f"loaded {{args.weights}}: missing {{len(res.missing_keys)}} unexpected {{len(res.unexpected_keys)}}", flush=True)
    criterion = nn.CrossEntropyLoss(ignore_index=-1)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    it = 0
    while it < args.iters:
        model.train()
        for rgb, depth, label in train_loader:
            it += 1
            loss = criterion(model(torch.cat([rgb, depth], 1)), label)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            print(f"iter {{it}}/{{args.iters}} loss {{loss.item():.4f}}", flush=True)
            if it % 65 == 0:
                print(f"eval at {{it}}: mIoU: {{evaluate(model, val_loader, 13):.2f}}", flush=True)
            if it >= args.iters:
                break
    print("done", flush=True)
''')


@pytest.fixture(scope="module")
def real_run(tmp_path_factory):
    torch = pytest.importorskip("torch")
    sys.path.insert(0, str(FAULTS))
    try:
        from _synth import TinySegNet
    finally:
        sys.path.remove(str(FAULTS))
    base = tmp_path_factory.mktemp("realrun")
    torch.manual_seed(1)
    state = TinySegNet(4, 13).state_dict()
    state["extra.padding"] = torch.randn(300_000)        # ~1.2 MB: far larger than any report
    ckpt = base / "pretrained.pth"
    torch.save(state, ckpt)
    script = base / "train_tiny.py"
    script.write_text(TRAIN.format(faults=str(FAULTS)))
    run_dir = base / "run"
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    r = subprocess.run(
        [sys.executable, "-m", "segwatch", "run", "--headless", "--run-dir", str(run_dir),
         "--config", str(FAULTS / "configs" / "synth13.yaml"), str(script), "--",
         "--weights", str(ckpt), "--iters", "130"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    return {"run": run_dir, "ckpt": ckpt, "base": base}


@pytest.mark.slow
def test_markdown_of_real_run(real_run):
    md = render_markdown(real_run["run"])
    assert md == real_run["run"] / "report" / "report.md"
    text = md.read_text(encoding="utf-8")
    heads = _headings(text)
    for h in EN_HEADINGS:
        assert any(x.startswith(h) for x in heads), f"missing {h!r} in {heads}"
    facts = _section(text, "## Run")
    assert "train_tiny.py" in facts and "--iters 130" in facts and "| exit code | 0 |" in facts
    assert re.search(r"\| training steps \(backward calls\) \| 130", facts)
    report = json.loads((real_run["run"] / "report.json").read_text())
    for f in report["findings"]:
        assert f"`{f['id']}`" in text
    # two evaluations, the script's printed mIoU next to segwatch's
    miou = _section(text, "## mIoU")
    rows = [l for l in miou.splitlines() if re.match(r"\| [01] \| (65|130) \|", l)]
    assert len(rows) == 2, miou
    assert "Last: the script printed" in miou and "matches the guide" in miou
    per_class = _section(text, "## Per-class IoU")
    assert "| 0 | wall |" in per_class and "| 12 | blinds |" in per_class
    assert "Only the" not in _section(text, "## Confusion matrix")      # 13 classes: all drawn
    weights = _section(text, "## Pretrained weights")
    assert "TinySegNet" in weights and "| 1 |" in weights              # one unexpected key
    roots = _check_images(md)
    assert set(roots) == {"loss.svg", "grad_norm.svg", "miou.svg", "confusion.svg"}
    assert _count(roots["loss.svg"], "polyline") >= 1
    assert _count(roots["miou.svg"], "polyline") >= 2
    assert _count(roots["confusion.svg"], "rect") >= 13 * 13


@pytest.mark.slow
def test_bundle_of_real_run(real_run, tmp_path):
    out = tmp_path / "help.tar.gz"
    path = make_bundle(real_run["run"], out)
    assert path == out
    top, files = _open_bundle(path)
    assert top == "segwatch-bundle-run"
    manifest = _check_manifest(files)
    # the log: the first 100 iterations only, raw
    log = files["logs/stdout.log"].decode()
    iters = [int(i) for i in re.findall(r"^iter (\d+)/130", log, re.M)]
    assert iters == list(range(1, len(iters) + 1))
    assert 90 <= max(iters) <= 100, max(iters)
    assert log.startswith("loaded ") and "eval at 65: mIoU:" in log and "eval at 130" not in log
    raw = (real_run["run"] / "stdout.log").read_bytes()
    assert raw.startswith(files["logs/stdout.log"])               # a byte-exact prefix
    assert manifest["log_cut"]["kept_lines"]["stdout"] < manifest["log_cut"]["total_lines"]["stdout"]
    # diagnostics
    rep = _check_report_json(files["diagnostics/report.json"])
    assert rep["steps"] == 130 and rep["exit_code"] == 0
    assert "## Findings" in files["diagnostics/report.md"].decode()
    for ref in _images(files["diagnostics/report.md"].decode()):
        ET.fromstring(files[f"diagnostics/{ref}"])
    # the config file
    assert files["config/synth13.yaml"] == (FAULTS / "configs" / "synth13.yaml").read_bytes()
    # weights: identity, never the weights
    weights = json.loads(files["weights.json"])
    ck = real_run["ckpt"]
    sha = hashlib.sha256(ck.read_bytes()).hexdigest()
    [entry] = weights["checkpoints"]
    assert entry["path"] == str(ck) and entry["source"] == "argv" and entry["exists"] is True
    assert entry["size"] == ck.stat().st_size and entry["sha256"] == sha
    assert manifest["weights"]["checkpoints"][0]["sha256"] == sha
    [load] = weights["load_state_dict"]
    assert load["module"] == "TinySegNet" and load["unexpected"] == 1 and load["missing"] == 0
    logs_and_reports = sum(len(v) for k, v in files.items() if k.startswith(("logs/", "diagnostics/")))
    for name, data in files.items():
        assert len(data) <= logs_and_reports, name
        assert hashlib.sha256(data).hexdigest() != sha, name
    assert sum(len(v) for v in files.values()) < ck.stat().st_size
    assert path.stat().st_size < ck.stat().st_size / 4
    # the run dir is not touched by a bundle written elsewhere
    assert not list(real_run["run"].glob("segwatch-bundle-*"))


def test_bundle_without_output_events_and_checkpoints_from_config(tmp_path):
    """Raw logs but no output events: the first FALLBACK_LINES lines; checkpoints named in a
    training YAML (with a `segwatch:` section) and in argv, existing or not."""
    run = _copy_fixture(tmp_path)
    lines = [l for l in (run / "events.jsonl").read_text().splitlines() if '"type":"output"' not in l]
    (run / "events.jsonl").write_text("\n".join(lines) + "\n")
    (run / "stdout.log").write_text("".join(f"line {i}\n" for i in range(1, FALLBACK_LINES + 101)))
    work = tmp_path / "work"
    (work / "weights").mkdir(parents=True)
    (work / "weights" / "backbone.pth").write_bytes(b"\x00" * 4096)
    cfg = work / "train.yaml"
    cfg.write_text(textwrap.dedent("""\
        model: {backbone: DFormer-Base, pretrained: weights/backbone.pth}
        resume: null
        segwatch:
          dataset: {name: SUNRGBD, num_classes: 37, ignore_index: 255}
        """))
    meta = json.loads((run / "meta.json").read_text())
    meta.update(config=str(cfg), cwd=str(work), argv=["--lr", "8e-5", "--init=missing/ckpt.safetensors"])
    (run / "meta.json").write_text(json.dumps(meta))
    path = make_bundle(run, tmp_path / "out")
    assert path == tmp_path / "out" / "segwatch-bundle-recorded_run.tar.gz"
    _, files = _open_bundle(path)
    manifest = _check_manifest(files)
    log = files["logs/stdout.log"].decode().splitlines()
    assert log == [f"line {i}" for i in range(1, FALLBACK_LINES + 1)]
    assert manifest["log_cut"]["method"] == "first_lines"
    assert "first_lines" in files["README.md"].decode()
    assert files["config/train.yaml"] == cfg.read_bytes()
    ck = {c["given"]: c for c in json.loads(files["weights.json"])["checkpoints"]}
    assert set(ck) == {"weights/backbone.pth", "missing/ckpt.safetensors"}
    assert ck["weights/backbone.pth"]["source"] == "config"
    assert ck["weights/backbone.pth"]["size"] == 4096
    assert ck["weights/backbone.pth"]["sha256"] == hashlib.sha256(b"\x00" * 4096).hexdigest()
    assert ck["missing/ckpt.safetensors"] == {"given": "missing/ckpt.safetensors", "source": "argv",
                                              "path": str(work / "missing" / "ckpt.safetensors"),
                                              "exists": False}
    # the config of meta.json's path was used (ignore_index 255 from the training YAML)
    rep = json.loads(files["diagnostics/report.json"])
    assert rep["ignore_index"] == 255


def test_module_entry_point(tmp_path):
    r = subprocess.run([sys.executable, "-m", "segwatch.reporting", str(FIXTURE), "--out", str(tmp_path / "md"),
                        "--lang", "zh"], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == str(tmp_path / "md" / "report.md")
    r = subprocess.run([sys.executable, "-m", "segwatch.reporting", str(tmp_path / "nope"), "--bundle"],
                       capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert r.returncode == 2 and "no run directory" in r.stderr


def test_markdown_says_when_an_evaluation_was_aborted(tmp_path):
    run = _copy_fixture(tmp_path)
    lines = (run / "events.jsonl").read_text().splitlines()
    last_eval = max(i for i, l in enumerate(lines) if '"type":"eval"' in l)
    ev = json.loads(lines[last_eval])
    ev.update(aborted=True, batches=3, expected=10,
              exception={"type": "ValueError", "message": "bad label", "where": "eval.py:24"})
    lines[last_eval] = json.dumps(ev)
    (run / "events.jsonl").write_text("\n".join(lines) + "\n")
    text = render_markdown(run).read_text(encoding="utf-8")
    miou = _section(text, "## mIoU")
    assert "| 2 | 120 |" in miou and miou.count("| yes |") == 1
    assert "evaluation 2 (step 120) stopped after 3/10 batches, raising `ValueError: bad label` @ `eval.py:24`" in miou
    assert "aborted" in _section(text, "## Confusion matrix")
    zh = render_markdown(run, tmp_path / "zh", lang="zh").read_text(encoding="utf-8")
    assert "评估 2（第 120 步）中断，只完成 3/10 个 batch" in zh


def test_language_none_takes_the_runs_own(tmp_path):
    run = _copy_fixture(tmp_path)
    meta = json.loads((run / "meta.json").read_text())
    meta["lang"] = "zh"
    (run / "meta.json").write_text(json.dumps(meta))
    assert render_markdown(run, lang=None).read_text(encoding="utf-8").startswith("# segwatch 运行报告")
    _, files = _open_bundle(make_bundle(run, lang=None))
    assert files["diagnostics/report.md"].decode().startswith("# segwatch 运行报告")
    assert json.loads(files["diagnostics/report.json"])["lang"] == "zh"
    with pytest.raises(ValueError):
        make_bundle(run, lang="de")
