"""Stand-in of comfy/model_base.py: a BaseModel holding the diffusion model and its sampling schedule."""
import torch

import comfy.patcher_extension as pe
from comfy.model_sampling import ModelSamplingDiscreteFlow


class BaseModel(torch.nn.Module):
    def __init__(self, diffusion_model, shift=1.0):
        super().__init__()
        self.diffusion_model = diffusion_model
        self.model_sampling = ModelSamplingDiscreteFlow(shift=shift)

    def apply_model(self, x, t, c_concat=None, c_crossattn=None, control=None, transformer_options={}, **kwargs):
        # APPLY_MODEL wrappers around the call, as ComfyUI's BaseModel.apply_model runs them (same signature)
        return pe.WrapperExecutor.new_class_executor(
            self._apply_model, self, pe.get_all_wrappers(pe.WrappersMP.APPLY_MODEL, transformer_options)
        ).execute(x, t, c_concat, c_crossattn, control, transformer_options, **kwargs)

    def _apply_model(self, x, t, c_concat=None, c_crossattn=None, control=None, transformer_options={}, **kwargs):
        transformer_options = transformer_options.copy()  # as ComfyUI does before calling the diffusion model
        return self.diffusion_model(x, t, c_crossattn, transformer_options=transformer_options, **kwargs)


class WAN21(BaseModel):
    pass


class MiniMaxH3(BaseModel):
    pass
