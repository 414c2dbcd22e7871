"""The four published configs build on `meta` with the official state-dict names, order, shapes and aliases."""
from __future__ import annotations

import json

import pytest

from human3r_edge.export.model import build_model
from human3r_edge.runtime.config import get_config


@pytest.mark.parametrize("variant", ["672S", "672B", "672L", "896L"])
def test_meta_build_matches_manifest(goldens, variant):
    manifest = json.loads((goldens / "manifests" / f"human3r_{variant}.json").read_text())
    model = build_model(get_config(variant), device="meta")
    sd = model.state_dict(keep_vars=True)
    ref = manifest["state_dict"]
    missing, extra = sorted(set(ref) - set(sd)), sorted(set(sd) - set(ref))
    assert not missing and not extra, (missing[:5], extra[:5])
    assert list(sd) == list(ref)  # same order as the reference builds them
    bad = [k for k in ref if list(sd[k].shape) != ref[k]["shape"] or str(sd[k].dtype) != "torch." + ref[k]["dtype"]]
    assert not bad, bad[:5]
    assert len(sd) == manifest["num_tensors"]
    assert sum(t.numel() for t in sd.values()) == manifest["num_elements_all_keys"]
    aliases = {k: v["alias_of"] for k, v in ref.items() if "alias_of" in v}
    assert len(aliases) == 12  # scratch.layer_rn.{0-3} of dpt_self, dpt_cross, dpt_rgb
    for k, target in aliases.items():
        assert sd[k] is sd[target], k  # one parameter under two names
    unique = {id(t): t.numel() for t in sd.values()}
    assert sum(unique.values()) == manifest["num_elements_unique_storage"]
    # pieces that must exist even though inference never runs them
    for k in ("enc_blocks_ray_map.1.mlp.fc2.weight", "patch_embed_ray_map.proj.weight", "downstream_head.init_cam",
              "downstream_head.init_betas_kid", "masked_ray_map_token"):
        assert k in sd
    assert all(t.device.type == "meta" for t in sd.values())
