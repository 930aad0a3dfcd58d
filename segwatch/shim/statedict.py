"""``nn.Module.load_state_dict``: missing and unexpected keys of every load."""
from __future__ import annotations

from .common import _one_line


class StateDictProbe:
    """Methods of ``Shim`` (segwatch.shim.runtime); the state lives on the Shim."""

    def _load_state_dict(self, orig, module, state_dict, args, kwargs):
        if self._ld_depth or not self.installed or not self._on("state_dict"):
            return orig(module, state_dict, *args, **kwargs)
        strict = kwargs.get("strict", args[0] if args else True)
        self._ld_depth += 1
        try:
            try:
                result = orig(module, state_dict, *args, **kwargs)
            except BaseException as exc:
                self._report_state_dict(module, state_dict, strict, None, exc)
                raise
            self._report_state_dict(module, state_dict, strict, result, None)
            return result
        finally:
            self._ld_depth -= 1

    def _report_state_dict(self, module, state_dict, strict, result, exc) -> None:
        try:
            self._inject("state_dict")
            own = list(module.state_dict().keys())
            given = set(state_dict.keys()) if hasattr(state_dict, "keys") else set()
            if result is not None and hasattr(result, "missing_keys"):
                missing = list(result.missing_keys)
                unexpected = list(result.unexpected_keys)
            else:
                owns = set(own)
                missing = [k for k in own if k not in given]
                unexpected = [k for k in given if k not in owns]
            self._emit("state_dict", step=self.step, module=type(module).__name__, missing=len(missing),
                       unexpected=len(unexpected), total=len(own), loaded=sum(1 for k in own if k in given),
                       strict=bool(strict), examples_missing=missing[:5],
                       examples_unexpected=[str(k) for k in unexpected[:5]],
                       error=_one_line(exc) if exc is not None else None)
        except Exception as e:
            self._fail("state_dict", e)
