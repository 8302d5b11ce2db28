"""Per-model state lives and dies with the model: 200 load / ApplySLA / sample cycles with the SLA Attention Map
node in the graph leave nothing behind (patches, proj_l, captures, armed requests, call sites) and keep the
process's memory flat."""
import gc
import os

import pytest

from comfyui_sla.nodes import sla_nodes as N
from comfyui_sla.sla.runtime import capture, ops
from test_nodes import apply_node, comfy, runtime, sample, write_turbo  # noqa: F401  (comfy: the fixture)

CYCLES = 200


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 20


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="measures RSS through /proc")
def test_memory_flat_over_load_apply_sample_cycles_with_the_map_node(comfy):  # noqa: F811
    name, _native = write_turbo(comfy)
    gc.collect()
    patches0, sites0 = len(ops._patches), len(ops._sites)  # ops._patches: weak table of the live patches
    rss = []
    for i in range(CYCLES):
        model = N.SLADiffusionModelLoader().load(name, "default")[0]
        m = apply_node(model, keep=0.5 if i % 2 else 0.3)
        assert N.SLAAttentionMap.VALIDATE_INPUTS(block=1, head=0, step=0, unique_id="map") is True  # arms
        latent = sample(comfy, m, steps=1)
        image, grid = N.SLAAttentionMap().draw(m, {"samples": latent}, 1, 0, 0, unique_id="map")
        assert image.shape[-1] == 3 and runtime(m).stats.sparse > 0
        assert not runtime(m).captures and capture.armed_count() == 0  # drawn: freed, disarmed
        del model, m, image, grid, latent
        gc.collect()
        rss.append(_rss_mb())
    assert len(ops._patches) == patches0   # every patch freed with its model
    assert len(ops._sites) == sites0   # eager runs intern no call sites
    growth = rss[-1] - rss[CYCLES // 10]
    print(f"RSS after cycle {CYCLES // 10}: {rss[CYCLES // 10]:.1f} MB, after {CYCLES}: {rss[-1]:.1f} MB")
    assert growth < 20, f"RSS grew {growth:.1f} MB over {CYCLES - CYCLES // 10} cycles"
