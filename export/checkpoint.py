"""Safe loading of Human3R checkpoints: a restricted unpickler that never runs code from the file, the config from
the file's `args.model` string (parsed, never evaluated), and strict state-dict loading with clear errors.

Accepted files:
* torch zip archives (torch >= 1.6 `torch.save`): the official layout `{'model': state_dict, 'args': ..., 'epoch':
  ...}` (`args` an omegaconf DictConfig, an argparse Namespace or a dict), `{'state_dict': ...}`, or a bare state dict.
  They are read with `zipfile` + `RestrictedUnpickler`, never with torch.load's pickle;
* safetensors files. Their config comes from, in this order of precedence (all that exist must agree):
  1. the safetensors metadata: `{"model": "<args.model string>"}` or `{"config": "<json of Human3RConfig.to_dict()>"}`;
  2. a sidecar `<file>.json` (e.g. `human3r_896L.safetensors.json`) holding `{"model": "<string>"}` or a
     `Human3RConfig.to_dict()`;
  3. `config.json` next to the file, in one of those two forms (other config.json files are ignored).
  `save_safetensors` writes convention 1.

State dicts whose keys ALL start with `module.` lose that prefix (as upstream). Legacy (pre-1.6, non-zip) torch files
and truncated or corrupt files are refused with a CheckpointError.
"""
from __future__ import annotations

import io
import json
import os
import pickle
import re
import sys
import typing
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import numpy as np
import torch
from torch import nn

from human3r_edge.runtime import config as _config
from human3r_edge.runtime.config import PRESETS, Human3RConfig, get_config, identify_preset, parse_model_string
from human3r_edge.errors import CheckpointError, ConfigError, msg
from human3r_edge.runtime.integrity import sha256_file
from human3r_edge.export.unpickler import InertRecord, RestrictedUnpickler

_ZIP_MAGIC = b"PK\x03\x04"
_RAYMAP_PREFIXES = ("masked_ray_map_token", "patch_embed_ray_map.", "enc_blocks_ray_map.", "enc_norm_ray_map.")


# ============================================================================================ torch zip archives
def _archive_prefix(z: zipfile.ZipFile, path: Path) -> str:
    pkls = [n for n in z.namelist() if n.endswith("data.pkl") and n.count("/") <= 1]
    if len(pkls) != 1:
        raise CheckpointError(msg(f"checkpoint {path}", "zip archive is not a torch checkpoint",
                                  f"{len(pkls)} data.pkl entries", "exactly one '<name>/data.pkl'",
                                  "save it with torch.save (torch >= 1.6)"))
    return pkls[0][: -len("data.pkl")]


def _storage_reader(z: zipfile.ZipFile, prefix: str, path: Path, swap: bool
                    ) -> Callable[[str, torch.dtype, int], torch.Tensor]:
    def read(key: str, dtype: torch.dtype, numel: int) -> torch.Tensor:
        name = f"{prefix}data/{key}"
        try:
            info = z.getinfo(name)
        except KeyError:
            raise CheckpointError(msg(f"checkpoint {path}", "storage missing from the archive", name,
                                      hint="the file is truncated or corrupt; download it again")) from None
        itemsize = torch.empty((), dtype=dtype).element_size()
        if info.file_size != numel * itemsize:
            raise CheckpointError(msg(f"checkpoint {path}", f"storage {key} has the wrong size",
                                      f"{info.file_size} bytes", f"{numel} x {itemsize} bytes"))
        buf = bytearray(info.file_size)
        view = memoryview(buf)
        with z.open(info) as raw:  # zipfile checks the CRC when the entry has been read to its end
            f = typing.cast(io.BufferedIOBase, raw)
            got = 0
            while got < len(buf):
                n = f.readinto(view[got:])
                if not n:
                    break
                got += n
            if got != len(buf) or f.read(1):
                raise CheckpointError(msg(f"checkpoint {path}", f"storage {key} is truncated", f"{got} bytes",
                                          f"{len(buf)} bytes"))
        unit = itemsize // 2 if dtype.is_complex else itemsize  # complex: two floats, each swapped
        if swap and unit > 1:
            np.frombuffer(buf, dtype=f"u{unit}").byteswap(inplace=True)
        if numel == 0:
            return torch.empty(0, dtype=dtype)
        return torch.frombuffer(buf, dtype=dtype)  # shares `buf`, which the tensor keeps alive

    return read


