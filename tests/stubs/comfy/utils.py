"""Stand-in of comfy/utils.py: ProgressBar and load_torch_file."""
import torch

PROGRESS_BAR_HOOK = None


def load_torch_file(ckpt, safe_load=False, device=None, return_metadata=False):
    device = device or torch.device("cpu")
    if str(ckpt).lower().endswith((".safetensors", ".sft")):
        import safetensors.torch
        sd = safetensors.torch.load_file(ckpt, device=str(device))
    else:
        sd = torch.load(ckpt, map_location=device, weights_only=True)
    return (sd, None) if return_metadata else sd


class ProgressBar:
    def __init__(self, total, node_id=None):
        self.total = total
        self.current = 0
        self.updates = []

    def update_absolute(self, value, total=None, preview=None):
        if total is not None:
            self.total = total
        self.current = min(value, self.total)
        self.updates.append((self.current, self.total))

    def update(self, value):
        self.update_absolute(self.current + value)
