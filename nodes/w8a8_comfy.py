"""ComfyUI side of the W8A8 path: an ops class whose Linear keeps TurboDiffusion's int8 tiles, and the loader.

The model stays a native ComfyUI MODEL (``comfy.sd.load_diffusion_model_state_dict`` with
``model_options["custom_operations"]``, honoured by ComfyUI 0.3.6x and 0.8.x alike). Layers that the state dict
gives as int8 ``weight`` + ``int8_scale`` (Wan block Linears of a ``-quant`` file) run :func:`sla.quant.w8a8_linear`;
every other layer is ``comfy.ops.manual_cast``'s, i.e. cast to the activations' dtype as ComfyUI does.

LoRA: supported by dequantise-add-requantise. ComfyUI's ``ModelPatcher.patch_weight_to_device`` finds
``convert_weight`` / ``set_weight`` on such a layer: it dequantises (``convert_weight``), adds the patches in fp32,
and ``set_weight`` requantises: on the file's tile scales, except tiles whose patched values no longer fit, whose
scale grows to their new amax / 127. The patched scales belong to the patched weight object: when ComfyUI unpatches
(it puts the backed-up ``weight`` back) the file's scales apply again, so unpatching is exact. A patcher that updates
weights in place (``weight_inplace_update``) keeps the file's scales (the restore would not bring a grown scale
back); values beyond a tile's range then saturate at +-127 steps, logged as a warning naming the layer. With
low-VRAM partial loading (patches applied at each call) the layer dequantises, applies the patches and runs the
float matmul.

Dynamic VRAM (ComfyUI with comfy_aimdo, its GPU default since early 2026): the patcher leaves the int8 codes in CPU
memory, gives the layer a VRAM slot (``_v``, one byte per weight: ComfyUI sizes it by the layer's
``weight_comfy_model_dtype``, set to int8 here, not the model's dtype) and hands LoRA over as
``weight_lowvram_function`` instead of patching weights. The layer then runs ComfyUI's own
``comfy.ops.cast_bias_weight`` asking for int8: per call, the codes (and bias) are copied into the slot only when it
is not resident (first call, or after ComfyUI evicted it); on such a copy ComfyUI runs the patch once, here through
:class:`TileLowVramPatch` (dequantise, add, requantise on grown scales kept on the layer), and keeps the patched
codes in the slot, so resident calls copy and patch nothing, exactly as for ComfyUI's own cast layers. The float
layers run in the dtype ComfyUI chose for the model (fp16 for Wan on GPUs where ComfyUI prefers it, e.g. an H100),
cast per call from the file's bf16 / fp32 weights.
"""
from __future__ import annotations

import logging
import weakref

import torch

from ..sla.quant import dequantize_tiles, grown_scales, requantize_on_grid, w8a8_linear
from ..sla.quant_load import SCALE_SUFFIX

log = logging.getLogger("comfyui_sla")

INT8_CHOICE = "int8 (W8A8, -quant files)"
_SCALE = SCALE_SUFFIX.lstrip(".")  # buffer name of the tile scales
_ops_cache: dict = {}


def _apply_weight_function(f, w: torch.Tensor) -> torch.Tensor:
    """One low-VRAM weight patch on a dequantised fp32 weight. ComfyUI's LowVramPatch is applied through
    ``comfy.lora.calculate_weight`` directly: its own ``__call__`` differs between versions (0.3.6x calls our
    convert/set functions itself, 0.8 does not)."""
    import comfy.lora
    import comfy.model_patcher as mp
    if isinstance(f, mp.LowVramPatch):
        return comfy.lora.calculate_weight(f.patches[f.key], w, f.key)
    return f(w)


def _is_cpu(device) -> bool:
    import comfy.model_management
    return comfy.model_management.is_device_cpu(device)


def _tile_patch_type():
    """``comfy.model_patcher.LowVramPatch`` for int8 layers under dynamic VRAM (the class is swapped in place, so
    ComfyUI's pins and prepared patch copies stay with the same object)."""
    if "patch" in _ops_cache:
        return _ops_cache["patch"]
    import comfy.model_patcher as mp

    class TileLowVramPatch(mp.LowVramPatch):
        sla_layer = None  # weakref to the int8 Linear

        def __call__(self, codes: torch.Tensor) -> torch.Tensor:
            """int8 codes [out, in] of the file (any dtype, compute device) -> patched int8 codes [out, in]; their tile
            scales (fp32 [ceil(out/128), ceil(in/128)]) go to the layer's ``_sla_lowvram_scale``."""
            layer = self.sla_layer()
            base = getattr(layer, _SCALE).to(codes.device)
            w = super().__call__(dequantize_tiles(codes, base, torch.float32))  # calculate_weight in fp32
            scale = grown_scales(w, base)
            q, _ = requantize_on_grid(w, scale)
            layer.__dict__["_sla_lowvram_scale"] = scale
            return q

    _ops_cache["patch"] = TileLowVramPatch
    return TileLowVramPatch


