"""ComfyUI's side of the pack: the node classes (:mod:`.sla_nodes`, thin: validate inputs, call the bridge) and
:mod:`.comfy_bridge`, the only module that talks to ComfyUI (``comfy.*``, ``folder_paths``, lazily imported).

May import :mod:`sla` (spec, runtime, checkpoint); never ``kernels`` directly.
"""
