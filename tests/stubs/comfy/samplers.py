"""Stand-in of comfy/samplers.py: a CFGGuider whose ``sample`` brackets a run with OUTER_SAMPLE wrappers and
calls the model once per sigma with ``transformer_options["sigmas"]`` set (a plain Euler flow step)."""
import comfy.patcher_extension as pe


class CFGGuider:
    def __init__(self, model_patcher):
        self.model_patcher = model_patcher
        self.model_options = model_patcher.model_options
        self.context = None
        self.extra = {}

    def set_conds(self, context, **extra):
        # extra: model conditioning kwargs (minimax_payload, ...) passed to every model call, as extra_conds makes
        self.context = context
        self.extra = extra

    def outer_sample(self, noise, latent_image, sampler, sigmas, denoise_mask=None, callback=None,
                     disable_pbar=False, seed=None):
        model = self.model_patcher.model
        x = noise * sigmas[0] + latent_image
        for i in range(len(sigmas) - 1):
            to = dict(self.model_options["transformer_options"])
            to["sigmas"] = sigmas[i:i + 1].expand(x.shape[0])
            to["sample_sigmas"] = sigmas
            v = model.apply_model(x, to["sigmas"], c_crossattn=self.context, transformer_options=to, **self.extra)
            x = x + (sigmas[i + 1] - sigmas[i]) * v
        return x

    def sample(self, noise, latent_image, sampler, sigmas, denoise_mask=None, callback=None, disable_pbar=False,
               seed=None):
        if sigmas.shape[-1] == 0:
            return latent_image
        orig = self.model_options
        self.model_options = {k: (dict(v) if isinstance(v, dict) else v) for k, v in orig.items()}
        to = self.model_options.setdefault("transformer_options", {})
        wrappers = {k: {k1: list(w1) for k1, w1 in w.items()} for k, w in self.model_patcher.wrappers.items()}
        to["wrappers"] = wrappers
        try:
            executor = pe.WrapperExecutor.new_class_executor(
                self.outer_sample, self, pe.get_all_wrappers(pe.WrappersMP.OUTER_SAMPLE, self.model_options,
                                                             is_model_options=True))
            return executor.execute(noise, latent_image, sampler, sigmas, denoise_mask, callback, disable_pbar, seed)
        finally:
            self.model_options = orig
