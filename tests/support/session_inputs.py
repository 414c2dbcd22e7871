"""Inputs of the Session and output-writer tests: a fake skinner, scripted people, synthetic frames, and the
results of a short fake run."""
from __future__ import annotations

import types

import numpy as np

from human3r_edge.runtime.session import Session, SessionOptions
from support.doubles import FakeBackend


class FakeSkinner:
    """Stands in for SMPLXModel.skin: vertices = transl + a fixed offset pattern (P, 20, 3)."""

    def __init__(self):
        self.calls = 0

    def skin(self, rotmat, betas, expression, transl, c2w):
        self.calls += 1
        p = rotmat.shape[0]
        v_cam = transl[:, None, :] + np.linspace(-0.1, 0.1, 60, dtype=np.float32).reshape(1, 20, 3)
        j_cam = v_cam[:, :5]
        world = lambda x: x @ c2w[:3, :3].T + c2w[:3, 3]  # noqa: E731
        assert v_cam.shape[0] == p
        return types.SimpleNamespace(v_cam=v_cam, j_cam=j_cam, v_world=world(v_cam), j_world=world(j_cam))


def people(i):
    return [(2, 3, 0.9), (5, 6, 0.7)]


def frame(w=200, h=150, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)


FACES = np.array([[i, i + 1, i + 2] for i in range(18)], np.int64)  # for the fake skinner's 20 vertices


def results(n, **opts):
    with Session(FakeBackend(people=people), FakeSkinner(), SessionOptions(dense=True, human_mask=True, **opts)) as s:
        return [s.step(frame(seed=i)) for i in range(n)]


def read_ply(path):
    data = path.read_bytes()
    end = data.index(b"end_header\n") + len(b"end_header\n")
    header = data[:end].decode("ascii").splitlines()
    return header, data[end:]
