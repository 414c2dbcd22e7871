"""A restricted unpickler for torch checkpoints: it rebuilds tensors and storages and turns every other class into
an inert record, so reading a checkpoint never imports or calls anything the file names (no omegaconf needed).
"""
from __future__ import annotations

import collections
import io
import pickle
import re
from typing import Any, Callable, Iterable

import torch

from human3r_edge.errors import CheckpointError, msg


class InertRecord:
    """What a pickled object of a class outside the allow-list becomes: data only, no behaviour from the file.

    `module`/`name` (class attributes) name the global; `args`/`kwargs` are the constructor arguments the pickle
    passed (REDUCE / NEWOBJ), `state` what BUILD set, `list_items`/`dict_items` what APPENDS / SETITEMS added.
    """

    module = ""
    name = ""
    args: tuple
    kwargs: dict
    state: Any
    list_items: list
    dict_items: dict

    def __new__(cls, *args: Any, **kwargs: Any) -> "InertRecord":
        obj = object.__new__(cls)
        obj.__dict__.update(args=args, kwargs=kwargs, state=None, list_items=[], dict_items={})
        return obj

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass  # everything was recorded by __new__

    def __setstate__(self, state: Any) -> None:
        self.__dict__["state"] = state

    def append(self, item: Any) -> None:
        self.list_items.append(item)

    def extend(self, items: Iterable[Any]) -> None:
        self.list_items.extend(list(items))

    def add(self, item: Any) -> None:
        self.list_items.append(item)

    def __setitem__(self, key: Any, value: Any) -> None:
        self.dict_items[key] = value

    def __repr__(self) -> str:
        return f"<inert {self.module}.{self.name}>"

    @property
    def build_state(self) -> dict:
        """The BUILD state as a dict (merging a `(dict, slots)` pair); {} if there is none."""
        st = self.state
        if isinstance(st, tuple) and len(st) == 2 and all(s is None or isinstance(s, dict) for s in st):
            return {**(st[0] or {}), **(st[1] or {})}
        return st if isinstance(st, dict) else {}

    @property
    def qualname(self) -> str:
        return f"{self.module}.{self.name}"


class _StorageType:
    """Marker for a `torch.*Storage` global: only meaningful inside a persistent id; not callable."""

    def __init__(self, name: str, dtype: torch.dtype) -> None:
        self.name, self.dtype = name, dtype

    def __repr__(self) -> str:
        return f"<storage type {self.name}>"


_STORAGE_DTYPES = {
    "FloatStorage": torch.float32, "DoubleStorage": torch.float64, "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16, "LongStorage": torch.int64, "IntStorage": torch.int32,
    "ShortStorage": torch.int16, "CharStorage": torch.int8, "ByteStorage": torch.uint8, "BoolStorage": torch.bool,
    "ComplexFloatStorage": torch.complex64, "ComplexDoubleStorage": torch.complex128, "UntypedStorage": torch.uint8,
}


class _PickleOrderedDict(collections.OrderedDict):
    """OrderedDict whose BUILD state (a state dict's `_metadata`) is kept as data, never set as attributes."""

    def __setstate__(self, state: Any) -> None:
        self.pickle_state = state


def _inert_defaultdict(*args: Any) -> dict:
    return {}  # the default factory named by the file is never called


def _codecs_encode(text: Any, encoding: Any = "utf-8") -> bytes:
    # protocol-2 pickles store bytes as _codecs.encode(str, 'latin1')
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise CheckpointError(msg("pickle", "unexpected _codecs.encode call", repr(encoding), "'latin1'"))
    return text.encode("latin1")


def _check_ints(what: str, value: Any) -> tuple[int, ...]:
    if not isinstance(value, (tuple, list)) or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        raise CheckpointError(msg("pickle", f"tensor {what} is not a tuple of ints", repr(value)[:80]))
    return tuple(value)


