"""The per-model SLA runtime: what runs inside a patched model's forward, and its bookkeeping.

* :mod:`.settings`: :class:`SLASettings`, the immutable record of one ApplySLA's widgets;
* :mod:`.weights`: the proj_l registry (tensors kept out of ``model_options``, which clones deep-copy);
* :mod:`.patch`: the ComfyUI hooks: the attention override, the block-index patch, the sampling-run
  (``OUTER_SAMPLE``) and model-call (``APPLY_MODEL``) wrappers;
* :mod:`.runtime`: :class:`SLARuntime`, the run-time half those hooks and the custom ops call (routing SLA or
  dense, counters, failures, begin/end of a run, the run report);
* :mod:`.sparse_call`: the SLA path of one self-attention call (proj_l, backend, kernel, keep counters);
* :mod:`.ops`: the ``comfyui_sla::`` torch custom ops through which the traced model reaches its runtime;
* :mod:`.schedule`: keep_schedule parsing and the global step of a model call;
* :mod:`.timing`: attention / model-call timing of a run (CUDA events read at its end) for the run report;
* :mod:`.capture`: q/k capture for the SLA Attention Map node, armed only while such a node waits;
* :mod:`.stats`: the run counters, dense-reason codes and the summary line / run report text;
* :mod:`.log`: the ``comfyui_sla`` logger and ``log_once``.

May import torch and the math modules of :mod:`sla` (spec, functional); never ComfyUI (its objects are
duck-typed) and never :mod:`sla.checkpoint`.
"""
