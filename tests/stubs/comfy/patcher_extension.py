"""Stand-in of comfy/patcher_extension.py: wrapper types and the executor that chains wrappers."""
from __future__ import annotations

from typing import Callable


class WrappersMP:
    OUTER_SAMPLE = "outer_sample"
    PREPARE_SAMPLING = "prepare_sampling"
    SAMPLER_SAMPLE = "sampler_sample"
    PREDICT_NOISE = "predict_noise"
    CALC_COND_BATCH = "calc_cond_batch"
    APPLY_MODEL = "apply_model"
    DIFFUSION_MODEL = "diffusion_model"

    @classmethod
    def init_wrappers(cls) -> dict:
        return {}


def add_wrapper_with_key(wrapper_type: str, key: str, wrapper: Callable, transformer_options: dict,
                         is_model_options=False):
    if is_model_options:
        transformer_options = transformer_options.setdefault("transformer_options", {})
    transformer_options.setdefault("wrappers", {}).setdefault(wrapper_type, {}).setdefault(key, []).append(wrapper)


def get_all_wrappers(wrapper_type: str, transformer_options: dict, is_model_options=False):
    if is_model_options:
        transformer_options = transformer_options.get("transformer_options", {})
    out = []
    for lst in transformer_options.get("wrappers", {}).get(wrapper_type, {}).values():
        out.extend(lst)
    return out


class WrapperExecutor:
    """Calls wrappers[idx](executor, *args, **kwargs); the last executor calls ``original``."""

    def __init__(self, original: Callable, class_obj: object, wrappers: list, idx: int):
        self.original = original
        self.class_obj = class_obj
        self.wrappers = list(wrappers)
        self.idx = idx
        self.is_last = idx == len(wrappers)

    def __call__(self, *args, **kwargs):
        nxt = WrapperExecutor(self.original, self.class_obj, self.wrappers, self.idx + 1)
        return nxt.execute(*args, **kwargs)

    def execute(self, *args, **kwargs):
        if self.is_last:
            return self.original(*args, **kwargs)
        return self.wrappers[self.idx](self, *args, **kwargs)

    @classmethod
    def new_executor(cls, original: Callable, wrappers: list, idx=0):
        return cls(original, None, wrappers, idx)

    @classmethod
    def new_class_executor(cls, original: Callable, class_obj: object, wrappers: list, idx=0):
        return cls(original, class_obj, wrappers, idx)
