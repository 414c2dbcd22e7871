"""Torch-free preprocessing reproduces the reference's load_images / pad_image / unpad_* (goldens and torch)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from human3r_edge.runtime import preprocess as pp
from human3r_edge.errors import Human3RError

ONE_U8_STEP = 2.0 / 255.0  # one uint8 step in [-1, 1] units


@pytest.fixture
def z(golden_dir, require_golden):
    return np.load(golden_dir / "golden.npz")


def _frame_images(z) -> np.ndarray:
    """input/img of the kept steps: one per raw frame (a reset inserts a duplicate step)."""
    return z["input/img"][z["meta/kept_step_index"]]


# ------------------------------------------------------------------------------------------ golden frames
def test_raw_arrays_match_golden_img(z):
    size = int(z["meta/size_arg"])
    want = _frame_images(z)
    raw = z["input/raw_frames_uint8"]
    errs = []
    for frame, ref in zip(raw, want):
        got = pp.preprocess_rgb(frame, size)
        assert got.shape == ref.shape and got.dtype == np.float32
        errs.append(float(np.abs(got - ref).max()))
        bgr = pp.preprocess_rgb(np.ascontiguousarray(frame[:, :, ::-1]), size, channel_order="bgr")
        np.testing.assert_array_equal(bgr, got)
    print(f"max |preprocess_rgb - input/img| = {max(errs):.3g}")
    assert max(errs) <= ONE_U8_STEP


def test_frame_files_match_golden_img(z, golden_dir):
    size = int(z["meta/size_arg"])
    files = sorted((golden_dir / "frames").glob("*.png"))
    want = _frame_images(z)
    assert len(files) == len(want)
    err = max(float(np.abs(pp.load_image(f, size) - ref).max()) for f, ref in zip(files, want))
    print(f"max |load_image - input/img| = {err:.3g}")
    assert err <= ONE_U8_STEP


def test_true_shape_and_output_shape(z):
    raw = z["input/raw_frames_uint8"]
    size = int(z["meta/size_arg"])
    h, w = pp.output_shape(raw.shape[2], raw.shape[1], size)
    np.testing.assert_array_equal(z["input/true_shape"], np.tile([[h, w]], (len(z["input/true_shape"]), 1)))
    assert (h, w) == z["input/img"].shape[2:]


def test_pad_image_matches_golden(z):
    r = int(z["meta/mhmr_img_res"])
    img, want = z["input/img"], z["input/img_mhmr"]
    got, info = pp.pad_image(img, r)
    err = float(np.abs(got - want).max())
    print(f"max |pad_image - input/img_mhmr| = {err:.3g}")
    assert got.shape == want.shape and err <= 1e-6
    h, w = img.shape[2:]
    long = max(h, w)  # the long side fills R, the short one is truncated (int()) as the reference does
    assert (info.new_w, info.new_h) == (int(w * r / long), int(h * r / long))
    assert min(info.new_w, info.new_h) < r or h == w
    assert (info.left, info.top) == ((r - info.new_w) // 2, (r - info.new_h) // 2)
    # the padding is -1 (black after the [-1, 1] normalisation) on every side the image does not reach
    pad = np.ones((r, r), bool)
    pad[info.top:info.top + info.new_h, info.left:info.left + info.new_w] = False
    assert pad.any() or h == w
    np.testing.assert_array_equal(got[..., pad], -1.0)


def test_unpad_image_matches_golden_demo_maps(z):
    keep = z["meta/kept_step_index"]
    _, _, h, w = z["input/img"].shape
    np.testing.assert_array_equal(pp.unpad_image(z["step/msk"][keep, ..., 0], h, w), z["demo/msk"])
    np.testing.assert_array_equal(pp.unpad_image(z["step/smpl_scores"][keep, ..., 0], h, w),
                                  z["demo/smpl_scores_fullres"])


def test_unpad_uv_gives_golden_head_patches(z):
    _, _, h, w = z["input/img"].shape
    uv = pp.unpad_uv(z["step/smpl_loc"], int(z["meta/mhmr_img_res"]), h, w)
    assert uv[:, 0].min() >= 0 and uv[:, 0].max() <= w - 1 and uv[:, 1].max() <= h - 1
    idx = pp.uv_to_patch_index(uv, w)
    yx = z["inter/smpl_pos"]
    np.testing.assert_array_equal(idx, yx[:, 0] * (w // 16) + yx[:, 1])


# ------------------------------------------------------------------------------------------ torch cross-checks
def _torch_pad_image(img: np.ndarray, r: int) -> np.ndarray:
    """The reference pad_image's operations, written out with torch."""
    t = torch.from_numpy(img)[None]
    h, w = t.shape[-2:]
    scale = min(r / h, r / w)
    nh, nw = int(h * scale), int(w * scale)
    t = F.interpolate(t, size=(nh, nw), mode="bilinear", align_corners=False)
    top, left = (r - nh) // 2, (r - nw) // 2
    return F.pad(t, (left, r - nw - left, top, r - nh - top), value=-1.0)[0].numpy()


