"""Typed Human3R model configuration: frozen dataclasses, the published presets, and a parser for the
official `args.model` constructor string that never evaluates it.

The checkpoint's `args.model` is a Python expression such as
`ARCroco3DStereo(ARCroco3DStereoConfig(state_size=768, ..., backbone='dinov2_vitl14', mhmr_img_res=896))`.
The reference builds the model by evaluating that string; we parse it with `ast` and accept only literals.
"""
from __future__ import annotations

import ast
import dataclasses
import math
import re
from dataclasses import dataclass
from typing import Any

from human3r_edge.errors import ConfigError, msg

INF = float("inf")


@dataclass(frozen=True)
class BackboneSpec:
    """The Multi-HMR DINOv2 ViT/14 used to find people."""

    name: str  # 'dinov2_vitl14', 'dinov2_vitb14', 'dinov2_vits14' or 'dinov2_tiny_e{dim}_d{depth}_h{heads}'
    embed_dim: int  # bd: token width
    depth: int  # number of transformer blocks
    num_heads: int
    patch_size: int = 14
    pos_grid: int = 37  # pos_embed holds 1 + 37*37 tokens (hub img_size=518)
    mlp_ratio: float = 4.0

    @staticmethod
    def from_name(name: str) -> "BackboneSpec":
        published = {
            "dinov2_vits14": (384, 12, 6),
            "dinov2_vitb14": (768, 12, 12),
            "dinov2_vitl14": (1024, 24, 16),
        }
        if name in published:
            return BackboneSpec(name, *published[name])
        m = re.fullmatch(r"dinov2_tiny_e(\d+)_d(\d+)_h(\d+)", name)
        if m:
            e, d, h = (int(g) for g in m.groups())
            if e % h:
                raise ConfigError(msg("backbone", "embed dim not divisible by heads", name))
            return BackboneSpec(name, e, d, h)
        raise ConfigError(
            msg(
                "backbone",
                "unknown or unsupported DINOv2 backbone",
                repr(name),
                "one of " + ", ".join(sorted(published)) + " or dinov2_tiny_e<dim>_d<depth>_h<heads>",
                "dinov2_vitg14 (SwiGLU) is not used by any published Human3R checkpoint",
            )
        )


