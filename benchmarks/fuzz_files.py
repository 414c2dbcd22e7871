"""Corrupt-file fuzzing (issue 14): random truncations and byte flips of every file of an export folder, of a
checkpoint and of an SMPL-X file, each fed to the CLI.

    python -m human3r_edge.benchmarks.fuzz_files --cases 540 --out benchmarks/results/fuzz_files

Every case must end in exit 2 with a one-line `Human3RError` message naming the damaged file, within the
timeout, with no traceback and nothing written outside --out. The one exception is a byte change that leaves
the file's content as its reader sees it unchanged (a zip timestamp of a checkpoint or an SMPL-X file, which
carry no checksum of their own): such a case is `benign` when the run succeeds and the loaded content is
identical to the original's. An export folder has `checksums.sha256`, so none of its bytes may be benign.

Each case runs `human3r_edge.cli.main` in a forked child of a process that has already imported the CLI's
modules (the console script's behaviour, without paying the imports 500 times): an exception escaping main is
printed as the interpreter would (a traceback, exit 1), stdout/stderr go to files, and the parent kills a child
that outlives the timeout.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

RESOLUTION = (64, 48)
EXPORT_FILES = ("export.json", "encoder.onnx", "decoder.onnx", "smpl_head.onnx", "initial_state.npz",
                "checksums.sha256")


@dataclass
class Case:
    target: str  # export, checkpoint, smplx
    file: str  # name of the damaged file
    mutation: str  # truncate or flip
    offset: int  # truncated length, or the flipped byte's offset
    xor: int  # the byte is XORed with this (flip)
    size: int  # original file size


@dataclass
class Result:
    case: Case
    rc: int | None  # None: killed at the timeout
    seconds: float
    outcome: str  # pass, benign, FAIL
    reason: str
    message: str  # last stderr line


# ------------------------------------------------------------------------------------------------ inputs
def make_inputs(work: Path, smplx: Path, checkpoint: Path, export: Path | None = None) -> dict[str, Path]:
    """A clean export (the real exporter: tiny, random weights, 64x48, lean), a 3-frame video, and copies."""
    import cv2
    import numpy as np

    work.mkdir(parents=True, exist_ok=True)
    exp = work / "export"
    if export is not None:
        shutil.copytree(export, exp)
    elif not (exp / "export.json").is_file():
        subprocess.run([sys.executable, "-m", "human3r_edge", "export", "--config", "tiny", "--random-weights",
                        "--resolution", f"{RESOLUTION[0]}x{RESOLUTION[1]}", "--max-people", "4", "--lean",
                        "--no-trt-check", "--quiet", "--out", str(exp)], check=True)
    video = work / "clip.mp4"
    vw = cv2.VideoWriter(str(video), cv2.VideoWriter.fourcc(*"mp4v"), 10.0, (200, 150))
    rng = np.random.default_rng(0)
    for _ in range(3):
        vw.write(rng.integers(0, 256, size=(150, 200, 3), dtype=np.uint8))
    vw.release()
    return {"export": exp, "video": video, "smplx": smplx, "checkpoint": checkpoint}


def plan(n: int, inputs: dict[str, Path], seed: int) -> list[Case]:
    """n cases: 40 % on the export's files (evenly), 10 % on an export without checksums.sha256 (older exports:
    truncations only, as a flipped weight byte is undetectable without a checksum), the rest evenly on the
    checkpoint and the SMPL-X file; each file alternates truncations (to a random length) and flips (a random
    byte XORed with a random non-zero value)."""
    rng = random.Random(seed)
    files = [("export", f) for f in EXPORT_FILES if (inputs["export"] / f).is_file()]
    legacy = [("export-nochecksums", f) for _, f in files if f != "checksums.sha256"]
    slots = [files[i % len(files)] for i in range(n * 2 // 5)]
    slots += [legacy[i % len(legacy)] for i in range(n // 10)]
    slots += [("checkpoint", inputs["checkpoint"].name)] * ((n - len(slots)) // 2)
    slots += [("smplx", inputs["smplx"].name)] * (n - len(slots))
    cases = []
    seen: dict[tuple[str, str], int] = {}
    for target, name in slots:
        size = _path(inputs, target, name).stat().st_size
        k = seen[(target, name)] = seen.get((target, name), -1) + 1
        if k % 2 == 0 or target == "export-nochecksums":  # each file alternates: truncation, flip, ...
            cases.append(Case(target, name, "truncate", rng.randrange(0, size), 0, size))
        else:
            cases.append(Case(target, name, "flip", rng.randrange(0, size), rng.randrange(1, 256), size))
    return cases


def _path(inputs: dict[str, Path], target: str, name: str) -> Path:
    return inputs["export"] / name if target.startswith("export") else inputs[target]


def _damage(src: Path, dst: Path, case: Case) -> None:
    data = bytearray(src.read_bytes())
    if case.mutation == "truncate":
        del data[case.offset:]
    else:
        data[case.offset] ^= case.xor
    dst.write_bytes(bytes(data))


def _argv(case: Case, inputs: dict[str, Path], d: Path) -> tuple[list[str], Path]:
    """The command of one case, over copies in `d` with the damaged file; (argv, damaged path)."""
    exp, smplx = inputs["export"], inputs["smplx"]
    if case.target.startswith("export"):
        exp = d / "export"
        shutil.copytree(inputs["export"], exp)
        if case.target == "export-nochecksums":
            (exp / "checksums.sha256").unlink()
        damaged = exp / case.file
    elif case.target == "smplx":
        smplx = damaged = d / case.file
    else:
        damaged = d / case.file
    _damage(_path(inputs, case.target, case.file), damaged, case)
    out = d / "out"
    if case.target == "checkpoint":
        return (["export", "--checkpoint", str(damaged), "--resolution", f"{RESOLUTION[0]}x{RESOLUTION[1]}",
                 "--max-people", "4", "--lean", "--no-trt-check", "--quiet", "--out", str(out)], damaged)
    return (["run", str(inputs["video"]), "--engines", str(exp), "--smplx-model", str(smplx), "--backend",
             "ort-cpu", "--out", str(out), "--no-progress", "--threads", "1", "--max-frames", "2"], damaged)


# ------------------------------------------------------------------------------------------------ the runner
def _child(argv: list[str], cwd: Path, log: Path) -> None:
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    sys.stdout = open(1, "w", closefd=False)  # noqa: SIM115  (a test runner may have replaced sys.stdout/err)
    sys.stderr = open(2, "w", closefd=False)  # noqa: SIM115
    os.chdir(cwd)
    rc = 1
    try:
        from human3r_edge.cli import main

        rc = main(argv)
    except SystemExit as exc:
        rc = exc.code if isinstance(exc.code, int) else 1
    except BaseException:
        traceback.print_exc()
        rc = 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(int(rc))


def _snapshot(paths: list[Path]) -> set[str]:
    return {str(p) for root in paths for p in root.rglob("*")}


def run_case(case: Case, inputs: dict[str, Path], timeout: float, scratch: Path) -> Result:
    d = Path(tempfile.mkdtemp(prefix="case-", dir=scratch))
    argv, damaged = _argv(case, inputs, d)
    cwd = d / "cwd"
    cwd.mkdir()
    before = _snapshot([d, inputs["export"], inputs["video"].parent])
    log = d / "log.txt"
    t0 = time.monotonic()
    pid = os.fork()
    if pid == 0:
        _child(argv, cwd, log)
    rc: int | None = None
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            rc = os.waitstatus_to_exitcode(status)
            break
        if time.monotonic() - t0 > timeout:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            break
        time.sleep(0.01)
    seconds = time.monotonic() - t0
    err = log.read_text(errors="replace")
    last = err.strip().splitlines()[-1] if err.strip() else ""
    out = d / "out"
    after = _snapshot([d, inputs["export"], inputs["video"].parent])
    stray = sorted(p for p in after - before if not p.startswith(str(out)) and p != str(log))
    outcome, reason = "pass", ""
    if rc is None:
        outcome, reason = "FAIL", f"hang: killed after {timeout:.0f} s"
    elif "Traceback" in err:
        outcome, reason = "FAIL", "traceback"
    elif stray:
        outcome, reason = "FAIL", f"wrote outside --out: {stray[:3]}"
    elif rc == 0 and case.target in ("checkpoint", "smplx") and _same_content(case, inputs, damaged):
        outcome, reason = "benign", "exit 0; the loaded content equals the original's (bytes no reader uses)"
    elif rc != 2:
        outcome, reason = "FAIL", f"exit {rc}"
    elif damaged.name not in last:
        outcome, reason = "FAIL", "the message does not name the file"
    shutil.rmtree(d, ignore_errors=True)
    return Result(case, rc, round(seconds, 3), outcome, reason, last[-400:].replace(str(d), "<case>"))


def _same_content(case: Case, inputs: dict[str, Path], damaged: Path) -> bool:
    """Whether the damaged file loads to exactly what the original loads to."""
    import numpy as np

    try:
        if case.target == "smplx":
            from human3r_edge.runtime.smplx.model_file import load_smplx_file

            m0, m1 = load_smplx_file(inputs["smplx"]), load_smplx_file(damaged)
            return all(np.array_equal(np.asarray(getattr(m0, k)), np.asarray(getattr(m1, k))) for k in vars(m0))
        from human3r_edge.export.checkpoint import load_checkpoint

        c0, c1 = load_checkpoint(inputs["checkpoint"]), load_checkpoint(damaged)
        return c0.state_dict.keys() == c1.state_dict.keys() and all(
            bool((c0.state_dict[k] == c1.state_dict[k]).all()) for k in c0.state_dict)
    except Exception:
        return False


def run_all(cases: list[Case], inputs: dict[str, Path], timeout: float, jobs: int, scratch: Path,
            progress: bool = False) -> list[Result]:
    """Run the cases in `jobs` forked worker processes (no threads: every fork happens in a single-threaded
    process), each forking one child per case; results come back in case order."""
    chunks = [list(range(j, len(cases), jobs)) for j in range(jobs)]
    workers = []
    for j, idx in enumerate(chunks):
        path = scratch / f"worker-{j}.json"
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                done = []
                for n, i in enumerate(idx):
                    r = run_case(cases[i], inputs, timeout, scratch)
                    done.append({"i": i, "rc": r.rc, "seconds": r.seconds, "outcome": r.outcome,
                                 "reason": r.reason, "message": r.message})
                    if progress and j == 0 and (n + 1) % 25 == 0:
                        print(f"fuzz_files | worker 0: {n + 1}/{len(idx)} cases", file=sys.stderr, flush=True)
                path.write_text(json.dumps(done))
            except BaseException:
                traceback.print_exc()
                code = 1
            os._exit(code)
        workers.append((pid, path))
    out: dict[int, Result] = {}
    for pid, path in workers:
        os.waitpid(pid, 0)
        for d in json.loads(path.read_text()):
            out[d["i"]] = Result(cases[d["i"]], d["rc"], d["seconds"], d["outcome"], d["reason"], d["message"])
    return [out[i] for i in range(len(cases))]


def warm_imports() -> None:
    """Import what the children run, so each fork starts warm (no torch/ORT session or thread is started)."""
    import cv2  # noqa: F401
    import onnxruntime  # noqa: F401

    import human3r_edge.cli  # noqa: F401
    import human3r_edge.runtime.backends.ort  # noqa: F401
    import human3r_edge.runtime.commands.run  # noqa: F401
    import human3r_edge.runtime.session  # noqa: F401
    import human3r_edge.runtime.smplx.skinning  # noqa: F401

    try:
        import human3r_edge.export.onnx_export  # noqa: F401
        import human3r_edge.export.checkpoint  # noqa: F401
    except ModuleNotFoundError:
        pass


# ------------------------------------------------------------------------------------------------ report
def report(results: list[Result], meta: dict) -> tuple[dict, str]:
    groups: dict[tuple[str, str, str], dict[str, int]] = {}
    for r in results:
        g = groups.setdefault((r.case.target, r.case.file, r.case.mutation), {"pass": 0, "benign": 0, "FAIL": 0})
        g[r.outcome] += 1
    totals = {k: sum(r.outcome == k for r in results) for k in ("pass", "benign", "FAIL")}
    slowest = max((r.seconds for r in results), default=0.0)
    data = {"meta": {**meta, "cases": len(results), **totals, "slowest_case_s": slowest},
            "groups": [{"target": t, "file": f, "mutation": m, **c} for (t, f, m), c in sorted(groups.items())],
            "cases": [{**asdict(r.case), "rc": r.rc, "seconds": r.seconds, "outcome": r.outcome}
                      | ({"reason": r.reason, "message": r.message} if r.outcome != "pass" else {})
                      for r in results]}
    lines = ["# Corrupt-file fuzzing", "",
             f"`{meta['command']}` on {meta['machine']}: {len(results)} cases, seed {meta['seed']}, timeout "
             f"{meta['timeout_s']} s. Pass = exit 2, one `Human3RError` line naming the damaged file, no traceback, "
             "nothing written outside --out. Benign = exit 0 and the file loads to exactly the original content.",
             "", f"**{totals['pass']} pass, {totals['benign']} benign, {totals['FAIL']} fail**; slowest case "
             f"{slowest:.2f} s.", "", "| target | file | mutation | pass | benign | fail |",
             "|---|---|---|---|---|---|"]
    for (t, f, m), c in sorted(groups.items()):
        lines.append(f"| {t} | {f} | {m} | {c['pass']} | {c['benign']} | {c['FAIL']} |")
    fails = [r for r in results if r.outcome == "FAIL"]
    if fails:
        lines += ["", "## Failures", ""]
        lines += [f"- {r.case.target}/{r.case.file} {r.case.mutation}@{r.case.offset}: {r.reason} ({r.message})"
                  for r in fails[:50]]
    lines += ["", "## Example messages", ""]
    seen = set()
    for r in results:
        key = (r.case.target, r.case.file)
        if r.outcome == "pass" and key not in seen:
            seen.add(key)
            lines.append(f"- {r.case.file} ({r.case.mutation}): `{r.message}`")
    return data, "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=540)
    ap.add_argument("--seed", type=int, default=14)
    ap.add_argument("--timeout", type=float, default=120.0, help="seconds per case")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--goldens", type=Path, default=Path(os.environ.get("HUMAN3R_GOLDENS", "/work/shared/goldens")))
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/fuzz_files"), help="writes OUT.json/.md")
    a = ap.parse_args(argv)
    warm_imports()
    with tempfile.TemporaryDirectory(prefix="fuzz-") as tmp:
        work = Path(tmp)
        inputs = make_inputs(work / "inputs", a.goldens / "smplx_synthetic" / "SMPLX_NEUTRAL.npz",
                             a.goldens / "tiny_a" / "checkpoint.pth")
        cases = plan(a.cases, inputs, a.seed)
        t0 = time.monotonic()
        results = run_all(cases, inputs, a.timeout, a.jobs, work, progress=True)
        wall = time.monotonic() - t0
    import platform

    meta = {"command": "python -m human3r_edge.benchmarks.fuzz_files " + " ".join(argv or sys.argv[1:]),
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs", "seed": a.seed, "timeout_s": a.timeout,
            "wall_s": round(wall, 1)}
    data, md = report(results, meta)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.with_suffix(".json").write_text(json.dumps(data, indent=1))
    a.out.with_suffix(".md").write_text(md)
    print(f"fuzz_files | {len(results)} cases in {wall:.0f} s: {data['meta']['pass']} pass, "
          f"{data['meta']['benign']} benign, {data['meta']['FAIL']} fail -> {a.out}.json/.md")
    return 0 if data["meta"]["FAIL"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