def _rebuild_tensor(storage: Any, storage_offset: Any, size: Any, stride: Any, *rest: Any) -> torch.Tensor:
    """Our replacement for torch._utils._rebuild_tensor(_v2): a strided view of a storage we read ourselves."""
    if not isinstance(storage, torch.Tensor) or storage.dim() != 1:
        raise CheckpointError(msg("pickle", "tensor rebuilt from something that is not a storage", repr(storage)[:80],
                                  "a storage from the archive (persistent id)"))
    if not isinstance(storage_offset, int) or isinstance(storage_offset, bool) or storage_offset < 0:
        raise CheckpointError(msg("pickle", "bad tensor storage offset", repr(storage_offset)[:80]))
    size, stride = _check_ints("size", size), _check_ints("stride", stride)
    if len(size) != len(stride) or any(s < 0 for s in size) or any(s < 0 for s in stride):
        raise CheckpointError(msg("pickle", "bad tensor geometry", f"size {size}, stride {stride}"))
    if all(s > 0 for s in size):
        last = storage_offset + sum((n - 1) * st for n, st in zip(size, stride))
        if last >= storage.numel():
            raise CheckpointError(msg("pickle", "tensor reaches past its storage", f"size {size}, stride {stride}, "
                                      f"offset {storage_offset}, storage numel {storage.numel()}"))
    return storage.as_strided(size, stride, storage_offset)


def _rebuild_parameter(data: Any, *rest: Any) -> torch.Tensor:
    if not isinstance(data, torch.Tensor):
        raise CheckpointError(msg("pickle", "parameter rebuilt from a non-tensor", repr(data)[:80]))
    return data


# (module, name) -> object the unpickler may return. Everything else becomes an InertRecord subclass.
_ALLOWED: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): _PickleOrderedDict,
    ("collections", "defaultdict"): _inert_defaultdict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("torch", "Size"): torch.Size,
    ("_codecs", "encode"): _codecs_encode,
}
for _mod in ("builtins", "__builtin__"):
    for _name, _obj in (("dict", dict), ("list", list), ("set", set), ("frozenset", frozenset), ("tuple", tuple),
                        ("int", int), ("long", int)):
        _ALLOWED[(_mod, _name)] = _obj
for _name, _dtype in _STORAGE_DTYPES.items():
    _ALLOWED[("torch", _name)] = _StorageType(_name, _dtype)


_CALLABLES = {id(v) for v in _ALLOWED.values() if callable(v)}


def _trusted(func: Any) -> bool:
    """Only our allow-listed objects and record classes may be called while unpickling."""
    return id(func) in _CALLABLES or (isinstance(func, type) and issubclass(func, InertRecord))


def _refuse(opcode: str, target: Any) -> CheckpointError:
    kind = target.qualname if isinstance(target, InertRecord) else type(target).__name__
    return CheckpointError(msg("pickle", f"{opcode} on an object the loader does not allow", kind[:80],
                               "only dicts, lists, sets and inert records", "the file is not a plain checkpoint"))