def make_ops():
    """The ``custom_operations`` class (a ``comfy.ops.manual_cast`` whose Linear may hold int8 tiles)."""
    if "ops" in _ops_cache:
        return _ops_cache["ops"]
    import comfy.ops

    base = comfy.ops.manual_cast

    class Linear(base.Linear):
        sla_int8 = False
        sla_name = ""

        def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                  error_msgs):
            wk, sk = prefix + "weight", prefix + _SCALE
            w = state_dict.get(wk)
            if w is None or w.dtype != torch.int8 or sk not in state_dict:
                return super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                                     unexpected_keys, error_msgs)
            scale = state_dict[sk]
            if tuple(w.shape) != (self.out_features, self.in_features):
                error_msgs.append(f"{wk}: int8 weight {list(w.shape)} does not fit Linear({self.in_features}, "
                                  f"{self.out_features})")
                return
            # Adopt the int8 tiles as they are (the float weight allocated by __init__ was never touched).
            self.weight = torch.nn.Parameter(w.as_subclass(torch.Tensor), requires_grad=False)
            self.register_buffer(_SCALE, scale.as_subclass(torch.Tensor).to(torch.float32))
            # ComfyUI archived the model dtype before the tiles came; dynamic VRAM would size and fill the slot in it.
            self.weight_comfy_model_dtype = torch.int8
            self.sla_int8 = True
            self.sla_name = prefix[:-1]
            # Only int8 layers expose these: ComfyUI's patcher then dequantises / requantises around LoRA patches.
            self.convert_weight = self._int8_convert_weight
            self.set_weight = self._int8_set_weight
            rest = {k: v for k, v in state_dict.items() if k.startswith(prefix) and k not in (wk, sk)}
            super()._load_from_state_dict(rest, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                          error_msgs)
            for k in (wk, sk):  # registered during this call: torch lists them as missing
                if k in missing_keys:
                    missing_keys.remove(k)

        def sla_scale(self) -> torch.Tensor:
            """The tile scales of the current ``weight``: patched ones while ``weight`` is the patched object."""
            patch = self.__dict__.get("_sla_patch")
            if patch is not None:
                if patch[0]() is self.weight:
                    scale = patch[1]
                    # ComfyUI patches a layer before it moves it to the GPU: the scales follow the weight.
                    if scale.device != self.weight.device and not torch.compiler.is_compiling():
                        scale = scale.to(self.weight.device)
                        self.__dict__["_sla_patch"] = (patch[0], scale)
                    return scale
                self.__dict__["_sla_patch"] = None  # ComfyUI restored the original weight
            return getattr(self, _SCALE)

        def _int8_convert_weight(self, weight, inplace=False, **kwargs):
            """int8 codes (any dtype) -> dequantised fp32 weight on weight's device."""
            return dequantize_tiles(weight.to(torch.float32), self.sla_scale(), torch.float32)

        def _int8_set_weight(self, weight, inplace_update=False, seed=None, return_weight=False, **kwargs):
            """Patched float weight -> int8 (see the module docstring for the scales)."""
            base = getattr(self, _SCALE)
            scale = base if inplace_update else grown_scales(weight, base)
            q, clipped = requantize_on_grid(weight, scale)
            if clipped:
                log.warning("SLA W8A8: a weight patch (LoRA) pushed %d values of %s beyond its int8 tile range; "
                            "with in-place weight updates they saturate at +-127 steps", clipped, self.sla_name)
            if return_weight:
                return dequantize_tiles(q, scale, torch.float32)
            q = q.to(self.weight.device)
            if inplace_update:
                self.weight.data.copy_(q)
                return
            new = torch.nn.Parameter(q, requires_grad=False)
            self.weight = new
            self.__dict__["_sla_patch"] = (weakref.ref(new), scale.to(q.device))

        def _forward_dynamic(self, x):
            """Dynamic VRAM: ComfyUI's cast fills the VRAM slot with int8 codes and runs LoRA (see the module
            docstring). x [..., in] -> [..., out] in x's dtype."""
            import comfy.ops
            lv = self.__dict__.get("weight_lowvram_function")
            patch_type = _tile_patch_type()
            if lv is not None and type(lv) is patch_type.__base__:
                lv.__class__, lv.sla_layer = patch_type, weakref.ref(self)
            # ComfyUI would hand other weight functions int8 codes: they run below on the dequantised weight.
            fns, self.weight_function = self.weight_function, []
            try:
                w, b, offload = comfy.ops.cast_bias_weight(self, x, dtype=torch.int8, bias_dtype=x.dtype,
                                                           offloadable=True)
            finally:
                self.weight_function = fns
            try:
                # With a patch, the slot holds patched codes (fresh or resident): their scales are the layer's.
                s = self.__dict__["_sla_lowvram_scale"] if lv is not None else self.sla_scale()
                s = s.to(x.device)
                if fns:
                    wf = dequantize_tiles(w, s, torch.float32)
                    for f in fns:
                        wf = f(wf)
                    return torch.nn.functional.linear(x, wf.to(x.dtype), b)
                return w8a8_linear(x, w, s, b, name=self.sla_name)
            finally:
                comfy.ops.uncast_bias_weight(self, w, b, offload)

        def forward(self, x, *args, **kwargs):
            if not self.sla_int8:
                return super().forward(x, *args, **kwargs)
            if hasattr(self, "_v") and not _is_cpu(x.device):  # a dynamic-VRAM slot (comfy_aimdo), as comfy.ops tests
                return self._forward_dynamic(x)
            w, s, b = self.weight, self.sla_scale(), self.bias
            if w.device != x.device:  # low-VRAM: the layer stayed in the offload device
                w = w.to(x.device, non_blocking=True)
            if s.device != x.device:  # else the kernel would refuse them and the layer run dequantised
                s = s.to(x.device, non_blocking=True)
            if b is not None and b.device != x.device:
                b = b.to(x.device, non_blocking=True)
            if len(self.weight_function) or len(self.bias_function):
                wf = dequantize_tiles(w, s, torch.float32)
                for f in self.weight_function:
                    wf = _apply_weight_function(f, wf)
                for f in self.bias_function:
                    b = f(b)
                return torch.nn.functional.linear(x, wf.to(x.dtype), None if b is None else b.to(x.dtype))
            return w8a8_linear(x, w, s, b, name=self.sla_name)

    class SLAW8A8Ops(base):
        pass

    SLAW8A8Ops.Linear = Linear
    _ops_cache["ops"] = SLAW8A8Ops
    return SLAW8A8Ops