def test_pad_image_matches_torch_on_random_sizes():
    rng = np.random.default_rng(0)
    worst = 0.0
    for _ in range(25):
        h, w = (int(v) for v in rng.integers(8, 400, 2))
        r = int(rng.choice([112, 224, 336, 448, 672]))
        img = rng.uniform(-1, 1, (3, h, w)).astype(np.float32)
        got, info = pp.pad_image(img, r)
        want = _torch_pad_image(img, r)
        worst = max(worst, float(np.abs(got - want).max()))
        assert got.shape == (3, r, r) and (info.top, info.left) == ((r - info.new_h) // 2, (r - info.new_w) // 2)
    print(f"max |pad_image - torch| = {worst:.3g}")
    assert worst <= 1e-6  # 0 on torch's generic kernel (>1 thread); its 1-thread NHWC kernel rounds differently


def test_resize_bilinear_batched_and_single_channel_match_torch():
    rng = np.random.default_rng(1)
    for shape, out in (((2, 3, 37, 53), (91, 20)), ((1, 1, 40, 40), (112, 112)), ((3, 17, 300), (17, 301))):
        x = rng.uniform(-1, 1, shape).astype(np.float32)
        t = torch.from_numpy(x if x.ndim == 4 else x[None])
        want = F.interpolate(t, size=out, mode="bilinear", align_corners=False).numpy().reshape(shape[:-2] + out)
        np.testing.assert_allclose(pp.resize_bilinear(x, *out), want, rtol=0, atol=1e-6)


def test_unpad_image_matches_torch_nearest():
    rng = np.random.default_rng(2)
    for s, h, w in ((8, 96, 128), (112, 96, 128), (64, 288, 512), (37, 50, 21), (10, 20, 20), (9, 7, 3)):
        x = rng.uniform(0, 1, (1, s, s)).astype(np.float32)
        m = max(h, w)
        big = F.interpolate(torch.from_numpy(x)[None], size=(m, m), mode="nearest")[0]
        top, left = (m - h) // 2, (m - w) // 2
        np.testing.assert_array_equal(pp.unpad_image(x, h, w), big[:, top:top + h, left:left + w].numpy())


def test_unpad_uv_matches_reference_formula():
    rng = np.random.default_rng(3)
    for r, h, w in ((112, 96, 128), (896, 288, 512), (672, 512, 384)):
        uv = rng.uniform(-50, r + 50, (40, 2)).astype(np.float32)
        th, tw = torch.tensor(h, dtype=torch.int32), torch.tensor(w, dtype=torch.int32)  # true_shape entries
        m = max(th, tw)
        want = torch.from_numpy(uv) * (m / r)
        want = want - torch.tensor([(m - tw) // 2, (m - th) // 2], dtype=torch.float32)
        want[..., 0] = want[..., 0].clamp(0, w - 1)
        want[..., 1] = want[..., 1].clamp(0, h - 1)
        np.testing.assert_array_equal(pp.unpad_uv(uv, r, h, w), want.numpy())


# ------------------------------------------------------------------------------------------ shapes and inputs
def _reference_like(img: Image.Image, size: int, square_ok: bool = False) -> np.ndarray:
    """load_images' steps spelled out with PIL and torch (ToTensor + Normalize(0.5, 0.5))."""
    w1, h1 = img.size
    long_edge = round(size * max(w1 / h1, h1 / w1)) if size == 224 else size
    s = max(img.size)
    img = img.resize(tuple(int(round(x * long_edge / s)) for x in img.size),
                     Image.Resampling.LANCZOS if s > long_edge else Image.Resampling.BICUBIC)
    w, h = img.size
    cx, cy = w // 2, h // 2
    if size == 224:
        half = min(cx, cy)
        img = img.crop((cx - half, cy - half, cx + half, cy + half))
    else:
        halfw, halfh = ((2 * cx) // 16) * 8, ((2 * cy) // 16) * 8
        if not square_ok and w == h:
            halfh = 3 * halfw / 4
        img = img.crop((cx - halfw, cy - halfh, cx + halfw, cy + halfh))
    t = torch.from_numpy(np.array(img)).permute(2, 0, 1).to(torch.float32).div(255)
    return t.sub(torch.tensor([0.5] * 3)[:, None, None]).div(torch.tensor([0.5] * 3)[:, None, None]).numpy()


@pytest.mark.parametrize("hw,size,expect", [
    ((150, 200), 128, (96, 128)),     # landscape, shrink (LANCZOS)
    ((200, 150), 128, (128, 96)),     # portrait
    ((300, 300), 128, (96, 128)),     # square -> 4:3
    ((37, 53), 128, (80, 128)),       # tiny and odd, enlarged (BICUBIC)
    ((1080, 1920), 512, (288, 512)),  # HD
    ((333, 517), 512, (320, 512)),    # odd sizes
    ((300, 400), 224, (224, 224)),    # the reference's 224 branch: short side to 224, centre square
])
def test_shapes_match_reference_steps(hw, size, expect):
    rng = np.random.default_rng(sum(hw) + size)
    frame = rng.integers(0, 256, hw + (3,), dtype=np.uint8)
    got = pp.preprocess_rgb(frame, size)
    assert got.shape[1:] == expect == pp.output_shape(hw[1], hw[0], size)
    np.testing.assert_array_equal(got, _reference_like(Image.fromarray(frame), size))


def test_square_ok_keeps_square():
    frame = np.full((100, 100, 3), 7, np.uint8)
    assert pp.preprocess_rgb(frame, 128, square_ok=True).shape == (3, 128, 128)


@pytest.mark.parametrize("hw,size", [((10, 2000), 512), ((8, 8), 8), ((48, 48), 48), ((2, 6), 16)])
def test_unusable_frames_refused(hw, size):
    with pytest.raises(Human3RError, match="cannot take"):
        pp.preprocess_rgb(np.zeros(hw + (3,), np.uint8), size)


def test_grayscale_and_alpha_are_converted_like_pil():
    rng = np.random.default_rng(4)
    rgb = rng.integers(0, 256, (60, 80, 3), dtype=np.uint8)
    gray = rgb[:, :, 0]
    want_gray = pp.preprocess_rgb(np.repeat(gray[:, :, None], 3, axis=2), 64)
    np.testing.assert_array_equal(pp.preprocess_rgb(gray, 64), want_gray)
    np.testing.assert_array_equal(pp.preprocess_rgb(gray[:, :, None], 64), want_gray)
    rgba = np.concatenate([rgb, rng.integers(0, 256, (60, 80, 1), dtype=np.uint8)], axis=2)
    want = pp.preprocess_rgb(rgb, 64)
    np.testing.assert_array_equal(pp.preprocess_rgb(rgba, 64), want)
    np.testing.assert_array_equal(pp.preprocess_rgb(np.ascontiguousarray(rgba[:, :, [2, 1, 0, 3]]), 64,
                                                    channel_order="BGR"), want)


def test_image_files_gray_exif_and_16bit(tmp_path):
    rng = np.random.default_rng(5)
    rgb = rng.integers(0, 256, (60, 80, 3), dtype=np.uint8)
    Image.fromarray(rgb[:, :, 1]).save(tmp_path / "gray.png")
    np.testing.assert_array_equal(pp.load_image(tmp_path / "gray.png", 64),
                                  pp.preprocess_rgb(np.repeat(rgb[:, :, 1:2], 3, axis=2), 64))
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: the camera was turned; viewers rotate 90 degrees clockwise
    Image.fromarray(rgb).save(tmp_path / "rot.png", exif=exif)
    np.testing.assert_array_equal(pp.load_image(tmp_path / "rot.png", 64),
                                  pp.preprocess_rgb(np.ascontiguousarray(np.rot90(rgb, k=-1)), 64))
    Image.fromarray((rgb[:, :, 0].astype(np.uint16) * 257)).save(tmp_path / "deep.png")
    with pytest.raises(Human3RError, match="16/32-bit"):
        pp.load_image(tmp_path / "deep.png", 64)
    (tmp_path / "bad.png").write_bytes(b"not an image")
    with pytest.raises(Human3RError, match="cannot be read"):
        pp.load_image(tmp_path / "bad.png", 64)


@pytest.mark.parametrize("frame,kw,match", [
    (np.zeros((60, 80, 3), np.uint16), {}, "dtype"),
    (np.zeros((60, 80, 3), np.float32), {}, "dtype"),
    (np.zeros((60, 80, 2), np.uint8), {}, "shape"),
    (np.zeros((60, 80, 3), np.uint8), {"channel_order": "RGBA"}, "channel order"),
])
def test_bad_frames_refused(frame, kw, match):
    with pytest.raises(Human3RError, match=match):
        pp.preprocess_rgb(frame, 64, **kw)


def test_imagenet_normalize_formula():
    x = np.linspace(-1, 1, 3 * 4 * 4, dtype=np.float32).reshape(3, 4, 4)
    want = ((torch.from_numpy(x) * 0.5 + 0.5) - torch.tensor(pp.IMAGENET_MEAN)[:, None, None]) \
        / torch.tensor(pp.IMAGENET_STD)[:, None, None]
    np.testing.assert_allclose(pp.imagenet_normalize(x), want.numpy(), rtol=0, atol=1e-6)


def test_runtime_preprocess_does_not_import_torch():
    import subprocess
    import sys

    code = ("import sys, numpy as np; from human3r_edge.runtime import preprocess as p; "
            "p.pad_image(p.preprocess_rgb(np.zeros((90, 160, 3), np.uint8), 64), 56); "
            "sys.exit(1 if 'torch' in sys.modules else 0)")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
