"""The supervisor imports core (and numpy) with a one-thread BLAS pool, and gives the
environment back untouched: the training it launches keeps the user's settings."""
from __future__ import annotations

import json
import os
import subprocess
import sys

from segwatch.runs.corelink import _BLAS_THREADS

CHECK = r'''
import json, os, sys
from segwatch.runs import corelink
assert "numpy" not in sys.modules
seen = {}
import builtins
real_import = builtins.__import__
def spy(name, *a, **k):
    if name == "numpy" and "numpy" not in sys.modules and not seen:
        seen.update({v: os.environ.get(v) for v in corelink._BLAS_THREADS})
    return real_import(name, *a, **k)
builtins.__import__ = spy
state = corelink.new_state({"dataset": {"num_classes": 5}})
builtins.__import__ = real_import
print(json.dumps({"type": type(state).__name__, "during": seen,
                  "after": {v: os.environ.get(v) for v in corelink._BLAS_THREADS}}))
'''


def _run(env_extra: dict) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in _BLAS_THREADS}
    env.update(env_extra)
    out = subprocess.run([sys.executable, "-c", CHECK], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_blas_pool_is_one_thread_at_import_and_the_environment_is_restored():
    res = _run({})
    assert res["type"] == "RunState"
    assert res["during"] == {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    assert res["after"] == {"OPENBLAS_NUM_THREADS": None, "OMP_NUM_THREADS": None, "MKL_NUM_THREADS": None}


def test_the_users_own_setting_is_left_alone():
    res = _run({"OMP_NUM_THREADS": "6"})
    assert res["during"]["OMP_NUM_THREADS"] == "6" and res["during"]["OPENBLAS_NUM_THREADS"] == "1"
    assert res["after"] == {"OPENBLAS_NUM_THREADS": None, "OMP_NUM_THREADS": "6", "MKL_NUM_THREADS": None}
