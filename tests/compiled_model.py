"""A patched model's diffusion model swapped for its compiled module, as ComfyUI's compile wrapper does at sample
time (shared by the compile tests of every model family)."""
from __future__ import annotations

import torch
from torch._dynamo.testing import CompileCounterWithBackend


def compiled(model, backend: str = "aot_eager"):
    """Compile ``model.model.diffusion_model`` (a ModelPatcher's) with a counting ``backend``; returns the counter
    and a function that puts the eager module back."""
    counter = CompileCounterWithBackend(backend)
    base = model.model
    eager = base.diffusion_model
    base.diffusion_model = torch.compile(eager, backend=counter)
    return counter, lambda: setattr(base, "diffusion_model", eager)
