"""Boot a real ComfyUI checkout headless on the CPU, with this pack installed as a custom node.

Used by ``comfy_runner.py`` (which runs in its own process, one per checkout: two ComfyUI versions, or ComfyUI
and the vendored stand-in of ``tests/stubs``, cannot share one interpreter since both own the top-level ``comfy``
and ``nodes`` modules).

Steps (what ComfyUI's main.py does, minus the server):

1. ``comfy.cli_args.args.cpu = True`` before ``comfy.model_management`` is imported;
2. a temporary models folder registered with ``folder_paths.add_model_folder_path``;
3. the repository symlinked into a temporary ``custom_nodes`` folder, so that ComfyUI's own custom-node loader
   (``nodes.init_extra_nodes`` -> ``load_custom_node``) imports the pack by path, exactly as for a user;
4. ``execution.validate_prompt`` + ``execution.PromptExecutor(server_stub).execute`` for API-format prompts.
"""
from __future__ import annotations

import asyncio
import importlib.abc
import importlib.machinery
import importlib.util
import logging
import os
import sys
import types
import uuid

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PACK_DIR_NAME = "comfyui-sla"

# Packages that ComfyUI imports at module level for features these tests never touch (audio models, the Stable
# Cascade coder, Cosmos). PyPI has no CPU build of them that matches every torch; when they are missing we serve
# inert placeholder modules so ``import comfy.sd`` works. Any use of a placeholder raises.
OPTIONAL_MODULES = ("torchvision", "torchaudio")


class _Placeholder:
    """Stands in for any attribute of a missing optional package; using it raises a clear error."""

    def __init__(self, name: str):
        self._name = name

    def __getattr__(self, item):
        return _Placeholder(f"{self._name}.{item}")

    def __call__(self, *args, **kwargs):
        raise RuntimeError(f"{self._name} is not installed (placeholder from tests/integration/comfy_env.py)")

    def __mro_entries__(self, bases):  # allows ``class X(torchvision.something.Base)`` at import time
        return (object,)


class _PlaceholderModule(types.ModuleType):
    def __getattr__(self, item):
        if item.startswith("__"):
            raise AttributeError(item)
        return _Placeholder(f"{self.__name__}.{item}")


class _PlaceholderFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def __init__(self, roots):
        self.roots = tuple(roots)

    def find_spec(self, fullname, path=None, target=None):
        if fullname.split(".")[0] in self.roots:
            return importlib.machinery.ModuleSpec(fullname, self, is_package=True)
        return None

    def create_module(self, spec):
        mod = _PlaceholderModule(spec.name)
        mod.__path__ = []
        mod.__version__ = "0.0.0+placeholder"
        return mod

    def exec_module(self, module):
        return None


def install_placeholders() -> list:
    """Serve placeholders for the optional packages that cannot be imported; returns their names."""
    missing = []
    for name in OPTIONAL_MODULES:
        try:
            importlib.import_module(name)
        except Exception:  # absent, or a binary build that does not match the installed torch
            for mod in [m for m in sys.modules if m == name or m.startswith(name + ".")]:
                del sys.modules[mod]  # drop a half-imported package
            missing.append(name)
    if missing:
        sys.meta_path.insert(0, _PlaceholderFinder(missing))
    return missing


class ServerStub:
    """The parts of ``server.PromptServer`` that ``execution.PromptExecutor`` touches."""

    def __init__(self):
        self.client_id = None
        self.last_node_id = None
        self.last_prompt_id = None
        self.messages = []

    def send_sync(self, event, data, sid=None):
        self.messages.append((event, data))

    def queue_updated(self):
        pass

    def send_progress_text(self, *args, **kwargs):
        pass