def read_torch_archive(path: str | os.PathLike) -> tuple[Any, set[tuple[str, str]]]:
    """Unpickle a torch zip archive with `RestrictedUnpickler` -> (top-level object, every global it names).

    Tensors come back as CPU tensors over storages read from the archive (aliases share storage); objects of
    other classes come back as `InertRecord`s. Raises CheckpointError on a truncated, corrupt or unsafe file.
    """
    p = Path(path)
    try:
        with zipfile.ZipFile(p) as z:
            prefix = _archive_prefix(z, p)
            order = "little"
            if f"{prefix}byteorder" in z.namelist():
                order = z.read(f"{prefix}byteorder").decode("ascii", "replace").strip()
                if order not in ("little", "big"):
                    raise CheckpointError(msg(f"checkpoint {p}", "unknown byte order", repr(order),
                                              "'little' or 'big'"))
            reader = _storage_reader(z, prefix, p, swap=(order != sys.byteorder))
            unpickler = RestrictedUnpickler(z.read(f"{prefix}data.pkl"), reader)
            return unpickler.load(), unpickler.globals_seen
    except CheckpointError:
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, pickle.UnpicklingError, OSError, ValueError,
            TypeError, KeyError, IndexError, AttributeError, RuntimeError, RecursionError) as exc:
        raise CheckpointError(msg(f"checkpoint {p}", "truncated or corrupt torch archive",
                                  f"{type(exc).__name__}: {exc}",
                                  hint="download the file again (compare its sha256)")) from exc


# ============================================================================================ safetensors
def _config_from_json_dict(d: Any, where: str) -> Human3RConfig | None:
    """{"model": "<string>"} or a Human3RConfig.to_dict(); None if `d` is neither."""
    if not isinstance(d, dict):
        return None
    if isinstance(d.get("model"), str):
        return _parse_named(d["model"], where)
    if "enc_embed_dim" in d:
        try:
            cfg = Human3RConfig.from_dict(d)
        except (ConfigError, TypeError) as exc:
            raise CheckpointError(msg(where, "config does not parse", str(exc))) from exc
        return cfg.replace(name=identify_preset(cfg) or cfg.name)
    return None


def _safetensors_configs(path: Path, metadata: Mapping[str, str]) -> list[tuple[str, Human3RConfig]]:
    found: list[tuple[str, Human3RConfig]] = []
    if "model" in metadata:
        found.append(("safetensors metadata 'model'", _parse_named(metadata["model"], f"{path} metadata")))
    if "config" in metadata:
        try:
            d = json.loads(metadata["config"])
        except ValueError as exc:
            raise CheckpointError(msg(f"{path} metadata", "'config' is not JSON", str(exc))) from exc
        cfg = _config_from_json_dict(d, f"{path} metadata 'config'")
        if cfg is None:
            raise CheckpointError(msg(f"{path} metadata", "'config' is not a Human3RConfig dict", str(d)[:80]))
        found.append(("safetensors metadata 'config'", cfg))
    for side, strict in ((path.with_name(path.name + ".json"), True), (path.with_name("config.json"), False)):
        if not side.is_file():
            continue
        try:
            d = json.loads(side.read_text())
        except (OSError, ValueError) as exc:
            if strict:
                raise CheckpointError(msg(str(side), "sidecar config is not readable JSON", str(exc))) from exc
            continue
        cfg = _config_from_json_dict(d, str(side))
        if cfg is None and strict:
            raise CheckpointError(msg(str(side), "sidecar holds no config", str(d)[:80],
                                      '{"model": "<args.model string>"} or Human3RConfig.to_dict()'))
        if cfg is not None:
            found.append((str(side), cfg))
    return found


def _read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            metadata = dict(f.metadata() or {})
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(msg(f"checkpoint {path}", "unreadable safetensors file", str(exc),
                                  hint="the file is truncated or corrupt; download it again")) from exc
    return tensors, metadata


