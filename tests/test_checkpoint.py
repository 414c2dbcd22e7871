"""Checkpoints load without running code from the file, and mismatches fail with one clear message."""
from __future__ import annotations

import argparse
import io
import json
import os
import pickle
import shlex
import sys
import types
import zipfile
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from human3r_edge.export import checkpoint as ck
from human3r_edge.runtime.config import TINY_STRING, get_config, identify_preset, parse_model_string
from human3r_edge.errors import CheckpointError

from support.goldens import golden  # noqa: E402

TINY = get_config("tiny")


# ------------------------------------------------------------------------------------------ helpers
@pytest.fixture(autouse=True)
def no_torch_load(monkeypatch):
    """The loader must never fall back to torch.load's pickle."""
    def refuse(*a, **k):
        raise AssertionError("torch.load was called")
    monkeypatch.setattr(torch, "load", refuse)


@pytest.fixture
def no_omegaconf(monkeypatch):
    for name in [m for m in sys.modules if m == "omegaconf" or m.startswith("omegaconf.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "omegaconf", None)  # `import omegaconf` now raises ImportError
    with pytest.raises(ImportError):
        __import__("omegaconf")


@pytest.fixture
def golden_ckpt(golden_dir, require_golden) -> Path:
    return golden_dir / "checkpoint.pth"


class _DPT(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.scratch = nn.Module()
        convs = [nn.Conv2d(width, width, 1, bias=False) for _ in range(4)]
        for i, c in enumerate(convs, 1):
            setattr(self.scratch, f"layer{i}_rn", c)
        self.scratch.layer_rn = nn.ModuleList(convs)  # the upstream alias: one module, two names


class Toy(nn.Module):
    """The key structure the loader cares about: DPT aliases, dec_blocks(_state), ray-map branch, a buffer."""

    def __init__(self, width: int = 8, dino: int = 6) -> None:
        super().__init__()
        self.patch_embed = nn.Module()
        self.patch_embed.proj = nn.Conv2d(3, width, 2)
        self.enc_blocks = nn.ModuleList(nn.Linear(width, width) for _ in range(2))
        self.decoder_embed = nn.Linear(width, width)
        self.dec_blocks = nn.ModuleList(nn.Linear(width, width) for _ in range(2))
        self.dec_blocks_state = nn.ModuleList(nn.Linear(width, width) for _ in range(2))
        self.masked_ray_map_token = nn.Parameter(torch.zeros(1, width))
        self.enc_blocks_ray_map = nn.ModuleList([nn.Linear(width, width)])
        self.backbone = nn.Module()
        self.backbone.encoder = nn.Module()
        self.backbone.encoder.pos_embed = nn.Parameter(torch.zeros(1, 5, dino))
        self.downstream_head = nn.Module()
        self.downstream_head.dpt_self = _DPT(width)
        self.downstream_head.register_buffer("init_betas", torch.zeros(1, 10))


def toy_state_dict(seed: int = 0, **kw) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    m = Toy(**kw)
    with torch.no_grad():
        for p in m.state_dict(keep_vars=True).values():
            p.copy_(torch.randn_like(p))
    return {k: v.detach().clone() for k, v in m.state_dict().items()}


def assert_loaded(model: nn.Module, sd: dict[str, torch.Tensor]) -> None:
    got = model.state_dict()
    for k, v in sd.items():
        assert torch.equal(got[k], v), k


ALIAS = "downstream_head.dpt_self.scratch.layer_rn.{i}.weight"
ALIAS_OF = "downstream_head.dpt_self.scratch.layer{j}_rn.weight"


# ------------------------------------------------------------------------------------------ golden checkpoints
def test_golden_checkpoint_loads_without_omegaconf(golden_ckpt, golden_dir, no_omegaconf):
    obj, seen = ck.read_torch_archive(golden_ckpt)
    assert ("omegaconf.dictconfig", "DictConfig") in seen  # the inert-record path was exercised
    assert isinstance(obj["args"], ck.InertRecord) and obj["args"].qualname == "omegaconf.dictconfig.DictConfig"
    c = ck.load_checkpoint(golden_ckpt)
    info = json.loads((golden_dir / "config.json").read_text())
    assert c.config == parse_model_string(info["checkpoint_args_model_string"]).replace(name=c.config.name)
    assert c.config.name == (identify_preset(c.config) or "custom")
    assert len(c.state_dict) == info["derived"]["num_state_dict_tensors"]
    assert sum(v.numel() for v in c.state_dict.values()) == info["derived"]["num_state_dict_elements"]
    a, b = c.state_dict[ALIAS.format(i=0)], c.state_dict[ALIAS_OF.format(j=1)]
    assert a.untyped_storage().data_ptr() == b.untyped_storage().data_ptr()  # one storage, two names
    assert c.meta == {"epoch": 0, "best_so_far": float("inf")}
    assert c.sha256 == ck.sha256_file(golden_ckpt) and len(c.sha256) == 64
    assert "omegaconf" not in {m.split(".")[0] for m in sys.modules if sys.modules[m] is not None}


def test_golden_checkpoint_builds_and_loads_model(golden_ckpt):
    model, c = ck.load_model(golden_ckpt)
    assert_loaded(model, c.state_dict)
    assert not model.training
    # the real model's alias pairs and dec_blocks_state: a file without them loads too
    stripped = {k: v for k, v in c.state_dict.items() if ".layer_rn." not in k and "dec_blocks_state" not in k}
    assert len(stripped) < len(c.state_dict) - 12
    from human3r_edge.export.model import build_model

    again = build_model(c.config)
    ck.load_state_dict_into(again, stripped)
    sd = again.state_dict()
    for k, v in sd.items():
        src = k.replace("dec_blocks_state", "dec_blocks") if k.startswith("dec_blocks_state") else k
        assert torch.equal(v, c.state_dict[src] if src in c.state_dict else sd[k]), k
    _, light = ck.load_model(golden_ckpt, keep_state_dict=False)
    assert light.state_dict == {} and light.config == c.config


def test_golden_checkpoint_with_other_variant_config_names_both(golden_ckpt, golden_dir):
    own = golden(golden_dir).model_config()
    held = identify_preset(own) or "custom"
    with pytest.raises(CheckpointError, match=rf"holds {held}\b.*weights.*asked for 896L"):
        ck.load_model(golden_ckpt, config="896L")
    # the file's own constructor string is accepted, and names the same architecture
    string = golden(golden_dir).config["checkpoint_args_model_string"]
    got = ck.load_checkpoint(golden_ckpt, config=string).config
    assert got is not None and got.replace(name=own.name) == own


def test_big_endian_archive_is_byteswapped(golden_ckpt, tmp_path):
    src = zipfile.ZipFile(golden_ckpt)
    out = tmp_path / "be.pth"
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as dst:
        for info in src.infolist():
            data = src.read(info)
            if info.filename.endswith("/byteorder"):
                data = b"big"
            elif "/data/" in info.filename:  # every storage of the golden is float32
                data = np.frombuffer(data, dtype="<u4").byteswap().tobytes()
            dst.writestr(info.filename, data)
    a, b = ck.load_checkpoint(golden_ckpt), ck.load_checkpoint(out)
    for k, v in a.state_dict.items():
        assert torch.equal(v, b.state_dict[k]), k


# ------------------------------------------------------------------------------------------ code never runs
def _write_canary(path: str) -> None:
    Path(path).write_text("the file ran code")


class _EvilShell:
    def __init__(self, canary: Path) -> None:
        self.canary = str(canary)

    def __reduce__(self):
        return (os.system, (f"touch {shlex.quote(self.canary)}",))


class _EvilFunction(_EvilShell):
    def __reduce__(self):
        return (_write_canary, (self.canary,))


class _EvilTensorState:
    """Rebuilds a real tensor, then asks BUILD to run Tensor.__setstate__ with file data."""

    def __init__(self, canary: Path) -> None:
        self.canary = canary

    def __reduce__(self):
        storage = torch.ones(2).untyped_storage()
        return (torch._utils._rebuild_tensor_v2, (torch.storage.TypedStorage(wrap_storage=storage, dtype=torch.float32,
                                                                             _internal=True),
                                                  0, (2,), (1,), False, OrderedDict()),
                (True, None, _EvilFunction(self.canary)))


def _fake_omegaconf(monkeypatch) -> tuple[type, type]:
    """Classes that pickle exactly like omegaconf's DictConfig / AnyNode (NEWOBJ + BUILD of their __dict__)."""
    mods = {n: types.ModuleType(n) for n in ("omegaconf", "omegaconf.dictconfig", "omegaconf.nodes")}
    dict_config = type("DictConfig", (), {"__module__": "omegaconf.dictconfig"})
    any_node = type("AnyNode", (), {"__module__": "omegaconf.nodes"})
    mods["omegaconf.dictconfig"].DictConfig = dict_config
    mods["omegaconf.nodes"].AnyNode = any_node
    for n, m in mods.items():
        monkeypatch.setitem(sys.modules, n, m)
    return dict_config, any_node


def _dictconfig_args(monkeypatch, extra: dict) -> object:
    dict_config, any_node = _fake_omegaconf(monkeypatch)
    node = any_node()
    node.__dict__.update(_val=TINY_STRING, _parent=None)
    cfg = dict_config()
    cfg.__dict__.update(_content={"model": node, **extra}, _metadata=None)
    return cfg


@pytest.mark.parametrize("where", ["top", "namespace", "dictconfig", "state_dict_metadata"])
@pytest.mark.parametrize("evil_cls", [_EvilShell, _EvilFunction])
def test_code_in_pickle_never_runs(tmp_path, monkeypatch, where, evil_cls):
    canary = tmp_path / "CANARY"
    evil = evil_cls(canary)
    sd = OrderedDict(toy_state_dict())
    obj: dict = {"model": sd, "epoch": 3}
    if where == "top":
        obj["evil"] = evil
    elif where == "namespace":
        obj["args"] = argparse.Namespace(model=TINY_STRING, evil=evil)
    elif where == "dictconfig":
        obj["args"] = _dictconfig_args(monkeypatch, {"evil": evil})
    else:
        sd._metadata = {"": {"version": evil}}  # type: ignore[attr-defined]
    path = tmp_path / "evil.pth"
    torch.save(obj, path)
    monkeypatch.setitem(sys.modules, "omegaconf", None)
    c = ck.load_checkpoint(path)
    assert not canary.exists()
    assert set(c.state_dict) == set(sd) and c.meta == {"epoch": 3}
    if where in ("namespace", "dictconfig"):
        assert c.config is not None and c.config.name == "tiny"


def test_crafted_pickle_is_live_under_plain_pickle(tmp_path):
    """The same bytes DO run code under a plain unpickler (so the canary tests above can fail)."""
    canary = tmp_path / "CANARY"
    path = tmp_path / "evil.pth"
    torch.save({"epoch": 1, "evil": _EvilFunction(canary)}, path)  # no tensors: a plain unpickler can read it
    with zipfile.ZipFile(path) as z:
        data = z.read(next(n for n in z.namelist() if n.endswith("data.pkl")))

    class Plain(pickle.Unpickler):
        def persistent_load(self, pid):
            return None

    Plain(io.BytesIO(data)).load()
    assert canary.exists()
    canary.unlink()
    obj, seen = ck.read_torch_archive(path)
    assert isinstance(obj["evil"], ck.InertRecord) and obj["evil"].args == (str(canary),)
    assert (__name__, "_write_canary") in seen
    assert not canary.exists()


def test_build_on_a_tensor_is_refused(tmp_path):
    canary = tmp_path / "CANARY"
    path = tmp_path / "evil.pth"
    torch.save({"model": {"w": _EvilTensorState(canary)}}, path)
    with pytest.raises(CheckpointError, match="BUILD"):
        ck.load_checkpoint(path)
    assert not canary.exists()


def _torch_style_zip(path: Path, pickled: bytes, storages: dict[str, bytes]) -> None:
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", pickled)
        z.writestr("archive/byteorder", "little")
        z.writestr("archive/version", "3\n")
        for key, data in storages.items():
            z.writestr(f"archive/data/{key}", data)


class _PidPickler(pickle.Pickler):
    """Writes objects tagged `_Pid` as persistent ids holding whatever tuple we give them."""

    def persistent_id(self, obj):
        return obj.pid if isinstance(obj, _Pid) else None


class _Pid:
    def __init__(self, pid: tuple) -> None:
        self.pid = pid


@pytest.mark.parametrize("make_pid", [
    lambda e: ("storage", e, "0", "cpu", 2),                  # storage type is a code-running object
    lambda e: ("storage", torch.FloatStorage, e, "cpu", 2),   # key is
    lambda e: (e, torch.FloatStorage, "0", "cpu", 2),         # the tag is
    lambda e: e,                                              # the whole persistent id is
])
def test_code_in_persistent_id_never_runs(tmp_path, make_pid):
    canary = tmp_path / "CANARY"
    pid = _Pid(make_pid(_EvilFunction(canary)))
    buf = io.BytesIO()
    _PidPickler(buf, protocol=2).dump({"model": {"w": (torch._utils._rebuild_tensor_v2, pid)}})
    path = tmp_path / "pid.pth"
    _torch_style_zip(path, buf.getvalue(), {"0": bytes(8)})
    with pytest.raises(CheckpointError):
        ck.load_checkpoint(path)
    assert not canary.exists()


def test_handwritten_archive_with_persistent_id_loads(tmp_path):
    """Our own minimal torch-style archive (rebuild call + persistent id) loads: the crafted format is right."""
    buf = io.BytesIO()

    class Rebuild:
        def __reduce__(self):
            return (torch._utils._rebuild_tensor_v2,
                    (_Pid(("storage", torch.FloatStorage, "0", "cpu", 2)), 0, (2,), (1,), False, OrderedDict()))

    _PidPickler(buf, protocol=2).dump({"w": Rebuild()})
    path = tmp_path / "ok.pth"
    _torch_style_zip(path, buf.getvalue(), {"0": torch.tensor([1.5, -2.0]).numpy().tobytes()})
    assert torch.equal(ck.load_checkpoint(path).state_dict["w"], torch.tensor([1.5, -2.0]))


# ------------------------------------------------------------------------------------------ accepted layouts
def test_bare_state_dict_and_module_prefix(tmp_path):
    sd = toy_state_dict()
    torch.save(sd, tmp_path / "bare.pth")
    c = ck.load_checkpoint(tmp_path / "bare.pth")
    assert c.config is None and c.meta == {}
    assert ck.load_checkpoint(tmp_path / "bare.pth", config="tiny").config == TINY
    m = Toy()
    ck.load_state_dict_into(m, c.state_dict)
    assert_loaded(m, sd)

    torch.save({"model": {f"module.{k}": v for k, v in sd.items()}}, tmp_path / "ddp.pth")
    c = ck.load_checkpoint(tmp_path / "ddp.pth")
    assert set(c.state_dict) == set(sd)
    m = Toy()
    ck.load_state_dict_into(m, {f"module.{k}": v for k, v in sd.items()})
    assert_loaded(m, sd)

    partial = {("module." + k if i == 0 else k): v for i, (k, v) in enumerate(sd.items())}
    with pytest.raises(CheckpointError, match="1 missing .*1 unexpected"):
        ck.load_state_dict_into(Toy(), partial)  # stripped only when ALL keys carry the prefix (as upstream)


def test_safetensors_with_config_conventions(tmp_path, golden_ckpt):
    c = ck.load_checkpoint(golden_ckpt)
    path = ck.save_safetensors(tmp_path / "m.safetensors", c.state_dict, c.config)
    s = ck.load_checkpoint(path)
    assert s.config == c.config
    assert ALIAS.format(i=0) not in s.state_dict  # aliases are written once ...
    model, _ = ck.load_model(path)  # ... and restored on load
    assert_loaded(model, c.state_dict)

    bare = ck.save_safetensors(tmp_path / "bare.safetensors", c.state_dict)
    assert ck.load_checkpoint(bare).config is None
    (tmp_path / "config.json").write_text(json.dumps({"unrelated": 1}))  # not a Human3R config: ignored
    assert ck.load_checkpoint(bare).config is None
    (tmp_path / "config.json").write_text(json.dumps(TINY.to_dict()))
    assert ck.load_checkpoint(bare).config == TINY
    Path(str(bare) + ".json").write_text(json.dumps({"model": get_config("672S").model_string()}))
    with pytest.raises(CheckpointError, match="disagree"):
        ck.load_checkpoint(bare)
    Path(str(bare) + ".json").write_text(json.dumps({"model": TINY_STRING}))
    assert ck.load_checkpoint(bare).config.name == "tiny"


# ------------------------------------------------------------------------------------------ load_state_dict_into
@pytest.mark.parametrize("keep", ["alias", "original", "both"])
def test_alias_pairs_need_one_name(keep):
    sd = toy_state_dict()
    for i in range(4):
        if keep == "original":
            del sd[ALIAS.format(i=i)]
        elif keep == "alias":
            del sd[ALIAS_OF.format(j=i + 1)]
    m = Toy()
    ck.load_state_dict_into(m, sd)
    full = toy_state_dict()
    assert_loaded(m, full)
    assert m.downstream_head.dpt_self.scratch.layer_rn[2] is m.downstream_head.dpt_self.scratch.layer3_rn


def test_alias_pair_with_different_values_refused():
    sd = toy_state_dict()
    sd[ALIAS.format(i=1)] = sd[ALIAS.format(i=1)] + 1
    with pytest.raises(CheckpointError, match="alias keys hold different values"):
        ck.load_state_dict_into(Toy(), sd)


def test_dec_blocks_copied_to_state_decoder():
    sd = {k: v for k, v in toy_state_dict().items() if not k.startswith("dec_blocks_state")}
    m = Toy()
    ck.load_state_dict_into(m, sd)
    for a, b in zip(m.dec_blocks, m.dec_blocks_state):
        assert torch.equal(a.weight, b.weight) and torch.equal(a.bias, b.bias)


def test_missing_and_unexpected_in_one_sorted_message():
    sd = toy_state_dict()
    del sd["enc_blocks.1.weight"], sd["decoder_embed.bias"]
    sd["zzz.extra"] = torch.zeros(1)
    sd["aaa.extra"] = torch.zeros(1)
    with pytest.raises(CheckpointError) as e:
        ck.load_state_dict_into(Toy(), sd, source="x.pth")
    text = str(e.value)
    assert text.startswith("checkpoint x.pth | keys do not match the model")
    assert "2 missing [decoder_embed.bias, enc_blocks.1.weight]; 2 unexpected [aaa.extra, zzz.extra]" in text


def test_ray_map_weights_required_unless_allowed():
    sd = {k: v for k, v in toy_state_dict().items() if "ray_map" not in k}
    with pytest.raises(CheckpointError, match="enc_blocks_ray_map.0.bias.*masked_ray_map_token"):
        ck.load_state_dict_into(Toy(), sd)
    m = Toy()
    ck.load_state_dict_into(m, sd, allow_missing_raymap=True)
    assert_loaded(m, sd)


def test_shape_mismatch_names_key_and_both_shapes():
    sd = toy_state_dict()
    sd["downstream_head.init_betas"] = torch.zeros(1, 11)
    with pytest.raises(CheckpointError, match=r"downstream_head.init_betas: file \(1, 11\) vs model \(1, 10\)"):
        ck.load_state_dict_into(Toy(), sd)


def test_other_variant_refused_with_both_sizes():
    with pytest.raises(CheckpointError, match=r"another variant.*DINOv2 width 4 vs 6"):
        ck.load_state_dict_into(Toy(dino=6), toy_state_dict(dino=4))


@pytest.mark.parametrize("file_variant,model_variant", [("672S", "896L"), ("672B", "672S"), ("896L", "672B")])
def test_full_size_variant_mismatch_names_presets(goldens, file_variant, model_variant):
    from human3r_edge.export.model import build_model

    man = json.loads((goldens / "manifests" / f"human3r_{file_variant}.json").read_text())["state_dict"]
    sd = {k: torch.empty(v["shape"], device="meta") for k, v in man.items()}
    names = {"672S": "672S", "672B": "672B", "896L": "672L/896L"}
    with pytest.raises(CheckpointError, match=f"holds {names[file_variant]} weights, the model is "
                                              f"{names[model_variant]}"):
        ck.load_state_dict_into(build_model(get_config(model_variant), "meta"), sd)


@pytest.mark.parametrize("variant", ["672S", "672B", "672L", "896L"])
def test_full_size_loads_with_one_key_per_alias_pair(goldens, variant):
    from human3r_edge.export.model import build_model

    man = json.loads((goldens / "manifests" / f"human3r_{variant}.json").read_text())["state_dict"]
    sd = {k: torch.empty(v["shape"], device="meta") for k, v in man.items() if not v.get("alias_of")}
    assert len(sd) == len(man) - 12
    model = build_model(get_config(variant), "meta")
    ck.load_state_dict_into(model, sd)
    dpt = model.downstream_head.dpt_self.scratch
    assert dpt.layer_rn[0].weight is dpt.layer1_rn.weight


# ------------------------------------------------------------------------------------------ refused files
def test_truncated_and_corrupt_files_refused(golden_ckpt, tmp_path):
    data = golden_ckpt.read_bytes()
    for name, blob in (("half.pth", data[: len(data) // 2]), ("tail.pth", data[:-64])):
        (tmp_path / name).write_bytes(blob)
        with pytest.raises(CheckpointError, match="truncated or corrupt"):
            ck.load_checkpoint(tmp_path / name)
    with zipfile.ZipFile(golden_ckpt) as z:
        info = z.getinfo(next(n for n in z.namelist() if n.endswith("/data/0")))
    local = data[info.header_offset:info.header_offset + 30]  # local header: name and extra lengths at 26..30
    start = info.header_offset + 30 + int.from_bytes(local[26:28], "little") + int.from_bytes(local[28:30], "little")
    flipped = bytearray(data)
    flipped[start + 3] ^= 0xFF  # a byte of storage 0
    (tmp_path / "flip.pth").write_bytes(bytes(flipped))
    with pytest.raises(CheckpointError, match="CRC"):
        ck.load_checkpoint(tmp_path / "flip.pth")


def test_legacy_and_unknown_files_refused(tmp_path):
    legacy = pickle.dumps(0x1950A86A20F9469CFC6C, protocol=2) + pickle.dumps({"x": 1}, protocol=2)
    (tmp_path / "old.pth").write_bytes(legacy)
    with pytest.raises(CheckpointError, match="legacy"):
        ck.load_checkpoint(tmp_path / "old.pth")
    (tmp_path / "junk.pth").write_bytes(b"hello world, not a model")
    with pytest.raises(CheckpointError, match="not a torch zip archive or safetensors"):
        ck.load_checkpoint(tmp_path / "junk.pth")
    (tmp_path / "cut.safetensors").write_bytes(b"\x40\x00\x00\x00\x00\x00\x00\x00{\"a\":")
    with pytest.raises(CheckpointError, match="safetensors"):
        ck.load_checkpoint(tmp_path / "cut.safetensors")
    with pytest.raises(CheckpointError, match="not a file"):
        ck.load_checkpoint(tmp_path / "missing.pth")
