"""The shim's probes, one module each: its device-side update, its host-side post-processing
(after the packed read-back) and its cost, charged to its own entry of the sampler. Each
module holds a mixin of ``segwatch.shim.runtime.Shim``; a new probe is one small file here,
a name in ``sampler.PROBES`` and a call from the hook that feeds it."""
