"""segwatch run inside a Slurm job: the compressed node list, and the distributed options
derived from a faked Slurm environment (segwatch/slurm.py, cli's ``run``)."""
from __future__ import annotations

import pytest

from segwatch import cli
from segwatch.slurm import SlurmError, expand_nodelist, master_port_for, run_defaults

NAMES = ("nproc", "nnodes", "node_rank", "master_addr", "master_port")


def _none(**given):
    return {k: given.get(k) for k in NAMES}


def _job(**kw):
    env = {"SLURM_JOB_ID": "48213", "SLURM_NNODES": "3", "SLURM_NODEID": "2",
           "SLURM_JOB_NODELIST": "node[01-03]", "SLURM_NTASKS_PER_NODE": "1", "SLURM_GPUS_ON_NODE": "4"}
    env.update(kw)
    return {k: v for k, v in env.items() if v is not None}


@pytest.mark.parametrize("text, hosts", [
    ("node[01-03,07]", ["node01", "node02", "node03", "node07"]),
    ("gpu-a[1,3]", ["gpu-a1", "gpu-a3"]),
    ("gpu-a[1,3],login", ["gpu-a1", "gpu-a3", "login"]),
    ("n[08-10],m5", ["n08", "n09", "n10", "m5"]),
    ("single", ["single"]),
    ("r[1-2]-n[1-2]", ["r1-n1", "r1-n2", "r2-n1", "r2-n2"]),
    ("a[9-11]", ["a9", "a10", "a11"]),
    ("", []),
])
def test_expand_nodelist(text, hosts):
    assert expand_nodelist(text) == hosts


@pytest.mark.parametrize("bad", ["node[01-03", "node]1", "node[a-b]", "node[3-1]"])
def test_expand_nodelist_rejects_bad_patterns(bad):
    with pytest.raises(SlurmError):
        expand_nodelist(bad)


def test_multi_node_job_derives_every_option():
    derived, note = run_defaults(_job(), _none())
    assert derived == {"nnodes": 3, "node_rank": 2, "master_addr": "node01",
                       "master_port": master_port_for(48213), "nproc": 4}
    assert 10000 <= derived["master_port"] < 30000
    assert "Slurm job 48213" in note and "--node-rank 2" in note
    # every node of the job derives the same port and address
    other, _ = run_defaults(_job(SLURM_NODEID="0"), _none())
    assert other["master_port"] == derived["master_port"] and other["master_addr"] == "node01"
    assert other["node_rank"] == 0


def test_given_options_win_and_nproc_falls_back_to_one():
    derived, _ = run_defaults(_job(SLURM_GPUS_ON_NODE=None),
                              _none(master_port=29500, master_addr="ib-node01", nnodes=3))
    assert derived == {"node_rank": 2, "nproc": 1}
    derived, note = run_defaults(_job(), _none(nproc=2, nnodes=3, node_rank=1, master_addr="h", master_port=1))
    assert derived == {} and note is None


def test_no_job_or_single_node_job_changes_nothing():
    assert run_defaults({}, _none()) == ({}, None)
    assert run_defaults(_job(SLURM_NNODES="1", SLURM_NODEID="0", SLURM_JOB_NODELIST="node07"), _none()) == ({}, None)
    assert run_defaults({"SLURM_NNODES": "2"}, _none()) == ({}, None)     # no job id: not an allocation


def test_several_tasks_per_node_is_a_usage_error():
    with pytest.raises(SlurmError, match="ntasks-per-node=1"):
        run_defaults(_job(SLURM_NTASKS_PER_NODE="4"), _none())
    # heterogeneous counts like "2(x3)": the first count is read
    with pytest.raises(SlurmError):
        run_defaults(_job(SLURM_NTASKS_PER_NODE="2(x3)"), _none())


def test_cli_run_takes_the_slurm_options(tmp_path, monkeypatch):
    """Through cli's run: the DistSpec handed to the supervisor is the job's."""
    script = tmp_path / "train.py"
    script.write_text("print('hi')\n")
    for k, v in _job(SLURM_NODEID="1", SLURM_JOB_NODELIST="gpu-a[1,3]", SLURM_GPUS_ON_NODE="2").items():
        monkeypatch.setenv(k, v)
    seen = {}

    def fake_headless(ns, script_, script_args, config, run_dir):
        seen["dist"] = cli._dist_spec(ns)
        return 0

    monkeypatch.setattr(cli, "_run_headless", fake_headless)
    assert cli.main(["run", "--headless", "--run-dir", str(tmp_path / "r"), str(script)]) == 0
    d = seen["dist"]
    assert (d.nproc, d.nnodes, d.node_rank, d.master_addr, d.master_port) == (2, 3, 1, "gpu-a1",
                                                                            master_port_for(48213))
    # explicit options win
    assert cli.main(["run", "--headless", "--nproc", "1", "--master-port", "29500", "--run-dir",
                     str(tmp_path / "r2"), str(script)]) == 0
    d = seen["dist"]
    assert (d.nproc, d.nnodes, d.node_rank, d.master_addr, d.master_port) == (1, 3, 1, "gpu-a1", 29500)
    # several tasks per node: usage error, nothing launched
    seen.clear()
    monkeypatch.setenv("SLURM_NTASKS_PER_NODE", "4")
    assert cli.main(["run", "--headless", "--run-dir", str(tmp_path / "r3"), str(script)]) == 2
    assert not seen


def test_cli_run_outside_slurm_is_unchanged(tmp_path, monkeypatch):
    script = tmp_path / "train.py"
    script.write_text("print('hi')\n")
    for k in list(__import__("os").environ):
        if k.startswith("SLURM_"):
            monkeypatch.delenv(k)
    seen = {}
    monkeypatch.setattr(cli, "_run_headless",
                        lambda ns, *a: seen.setdefault("dist", cli._dist_spec(ns)) and 0 or 0)
    assert cli.main(["run", "--headless", "--run-dir", str(tmp_path / "r"), str(script)]) == 0
    assert seen["dist"] is None