@dataclass(frozen=True)
class Human3RConfig:
    """Every architectural hyper-parameter of Human3R (CUT3R + Multi-HMR branch + SMPL-X heads)."""

    name: str = "custom"  # preset name ('672S', '672B', '672L', '896L', 'tiny') or 'custom'
    # --- CroCo / CUT3R encoder (ViT with 2-D RoPE, patch 16)
    enc_embed_dim: int = 1024
    enc_depth: int = 24
    enc_num_heads: int = 16
    patch_size: int = 16
    mlp_ratio: float = 4.0
    pos_embed: str = "RoPE100"  # RoPE with base frequency 100
    ray_enc_depth: int = 2  # ray-map encoder blocks (weights load; never run at inference)
    # --- paired decoders (image side / state side), width dec_embed_dim
    dec_embed_dim: int = 768
    dec_depth: int = 12
    dec_num_heads: int = 12  # image-side decoder heads
    state_dec_num_heads: int = 16  # state-side decoder heads (its own head count)
    # --- recurrent state and pose memory
    state_size: int = 768  # number of state tokens
    state_pe: str = "2d"  # state RoPE positions on a 2-D grid of width int(sqrt(S)) rounded up to even
    local_mem_size: int = 256  # pose-retriever memory slots (width 2*dec_embed_dim, 2 read + 2 write blocks)
    # --- heads
    head_type: str = "dpt"
    output_mode: str = "pts3d+pose+smpl"
    depth_mode: tuple = ("exp", -INF, INF)
    conf_mode: tuple = ("exp", 1, INF)
    pose_mode: tuple = ("exp", -INF, INF)
    rgb_head: bool = True
    pose_head: bool = True
    msk_head: bool = True
    dpt_feature_dim: int = 256  # upstream hard-codes 256; exposed for the small golden configs
    dpt_layer_dims: tuple = (96, 192, 384, 768)
    # --- human branch
    backbone: str = "dinov2_vitl14"
    mhmr_img_res: int = 896  # R: square input side of the DINOv2 branch (multiple of 14)
    # --- accepted for fidelity with the official string; no effect on the inference graph
    freeze: str = "encoder_and_decoder_and_head"
    patch_embed_cls: str = "PatchEmbedDust3R"
    img_size: tuple = (512, 512)
    landscape_only: bool = False
    mask_ratio: float = 0.9
    norm_im2_in_dec: bool = True
    depth_head: bool = False
    pose_conf_head: bool = False
    use_prompt: bool = False
    is_shallow: bool = False
    prompt_size: Any = None

    # ---------------------------------------------------------------- derived quantities
    @property
    def backbone_spec(self) -> BackboneSpec:
        return BackboneSpec.from_name(self.backbone)

    @property
    def enc_head_dim(self) -> int:
        return self.enc_embed_dim // self.enc_num_heads

    @property
    def dec_head_dim(self) -> int:
        return self.dec_embed_dim // self.dec_num_heads

    @property
    def state_head_dim(self) -> int:
        return self.dec_embed_dim // self.state_dec_num_heads

    @property
    def mem_dim(self) -> int:
        return 2 * self.dec_embed_dim

    @property
    def state_grid_width(self) -> int:
        w = int(math.sqrt(self.state_size))
        return w + 1 if w % 2 else w

    @property
    def dpt_hooks(self) -> tuple[int, int, int, int]:
        d = self.dec_depth
        return (0, d * 2 // 4, d * 3 // 4, d)

    @property
    def mhmr_grid(self) -> int:
        return self.mhmr_img_res // self.backbone_spec.patch_size

    # ---------------------------------------------------------------- validation / serialisation
    def __post_init__(self) -> None:
        problems = []
        for k in ("enc_embed_dim", "enc_depth", "enc_num_heads", "dec_embed_dim", "dec_depth", "dec_num_heads",
                  "state_dec_num_heads", "state_size", "local_mem_size", "mhmr_img_res", "dpt_feature_dim"):
            v = getattr(self, k)
            if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
                problems.append(f"{k}={v!r} must be a positive int")
        if not problems:
            if self.enc_embed_dim % self.enc_num_heads:
                problems.append("enc_embed_dim must be divisible by enc_num_heads")
            if self.dec_embed_dim % self.dec_num_heads or self.dec_embed_dim % self.state_dec_num_heads:
                problems.append("dec_embed_dim must be divisible by dec_num_heads and state_dec_num_heads")
            if (self.enc_embed_dim // self.enc_num_heads) % 4 or (self.dec_embed_dim // self.dec_num_heads) % 4 \
                    or (self.dec_embed_dim // self.state_dec_num_heads) % 4:
                problems.append("2-D RoPE needs head dims divisible by 4")
            if self.mhmr_img_res % 14:
                problems.append(f"mhmr_img_res={self.mhmr_img_res} must be a multiple of the DINOv2 patch (14)")
            if len(tuple(self.dpt_layer_dims)) != 4:
                problems.append("dpt_layer_dims must have 4 entries")
        # values we do not implement: refuse instead of silently building something else
        unsupported = {
            "head_type": (self.head_type, "dpt"),
            "output_mode": (self.output_mode, "pts3d+pose+smpl"),
            "pos_embed": (self.pos_embed, "RoPE100"),
            "state_pe": (self.state_pe, "2d"),
            "depth_head": (self.depth_head, False),
            "pose_conf_head": (self.pose_conf_head, False),
            "use_prompt": (self.use_prompt, False),
            "is_shallow": (self.is_shallow, False),
            "pose_head": (self.pose_head, True),
            "norm_im2_in_dec": (self.norm_im2_in_dec, True),
        }
        for k, (got, want) in unsupported.items():
            if got != want:
                problems.append(f"{k}={got!r} is not supported (Human3R uses {want!r})")
        for k, want in (("depth_mode", ("exp", -INF, INF)), ("conf_mode", ("exp", 1, INF)),
                        ("pose_mode", ("exp", -INF, INF))):
            if tuple(getattr(self, k)) != want:
                problems.append(f"{k}={getattr(self, k)!r} is not supported (Human3R uses {want!r})")
        if problems:
            raise ConfigError(msg(f"config {self.name!r}", "invalid", "; ".join(problems)))
        BackboneSpec.from_name(self.backbone)  # raises on an unknown backbone

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        for k in ("depth_mode", "conf_mode", "pose_mode"):
            d[k] = [str(x) if isinstance(x, float) and math.isinf(x) else x for x in d[k]]
        d["dpt_layer_dims"] = list(d["dpt_layer_dims"])
        d["img_size"] = list(d["img_size"])
        return d

    @staticmethod
    def from_dict(d: dict) -> "Human3RConfig":
        known = {f.name for f in dataclasses.fields(Human3RConfig)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(msg("config dict", "unknown keys", unknown, "keys of Human3RConfig"))
        kw = dict(d)
        for k in ("depth_mode", "conf_mode", "pose_mode"):
            if k in kw:
                kw[k] = tuple(float(x) if isinstance(x, str) and x.lstrip("+-") == "inf" else x for x in kw[k])
        for k in ("dpt_layer_dims", "img_size"):
            if k in kw:
                kw[k] = tuple(kw[k])
        return Human3RConfig(**kw)

    def model_string(self) -> str:
        """The official constructor string for this config (what `args.model` holds)."""
        parts = []
        defaults = Human3RConfig()
        order = ["freeze", "state_size", "state_pe", "pos_embed", "rgb_head", "pose_head", "msk_head",
                 "patch_embed_cls", "img_size", "head_type", "output_mode", "depth_mode", "conf_mode", "pose_mode",
                 "enc_embed_dim", "enc_depth", "enc_num_heads", "dec_embed_dim", "dec_depth", "dec_num_heads",
                 "state_dec_num_heads", "ray_enc_depth", "local_mem_size", "landscape_only", "backbone",
                 "mhmr_img_res", "dpt_feature_dim", "dpt_layer_dims"]
        # every other field, in declaration order: written only when it differs from the default, so that the
        # string round-trips through parse_model_string (a field left out would silently come back as default)
        order += [f.name for f in dataclasses.fields(self) if f.name != "name" and f.name not in order]
        always = set(order[:20]) | {"landscape_only", "backbone", "mhmr_img_res"}
        for k in order:
            v = getattr(self, k)
            if k not in always and v == getattr(defaults, k):
                continue
            parts.append(f"{k}={_literal(v, k)}")
        return f"ARCroco3DStereo(ARCroco3DStereoConfig({', '.join(parts)}))"

    def replace(self, **kw: Any) -> "Human3RConfig":
        return dataclasses.replace(self, **kw)


def _literal(v: Any, key: str) -> str:
    if isinstance(v, float) and math.isinf(v):
        return "inf" if v > 0 else "-inf"
    if isinstance(v, tuple):
        inner = ", ".join(_literal(x, key) for x in v)
        if key == "dpt_layer_dims":
            return f"[{inner}]"
        return f"({inner})"
    return repr(v)


# ------------------------------------------------------------------------------------------------ parsing
# keywords accepted in the official string: every field of the dataclass
_KEYWORDS = {f.name for f in dataclasses.fields(Human3RConfig)} - {"name"}


def _value(node: ast.AST, key: str) -> Any:
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float, str, bool, type(None))):
        return node.value
    if isinstance(node, ast.Name) and node.id in ("inf", "True", "False", "None"):
        return {"inf": INF, "True": True, "False": False, "None": None}[node.id]
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        v = _value(node.operand, key)
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            return -v if isinstance(node.op, ast.USub) else v
    if isinstance(node, (ast.Tuple, ast.List)):
        return tuple(_value(e, key) for e in node.elts)
    if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "float"
            and len(node.args) == 1 and not node.keywords and isinstance(node.args[0], ast.Constant)
            and str(node.args[0].value).lstrip("+-") in ("inf", "Infinity")):
        return float(str(node.args[0].value))
    raise ConfigError(
        msg("model string", f"value of {key!r} is not a literal", ast.unparse(node),
            "numbers, strings, booleans, inf, tuples or lists", "the string is parsed, never evaluated")
    )


def parse_model_string(text: str, name: str = "custom") -> Human3RConfig:
    """Parse the official `args.model` constructor string into a `Human3RConfig` (no eval).

    Raises ConfigError on anything that is not `ARCroco3DStereo(ARCroco3DStereoConfig(k=literal, ...))`,
    on an unknown keyword, or on an unsupported value.
    """
    if not isinstance(text, str) or not text.strip():
        raise ConfigError(msg("model string", "empty or not a string", repr(text)))
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as exc:
        raise ConfigError(msg("model string", "not a Python expression", exc.msg, hint=text[:200])) from exc
    outer = tree.body
    if not (isinstance(outer, ast.Call) and isinstance(outer.func, ast.Name) and outer.func.id == "ARCroco3DStereo"
            and len(outer.args) == 1 and not outer.keywords):
        raise ConfigError(msg("model string", "expected ARCroco3DStereo(ARCroco3DStereoConfig(...))", text[:120]))
    inner = outer.args[0]
    if not (isinstance(inner, ast.Call) and isinstance(inner.func, ast.Name)
            and inner.func.id == "ARCroco3DStereoConfig" and not inner.args):
        raise ConfigError(msg("model string", "expected ARCroco3DStereoConfig(keyword=value, ...)", text[:120]))
    kwargs: dict[str, Any] = {}
    unknown = []
    for kw in inner.keywords:
        if kw.arg is None:
            raise ConfigError(msg("model string", "**kwargs are not allowed", ast.unparse(kw)))
        if kw.arg not in _KEYWORDS:
            unknown.append(kw.arg)
            continue
        kwargs[kw.arg] = _value(kw.value, kw.arg)
    if unknown:
        raise ConfigError(
            msg("model string", "unknown keyword(s)", ", ".join(sorted(unknown)),
                "keywords of ARCroco3DStereoConfig: " + ", ".join(sorted(_KEYWORDS)),
                "a newer upstream keyword needs support added in runtime/config.py")
        )
    # upstream defaults that differ from the Human3R-oriented defaults of the dataclass
    base: dict[str, Any] = dict(head_type="linear", output_mode="pts3d", rgb_head=False, pose_head=False,
                                msk_head=False, state_size=324, landscape_only=True, freeze="none",
                                enc_embed_dim=768, enc_depth=12, enc_num_heads=12, dec_embed_dim=512, dec_depth=8,
                                dec_num_heads=16, pos_embed="cosine", img_size=224, backbone="dinov2_vitl14",
                                mhmr_img_res=None)
    base.update(kwargs)
    if isinstance(base.get("img_size"), int):
        base["img_size"] = (base["img_size"], base["img_size"])
    if base.get("mhmr_img_res") is None:
        raise ConfigError(msg("model string", "mhmr_img_res is missing", None,
                              "an int such as 896 or 672", "CUT3R-only strings are not Human3R checkpoints"))
    if "dpt_layer_dims" in base:
        base["dpt_layer_dims"] = tuple(base["dpt_layer_dims"])
    return Human3RConfig(name=name, **base)


# ------------------------------------------------------------------------------------------------ presets
_PUBLISHED = ("ARCroco3DStereo(ARCroco3DStereoConfig(freeze='encoder_and_decoder_and_head', state_size=768, "
              "state_pe='2d', pos_embed='RoPE100', rgb_head=True, pose_head=True, msk_head=True, "
              "patch_embed_cls='ManyAR_PatchEmbed', img_size=(512, 512), head_type='dpt', "
              "output_mode='pts3d+pose+smpl', depth_mode=('exp', -inf, inf), conf_mode=('exp', 1, inf), "
              "pose_mode=('exp', -inf, inf), enc_embed_dim=1024, enc_depth=24, enc_num_heads=16, "
              "dec_embed_dim=768, dec_depth=12, dec_num_heads=12, landscape_only=False, "
              "backbone='{backbone}', mhmr_img_res={res}))")

# The small config of the reference goldens (tiny_a): every module of the real model at toy width.
TINY_STRING = ("ARCroco3DStereo(ARCroco3DStereoConfig(freeze='encoder_and_decoder_and_head', state_size=50, "
               "state_pe='2d', pos_embed='RoPE100', rgb_head=True, pose_head=True, msk_head=True, "
               "patch_embed_cls='ManyAR_PatchEmbed', img_size=(512, 512), head_type='dpt', "
               "output_mode='pts3d+pose+smpl', depth_mode=('exp', -inf, inf), conf_mode=('exp', 1, inf), "
               "pose_mode=('exp', -inf, inf), enc_embed_dim=128, enc_depth=2, enc_num_heads=4, dec_embed_dim=64, "
               "dec_depth=2, dec_num_heads=4, state_dec_num_heads=8, local_mem_size=24, landscape_only=False, "
               "backbone='dinov2_tiny_e64_d2_h4', mhmr_img_res=112, dpt_feature_dim=32, "
               "dpt_layer_dims=[16, 32, 48, 64]))")

PRESETS: dict[str, Human3RConfig] = {
    "672S": parse_model_string(_PUBLISHED.format(backbone="dinov2_vits14", res=672), "672S"),
    "672B": parse_model_string(_PUBLISHED.format(backbone="dinov2_vitb14", res=672), "672B"),
    "672L": parse_model_string(_PUBLISHED.format(backbone="dinov2_vitl14", res=672), "672L"),
    "896L": parse_model_string(_PUBLISHED.format(backbone="dinov2_vitl14", res=896), "896L"),
    "tiny": parse_model_string(TINY_STRING, "tiny"),
}


def get_config(name: str) -> Human3RConfig:
    """A preset by name ('672S', '672B', '672L', '896L', 'tiny'); case-insensitive."""
    for k, v in PRESETS.items():
        if k.lower() == str(name).lower():
            return v
    raise ConfigError(msg("config", "unknown config name", repr(name), "one of " + ", ".join(PRESETS)))


def identify_preset(cfg: Human3RConfig) -> str | None:
    """Name of the preset that has the same architecture as `cfg` (ignoring inert fields), or None."""
    arch = _arch_key(cfg)
    for k, v in PRESETS.items():
        if _arch_key(v) == arch:
            return k
    return None


_INERT = {"name", "freeze", "patch_embed_cls", "img_size", "landscape_only", "mask_ratio", "prompt_size"}


def _arch_key(cfg: Human3RConfig) -> tuple:
    return tuple((f.name, getattr(cfg, f.name)) for f in dataclasses.fields(cfg) if f.name not in _INERT)


__all__ = ["BackboneSpec", "Human3RConfig", "PRESETS", "TINY_STRING", "get_config", "identify_preset",
           "parse_model_string"]
