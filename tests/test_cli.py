"""The `segwatch` command line, run as a real process (fake protocol child, --no-shim)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from segwatch.cli import UsageError, split_run_argv

from test_supervisor_fake import meta_of, read_events, segwatch_cmd, write_fake


def sw(*args, cwd=None, timeout=60, **kw):
    return subprocess.run(segwatch_cmd(*args), cwd=cwd, capture_output=True, text=True, timeout=timeout, **kw)


# ---------------------------------------------------------------- argument splitting
@pytest.mark.parametrize("argv,ours,script,rest", [
    (["train.py", "--", "--lr", "8e-5"], [], "train.py", ["--lr", "8e-5"]),
    (["--headless", "train.py", "--config", "c.yaml"], ["--headless", "--config", "c.yaml"], "train.py", []),
    (["train.py", "--headless", "--", "--headless"], ["--headless"], "train.py", ["--headless"]),
    (["train.py", "--lr", "8e-5", "--report=r.json"], ["--report=r.json"], "train.py", ["--lr", "8e-5"]),
    (["--run-dir", "d", "t.py", "a", "--", "b", "--", "c"], ["--run-dir", "d"], "t.py", ["a", "b", "--", "c"]),
    ([], [], None, []),
])
def test_split_run_argv(argv, ours, script, rest):
    assert split_run_argv(argv) == (ours, script, rest)


def test_split_run_argv_errors():
    with pytest.raises(UsageError):
        split_run_argv(["--lr", "1", "train.py"])
    with pytest.raises(UsageError):
        split_run_argv(["train.py", "--config"])


# ---------------------------------------------------------------- usage errors: exit 2, nothing launched
def test_usage_errors_exit_2_before_launch(tmp_path):
    fake = write_fake(tmp_path)
    bad = tmp_path / "bad.yaml"
    bad.write_text("dataset:\n  num_classes: -3\n")
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("dataset:\n  num_clases: 3\n")
    cases = [
        (["run", "missing.py"], "script not found"),
        (["run", str(fake), "--config", str(bad)], "num_classes"),
        (["run", str(fake), "--config", str(unknown)], "unknown.yaml"),
        (["run", str(fake), "--config", "nope.yaml"], "not found"),
        (["run", "--bogus", str(fake)], "unknown option"),
        (["run"], "no script"),
        (["run", str(fake), "--on-collapse", "explode"], "invalid choice"),
        (["run", str(fake), "--interval", "0"], "interval"),
        (["run", str(fake), "--report", str(tmp_path)], "is a directory"),
        (["nosuchcommand"], "unknown command"),
    ]
    for args, msg in cases:
        r = sw(*args, cwd=tmp_path)
        assert r.returncode == 2, (args, r.stderr)
        assert msg in r.stderr, (args, r.stderr)
    assert not (tmp_path / "segwatch_runs").exists()  # nothing was launched or created


def test_help_and_version():
    r = sw("--help")
    assert r.returncode == 0 and "segwatch run" in r.stdout
    assert sw().returncode == 2
    r = sw("run", "--help")
    assert r.returncode == 0 and "--on-collapse" in r.stdout
    r = sw("--version")
    assert r.returncode == 0 and r.stdout.startswith("segwatch ")


# ---------------------------------------------------------------- run
@pytest.mark.slow
def test_run_headless_args_after_dashdash_and_default_run_dir(tmp_path):
    fake = write_fake(tmp_path)
    r = sw("run", "--no-shim", str(fake), "--interval", "0.2", "--", "normal", "4", cwd=tmp_path)
    assert r.returncode == 4, r.stderr
    runs = list((tmp_path / "segwatch_runs").iterdir())
    assert len(runs) == 1 and runs[0].name.endswith("-fake_train")
    meta = meta_of(runs[0])
    assert meta["argv"] == ["normal", "4"] and meta["exit_code"] == 4
    assert "step 1 loss" in r.stdout          # the child's stdout stays on stdout
    assert "[segwatch]" in r.stderr and "[segwatch]" not in r.stdout
    assert "a warning" in r.stderr
    # a second run gets its own directory
    r = sw("run", "--no-shim", str(fake), "normal", "0", cwd=tmp_path)
    assert r.returncode == 0
    assert len(list((tmp_path / "segwatch_runs").iterdir())) == 2


@pytest.mark.slow
def test_run_refuses_a_used_run_dir(tmp_path):
    fake = write_fake(tmp_path)
    run = tmp_path / "run"
    assert sw("run", "--no-shim", "--run-dir", str(run), str(fake), "normal", "0").returncode == 0
    r = sw("run", "--no-shim", "--run-dir", str(run), str(fake), "normal", "0")
    assert r.returncode == 2 and "already holds a run" in r.stderr


@pytest.mark.slow
def test_policy_from_config_and_override(tmp_path):
    fake = write_fake(tmp_path)
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("dataset:\n  num_classes: 4\npolicy:\n  on_collapse: kill\n")
    run = tmp_path / "run"
    rep_path = tmp_path / "out" / "report.json"
    r = sw("run", "--no-shim", "--config", str(cfg), "--run-dir", str(run), "--report", str(rep_path),
           str(fake), "collapse", "400")
    assert r.returncode == 128 + signal.SIGTERM, r.stderr
    rep = json.loads(rep_path.read_text())
    assert rep["action"]["kind"] == "kill" and rep["action"]["finding"] == "pred.collapse"
    assert "ERROR pred.collapse" in r.stderr
    assert meta_of(run)["config_resolved"]["policy"]["on_collapse"] == "kill"
    # --on-collapse warn overrides the config: the run completes
    run2 = tmp_path / "run2"
    r = sw("run", "--no-shim", "--config", str(cfg), "--run-dir", str(run2), "--on-collapse", "warn",
           str(fake), "collapse", "130")
    assert r.returncode == 0, r.stderr
    rep = json.loads((run2 / "report.json").read_text())
    assert rep["action"] is None and any(f["id"] == "pred.collapse" for f in rep["findings"])


# ---------------------------------------------------------------- viewers of a finished run
@pytest.fixture(scope="module")
def collapsed_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cli")
    fake = write_fake(tmp)
    run = tmp / "segwatch_runs" / "collapsed"
    r = sw("run", "--no-shim", "--run-dir", str(run), str(fake), "collapse", "130", cwd=tmp)
    assert r.returncode == 0, r.stderr
    return run


@pytest.mark.slow
def test_report_formats(collapsed_run):
    stored = json.loads((collapsed_run / "report.json").read_text())
    r = sw("report", str(collapsed_run), "--json")
    assert r.returncode == 0 and json.loads(r.stdout) == stored
    r = sw("report", str(collapsed_run))
    assert r.returncode == 0 and "pred.collapse" in r.stdout and "Findings" in r.stdout
    r = sw("report", str(collapsed_run), "--markdown")
    md = Path(r.stdout.strip())
    assert r.returncode == 0 and md == collapsed_run / "report" / "report.md", r.stderr
    assert "pred.collapse" in md.read_text() and list(md.parent.glob("*.svg"))
    out = collapsed_run.parent / "md-zh"
    r = sw("report", str(collapsed_run), "--markdown", "--lang", "zh", "--out", str(out))
    assert r.returncode == 0 and Path(r.stdout.strip()) == out / "report.md"
    assert any("\u4e00" <= ch <= "\u9fff" for ch in (out / "report.md").read_text())
    bundle = collapsed_run.parent / "help.tar.gz"
    r = sw("report", str(collapsed_run), "--bundle", "--out", str(bundle))
    assert r.returncode == 0 and Path(r.stdout.strip()) == bundle and bundle.stat().st_size > 0
    import tarfile
    with tarfile.open(bundle) as tf:
        assert any(n.endswith("report.json") for n in tf.getnames())
    assert sw("report", str(collapsed_run), "--out", "x").returncode == 2
    # another language: rebuilt from the events, same findings, Chinese advice
    r = sw("report", str(collapsed_run), "--json", "--lang", "zh")
    zh = json.loads(r.stdout)
    assert [f["id"] for f in zh["findings"]] == [f["id"] for f in stored["findings"]]
    assert zh["steps"] == stored["steps"] and zh["exit_code"] == stored["exit_code"]
    adv = next(f["advice"] for f in zh["findings"] if f["id"] == "pred.collapse")
    assert any("\u4e00" <= ch <= "\u9fff" for ch in adv)
    assert sw("report", str(collapsed_run / "nope")).returncode == 2


BLOCK_REPORTING = '''
import sys
class _Block:
    def find_spec(self, name, path=None, target=None):
        if name == "segwatch.reporting" or name.startswith("segwatch.reporting."):
            raise ImportError("blocked for the test")
        return None
sys.meta_path.insert(0, _Block())
'''


@pytest.mark.slow
def test_report_markdown_without_the_reporting_package(collapsed_run, tmp_path):
    (tmp_path / "sitecustomize.py").write_text(BLOCK_REPORTING)
    env = dict(os.environ, PYTHONPATH=str(tmp_path) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    r = sw("report", str(collapsed_run), "--markdown", env=env)
    assert r.returncode == 0 and r.stdout.startswith("# segwatch report") and "`pred.collapse`" in r.stdout
    assert "plain Markdown instead" in r.stderr
    r = sw("report", str(collapsed_run), "--bundle", env=env)
    assert r.returncode == 1 and "cannot make a bundle" in r.stderr


@pytest.mark.slow
def test_replay_rebuilds_the_same_report(collapsed_run):
    from segwatch.supervisor.replay import Replayed

    stored = json.loads((collapsed_run / "report.json").read_text())
    rebuilt = Replayed(collapsed_run).report()
    for key in ("schema", "exit_code", "steps", "action", "findings", "checklist", "miou", "status"):
        assert rebuilt[key] == stored[key], key
    r = sw("replay", str(collapsed_run), "--json")
    assert r.returncode == 0 and json.loads(r.stdout) == stored
    r = sw("replay", str(collapsed_run), "--headless")
    assert r.returncode == 0 and "ERROR pred.collapse" in r.stdout and "replayed" in r.stdout


@pytest.mark.slow
def test_ls(collapsed_run):
    r = sw("ls", str(collapsed_run.parent))
    assert r.returncode == 0
    assert "collapsed" in r.stdout and "finished" in r.stdout and "error pred.collapse" in r.stdout
    r = sw("ls", cwd=collapsed_run.parent.parent)  # default ./segwatch_runs
    assert "collapsed" in r.stdout


@pytest.mark.slow
def test_attach_headless_to_finished_run_and_ctl_refused(collapsed_run):
    r = sw("attach", str(collapsed_run), "--headless")
    assert r.returncode == 0 and "pred.collapse" in r.stderr
    r = sw("ctl", str(collapsed_run), "pause")
    assert r.returncode == 1 and "ended" in r.stderr


@pytest.mark.slow
def test_headless_lines_in_chinese(tmp_path):
    fake = write_fake(tmp_path)
    run = tmp_path / "run"
    r = sw("run", "--no-shim", "--lang", "zh", "--interval", "0.5", "--run-dir", str(run), str(fake), "collapse", "130",
           timeout=90)
    assert r.returncode == 0, r.stderr[-2000:]
    err = r.stderr
    assert "[segwatch] 运行目录 " in err
    assert "[segwatch] 错误 pred.collapse @ 第 " in err and " 步 — 预测" in err     # severity, step, title in Chinese
    assert "\n    证据：" in err and "\n    建议：" in err                                # indented, in Chinese
    assert any(line.startswith("[segwatch] 第 ") and " 步 | 损失 " in line for line in err.splitlines())
    assert "[segwatch] 已完成 第 130 步" in err and "已完成：退出码 0 | 运行目录 " in err
    ours = [line for line in err.splitlines() if line.startswith("[segwatch]")]
    assert not any(w in line for line in ours for w in ("ERROR", " step ", "loss ", "finished", "run dir"))
    r = sw("replay", str(run), "--headless", "--lang", "zh")
    assert r.returncode == 0 and "已从 " in r.stdout and "错误 pred.collapse @ 第 " in r.stdout


def test_check(tmp_path):
    good = tmp_path / "g.yaml"
    good.write_text("segwatch:\n  dataset:\n    num_classes: 37\n    ignore_index: 255\n")
    r = sw("check", "--config", str(good))
    assert r.returncode == 0 and "num_classes: 37" in r.stdout
    bad = tmp_path / "b.yaml"
    bad.write_text("policy:\n  on_collapse: explode\n")
    r = sw("check", "--config", str(bad))
    assert r.returncode == 2 and "on_collapse" in r.stderr and "b.yaml" in r.stderr


@pytest.mark.slow
def test_ctl_pause_resume_a_live_run(tmp_path):
    fake = write_fake(tmp_path)
    run = tmp_path / "run"
    done = tmp_path / "done"    # the training lives until the test ends it, however loaded the machine
    p = subprocess.Popen(segwatch_cmd("run", "--no-shim", "--run-dir", str(run), str(fake), "until", str(done)),
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        from test_supervisor_fake import wait_for
        wait_for(lambda: meta_of(run).get("status") == "running", timeout=60)
        r = sw("pause", str(run))
        assert r.returncode == 0 and "paused" in r.stdout
        assert meta_of(run)["status"] == "paused"
        r = sw("ctl", str(run), "ping", "--json")
        assert json.loads(r.stdout)["status"] == "paused"
        r = sw("ctl", str(run), "resume")
        assert r.returncode == 0 and "running" in r.stdout
        done.touch()
        _, err = p.communicate(timeout=60)
    finally:
        done.touch()
        if p.poll() is None:
            p.kill()
    assert p.returncode == 0
    kinds = [(e["kind"], e["by"]) for e in read_events(run) if e["type"] == "action"]
    assert kinds == [("pause", "user"), ("resume", "user")]


def test_python_dash_m_segwatch_matches_console_script():
    import shutil

    exe = shutil.which("segwatch")
    if exe is None:
        pytest.skip("console script not installed")
    r = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and r.stdout == sw("--version").stdout
