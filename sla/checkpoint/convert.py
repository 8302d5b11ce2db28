"""Convert any SLA Wan checkpoint layout into one ComfyUI-native ``.safetensors`` file.

Usage (from the pack's folder, e.g. ``ComfyUI/custom_nodes/<this pack>``)::

    python3 -m sla.convert IN OUT.safetensors [--dtype bf16|fp16|fp8_e4m3fn|fp8_e5m2|fp32|keep] [--force]
                           [--sla-weights sla_attention.pt]

The output holds ComfyUI's Wan weights (the stock "Load Diffusion Model" / UNETLoader loads it; it ignores the
proj_l keys with an 'unet unexpected' log line) plus the per-block proj_l tensors under TurboDiffusion's names
``blocks.N.self_attn.attn_op.local_attn.proj_l.{weight,bias}`` (fp32), which "Load SLA Weights" or
"Load SLA Diffusion Model" pick up. Metadata records the source layout and the SLA defaults the checkpoint was
fine-tuned for (keep 0.10, blocks 128x64, softmax feature map).

The input is read tensor by tensor from a memory map and never modified; the output is written tensor by tensor
into a temporary file beside OUT (``.OUT.<pid>.partial``) and moved into place only when complete: a failure or
SIGTERM removes it, and the partial file of a killed run (SIGKILL) is removed by the next run on that output.
``sla/convert.py`` keeps the documented ``python3 -m sla.convert`` command; this module is the converter.
"""
from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import time
from typing import Callable, Optional

import torch

from ..spec import format_blocks
from .info import METADATA_PREFIX, CheckpointInfo, settings_metadata, with_defaults
from .io import CheckpointError, SafetensorsWriter, file_error, open_source
from .keys import PROJ_L_KEY
from .load import load_proj_l, plan_base_model
from .stream import cast_to, planned_entries, read_proj_l, stream_outputs

log = logging.getLogger(__name__)

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
for _n, _a in (("fp8_e4m3fn", "float8_e4m3fn"), ("fp8_e5m2", "float8_e5m2")):
    if hasattr(torch, _a):
        DTYPES[_n] = getattr(torch, _a)


def _same_file(a: str, b: str) -> bool:
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return os.path.exists(b) and os.path.samefile(a, b)
    except OSError:
        return False


class _Progress:
    """tqdm bar when tqdm is importable, else a log line every 10%."""

    def __init__(self, total: int, desc: str):
        self.total, self.desc, self._next = total, desc, 0.1
        try:
            from tqdm import tqdm
            self.bar = tqdm(total=total, desc=desc, unit="tensor", file=sys.stderr)
        except ImportError:
            self.bar = None

    def __call__(self, done: int, total: int) -> None:
        if self.bar is not None:
            self.bar.update(done - self.bar.n)
        elif total and done / total >= self._next:
            log.info("%s: %d/%d tensors (%.0f%%)", self.desc, done, total, 100 * done / total)
            self._next += 0.1

    def close(self):
        if self.bar is not None:
            self.bar.close()


PARTIAL = ".{name}.{pid}.partial"  # beside OUT while it is written; renamed to OUT only when complete


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # exists (another user's) or unknown: leave its file alone
    return pid != os.getpid()


def remove_stale_partials(dst: str) -> list:
    """Remove the partial files a killed run (SIGKILL, power loss) left for ``dst``; returns their paths. A partial
    whose writer process is still running is left alone."""
    d, name = os.path.split(os.path.abspath(dst))
    head, tail = f".{name}.", ".partial"
    removed = []
    try:
        entries = os.listdir(d)
    except OSError:
        return removed
    for e in entries:
        if not (e.startswith(head) and e.endswith(tail)):
            continue
        pid = e[len(head): -len(tail)]
        if not pid.isdigit() or _pid_alive(int(pid)):
            continue
        try:
            os.remove(os.path.join(d, e))
            removed.append(os.path.join(d, e))
            log.warning("removed %s, left by an interrupted conversion to %s", os.path.join(d, e), dst)
        except OSError as err:
            log.warning("could not remove %s (left by an interrupted conversion): %s", os.path.join(d, e), err)
    return removed


