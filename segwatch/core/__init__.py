"""segwatch core: metrics, run state, diagnosis rules, checklist and report.

numpy + stdlib only at import time (torch is imported lazily inside the functions of
``metrics`` that receive tensors). Import the pieces from their modules, e.g.
``from segwatch.core.state import RunState``.
"""
