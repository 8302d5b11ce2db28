"""Load SLA (Sparse-Linear Attention) Wan checkpoints of every published layout as ComfyUI-native weights + proj_l.

No ComfyUI import: ``nodes/`` calls these functions and hands ``LoadedCheckpoint.state_dict`` to
``comfy.sd.load_diffusion_model_state_dict``.

Modules (each imports only those above it, plus torch, the standard library and ``sla.spec``; never the SLA
runtime (settings, patch, kernels) nor ComfyUI):

==============  =====================================================================================================
``io``          readers (safetensors through the library's ``safe_open``, ``.pth`` through ``torch.load(
                weights_only=True, mmap=True)``) behind the ``Reader`` interface, ``open_source`` / ``sniff``
                (container from the first bytes), ``SafetensorsWriter``, ``CheckpointError``.
``keys``        key names: trainer prefixes, base-weight namings (``NAMINGS``), proj_l aliases, Wan families.
``layouts``     the ``LAYOUTS`` table: one ``Layout`` row per recognised layout, chosen from a file's ``Facts``.
``info``        ``CheckpointInfo`` (family, layout, shape facts, SLA blocks, ``summary()``), ``TILE``, ``WAN_HEAD_DIM``,
                the recorded SLA settings' one mapping to pack names (``SETTINGS``, ``recorded_settings``).
``shapes``      shape checks: ``describe_base`` (dim, blocks, family), ``expected_shapes`` / ``check_base_shapes``,
                int8 tile scales, proj_l pairs.
``outputs``     ``OutputTensor`` per base tensor through ``TRANSFORMS`` (dequant / patch / copy), ``target_dtype``.
``plan``        ``plan_checkpoint``: key names and shapes -> output tensors + ``CheckpointInfo`` (a ``Plan``).
``stream``      ``stream_outputs``: the one loop over a plan's tensors (row bands, int8 tile dequantisation, dtype
                casts, NaN/Inf checks, progress), shared by the loaders and the converter; ``read_proj_l``.
``load``        ``load_checkpoint`` / ``load_proj_l`` (and ``read_base_model``, shared with ``sla.quant_load``).
``handover``    ``consume_on_copy`` / ``plain_tensors``: hand a state dict to a model builder without a 2nd copy.
``convert``     the converter (``python3 -m sla.convert``, a shim over ``convert.main``).
==============  =====================================================================================================

Layouts (detected from the tensor names and shapes, never from the file name):

=====================  =====================================================================================
``turbodiffusion``     TurboDiffusion ``.pth`` as published: Wan names, ``patch_embedding.weight`` as a Linear
                       [dim, in_dim*1*2*2] (flattened (c, kt, kh, kw)), fp32 norms, bf16 rest, optional ``net.`` /
                       ``_checkpoint_wrapped_module.`` prefixes, ``blocks.N.self_attn.attn_op.local_attn.proj_l``.
``turbodiffusion-int8`` its ``-quant.pth``: block Linears (not proj_l) as ``int8_weight`` [out, in] + fp32 ``scale``
                       [ceil(out/128), ceil(in/128)] (W = int8 * scale per 128x128 tile) + ``bias``.
``comfyui``            ComfyUI-native Wan names (Conv3d patch embedding), e.g. written by ``sla.convert``; ComfyUI's
                       scaled-fp8 / ``comfy_quant`` layers pass through uncast for ComfyUI to apply their scales.
``fastvideo`` / ``sglang`` / ``diffusers``  Diffusers- or FastVideo-named base weights with proj_l under
                       ``attn1.attn_impl`` / ``attn1.local_attn`` / ``attn1.attn_op.local_attn``.
``simpletuner``        SimpleTuner's separate ``sla_attention.pt``: one proj_l shared by every layer
                       (``load_proj_l`` only).
=====================  =====================================================================================

Memory: tensors are read one at a time from a memory map, converted into an owned tensor of the target dtype (int8
tiles are dequantised one band of 128-row tiles at a time) and the map's pages are handed back, so the peak
resident size is about the output model plus one tensor. Input files are opened read-only / copy-on-write and never
modified.
"""
from .handover import consume_on_copy, plain_tensors
from .io import CheckpointError, open_source, sniff
from .keys import PROJ_L_KEY
from .load import ALL_BLOCKS, LoadedCheckpoint, load_checkpoint, load_proj_l
from .info import METADATA_PREFIX, TILE, CheckpointInfo, recorded_settings
from .outputs import target_dtype
from .plan import plan_checkpoint
from .stream import dequantize_int8_tiles

__all__ = ["CheckpointError", "CheckpointInfo", "LoadedCheckpoint", "load_checkpoint", "load_proj_l",
           "ALL_BLOCKS", "TILE", "METADATA_PREFIX", "PROJ_L_KEY", "dequantize_int8_tiles",
           "plan_checkpoint", "recorded_settings", "target_dtype", "consume_on_copy", "plain_tensors", "open_source",
           "sniff"]
