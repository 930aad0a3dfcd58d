"""TEST-ONLY: make ``import mmcv.ops`` work with mmcv-lite (no compiled ``mmcv._ext``).

Put this directory on ``PYTHONPATH`` (the mmseg tests do it for the training subprocess only):
Python imports ``sitecustomize`` at start-up, and this one puts a finder first on
``sys.meta_path`` that serves ``mmcv.ops`` from ``mmcv_ops_standin.py`` beside it.  The real
``mmcv.ops`` package would load ``mmcv._ext`` and fail.  segwatch never imports this.
"""
import importlib.abc
import importlib.util
import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))


class _StandinFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):
        if fullname != "mmcv.ops":
            return None
        return importlib.util.spec_from_file_location(
            "mmcv.ops", os.path.join(_HERE, "mmcv_ops_standin.py"))


if not any(isinstance(f, _StandinFinder) for f in sys.meta_path):
    sys.meta_path.insert(0, _StandinFinder())
