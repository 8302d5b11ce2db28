"""Stand-in of comfy/model_patcher.py: the parts of ModelPatcher the pack uses."""
from __future__ import annotations

import copy
from typing import Callable

from comfy.patcher_extension import WrappersMP


def set_model_options_patch_replace(model_options, patch, name, block_name, number, transformer_index=None):
    to = model_options["transformer_options"].copy()
    replaces = dict(to.get("patches_replace", {}))
    named = dict(replaces.get(name, {}))
    key = (block_name, number) if transformer_index is None else (block_name, number, transformer_index)
    named[key] = patch
    replaces[name] = named
    to["patches_replace"] = replaces
    model_options["transformer_options"] = to
    return model_options


class ModelPatcher:
    def __init__(self, model, load_device, offload_device, size=0, weight_inplace_update=False):
        self.model = model
        self.load_device = load_device
        self.offload_device = offload_device
        self.size = size
        self.weight_inplace_update = weight_inplace_update
        self.patches = {}
        self.object_patches = {}
        self.model_options = {"transformer_options": {}}
        self.wrappers = WrappersMP.init_wrappers()
        self.parent = None

    def clone(self):
        n = self.__class__(self.model, self.load_device, self.offload_device, self.size,
                           weight_inplace_update=self.weight_inplace_update)
        n.patches = {k: v[:] for k, v in self.patches.items()}
        n.object_patches = self.object_patches.copy()
        n.model_options = copy.deepcopy(self.model_options)
        n.wrappers = {k: {k1: w1.copy() for k1, w1 in w.items()} for k, w in self.wrappers.items()}
        n.parent = self
        return n

    def add_patches(self, patches, strength_patch=1.0, strength_model=1.0):
        for k, v in patches.items():
            self.patches.setdefault(k, []).append((strength_patch, v, strength_model))
        return list(patches)

    def set_model_patch_replace(self, patch, name, block_name, number, transformer_index=None):
        self.model_options = set_model_options_patch_replace(self.model_options, patch, name, block_name, number,
                                                             transformer_index=transformer_index)

    def add_object_patch(self, name, obj):
        self.object_patches[name] = obj

    def get_model_object(self, name: str):
        if name in self.object_patches:
            return self.object_patches[name]
        obj = self.model
        for part in name.split("."):
            obj = getattr(obj, part)
        return obj

    def add_wrapper_with_key(self, wrapper_type: str, key: str, wrapper: Callable):
        self.wrappers.setdefault(wrapper_type, {}).setdefault(key, []).append(wrapper)

    def remove_wrappers_with_key(self, wrapper_type: str, key: str):
        self.wrappers.get(wrapper_type, {}).pop(key, None)

    def get_wrappers(self, wrapper_type: str, key: str):
        return self.wrappers.get(wrapper_type, {}).get(key, [])

    def get_all_wrappers(self, wrapper_type: str):
        out = []
        for lst in self.wrappers.get(wrapper_type, {}).values():
            out.extend(lst)
        return out
