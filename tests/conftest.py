"""Load the repository as the package ``comfyui_sla``, the way ComfyUI loads a custom node pack by its path; give the
tests that boot real ComfyUI (COMFYUI_PATH) private copies of the checkouts."""
import atexit
import os
import pathlib
import shutil
import sys
import tempfile

import torch

# Without a GPU, Triton kernels run through its CPU interpreter; it must be chosen before any kernel is defined.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from _load_pack import load_pack  # noqa: E402

load_pack()


def _private_checkouts() -> None:
    """ComfyUI writes into its own tree when imported (``input/``, bytecode), and the trees may be shared or
    read-only: every checkout in COMFYUI_PATH is copied to a temporary folder of the same name, which the tests
    (and their subprocesses, through the environment) use instead."""
    paths = [p for p in os.environ.get("COMFYUI_PATH", "").split(os.pathsep) if p.strip()]
    if not paths or os.environ.get("COMFYUI_PATH_IN_PLACE") == "1":
        return
    scratch = tempfile.mkdtemp(prefix="comfyui-checkouts-")
    atexit.register(shutil.rmtree, scratch, True)
    copies = []
    for i, p in enumerate(paths):
        dst = os.path.join(scratch, str(i), os.path.basename(os.path.abspath(p).rstrip("/")))  # test ids: the name
        shutil.copytree(p, dst, symlinks=True, copy_function=shutil.copyfile,
                        ignore=shutil.ignore_patterns("__pycache__", ".git"))
        for d, _, _ in os.walk(dst):  # copytree keeps the folders' modes: a read-only tree stays read-only
            os.chmod(d, 0o755)
        copies.append(dst)
    os.environ["COMFYUI_PATH"] = os.pathsep.join(copies)


_private_checkouts()
