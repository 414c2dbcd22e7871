"""Export-folder integrity: `checksums.sha256` (the `sha256sum` format) written by the exporter, verified by `run`.

    <64 lowercase hex>  <file name>        one line per file of the export, export.json included

A folder with the file is verified completely before any model file is parsed: a truncated or flipped byte in
any file (the checksum file too: its lines are parsed strictly) is a Human3RError naming the file. A folder
without it (older exports, engine folders whose engines carry their own SHA-256 sidecars) gets the structural
checks only: export.json parses, initial_state.npz passes its zip CRC-32 check, every listed file exists.
"""
from __future__ import annotations

import hashlib
import os
import re
import zipfile
from pathlib import Path

from human3r_edge.errors import Human3RError, msg

CHECKSUM_FILE = "checksums.sha256"
_LINE = re.compile(r"([0-9a-f]{64})  ([A-Za-z0-9_.+-]+)")
_HINT = "the export is damaged: export it again (`human3r-edge export ... --out DIR`) or copy it again"


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 22) -> str:
    """Hex SHA-256 of a file's bytes, streamed (checkpoints and engines are GBs): the project's one file hash."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(chunk)
            if not b:
                return h.hexdigest()
            h.update(b)


def write_checksums(directory: str | os.PathLike, names: list[str]) -> Path:
    """Write `checksums.sha256` for `names` (files in `directory`), atomically."""
    d = Path(directory)
    lines = "".join(f"{sha256_file(d / n)}  {n}\n" for n in sorted(set(names)))
    tmp = d / f".{CHECKSUM_FILE}.tmp"
    tmp.write_text(lines)
    os.replace(tmp, d / CHECKSUM_FILE)
    return d / CHECKSUM_FILE


def read_checksums(path: Path) -> dict[str, str]:
    """{name: sha256} from a checksum file; any line that is not exactly `<hex>  <name>` is an error."""
    what = f"checksum file {path}"
    try:
        text = path.read_bytes().decode("ascii")
    except OSError as exc:
        raise Human3RError(msg(what, "unreadable", repr(exc)[:200], hint=_HINT)) from exc
    except UnicodeDecodeError as exc:
        raise Human3RError(msg(what, "corrupt: not ASCII", f"byte {exc.start} is {exc.object[exc.start]:#04x}",
                               hint=_HINT)) from exc
    if not text.endswith("\n"):
        raise Human3RError(msg(what, "truncated (no final newline)", f"{len(text)} bytes", hint=_HINT))
    out: dict[str, str] = {}
    for i, line in enumerate(text[:-1].split("\n"), 1):
        m = _LINE.fullmatch(line)
        if m is None or m.group(2) in out:
            raise Human3RError(msg(what, f"line {i} is corrupt", repr(line[:90]), "`<sha256 hex>  <file name>`",
                                   _HINT))
        out[m.group(2)] = m.group(1)
    return out


def verify_export(directory: str | os.PathLike) -> bool:
    """Check an export folder before it is opened; True when it had a checksum file (then every byte was
    verified). Raises a Human3RError naming the first damaged file."""
    from human3r_edge.runtime.iospec import SPEC_FILE, ExportSpec

    d = Path(directory)
    sums_path = d / CHECKSUM_FILE
    sums = read_checksums(sums_path) if sums_path.is_file() else None
    if sums is not None:
        if SPEC_FILE not in sums:
            raise Human3RError(msg(f"checksum file {sums_path}", f"does not list {SPEC_FILE}", hint=_HINT))
        for name, want in sorted(sums.items(), key=lambda kv: kv[0] != SPEC_FILE):  # export.json first
            p = d / name
            if not p.is_file():
                raise Human3RError(msg(f"export file {p}", "missing", None, f"the file listed in {CHECKSUM_FILE}",
                                       _HINT))
            got = sha256_file(p)
            if got != want:
                raise Human3RError(msg(f"export file {p}", "corrupt or truncated: its SHA-256 differs from "
                                       f"{CHECKSUM_FILE}", f"{got[:16]}... ({p.stat().st_size} bytes)",
                                       f"{want[:16]}...", _HINT))
    try:
        spec = ExportSpec.load(d)  # a Human3RError naming export.json when it does not parse
    except Human3RError:
        raise
    except Exception as exc:  # a JSON of the wrong structure: still a damaged file, never a traceback
        raise Human3RError(msg(f"{d / SPEC_FILE}", "corrupt I/O spec", repr(exc)[:200], hint=_HINT)) from exc
    needed = [spec.initial_state_file] + [g.file for g in spec.graphs]
    for name in needed:
        if not (d / name).is_file():
            continue  # engine folders hold engines instead of ONNX files; the backend reports what it lacks
        if sums is not None and name not in sums:
            raise Human3RError(msg(f"checksum file {sums_path}", f"does not list {name}", hint=_HINT))
    init = d / spec.initial_state_file
    if sums is None and init.is_file():
        check_zip(init, f"initial state {init}")
    return sums is not None


def check_zip(path: Path, what: str) -> None:
    """Read every member of a zip archive (.npz, a torch .pth) and check its CRC-32: catches truncation and
    flipped bytes in the data (np.load alone checks a CRC only when it reads a member to its very end)."""
    try:
        with zipfile.ZipFile(path) as z:
            bad = z.testzip()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, ValueError, NotImplementedError,
            RuntimeError, UnicodeDecodeError) as exc:  # zlib.error is an Exception subclass caught below
        raise Human3RError(msg(what, "truncated or corrupt archive", repr(exc)[:200], "a complete zip archive",
                               "the file is damaged: copy or download it again")) from exc
    except Exception as exc:  # zlib.error and friends: still a damaged file, never a traceback
        raise Human3RError(msg(what, "truncated or corrupt compressed data", repr(exc)[:200],
                               "a complete zip archive", "the file is damaged: copy or download it again")) from exc
    if bad is not None:
        raise Human3RError(msg(what, "truncated or corrupt member (CRC-32 mismatch)", bad,
                               hint="the file is damaged: copy or download it again"))
