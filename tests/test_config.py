"""The official model string is parsed without eval into typed, frozen configs."""
import json

import pytest

from human3r_edge.runtime.config import PRESETS, Human3RConfig, get_config, identify_preset, parse_model_string
from human3r_edge.errors import ConfigError


def test_golden_strings_parse(golden_list):
    for d in golden_list:
        cfg = json.loads((d / "config.json").read_text())
        parsed = parse_model_string(cfg["checkpoint_args_model_string"])
        full = cfg["full_constructor_config_with_defaults"]
        for k in ("enc_embed_dim", "enc_depth", "enc_num_heads", "dec_embed_dim", "dec_depth", "dec_num_heads",
                  "state_dec_num_heads", "state_size", "local_mem_size", "mhmr_img_res", "backbone",
                  "dpt_feature_dim", "ray_enc_depth"):
            assert getattr(parsed, k) == full[k], k
        assert list(parsed.dpt_layer_dims) == full["dpt_layer_dims"]
        assert parsed.state_grid_width == cfg["derived"]["state_pe_2d_grid_width"]
        assert list(parsed.dpt_hooks) == cfg["derived"]["dpt_hooks_into_decoder_list"]
        # what we write (safetensors metadata, export.json) parses back to the same config
        assert parse_model_string(parsed.model_string(), parsed.name) == parsed


def test_model_string_roundtrips_every_non_default_field():
    """A field left out of model_string comes back as its default: every field must survive the round trip."""
    import dataclasses

    base = get_config("tiny")
    for f in dataclasses.fields(Human3RConfig):
        if f.name == "name":
            continue
        v = getattr(base, f.name)
        if isinstance(v, bool):
            new = not v
        elif isinstance(v, int):
            new = v + 1 if f.name not in ("enc_embed_dim", "dec_embed_dim") else v  # dims must divide by heads
        elif isinstance(v, float):
            new = v / 2
        else:
            continue
        try:
            cfg = base.replace(**{f.name: new})
        except Exception:  # a value the config refuses (a consistency rule): not a round-trip question
            continue
        assert parse_model_string(cfg.model_string(), cfg.name) == cfg, f.name


@pytest.mark.parametrize("variant", ["672S", "672B", "672L", "896L"])
def test_manifest_strings_match_presets(goldens, variant):
    m = json.loads((goldens / "manifests" / f"human3r_{variant}.json").read_text())
    assert identify_preset(parse_model_string(m["config_string"])) == variant


def test_presets_frozen_and_roundtrip():
    for name, cfg in PRESETS.items():
        with pytest.raises(Exception):
            cfg.state_size = 1  # frozen
        assert parse_model_string(cfg.model_string(), name) == cfg
        assert Human3RConfig.from_dict(cfg.to_dict()) == cfg
    assert get_config("896l").mhmr_img_res == 896
    assert get_config("672S").backbone_spec.embed_dim == 384


@pytest.mark.parametrize(
    "text,needle",
    [
        ("ARCroco3DStereo(ARCroco3DStereoConfig(bogus_key=1, mhmr_img_res=896))", "unknown keyword"),
        ("ARCroco3DStereo(ARCroco3DStereoConfig(state_size=__import__('os').getpid()))", "not a literal"),
        ("os.system('echo hi')", "expected ARCroco3DStereo"),
        ("ARCroco3DStereo(ARCroco3DStereoConfig(mhmr_img_res=896, head_type='linear'))", "not supported"),
        ("ARCroco3DStereo(ARCroco3DStereoConfig(head_type='dpt', output_mode='pts3d+pose+smpl', "
         "pose_head=True, pos_embed='RoPE100', enc_embed_dim=1024, enc_depth=24, enc_num_heads=16, "
         "dec_embed_dim=768, dec_depth=12, dec_num_heads=12, state_size=768))", "mhmr_img_res is missing"),
        ("ARCroco3DStereo(", "not a Python expression"),
        ("", "empty"),
    ],
)
def test_bad_strings_are_clear_errors(text, needle):
    with pytest.raises(ConfigError, match=needle):
        parse_model_string(text)


def test_unknown_preset():
    with pytest.raises(ConfigError, match="unknown config name"):
        get_config("999XL")
