"""The stand-in in tests/stubs keeps ComfyUI's names and signatures: compared, by parsing the sources, with the
real ComfyUI checkouts in .comfy/ when present (git-ignored, so skipped on CI)."""
import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
STUBS = ROOT / "tests" / "stubs"
CHECKOUTS = [p for p in sorted((ROOT / ".comfy").glob("comfy-*")) if (p / "comfy").is_dir()]

# (file relative to the ComfyUI root, qualified name) of everything the stand-in provides and the pack touches.
API = [
    ("comfy/model_patcher.py", "set_model_options_patch_replace"),
    ("comfy/model_patcher.py", "ModelPatcher.__init__"),
    ("comfy/model_patcher.py", "ModelPatcher.clone"),
    ("comfy/model_patcher.py", "ModelPatcher.add_patches"),
    ("comfy/model_patcher.py", "ModelPatcher.set_model_patch_replace"),
    ("comfy/model_patcher.py", "ModelPatcher.add_object_patch"),
    ("comfy/model_patcher.py", "ModelPatcher.get_model_object"),
    ("comfy/model_patcher.py", "ModelPatcher.add_wrapper_with_key"),
    ("comfy/model_patcher.py", "ModelPatcher.remove_wrappers_with_key"),
    ("comfy/model_patcher.py", "ModelPatcher.get_wrappers"),
    ("comfy/model_patcher.py", "ModelPatcher.get_all_wrappers"),
    ("comfy/patcher_extension.py", "add_wrapper_with_key"),
    ("comfy/patcher_extension.py", "get_all_wrappers"),
    ("comfy/patcher_extension.py", "WrapperExecutor.__init__"),
    ("comfy/patcher_extension.py", "WrapperExecutor.__call__"),
    ("comfy/patcher_extension.py", "WrapperExecutor.execute"),
    ("comfy/patcher_extension.py", "WrapperExecutor.new_executor"),
    ("comfy/patcher_extension.py", "WrapperExecutor.new_class_executor"),
    ("comfy/sd.py", "load_diffusion_model_state_dict"),
    ("comfy/utils.py", "load_torch_file"),
    ("comfy/utils.py", "ProgressBar.__init__"),
    ("comfy/utils.py", "ProgressBar.update_absolute"),
    ("comfy/ldm/modules/attention.py", "wrap_attn"),
    ("comfy/ldm/modules/attention.py", "attention_pytorch"),
    ("comfy/ldm/modules/attention.py", "AttentionTensorContainer.__init__"),
    ("comfy/ldm/modules/attention.py", "AttentionTensorContainer.peek"),
    ("comfy/ldm/modules/attention.py", "AttentionTensorContainer.take"),
    ("comfy/ldm/minimax/model.py", "rope_rotation_table"),
    ("comfy/ldm/minimax/model.py", "Attention.forward"),
    ("comfy/ldm/minimax/model.py", "RefinerBlock.forward"),
    ("comfy/ldm/minimax/model.py", "TokenRefiner.forward"),
    ("comfy/ldm/minimax/model.py", "MiniMaxH3Model.preprocess_text_embeds"),
    ("comfy/ldm/minimax/model.py", "MiniMaxH3Model.forward"),
    ("comfy/ldm/minimax/model.py", "MiniMaxH3Model._forward"),
    ("comfy/ldm/wan/model.py", "WanSelfAttention.__init__"),
    ("comfy/ldm/wan/model.py", "WanSelfAttention.forward"),
    ("comfy/ldm/wan/model.py", "WanT2VCrossAttention.forward"),
    ("comfy/ldm/wan/model.py", "WanAttentionBlock.__init__"),
    ("comfy/ldm/wan/model.py", "WanAttentionBlock.forward"),
    ("comfy/ldm/wan/model.py", "WanModel.forward"),
    ("comfy/ldm/wan/model.py", "WanModel.forward_orig"),
    ("comfy/samplers.py", "CFGGuider.__init__"),
    ("comfy/samplers.py", "CFGGuider.sample"),
    ("comfy/model_sampling.py", "ModelSamplingDiscreteFlow.percent_to_sigma"),
    ("folder_paths.py", "add_model_folder_path"),
    ("folder_paths.py", "get_filename_list"),
    ("folder_paths.py", "get_full_path"),
    ("folder_paths.py", "get_full_path_or_raise"),
]
CLASSES = [("comfy/patcher_extension.py", "WrappersMP")]


def _defs(path: pathlib.Path) -> dict:
    """qualified name -> ast node of every function and class in a file (one level of class nesting)."""
    out = {}
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            out[node.name] = node
        elif isinstance(node, ast.ClassDef):
            out[node.name] = node
            for sub in node.body:
                if isinstance(sub, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    out[f"{node.name}.{sub.name}"] = sub
    return out


def _params(fn) -> tuple:
    a = fn.args
    return (tuple(x.arg for x in a.posonlyargs + a.args), a.vararg is not None, tuple(x.arg for x in a.kwonlyargs),
            a.kwarg is not None)


def _class_constants(cls) -> dict:
    return {t.id: ast.literal_eval(n.value) for n in cls.body if isinstance(n, ast.Assign)
            for t in n.targets if isinstance(t, ast.Name)}


@pytest.mark.skipif(not CHECKOUTS, reason="no ComfyUI checkout in .comfy/")
@pytest.mark.parametrize("rel,name", API, ids=[f"{r}:{n}" for r, n in API])
def test_stub_signature_matches_a_real_comfyui(rel, name):
    stub = _defs(STUBS / rel)
    assert name in stub, f"stub {rel} lacks {name}"
    real = {}
    for co in CHECKOUTS:
        defs = _defs(co / rel)
        if name in defs:
            real[co.name] = _params(defs[name])
    assert real, f"{name} exists in no ComfyUI checkout"
    assert _params(stub[name]) in real.values(), f"stub {name}{_params(stub[name])} vs real {real}"


@pytest.mark.skipif(not CHECKOUTS, reason="no ComfyUI checkout in .comfy/")
@pytest.mark.parametrize("rel,name", CLASSES)
def test_stub_constants_match(rel, name):
    stub = _class_constants(_defs(STUBS / rel)[name])
    for co in CHECKOUTS:
        real = _class_constants(_defs(co / rel)[name])
        assert stub == real, co.name
