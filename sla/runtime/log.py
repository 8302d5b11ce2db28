"""The pack's logger (``comfyui_sla``) and :func:`log_once`, for messages that should appear once per process.

Used by the run-time half (:mod:`.runtime`, :mod:`.sparse_call`) and the ComfyUI hooks (:mod:`.patch`); the
once-keys are tuples such as ``("error", runtime_uid, exception_name)``.
"""
from __future__ import annotations

import logging
import threading

log = logging.getLogger("comfyui_sla")

_logged_once: set = set()
_log_lock = threading.Lock()


def log_once(key, level: int, msg: str, *args) -> bool:
    """Log ``msg`` at ``level`` the first time ``key`` is seen in this process; returns whether it logged."""
    with _log_lock:
        if key in _logged_once:
            return False
        _logged_once.add(key)
    log.log(level, msg, *args)
    return True
