"""The per-model SLA runtime: what runs inside a patched model's forward, and its bookkeeping.

* :mod:`.settings`: :class:`SLASettings`, the immutable record of one ApplySLA's widgets;
* :mod:`.weights`: :class:`ProjLWeights`, a model's proj_l tensors (held by its patch);
* :mod:`.sla_patch`: :class:`SLAPatch`, what one ApplySLA installs (family, settings, proj_l, chained override,
  report target) and its entry points;
* :mod:`.run`: :class:`RunState`, made fresh for each sampling run (window, steps, counters, timing, captures);
* :mod:`.route`: whether a self-attention call runs SLA, and if not why;
* :mod:`.sparse_call`: the SLA path of one call (proj_l, backend, kernel, keep counters);
* :mod:`.patch`: the ComfyUI hooks: the attention override, the block-index patch, the sampling-run
  (``OUTER_SAMPLE``) and model-call (``APPLY_MODEL``) wrappers;
* :mod:`.ops`: the ``comfyui_sla::`` torch custom ops through which a compiled model reaches its patch, and the
  call-site table that rebuilds ComfyUI's call for its dense path;
* :mod:`.schedule`: keep_schedule parsing and the global step of a model call;
* :mod:`.timing`: attention / model-call timing of a run (CUDA events read at its end) for the run report;
* :mod:`.capture`: q/k capture for the SLA Attention Map node, armed only while such a node waits;
* :mod:`.stats`: the run counters, dense-reason codes and the summary line / run report text;
* :mod:`.log`: the ``comfyui_sla`` logger and ``log_once``.

May import torch and the math modules of :mod:`sla` (spec, functional, families); never ComfyUI (its objects are
duck-typed) and never :mod:`sla.checkpoint`.
"""
