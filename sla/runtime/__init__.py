"""The per-model SLA runtime: what runs inside a patched model's forward, and its bookkeeping.

* :mod:`.settings`: :class:`SLASettings`, the immutable record of one ApplySLA's widgets;
* :mod:`.weights`: the proj_l registry (tensors kept out of ``model_options``, which clones deep-copy);
* :mod:`.patch`: the attention override, the block-index patch, the sampling-run and model-call wrappers;
* :mod:`.schedule`: keep_schedule parsing and the global step of a model call;
* :mod:`.timing`: attention / model-call timing of a run (CUDA events read at its end) for the run report;
* :mod:`.capture`: q/k capture for the SLA Attention Map node, armed only while such a node waits.

May import torch and the math modules of :mod:`sla` (spec, functional); never ComfyUI (its objects are
duck-typed) and never :mod:`sla.checkpoint`.
"""