class ComfyEnv:
    """A booted ComfyUI: ``nodes``, ``execution``, ``folder_paths`` modules plus helpers to run prompts."""

    def __init__(self, comfy_path: str, work_dir: str, extra_nodes: dict | None = None):
        self.comfy_path = os.path.abspath(comfy_path)
        self.work_dir = os.path.abspath(work_dir)
        self.models_dir = os.path.join(self.work_dir, "models")
        self.custom_nodes_dir = os.path.join(self.work_dir, "custom_nodes")
        for sub in ("diffusion_models", "loras", "text_encoders", "vae", "clip_vision"):
            os.makedirs(os.path.join(self.models_dir, sub), exist_ok=True)
        for sub in ("input", "output", "temp"):
            os.makedirs(os.path.join(self.work_dir, sub), exist_ok=True)
        os.makedirs(self.custom_nodes_dir, exist_ok=True)
        link = os.path.join(self.custom_nodes_dir, PACK_DIR_NAME)
        if not os.path.exists(link):
            os.symlink(REPO, link, target_is_directory=True)
        self.pack_path = link
        self.placeholders = install_placeholders()
        self._boot(extra_nodes or {})

    def _boot(self, extra_nodes: dict):
        if self.comfy_path not in sys.path:
            sys.path.insert(0, self.comfy_path)
        from comfy.cli_args import args  # parses no argv: enable_args_parsing() is never called
        args.cpu = True
        args.disable_all_custom_nodes = False
        import comfy.model_management  # noqa: F401  (must come after args.cpu)
        import folder_paths
        # main.py imports the checkout's ``utils`` package before ``nodes`` puts comfy/ (with its utils.py) first on
        # sys.path; without this, comfy_extras that import ``utils.install_util`` fail.
        import utils.extra_config  # noqa: F401

        # Only our temporary folders: no model or custom node of the checkout leaks into the run.
        folder_paths.folder_names_and_paths["custom_nodes"] = ([self.custom_nodes_dir], set())
        for kind in ("diffusion_models", "loras", "text_encoders", "vae", "clip_vision"):
            folder_paths.add_model_folder_path(kind, os.path.join(self.models_dir, kind), is_default=True)
        folder_paths.set_output_directory(os.path.join(self.work_dir, "output"))
        folder_paths.set_temp_directory(os.path.join(self.work_dir, "temp"))
        folder_paths.set_input_directory(os.path.join(self.work_dir, "input"))

        import nodes
        import execution
        self.folder_paths, self.nodes, self.execution = folder_paths, nodes, execution
        asyncio.run(nodes.init_extra_nodes(init_custom_nodes=True, init_api_nodes=False))
        nodes.NODE_CLASS_MAPPINGS.update(extra_nodes)

    # ------------------------------------------------------------------ info

    def pack_module(self):
        """The module ComfyUI's loader created for the pack (keyed by its path, as ``load_custom_node`` does)."""
        return sys.modules.get(self.pack_path.replace(".", "_x_"))

    def node_module(self, node_type: str) -> str:
        cls = self.nodes.NODE_CLASS_MAPPINGS[node_type]
        return getattr(cls, "RELATIVE_PYTHON_MODULE", "") or cls.__module__

    # ------------------------------------------------------------------ execution

    def run_prompt(self, prompt: dict) -> None:
        """Validate then execute an API-format prompt in a fresh executor (no cache shared between prompts)."""
        prompt_id = str(uuid.uuid4())
        valid = asyncio.run(self.execution.validate_prompt(prompt_id, prompt, None))
        if not valid[0]:
            raise RuntimeError(f"prompt did not validate: {valid[1]} {valid[3]}")
        server = ServerStub()
        try:  # ComfyUI >= 0.4 reads cache_args["ram"] (>= 0.33 also "ram_inactive") while executing, as main.py passes
            executor = self.execution.PromptExecutor(server, cache_args={"lru": 0, "ram": 0.0, "ram_inactive": 0.0})
        except TypeError:  # 0.3.x: PromptExecutor(server, cache_type=False, cache_size=None)
            executor = self.execution.PromptExecutor(server)
        executor.execute(prompt, prompt_id, {}, valid[2])
        if not executor.success:
            errors = [d for e, d in executor.status_messages if e == "execution_error"]
            raise RuntimeError(f"prompt failed: {errors}")
        logging.getLogger(__name__).debug("prompt %s ran %d messages", prompt_id, len(server.messages))


def with_recording_override(model, record):
    """A clone of ``model`` with another pack's attention override installed as one would be (chaining to any
    override already there): ``record(args, kwargs)`` sees every call first, which then goes on unchanged."""
    m = model.clone()
    to = m.model_options.setdefault("transformer_options", {})
    before = to.get("optimized_attention_override")

    def recording(func, *args, **kwargs):
        record(args, kwargs)
        return before(func, *args, **kwargs) if before is not None else func(*args, **kwargs)

    to["optimized_attention_override"] = recording
    return m


def checkouts_from_env() -> list:
    """COMFYUI_PATH: one ComfyUI checkout, or several separated by os.pathsep (each is tested on its own)."""
    raw = os.environ.get("COMFYUI_PATH", "")
    return [os.path.abspath(p) for p in raw.split(os.pathsep) if p.strip()]


def run_runner(comfy_path: str, work_dir: str, *extra_args: str, timeout: float = 900) -> dict:
    """Run ``comfy_runner.py`` for one checkout in a subprocess; returns its results.json (raises on failure)."""
    import json
    import subprocess

    runner = os.path.join(os.path.dirname(os.path.abspath(__file__)), "comfy_runner.py")
    proc = subprocess.run([sys.executable, runner, "--comfy", comfy_path, "--work", work_dir, *extra_args],
                          capture_output=True, text=True, timeout=timeout)
    path = os.path.join(work_dir, "results.json")
    if proc.returncode != 0 or not os.path.exists(path):
        raise RuntimeError(f"comfy_runner.py failed for {comfy_path} (exit {proc.returncode}):\n"
                           f"{proc.stdout[-4000:]}\n{proc.stderr[-8000:]}")
    with open(path) as f:
        results = json.load(f)
    results["stdout"] = proc.stdout
    return results
