"""ComfyUI node classes of the SLA pack (``sla_nodes``) and the one module that imports ComfyUI (``comfy_bridge``)."""