def check_output(src: str, dst: str, overwrite: bool) -> None:
    """Everything about the output path that can be known before any work: CheckpointError when unusable."""
    if not dst.endswith(".safetensors"):
        raise CheckpointError(f"output {dst!r} must end in .safetensors")
    d = os.path.dirname(os.path.abspath(dst))
    if not os.path.isdir(d):
        raise CheckpointError(f"output folder {d!r} does not exist; create it first or choose another output path")
    if not os.access(d, os.W_OK | os.X_OK):
        raise CheckpointError(f"output folder {d!r} is not writable")
    if os.path.isdir(dst):
        raise CheckpointError(f"output {dst!r} is a directory; expected a file path ending in .safetensors "
                              "(--force replaces files only)")
    if _same_file(src, dst):
        raise CheckpointError(f"refusing to overwrite the input {src!r}: choose another output path")
    if os.path.lexists(dst) and not overwrite:
        raise CheckpointError(f"output {dst!r} exists; pass --force to replace it")


def convert(src: str, dst: str, dtype: Optional[torch.dtype] = torch.bfloat16, overwrite: bool = False,
            progress: Optional[Callable[[int, int], None]] = None, sla_weights: Optional[str] = None
            ) -> CheckpointInfo:
    """Write ``src`` (any layout ``load_checkpoint`` reads) as ComfyUI-native safetensors ``dst``.

    Args:
        src: input checkpoint. dst: output path ending in ``.safetensors``.
        dtype: weight dtype of the output (``outputs.target_dtype`` rules; None keeps the file's dtypes).
        overwrite: replace an existing ``dst`` (never ``src`` itself).
        progress: ``progress(done, total)`` per tensor.
        sla_weights: take the proj_l weights from this separate file instead (e.g. SimpleTuner's
            ``sla_attention.pt``, whose one shared proj_l is written for every block); ``src`` must then have none.
    Returns:
        The source's CheckpointInfo.
    """
    src, dst = os.fspath(src), os.fspath(dst)
    check_output(src, dst, overwrite)
    if sla_weights is not None and _same_file(sla_weights, dst):
        raise CheckpointError(f"refusing to overwrite the input {sla_weights!r}: choose another output path")
    remove_stale_partials(dst)
    tmp = None
    reader = None
    try:
        reader = open_source(src)
        plan = plan_base_model(reader, " (SLA weights only, no base model): pass the base model as IN and this file "
                               "with --sla-weights, or use it directly with 'Load SLA Weights'")
        info = plan.info
        info.weight_dtype = str(dtype).replace("torch.", "") if dtype is not None else ""
        extra = None
        if sla_weights is not None:
            if plan.proj_l:
                raise CheckpointError(
                    f"{src!r} already holds proj_l weights for {len(plan.proj_l)} blocks; --sla-weights "
                    f"{sla_weights!r} would mix two sets: expected a base model without proj_l")
            extra, extra_info = load_proj_l(sla_weights, num_blocks=info.num_blocks)
            if not extra:
                raise CheckpointError(f"{sla_weights!r} holds no proj_l weights")
            bad = [i for i in extra if not 0 <= i < info.num_blocks]
            if bad:
                raise CheckpointError(f"{sla_weights!r} has proj_l for blocks {bad} but {src!r} has "
                                      f"{info.num_blocks} blocks")
            info.sla_blocks = sorted(extra)
            info.sla_settings = extra_info.sla_settings or with_defaults({})
            info.layout = f"{info.layout} + {extra_info.layout} proj_l"
        proj_blocks = sorted(extra) if extra is not None else sorted(plan.proj_l)
        targets = cast_to(dtype)
        entries = planned_entries(reader, plan, targets)
        for i in proj_blocks:
            d = info.head_dim
            entries.append((PROJ_L_KEY.format(i=i, p="weight"), (d, d), torch.float32))
            entries.append((PROJ_L_KEY.format(i=i, p="bias"), (d,), torch.float32))
        meta = {
            "format": "pt",
            METADATA_PREFIX + "format": "comfyui-sla/1",
            METADATA_PREFIX + "source_layout": info.source_layout or info.layout,
            METADATA_PREFIX + "family": info.family,
            METADATA_PREFIX + "num_blocks": str(info.num_blocks),
            METADATA_PREFIX + "sla_blocks": format_blocks(info.sla_blocks),
            METADATA_PREFIX + "source_quantized": "int8-128x128-tiles" if info.quantized else "no",
            **settings_metadata(info.sla_settings),
        }
        total = len(entries)
        d = os.path.dirname(os.path.abspath(dst))
        tmp = os.path.join(d, PARTIAL.format(name=os.path.basename(dst), pid=os.getpid()))
        with open(tmp, "wb") as f:
            w = SafetensorsWriter(f, entries, meta)
            for t in stream_outputs(reader, plan, targets, progress, total):
                w.write_parts(t.key, t.bands)
            done = len(plan.outputs)
            for i, (pw, pb) in sorted((extra if extra is not None else read_proj_l(reader, plan)).items()):
                w.write(PROJ_L_KEY.format(i=i, p="weight"), pw.contiguous())
                w.write(PROJ_L_KEY.format(i=i, p="bias"), pb.contiguous())
                done += 2
                if progress is not None:
                    progress(done, total)
            assert w.done()
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, dst)
        tmp = None
        return info
    except CheckpointError:
        raise
    except OSError as e:
        where = tmp if tmp is not None else src
        raise CheckpointError(f"converting {src!r} to {dst!r} failed writing/reading {where!r}: {e}") from e
    except Exception as e:
        raise file_error(src, e) from e
    finally:
        if reader is not None:
            reader.close()
        if tmp is not None and os.path.exists(tmp):
            os.remove(tmp)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        prog="python3 -m sla.convert",
        description="Convert an SLA Wan checkpoint (TurboDiffusion .pth / -quant.pth, FastVideo, sglang, Diffusers "
                    "or ComfyUI layout) into ComfyUI-native .safetensors with the proj_l weights.")
    ap.add_argument("input", help="input checkpoint (.pth, .pt or .safetensors)")
    ap.add_argument("output", help="output .safetensors path")
    ap.add_argument("--dtype", default="bf16", choices=sorted(DTYPES) + ["keep"],
                    help="weight dtype of the output (default bf16; fp8 applies to Linear weights only; 'keep' keeps "
                         "the input's dtypes)")
    ap.add_argument("--force", action="store_true", help="replace an existing output file (never the input)")
    ap.add_argument("--sla-weights", metavar="FILE", default=None,
                    help="take the proj_l weights from a separate file (e.g. SimpleTuner's sla_attention.pt, one "
                         "proj_l shared by every block) and write them into OUT with the base model IN")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    dtype = None if args.dtype == "keep" else DTYPES[args.dtype]
    bar = None
    t0 = time.time()

    def prog(done, total):
        nonlocal bar
        if bar is None:
            bar = _Progress(total, "convert")
        bar(done, total)

    def on_term(signum, frame):  # SIGTERM / SIGHUP: unwind, so the partial output is removed
        raise SystemExit(128 + signum)

    old = {}
    for sig in (getattr(signal, "SIGTERM", None), getattr(signal, "SIGHUP", None)):
        if sig is not None:
            try:
                old[sig] = signal.signal(sig, on_term)
            except (ValueError, OSError):  # not the main thread
                pass
    try:
        info = convert(args.input, args.output, dtype, overwrite=args.force, progress=prog,
                       sla_weights=args.sla_weights)
    except CheckpointError as e:
        log.error("%s", " ".join(str(e).split()))  # one line
        return 2
    finally:
        for sig, h in old.items():
            signal.signal(sig, h)
        if bar is not None:
            bar.close()
    size = os.path.getsize(args.output)
    log.info("wrote %s (%.2f GB, %.1fs): %s", args.output, size / 1e9, time.time() - t0, info.summary())
    return 0


if __name__ == "__main__":
    sys.exit(main())
