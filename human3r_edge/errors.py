"""Project exception types and the one error-message shape: `<what> | <problem>: <got>. Expected <want>. Hint: <fix>`."""
from __future__ import annotations


class Human3RError(ValueError):
    """A caller mistake or bad input (file, shape, dtype, config). Subclass of ValueError."""


class CheckpointError(Human3RError):
    """A checkpoint that cannot be read, is unsafe, or does not fit the requested model."""


class ConfigError(Human3RError):
    """An invalid or unknown model configuration."""


class BackendUnavailable(RuntimeError):
    """A backend whose libraries (TensorRT, pycuda, CUDA EP) or device are not present on this machine."""


def msg(what: str, problem: str, got: object = None, expected: object = None, hint: str | None = None) -> str:
    """Format an error message in the project's one shape."""
    out = f"{what} | {problem}"
    if got is not None:
        out += f": {got}"
    out += "."
    if expected is not None:
        out += f" Expected {expected}."
    if hint:
        out += f" Hint: {hint}"
    return out
