"""Stand-in of comfy/model_sampling.py: a discrete-flow schedule (Wan's) with percent_to_sigma."""
import torch


class ModelSamplingDiscreteFlow(torch.nn.Module):
    def __init__(self, shift=1.0, multiplier=1000):
        super().__init__()
        self.shift = shift
        self.multiplier = multiplier

    def sigma(self, timestep):
        t = timestep / self.multiplier
        return self.shift * t / (1 + (self.shift - 1) * t)

    def percent_to_sigma(self, percent):
        if percent <= 0.0:
            return 999999999.9
        if percent >= 1.0:
            return 0.0
        return float(self.sigma(torch.tensor((1.0 - percent) * self.multiplier)))