class RestrictedUnpickler(pickle._Unpickler):  # the Python implementation: its opcodes can be overridden
    """Unpickler for torch zip archives that never runs code named by the file.

    * `find_class` returns only the allow-list (containers, our own tensor rebuild functions, storage-type markers);
      every other global becomes a fresh `InertRecord` subclass;
    * REDUCE / NEWOBJ / INST / OBJ call only those; BUILD, SETITEM(S), APPEND(S), ADDITEMS act only on plain
      containers and records (never on tensors or other objects, whose methods would run with file data);
    * persistent ids `('storage', type, key, location, numel)` are served by `read_storage(key, dtype, numel)`.
    `globals_seen` records every (module, name) the pickle referenced.
    """

    dispatch = dict(pickle._Unpickler.dispatch)  # our copy; the guarded opcodes are replaced below the class
    stack: list[Any]  # attributes of the pure-Python unpickler
    append: Callable[[Any], None]
    pop_mark: Callable[[], list[Any]]

    def __init__(self, data: bytes, read_storage: Callable[[str, torch.dtype, int], torch.Tensor]) -> None:
        super().__init__(io.BytesIO(data), encoding="utf-8")
        self._read_storage = read_storage
        self._records: dict[tuple[str, str], type] = {}
        self._storages: dict[str, torch.Tensor] = {}
        self.globals_seen: set[tuple[str, str]] = set()

    def find_class(self, module: str, name: str) -> Any:
        self.globals_seen.add((module, name))
        allowed = _ALLOWED.get((module, name))
        if allowed is not None:
            return allowed
        key = (module, name)
        if key not in self._records:
            safe = re.sub(r"\W", "_", name) or "Record"
            self._records[key] = type(safe, (InertRecord,), {"module": module, "name": name})
        return self._records[key]

    def persistent_load(self, pid: Any) -> torch.Tensor:
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise CheckpointError(msg("pickle", "unsupported persistent id", repr(pid)[:120],
                                      "('storage', <torch storage type>, key, location, numel)"))
        _, stype, key, _location, numel = pid
        if not isinstance(stype, _StorageType):
            raise CheckpointError(msg("pickle", "persistent id names an unknown storage type", repr(stype)[:80],
                                      "one of torch." + ", torch.".join(_STORAGE_DTYPES)))
        if not isinstance(key, str) or not isinstance(numel, int) or isinstance(numel, bool) or numel < 0:
            raise CheckpointError(msg("pickle", "malformed persistent id", repr(pid)[:120]))
        cached = self._storages.get(key)
        if cached is None:
            cached = self._read_storage(key, stype.dtype, numel)
            self._storages[key] = cached
        elif cached.dtype != stype.dtype or cached.numel() != numel:
            raise CheckpointError(msg("pickle", f"storage {key} referenced with two different types",
                                      f"{cached.dtype}x{cached.numel()} and {stype.dtype}x{numel}"))
        return cached

    # ---------------------------------------------------------------- guarded opcodes
    def _load_reduce(self) -> None:
        args = self.stack.pop()
        func = self.stack[-1]
        if not _trusted(func) or not isinstance(args, tuple):
            raise _refuse("REDUCE", func)
        self.stack[-1] = func(*args)

    def _load_newobj(self) -> None:
        args = self.stack.pop()
        cls = self.stack.pop()
        if not (_trusted(cls) and isinstance(cls, type)) or not isinstance(args, tuple):
            raise _refuse("NEWOBJ", cls)
        self.append(cls.__new__(cls, *args))

    def _load_newobj_ex(self) -> None:
        kwargs = self.stack.pop()
        args = self.stack.pop()
        cls = self.stack.pop()
        if not (_trusted(cls) and isinstance(cls, type)) or not isinstance(args, tuple) or not isinstance(kwargs, dict):
            raise _refuse("NEWOBJ_EX", cls)
        self.append(cls.__new__(cls, *args, **kwargs))

    def _instantiate(self, klass: Any, args: list) -> None:
        if not _trusted(klass):
            raise _refuse("INST/OBJ", klass)
        self.append(klass(*args))

    def _load_build(self) -> None:
        state = self.stack.pop()
        inst = self.stack[-1]
        if not isinstance(inst, (InertRecord, _PickleOrderedDict)):
            raise _refuse("BUILD", inst)
        inst.__setstate__(state)

    def _target(self, opcode: str, kinds: tuple) -> Any:
        target = self.stack[-1]
        plain_dict = type(target) in (dict, _PickleOrderedDict)
        if not isinstance(target, kinds) or (isinstance(target, dict) and not plain_dict):
            raise _refuse(opcode, target)
        return target

    def _load_setitem(self) -> None:
        value = self.stack.pop()
        key = self.stack.pop()
        self._target("SETITEM", (dict, InertRecord))[key] = value

    def _load_setitems(self) -> None:
        items = self.pop_mark()
        target = self._target("SETITEMS", (dict, InertRecord))
        for i in range(0, len(items) - 1, 2):
            target[items[i]] = items[i + 1]

    def _load_append(self) -> None:
        value = self.stack.pop()
        self._target("APPEND", (list, InertRecord)).append(value)

    def _load_appends(self) -> None:
        items = self.pop_mark()
        self._target("APPENDS", (list, InertRecord)).extend(items)

    def _load_additems(self) -> None:
        items = self.pop_mark()
        target = self._target("ADDITEMS", (set, InertRecord))
        for item in items:
            target.add(item)


_GUARDED = {pickle.REDUCE: "_load_reduce", pickle.NEWOBJ: "_load_newobj", pickle.NEWOBJ_EX: "_load_newobj_ex",
            pickle.BUILD: "_load_build", pickle.SETITEM: "_load_setitem", pickle.SETITEMS: "_load_setitems",
            pickle.APPEND: "_load_append", pickle.APPENDS: "_load_appends", pickle.ADDITEMS: "_load_additems"}
for _op, _method in _GUARDED.items():
    RestrictedUnpickler.dispatch[_op[0]] = getattr(RestrictedUnpickler, _method)
