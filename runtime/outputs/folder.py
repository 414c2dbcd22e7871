"""Output folder ownership: which files a run writes, refusing a used folder, --overwrite."""
from __future__ import annotations

import contextlib
import os
from pathlib import Path

from human3r_edge.errors import Human3RError, msg
from human3r_edge.runtime.outputs.atomic import ensure_writable_dir


# Every name `run` writes into --out (regular expressions on names relative to it): what marks a folder as
# holding a previous run, and the only files --overwrite ever removes.
OWN_FILES = (r"summary\.json", r"trajectory\.tum", r"cameras\.json", r"scene\.ply", r"preview\.mp4",
             r"\.preview\.partial\.mp4", r"people/track_\d{4,}\.npz", r"depth/\d{6,}\.(npy|png)",
             r"meshes/\d{6,}_track_\d{4,}\.(ply|obj)",
             # temp files of atomic writes that a killed run can leave
             r"(people/|depth/|meshes/)?\.[^/]+\.[A-Za-z0-9_]+\.tmp")


OWN_DIRS = ("people", "depth", "meshes")


def own_files(out_dir: Path) -> list[Path]:
    """Files in out_dir (and its people/ depth/ meshes/) that a run writes, by name; nothing else."""
    import re

    pat = re.compile("|".join(f"(?:{p})" for p in OWN_FILES))
    found = []
    for sub in ("",) + OWN_DIRS:
        d = out_dir / sub if sub else out_dir
        if not d.is_dir() or d.is_symlink():
            continue
        for p in d.iterdir():
            rel = f"{sub}/{p.name}" if sub else p.name
            if pat.fullmatch(rel) and (p.is_file() or p.is_symlink()):
                found.append(p)
    return sorted(found)


def check_output_dir(path: str | os.PathLike, overwrite: bool = False) -> Path:
    """Check --out before any heavy work, without creating anything: it is a folder (or can be created) that
    this user can write, and holds no previous run unless `overwrite`. Raises a Human3RError otherwise."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise Human3RError(msg(f"--out {p}", "exists and is not a folder", hint="choose a folder path for --out"))
    if p.is_dir():
        if not os.access(p, os.W_OK | os.X_OK):
            raise Human3RError(msg(f"--out {p}", "not writable", None, "a folder this user can create files in",
                                   "choose another --out"))
        prev = own_files(p)
        if prev and not overwrite:
            names = ", ".join(str(x.relative_to(p)) for x in prev[:4]) + (" ..." if len(prev) > 4 else "")
            raise Human3RError(msg(f"--out {p}", "holds the outputs of a previous run", f"{len(prev)} files ({names})",
                                   "an empty or new folder", "pass --overwrite to replace them (only files a run "
                                   "writes are removed), or choose another --out"))
        return p
    parent = p.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise Human3RError(msg(f"--out {p}", "not writable: cannot be created", f"{parent} is not a writable folder",
                               hint="choose another --out"))
    return p


def claim_output_dir(path: str | os.PathLike, overwrite: bool = False) -> tuple[Path, int]:
    """check_output_dir, then create the folder and, with `overwrite`, remove a previous run's files (only names
    in OWN_FILES, and people/ depth/ meshes/ when that leaves them empty). Returns (folder, files removed)."""
    p = check_output_dir(path, overwrite)
    removed = 0
    if overwrite and p.is_dir():
        for f in own_files(p):
            with contextlib.suppress(FileNotFoundError):
                f.unlink()
                removed += 1
        for sub in OWN_DIRS:
            with contextlib.suppress(OSError):
                (p / sub).rmdir()  # only when empty
    ensure_writable_dir(p)
    return p, removed
