"""A small stand-in of exactly the ComfyUI interfaces the pack touches (same module and function names and
signatures as ComfyUI 0.3.6x / 0.8, minimal bodies), for unit tests on machines without ComfyUI.

Never on ``sys.path`` by default: tests enter :func:`activated`, which swaps any ``comfy`` / ``folder_paths``
modules already imported (e.g. the real ComfyUI of the integration tests) out for the duration and back after.
"""
import contextlib
import os
import sys

STUB_DIR = os.path.dirname(os.path.abspath(__file__))
_TOP = ("comfy", "folder_paths")


def _ours(name):
    return name in _TOP or any(name.startswith(t + ".") for t in _TOP)


def _forget_dynamo_imports():
    """Empty dynamo's process-wide cache of modules by name (``symbolic_convert._import_module``): each activation
    imports fresh module objects, and a guard built on a cached old one fails on the frame it was made for."""
    convert = sys.modules.get("torch._dynamo.symbolic_convert")
    cached = getattr(convert, "_import_module", None)
    if hasattr(cached, "cache_clear"):
        cached.cache_clear()


@contextlib.contextmanager
def activated():
    saved = {n: m for n, m in sys.modules.items() if _ours(n)}
    for n in saved:
        del sys.modules[n]
    sys.path.insert(0, STUB_DIR)
    _forget_dynamo_imports()
    try:
        import comfy  # noqa: F401
        assert os.path.dirname(os.path.dirname(comfy.__file__)) == STUB_DIR, comfy.__file__
        yield
    finally:
        sys.path.remove(STUB_DIR)
        for n in [n for n in sys.modules if _ours(n)]:
            del sys.modules[n]
        sys.modules.update(saved)
        _forget_dynamo_imports()
