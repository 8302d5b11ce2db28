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


@contextlib.contextmanager
def activated():
    saved = {n: m for n, m in sys.modules.items() if _ours(n)}
    for n in saved:
        del sys.modules[n]
    sys.path.insert(0, STUB_DIR)
    try:
        import comfy  # noqa: F401
        assert os.path.dirname(os.path.dirname(comfy.__file__)) == STUB_DIR, comfy.__file__
        yield
    finally:
        sys.path.remove(STUB_DIR)
        for n in [n for n in sys.modules if _ours(n)]:
            del sys.modules[n]
        sys.modules.update(saved)
