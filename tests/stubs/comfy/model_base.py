"""Stand-in of comfy/model_base.py: a BaseModel holding the diffusion model and its sampling schedule."""
import torch

from comfy.model_sampling import ModelSamplingDiscreteFlow


class BaseModel(torch.nn.Module):
    def __init__(self, diffusion_model, shift=1.0):
        super().__init__()
        self.diffusion_model = diffusion_model
        self.model_sampling = ModelSamplingDiscreteFlow(shift=shift)

    def apply_model(self, x, t, c_crossattn=None, transformer_options={}, **kwargs):
        return self.diffusion_model(x, t, c_crossattn, transformer_options=transformer_options, **kwargs)


class WAN21(BaseModel):
    pass