def save_safetensors(path: str | os.PathLike, state_dict: Mapping[str, torch.Tensor],
                     config: Human3RConfig | None = None) -> Path:
    """Write `state_dict` as safetensors with the config in its metadata (`{"model": config.model_string()}`).

    Keys sharing storage with an earlier key (the DPT aliases) are written once; `load_state_dict_into` restores them.
    """
    from safetensors.torch import save_file

    seen: dict[tuple, str] = {}
    out: dict[str, torch.Tensor] = {}
    for k, v in state_dict.items():
        ident = (v.untyped_storage().data_ptr(), v.storage_offset(), tuple(v.shape), tuple(v.stride()), v.dtype)
        if v.numel() and ident in seen:
            continue
        seen[ident] = k
        out[k] = v.detach().contiguous().clone()
    meta = {"model": config.model_string()} if config is not None else {}
    save_file(out, str(path), metadata=meta)
    return Path(path)


# ============================================================================================ checkpoint
@dataclass
class Checkpoint:
    """A loaded checkpoint. `state_dict` tensors are CPU tensors owned by the caller."""

    state_dict: dict[str, torch.Tensor]
    config: Human3RConfig | None  # from args.model or the safetensors config; None for a bare state dict
    sha256: str  # of the file bytes
    path: Path
    meta: dict = field(default_factory=dict)  # other top-level plain-data entries (epoch, best_so_far, ...)


def _parse_named(text: str, where: str) -> Human3RConfig:
    try:
        cfg = parse_model_string(text)
    except ConfigError as exc:
        raise CheckpointError(msg(where, "args.model does not parse", str(exc))) from exc
    return cfg.replace(name=identify_preset(cfg) or "custom")


def _as_config(config: Human3RConfig | str | None) -> Human3RConfig | None:
    if config is None or isinstance(config, Human3RConfig):
        return config
    if isinstance(config, str):
        if config.lstrip().startswith("ARCroco3DStereo"):
            return _parse_named(config, "config string")
        return get_config(config)
    raise ConfigError(msg("config", "must be a Human3RConfig, a preset name or a model string", type(config).__name__))


def describe_config(cfg: Human3RConfig) -> str:
    """Short human name: the preset ('896L') or the main sizes of a custom config."""
    preset = identify_preset(cfg)
    if preset:
        return preset
    return (f"custom (encoder {cfg.enc_embed_dim}x{cfg.enc_depth}, decoder {cfg.dec_embed_dim}x{cfg.dec_depth}, "
            f"{cfg.backbone}, R={cfg.mhmr_img_res})")


def same_architecture(a: Human3RConfig, b: Human3RConfig) -> bool:
    """True when two configs build the same model (fields with no effect on the graph are ignored)."""
    return _config._arch_key(a) == _config._arch_key(b)


def _model_string_from_args(args: Any) -> str | None:
    """`args.model` from a DictConfig record, a Namespace record or a dict; None if absent."""
    if args is None:
        return None
    if isinstance(args, Mapping):
        node = args.get("model")
    elif isinstance(args, InertRecord):
        st = args.build_state
        content = st.get("_content")
        if isinstance(content, Mapping):  # omegaconf DictConfig: {'model': AnyNode(_val=...)}
            node = content.get("model")
        else:  # argparse.Namespace: BUILD state is its __dict__
            node = st.get("model", args.kwargs.get("model"))
    else:
        return None
    if isinstance(node, InertRecord):  # omegaconf value node
        node = node.build_state.get("_val")
    if node is None:
        return None
    if not isinstance(node, str):
        raise CheckpointError(msg("checkpoint args", "args.model is not a string", repr(node)[:80]))
    return node


