"""Launch a kernel with fewer pipeline stages where this GPU's shared memory is short.

The shared memory a configuration needs depends on the GPU generation and the Triton version (99 KB per block
on sm_86 / sm_89 / sm_120 against 227 KB on sm_90; :mod:`.targets` checks the defaults offline). When a launch
finds it over this GPU's limit, the kernel is retried with fewer stages, and the stage count that fits is
remembered per (kernel, device, configuration).
"""
from __future__ import annotations

import torch
from triton.runtime.errors import OutOfResources

_STAGES_THAT_FIT: dict = {}


def tl_dtype(dtype: torch.dtype):
    """The triton.language dtype of a torch dtype (bf16 / fp16 / fp32)."""
    import triton.language as tl
    return {torch.bfloat16: tl.bfloat16, torch.float16: tl.float16, torch.float32: tl.float32}[dtype]


def launch(name: str, kernel, grid, args, consts: dict, device: torch.device, num_warps: int, num_stages: int):
    """``kernel[grid](*args, **consts, num_warps, num_stages)``, with fewer stages where shared memory is short.

    Raises ValueError naming the configuration, the bytes it needs and this GPU's limit when one stage does not
    fit either.
    """
    # The key is built only once some configuration has needed fewer stages (never, on the tuned GPUs).
    key = lambda: (name, str(device), num_warps, tuple(sorted((k, str(v)) for k, v in consts.items())))  # noqa: E731
    stages = min(num_stages, _STAGES_THAT_FIT.get(key(), num_stages)) if _STAGES_THAT_FIT else num_stages
    while True:
        try:
            kernel[grid](*args, **consts, num_warps=num_warps, num_stages=stages)
        except OutOfResources as e:
            if stages <= 1 or e.name != "shared memory":
                raise ValueError(
                    f"{name}: this configuration needs {e.required} bytes of {e.name} per block and the GPU allows "
                    f"{e.limit} ({', '.join(f'{k}={v}' for k, v in consts.items())}, num_warps={num_warps}, "
                    f"num_stages={stages}); use bf16/fp16 inputs or block_q=64") from None
            stages -= 1
            continue
        if stages != num_stages:
            _STAGES_THAT_FIT[key()] = stages
        return
