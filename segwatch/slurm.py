"""A Slurm allocation as ``segwatch run`` defaults (``--nnodes/--node-rank/--master-addr/
--master-port``, and ``--nproc`` on a multi-node job), read from the environment that
``srun`` gives each task. No torch, no UI: environment variables and strings only.

Expected launch: one ``segwatch run`` per node (``srun --ntasks-per-node=1``); segwatch starts
torchrun, which starts the node's ranks.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Mapping

PORT_BASE = 10000       # derived ports: 10000..29999, below Linux's ephemeral range (32768+)
PORT_SPAN = 20000


class SlurmError(ValueError):
    """A Slurm environment segwatch cannot launch under (a usage error)."""


def expand_nodelist(nodelist: str) -> list[str]:
    """Expand Slurm's compressed host list: ``node[01-03,07]`` -> node01 node02 node03 node07,
    ``gpu-a[1,3],login`` -> gpu-a1 gpu-a3 login, ``r[1-2]-n[1-2]`` -> r1-n1 r1-n2 r2-n1 r2-n2.
    Zero padding of a range is kept (``[08-10]`` -> 08 09 10)."""
    hosts: list[str] = []
    for item in _split_top(nodelist.strip()):
        if item:
            hosts.extend(_expand_host(item))
    return hosts


def _split_top(s: str) -> list[str]:
    """Split at the commas outside brackets."""
    out, depth, cur = [], 0, []
    for ch in s:
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
            if depth < 0:
                raise SlurmError(f"unbalanced ']' in node list {s!r}")
        if ch == "," and depth == 0:
            out.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    if depth != 0:
        raise SlurmError(f"unbalanced '[' in node list {s!r}")
    out.append("".join(cur))
    return [x.strip() for x in out]


def _expand_host(pattern: str) -> list[str]:
    i = pattern.find("[")
    if i < 0:
        return [pattern]
    j = pattern.index("]", i)
    head, body, rest = pattern[:i], pattern[i + 1:j], pattern[j + 1:]
    tails = _expand_host(rest)
    out = []
    for part in body.split(","):
        part = part.strip()
        m = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
        if not m:
            raise SlurmError(f"cannot read {part!r} in node list pattern {pattern!r}")
        lo, hi = m.group(1), m.group(2) or m.group(1)
        width = len(lo) if lo.startswith("0") else 0
        if int(hi) < int(lo):
            raise SlurmError(f"descending range {part!r} in node list pattern {pattern!r}")
        for n in range(int(lo), int(hi) + 1):
            out.extend(f"{head}{n:0{width}d}{t}" for t in tails)
    return out


def _int(env: Mapping[str, str], *names: str) -> int | None:
    """The first of ``names`` set to an integer. Slurm writes per-node counts of a
    heterogeneous job like ``4(x2),2``: the first count is read."""
    for name in names:
        v = (env.get(name) or "").strip()
        m = re.match(r"\d+", v)
        if m:
            return int(m.group(0))
    return None


def master_port_for(job_id: int) -> int:
    """A rendezvous port every node of one job derives alike (and two jobs rarely share)."""
    return PORT_BASE + job_id % PORT_SPAN


@dataclass
class SlurmJob:
    job_id: int
    nnodes: int
    node_id: int
    hosts: list[str]
    gpus_on_node: int | None
    tasks_per_node: int | None

    @property
    def master_addr(self) -> str | None:
        return self.hosts[0] if self.hosts else None


def detect(env: Mapping[str, str]) -> SlurmJob | None:
    """The Slurm job this process runs in, or None (no ``SLURM_JOB_ID``/``SLURM_NNODES``)."""
    job_id = _int(env, "SLURM_JOB_ID", "SLURM_JOBID")
    nnodes = _int(env, "SLURM_NNODES", "SLURM_JOB_NUM_NODES")
    if job_id is None or nnodes is None:
        return None
    node_id = _int(env, "SLURM_NODEID") or 0
    nodelist = env.get("SLURM_JOB_NODELIST") or env.get("SLURM_NODELIST") or ""
    hosts = expand_nodelist(nodelist) if nodelist else []
    return SlurmJob(job_id, nnodes, node_id, hosts, _int(env, "SLURM_GPUS_ON_NODE"),
                    _int(env, "SLURM_NTASKS_PER_NODE"))


def run_defaults(env: Mapping[str, str], given: Mapping[str, object]) -> tuple[dict, str | None]:
    """The distributed options of ``segwatch run`` under Slurm.

    ``given``: the options the user set (``nproc``, ``nnodes``, ``node_rank``, ``master_addr``,
    ``master_port``; None = not given). Returns (the values to use for those not given, a
    one-line note of what was derived, or None). Only a multi-node job (``SLURM_NNODES`` > 1)
    is taken as a distributed launch: a single-node allocation runs the script as given
    (``--nproc`` from the user), so a plain script in a 4-GPU allocation is not started 4 times.
    ``--nproc`` defaults to ``SLURM_GPUS_ON_NODE`` (else 1) on a multi-node job."""
    job = detect(env)
    if job is None or job.nnodes < 2:
        return {}, None
    if (job.tasks_per_node or 1) > 1 and given.get("node_rank") is None:
        raise SlurmError(f"Slurm started {job.tasks_per_node} tasks per node; segwatch starts the node's ranks "
                         "itself (torchrun): launch one segwatch per node (srun --ntasks-per-node=1)")
    if not job.hosts and given.get("master_addr") is None:
        raise SlurmError("SLURM_JOB_NODELIST is not set: give --master-addr")
    derived: dict = {}
    if given.get("nnodes") is None:
        derived["nnodes"] = job.nnodes
    if given.get("node_rank") is None:
        derived["node_rank"] = job.node_id
    if given.get("master_addr") is None:
        derived["master_addr"] = job.master_addr
    if given.get("master_port") is None:
        derived["master_port"] = master_port_for(job.job_id)
    if given.get("nproc") is None:
        derived["nproc"] = job.gpus_on_node if job.gpus_on_node and job.gpus_on_node > 0 else 1
    if not derived:
        return {}, None
    opts = " ".join(f"--{k.replace('_', '-')} {v}" for k, v in derived.items())
    return derived, f"Slurm job {job.job_id} (node {job.node_id} of {job.nnodes}): {opts}"
