"""The per-model SLA runtime: what runs inside a patched model's forward, and its bookkeeping.

* :mod:`.settings`: :class:`SLASettings`, the immutable record of one ApplySLA's widgets;
* :mod:`.weights`: the proj_l registry (tensors kept out of ``model_options``, which clones deep-copy);
* :mod:`.patch`: the attention override, the block-index patch and the sampling-run wrapper.

May import torch and the math modules of :mod:`sla` (spec, functional); never ComfyUI (its objects are
duck-typed) and never :mod:`sla.checkpoint`.
"""