def int8_layers(dm) -> list:
    """Names of the Linear modules of a diffusion model that hold int8 tiles."""
    return [n for n, m in dm.named_modules() if getattr(m, "sla_int8", False)]


def load_int8_checkpoint(path: str, progress=None):
    """Read a ``-quant`` file keeping its int8 tiles and build the ComfyUI model from it.

    Returns (ModelPatcher or None when ComfyUI detects no model, LoadedCheckpoint (state dict consumed; proj_l and
    info kept), summary line). Raises CheckpointError for files without int8 tiles and RuntimeError naming a layer
    when int8 tiles did not land in an int8 Linear (an ops class not honoured)."""
    import comfy.sd
    from ..sla.checkpoint import consume_on_copy, plain_tensors
    from ..sla.quant_load import SCALE_SUFFIX as sfx, expected_layer_names, load_checkpoint_int8, summary_int8

    ck = load_checkpoint_int8(path, progress=progress)
    want = expected_layer_names(ck.state_dict)
    int8 = {k: v for k, v in ck.state_dict.items()
            if k.endswith(sfx) or (k.endswith(".weight") and k[: -len(".weight")] in set(want))}
    rest = {k: v for k, v in ck.state_dict.items() if k not in int8}
    ck.state_dict.clear()
    # The float tensors are freed as ComfyUI copies them (as for the other dtypes); the int8 ones are adopted.
    with consume_on_copy(rest) as sd:
        sd.update(int8)
        del int8
        model = comfy.sd.load_diffusion_model_state_dict(sd, model_options={"custom_operations": make_ops()})
    if model is None:
        return None, ck, summary_int8(ck.info)
    dm = model.model.diffusion_model
    plain_tensors(dm)
    got = set(int8_layers(dm))
    missing = [n for n in want if n not in got]
    if missing:
        raise RuntimeError(f"SLA W8A8: {len(missing)} int8 layers were not loaded as int8 (e.g. {missing[0]}): this "
                           "ComfyUI did not build the model with the pack's custom_operations")
    n_bytes = sum(t.numel() * t.element_size() for t in list(dm.parameters()) + list(dm.buffers()))
    log.info("SLA W8A8: %d Linear layers run int8 (W8A8); model weights %.2f GB", len(got), n_bytes / 1e9)
    return model, ck, summary_int8(ck.info)