def _plain(value: Any, depth: int = 0) -> tuple[bool, Any]:
    """(True, value) if `value` is plain data (numbers, strings, lists/dicts of them), else (False, None)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return True, value
    if depth < 8 and isinstance(value, (list, tuple)):
        items = [_plain(v, depth + 1) for v in value]
        return (all(ok for ok, _ in items), [v for _, v in items])
    if depth < 8 and isinstance(value, Mapping) and all(isinstance(k, str) for k in value):
        items2 = {k: _plain(v, depth + 1) for k, v in value.items()}
        return (all(ok for ok, _ in items2.values()), {k: v for k, (_, v) in items2.items()})
    return False, None


def _is_state_dict(obj: Any) -> bool:
    return isinstance(obj, Mapping) and len(obj) > 0 and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())


def _split_top_level(obj: Any, path: Path) -> tuple[dict[str, torch.Tensor], Any, dict]:
    """-> (state_dict, args-or-None, meta) for the official layout or a bare state dict."""
    if not isinstance(obj, Mapping):
        kind = obj.qualname if isinstance(obj, InertRecord) else type(obj).__name__
        raise CheckpointError(msg(f"checkpoint {path}", "top level is not a dict", kind,
                                  "{'model': state_dict, 'args': ...} or a state dict"))
    for key in ("model", "state_dict"):
        if key in obj and isinstance(obj[key], Mapping):
            sd = obj[key]
            if not _is_state_dict(sd):
                bad = sorted(k for k, v in sd.items() if not isinstance(v, torch.Tensor))[:10]
                raise CheckpointError(msg(f"checkpoint {path}", f"'{key}' holds entries that are not tensors", bad))
            meta = {}
            for k, v in obj.items():
                if k in (key, "args"):
                    continue
                ok, plain = _plain(v)
                if ok:
                    meta[k] = plain
            return dict(sd), obj.get("args"), meta
    if _is_state_dict(obj):
        return dict(obj), None, {}
    kinds = {k: (v.qualname if isinstance(v, InertRecord) else type(v).__name__) for k, v in list(obj.items())[:12]}
    raise CheckpointError(msg(f"checkpoint {path}", "neither the official layout nor a state dict", kinds,
                              "{'model': state_dict, 'args': ...} or {key: tensor}"))


def _sniff(path: Path) -> str:
    with open(path, "rb") as f:
        head = f.read(16)
    if head.startswith(_ZIP_MAGIC):
        return "zip"
    if head[8:9] == b"{" or path.suffix == ".safetensors":  # u64 header length, then the JSON header
        return "safetensors"
    if head[:1] == b"\x80":  # a bare pickle: the pre-1.6 torch format starts with a pickled magic number
        return "legacy"
    return "unknown"


def load_checkpoint(path: str | os.PathLike, config: Human3RConfig | str | None = None) -> Checkpoint:
    """Read a checkpoint without running any code from it.

    config: the architecture the caller wants (a Human3RConfig, a preset name such as '896L', or a model string).
    If the file carries a config of another architecture, raises CheckpointError naming both. The returned
    `Checkpoint.config` is the file's config, else `config`, else None.
    """
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(msg(f"checkpoint {p}", "not a file", hint="give the path of a .pth or .safetensors"))
    want = _as_config(config)
    kind = _sniff(p)
    file_cfg: Human3RConfig | None = None
    meta: dict = {}
    if kind == "zip":
        obj, _ = read_torch_archive(p)
        sd, args, meta = _split_top_level(obj, p)
        text = _model_string_from_args(args)
        if text is not None:
            file_cfg = _parse_named(text, f"checkpoint {p}")
    elif kind == "safetensors":
        sd, metadata = _read_safetensors(p)
        found = _safetensors_configs(p, metadata)
        for where, cfg in found[1:]:
            if not same_architecture(cfg, found[0][1]):
                raise CheckpointError(msg(f"checkpoint {p}", "config sources disagree",
                                          f"{found[0][0]} says {describe_config(found[0][1])}, {where} says "
                                          f"{describe_config(cfg)}", hint="remove the stale one"))
        file_cfg = found[0][1] if found else None
        meta = {k: v for k, v in metadata.items() if k not in ("model", "config")}
    elif kind == "legacy":
        raise CheckpointError(msg(f"checkpoint {p}", "legacy (pre-1.6, non-zip) torch file", None,
                                  "a torch zip archive or a safetensors file",
                                  "re-save it with a recent torch: torch.save(torch.load(f, weights_only=True), f2)"))
    else:
        raise CheckpointError(msg(f"checkpoint {p}", "not a torch zip archive or safetensors file",
                                  hint="the file is truncated, corrupt, or of another format"))
    if all(k.startswith("module.") for k in sd):
        sd = {k[len("module."):]: v for k, v in sd.items()}
    if want is not None and file_cfg is not None and not same_architecture(want, file_cfg):
        raise CheckpointError(msg(f"checkpoint {p}", "file is for another variant",
                                  f"it holds {describe_config(file_cfg)} weights, config asked for "
                                  f"{describe_config(want)}", f"a {describe_config(want)} checkpoint",
                                  f"pass --config {describe_config(file_cfg)} (Python: "
                                  f"config={describe_config(file_cfg)!r}), or omit it, or use the right file"))
    return Checkpoint(sd, file_cfg or want, sha256_file(p), p, meta)


# ============================================================================================ state-dict loading
def _count_blocks(keys: Iterable[str], prefix: str) -> int:
    ids = {m.group(1) for k in keys if (m := re.match(re.escape(prefix) + r"(\d+)\.", k))}
    return len(ids)


def _telltales(shapes: Mapping[str, tuple]) -> dict[str, int]:
    """Architecture sizes readable from state-dict shapes (only those present)."""
    t: dict[str, int] = {}

    def dim(key: str, axis: int, name: str) -> None:
        if len(shapes.get(key, ())) > 0:
            t[name] = int(shapes[key][axis])

    dim("patch_embed.proj.weight", 0, "encoder width")
    dim("decoder_embed.weight", 0, "decoder width")
    dim("register_tokens.weight", 0, "state tokens")
    dim("backbone.encoder.pos_embed", -1, "DINOv2 width")
    for name, prefix in (("encoder depth", "enc_blocks."), ("decoder depth", "dec_blocks."),
                         ("DINOv2 depth", "backbone.encoder.blocks.")):
        n = _count_blocks(shapes, prefix)
        if n:
            t[name] = n
    return t


def _preset_telltales(cfg: Human3RConfig) -> dict[str, int]:
    bb = cfg.backbone_spec
    return {"encoder width": cfg.enc_embed_dim, "decoder width": cfg.dec_embed_dim, "state tokens": cfg.state_size,
            "DINOv2 width": bb.embed_dim, "encoder depth": cfg.enc_depth, "decoder depth": cfg.dec_depth,
            "DINOv2 depth": bb.depth}


def _variant_names(t: Mapping[str, int]) -> str:
    """Presets whose weight shapes match (672L and 896L share them), e.g. '672L/896L'; 'custom' if none."""
    names = [k for k, cfg in PRESETS.items() if all(_preset_telltales(cfg)[n] == v for n, v in t.items())]
    return "/".join(names) if names else "custom"


def _check_variant(file_shapes: Mapping[str, tuple], model_shapes: Mapping[str, tuple], where: str) -> None:
    tf, tm = _telltales(file_shapes), _telltales(model_shapes)
    diff = {n: (tf[n], tm[n]) for n in tf.keys() & tm.keys() if tf[n] != tm[n]}
    if diff:
        detail = ", ".join(f"{n} {a} vs {b}" for n, (a, b) in sorted(diff.items()))
        raise CheckpointError(msg(where, "weights of another variant",
                                  f"the file holds {_variant_names(tf)} weights, the model is {_variant_names(tm)} "
                                  f"({detail}; file vs model)", f"a {_variant_names(tm)} checkpoint",
                                  "build the model with the file's config (load_model reads it from the file)"))


def _alias_groups(model_sd: Mapping[str, torch.Tensor]) -> list[list[str]]:
    """Groups of state-dict keys that are the same tensor in the model (e.g. scratch.layer_rn.0 / layer1_rn)."""
    groups: dict[int, list[str]] = {}
    for k, v in model_sd.items():
        groups.setdefault(id(v), []).append(k)
    return [g for g in groups.values() if len(g) > 1]


def _shape(t: torch.Tensor) -> tuple[int, ...]:
    return tuple(int(s) for s in t.shape)


def load_state_dict_into(model: nn.Module, state_dict: Mapping[str, torch.Tensor], *, source: str = "",
                         allow_missing_raymap: bool = False) -> None:
    """Load `state_dict` into `model` strictly, with the reference loader's conveniences and clear errors.

    * keys all prefixed `module.` lose it;
    * `dec_blocks.*` are copied to `dec_blocks_state.*` when the file has no `dec_blocks_state` key (as upstream);
    * keys that are one tensor in the model (DPT `scratch.layer_rn.N` == `scratch.layerN_rn`) need only one of the
      names in the file; both present with different values is an error;
    * a file of another variant, missing + unexpected keys (one sorted message), shape or dtype-kind mismatches
      raise CheckpointError. The ray-map branch never runs at inference but its weights are required like any
      other, unless `allow_missing_raymap=True` (then a file without them leaves the model's values in place).
    Float tensors are cast to the model's float dtype. The model's tensors are updated in place (on a `meta`
    model they are replaced by the file's tensors).
    """
    where = f"checkpoint {source}" if source else "state dict"
    sd: dict[str, torch.Tensor] = dict(state_dict)
    bad = sorted(k for k, v in sd.items() if not isinstance(v, torch.Tensor))
    if bad:
        raise CheckpointError(msg(where, "entries that are not tensors", bad[:10]))
    if sd and all(k.startswith("module.") for k in sd):
        sd = {k[len("module."):]: v for k, v in sd.items()}
    model_sd = model.state_dict(keep_vars=True)
    _check_variant({k: _shape(v) for k, v in sd.items()}, {k: _shape(v) for k, v in model_sd.items()}, where)

    if any(k.startswith("dec_blocks_state.") for k in model_sd) and not any(k.startswith("dec_blocks_state")
                                                                          for k in sd):
        for k in [k for k in sd if k.startswith("dec_blocks.")]:
            sd[k.replace("dec_blocks", "dec_blocks_state", 1)] = sd[k]

    for group in _alias_groups(model_sd):
        present = [k for k in group if k in sd]
        if not present:
            continue
        first = sd[present[0]]
        for k in present[1:]:
            if _shape(sd[k]) != _shape(first) or not torch.equal(sd[k], first):
                raise CheckpointError(msg(where, "alias keys hold different values", f"{present[0]} vs {k}",
                                          "one tensor under both names (they are the same weight in the model)"))
        for k in group:
            sd.setdefault(k, first)

    missing = sorted(set(model_sd) - set(sd))
    unexpected = sorted(set(sd) - set(model_sd))
    skipped_raymap = [k for k in missing if k.startswith(_RAYMAP_PREFIXES)] if allow_missing_raymap else []
    missing = [k for k in missing if k not in skipped_raymap]
    if missing or unexpected:
        def listing(keys: list[str]) -> str:
            return "[" + ", ".join(keys[:40]) + (f", ... {len(keys) - 40} more" if len(keys) > 40 else "") + "]"
        raise CheckpointError(msg(where, "keys do not match the model",
                                  f"{len(missing)} missing {listing(missing)}; {len(unexpected)} unexpected "
                                  f"{listing(unexpected)}", "exactly the model's state-dict keys",
                                  "a file of another model or a stripped checkpoint"))
    problems = []
    for k in sorted(model_sd):
        if k in skipped_raymap:
            continue
        got, want = sd[k], model_sd[k]
        if _shape(got) != _shape(want):
            problems.append(f"{k}: file {_shape(got)} vs model {_shape(want)}")
        elif got.dtype != want.dtype and not (got.dtype.is_floating_point and want.dtype.is_floating_point):
            problems.append(f"{k}: file dtype {got.dtype} vs model {want.dtype}")
    if problems:
        raise CheckpointError(msg(where, "shape or dtype mismatch", "; ".join(problems[:20])
                                  + (f"; ... {len(problems) - 20} more" if len(problems) > 20 else ""),
                                  "the model's shapes", "the file is for another config"))
    final = {k: sd[k] for k in model_sd if k not in skipped_raymap}
    on_meta = any(v.is_meta for v in model_sd.values())
    with torch.no_grad():
        model.load_state_dict(final, strict=not skipped_raymap, assign=on_meta)


def load_model(path: str | os.PathLike, config: Human3RConfig | str | None = None, device: str | torch.device = "cpu",
               *, keep_state_dict: bool = True) -> tuple[nn.Module, Checkpoint]:
    """Build the model for the checkpoint's config (or `config`) and load its weights -> (model in eval mode, ckpt).

    Peak memory is about twice the weights (file tensors + model); `keep_state_dict=False` empties
    `ckpt.state_dict` after loading so that the file tensors can be freed (896L: 4.7 GB each).
    """
    from human3r_edge.export.model import build_model  # heavy; imported only when a model is built

    ckpt = load_checkpoint(path, config)
    if ckpt.config is None:
        raise CheckpointError(msg(f"checkpoint {ckpt.path}", "carries no config", None,
                                  "a config argument for a bare state dict",
                                  "pass --config 896L or another preset (Python: config='896L')"))
    model = build_model(ckpt.config, device=device)
    load_state_dict_into(model, ckpt.state_dict, source=str(ckpt.path))
    if not keep_state_dict:
        ckpt.state_dict = {}
    return model.eval(), ckpt


__all__ = ["Checkpoint", "InertRecord", "RestrictedUnpickler", "describe_config", "load_checkpoint", "load_model",
           "load_state_dict_into", "read_torch_archive", "same_architecture", "save_safetensors", "sha256_file"]
