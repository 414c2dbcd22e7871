"""The Python API: `Session` streams frames through an export and returns one `FrameResult` per frame.

    with Session.open("exports/tiny", backend="ort-cpu", smplx_model="SMPLX_NEUTRAL.npz") as s:
        for r in s.run("video.mp4"):
            print(r.index, r.c2w[:3, 3], [p.track_id for p in r.people])

Buffer ownership: every array in a `FrameResult` is a fresh host (numpy) array owned by the caller; the session
never reads or writes it after `step` returns, so results may be kept for as long as wanted. Input frames are read
during `step` only (never retained or modified); a device frame must stay valid until `step` returns.

Frame input (`step(frame)`), each case a defined behaviour:
* numpy (H, W, 3) uint8 in `SessionOptions.channel_order` ('RGB' default; 'BGR' for OpenCV frames);
* (H, W) or (H, W, 1) grayscale: replicated to RGB; (H, W, 4): alpha dropped (not composited), as PIL does;
* uint16 frames: scaled to 8 bits by keeping the high byte (x >> 8);
* float frames (float16/32/64): RGB in [0, 1], rounded to 8 bits; NaN/inf or values outside [0, 1] are refused;
* non-contiguous arrays (slices, flips, transposes) are accepted as they are;
* DLPack objects on the CPU (e.g. a CPU torch tensor, HWC) via `np.from_dlpack`;
* `__cuda_array_interface__` objects (CUDA torch tensors, CuPy arrays): on the GPU backends (trt, ort-cuda,
  ort-trt) with GPU preprocessing
  (the default there, `SessionOptions.preprocessing`), uint8 frames are read in place by the preprocessing
  kernels, zero-copy (see device_frames.py); otherwise (other backends, other dtypes) they are copied to the host
  through pycuda when it is installed, else refused with a clear error;
  GPU DLPack objects without `__cuda_array_interface__` are refused with a clear error;
* frames with a side under 16 px (one CUT3R patch) are refused;
* any larger size (8K included) is resized exactly as the reference (PIL LANCZOS/BICUBIC);
* the preprocessed image must have the export's resolution: by default a frame whose aspect gives another size
  (e.g. portrait frames for a landscape export) is refused with a hint; `fit='crop'` instead resizes to cover the
  export resolution and centre-crops (not what the reference does, so results differ from it);
* the frame size may change mid-stream: each frame is preprocessed on its own (a warning is given once).
"""
from __future__ import annotations

import dataclasses
import time
import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from human3r_edge.runtime import preprocess as pp
from human3r_edge.runtime.backends.base import ON_DEVICE, Backend
from human3r_edge.runtime.backends.capabilities import takes_device_feeds
from human3r_edge.errors import Human3RError, msg
from human3r_edge.runtime.geometry import transform_points
from human3r_edge.runtime.pipeline import FramePipeline, PipelineOptions, StepOutput
from human3r_edge.runtime.frames import cover_crop, normalize_frame, to_image_u8

NUM_BODY_JOINTS, NUM_HAND_JOINTS = 21, 15


@dataclass(frozen=True)
class SessionOptions:
    """How a Session reads frames and what it returns."""

    channel_order: str = "RGB"  # of 3/4-channel numpy frames: 'RGB' or 'BGR' (OpenCV)
    # the model-step settings: TTT3R, reset interval, people per frame, tracker memory (see pipeline.py)
    pipeline: PipelineOptions = field(default_factory=PipelineOptions)
    dense: bool = False  # return depth, point maps (camera and world) and confidence
    human_mask: bool = False  # return the human segmentation mask at image resolution (the pipeline fetches it)
    skin: bool = True  # compute SMPL-X vertices/joints (needs an SMPL-X model)
    fit: str = "exact"  # 'exact': refuse frames that do not preprocess to the export size; 'crop': cover + crop
    # 'auto': on the GPU (kernels/preprocess.cu, into the engine's input buffers) where the backend takes device
    # feeds (trt), else on the CPU; 'gpu': the GPU or an error; 'cpu': always the CPU
    preprocessing: str = "auto"

    def __post_init__(self) -> None:
        if self.preprocessing not in ("auto", "cpu", "gpu"):
            raise Human3RError(msg("preprocessing", "unknown", repr(self.preprocessing), "'auto', 'cpu' or 'gpu'"))
        if str(self.channel_order).upper() not in ("RGB", "BGR"):
            raise Human3RError(msg("channel_order", "unknown", repr(self.channel_order), "'RGB' or 'BGR'"))
        if self.fit not in ("exact", "crop"):
            raise Human3RError(msg("fit", "unknown", repr(self.fit), "'exact' or 'crop'"))


@dataclass(frozen=True)
class Person:
    """One person in one frame. SMPL-X joints: 127 (55 skeleton + 21 extra + 51 face landmarks)."""

    track_id: int
    score: float  # detection score after NMS
    head_uv: np.ndarray  # (2,) float32 head (x, y) in image pixels (unpadded, clamped to the image)
    rotmat: np.ndarray  # (53, 3, 3) float32: global, 21 body, 15 left hand, 15 right hand, jaw
    betas: np.ndarray  # (10,) float32
    expression: np.ndarray  # (10,) float32
    transl: np.ndarray  # (3,) float32 head joint in camera coordinates (Human3R's anchor, not smplx's transl)
    smplx_transl: np.ndarray | None = None  # (3,) float32 smplx `transl` giving the same camera-frame body
    vertices_cam: np.ndarray | None = None  # (V, 3) float32
    joints_cam: np.ndarray | None = None  # (127, 3) float32
    vertices_world: np.ndarray | None = None  # (V, 3) float32
    joints_world: np.ndarray | None = None  # (127, 3) float32

    def smplx_params(self, rotation: str = "rotmat") -> dict[str, np.ndarray]:
        """Parameters under the smplx package's keyword names (new arrays).

        rotation='rotmat': global_orient (1,3,3), body_pose (21,3,3), left/right_hand_pose (15,3,3), jaw_pose
        (1,3,3), the network's own output; 'axis_angle': the same as flat axis-angle (3,), (63,), (45,), (45,),
        (3,), which is what smplx 0.1.28's SMPLX.forward takes. `transl` (only when an SMPL-X model was given)
        is smplx's translation: smplx called with these parameters gives `vertices_cam`; `transl_head_cam` is
        Human3R's head-joint translation.
        """
        r = self.rotmat
        parts = {"global_orient": r[0:1], "body_pose": r[1:22], "left_hand_pose": r[22:37],
                 "right_hand_pose": r[37:52], "jaw_pose": r[52:53]}
        if rotation == "axis_angle":
            from human3r_edge.runtime.geometry import rotmat_to_axis_angle

            parts = {k: rotmat_to_axis_angle(v).reshape(-1) for k, v in parts.items()}
        elif rotation != "rotmat":
            raise Human3RError(msg("smplx_params", "unknown rotation format", repr(rotation),
                                   "'rotmat' or 'axis_angle'"))
        out = {k: np.array(v, np.float32) for k, v in parts.items()}
        out.update(betas=self.betas.copy(), expression=self.expression.copy(), transl_head_cam=self.transl.copy())
        if self.smplx_transl is not None:
            out["transl"] = self.smplx_transl.copy()
        return out


@dataclass(frozen=True)
class FrameResult:
    """Everything the runtime knows about one frame. All arrays are fresh and owned by the caller.

    Pixel quantities refer to the model image (H, W) = the export resolution, i.e. the input frame resized and
    centre-cropped as the reference does; `image` is that image.
    """

    index: int  # frame number since the session started
    timestamp: float | None  # seconds, from the source when known
    image: np.ndarray  # (H, W, 3) uint8 RGB: the model input
    c2w: np.ndarray  # (4, 4) float32 camera-to-world, chained across state resets
    intrinsics: np.ndarray  # (3, 3) float32 K with the Weiszfeld focal and principal point (W//2, H//2)
    focal: float  # pixels; NaN when the point map is degenerate
    segment: int  # state segment (increments at every reset)
    people: tuple[Person, ...]
    depth: np.ndarray | None = None  # (H, W) float32 z in the camera frame (dense=True)
    points_cam: np.ndarray | None = None  # (H, W, 3) float32 (dense=True)
    points_world: np.ndarray | None = None  # (H, W, 3) float32 = c2w * points_cam (dense=True)
    confidence: np.ndarray | None = None  # (H, W) float32 >= 1 (dense=True)
    human_mask: np.ndarray | None = None  # (H, W) float32 in [0, 1] (human_mask=True)
    timings: dict[str, float] = field(default_factory=dict)  # ms per stage

    @property
    def track_ids(self) -> list[int]:
        return [p.track_id for p in self.people]


@dataclass(frozen=True)
class PreparedFrame:
    """A frame after host preprocessing (what a background reader thread can produce ahead of inference)."""

    img: np.ndarray  # (3, H, W) float32 in [-1, 1]
    img_mhmr: np.ndarray | None  # (3, R, R) float32; None when prepared on the device
    source_hw: tuple[int, int]  # (H0, W0) of the input frame
    ms: float  # preprocessing time
    device_token: int = 0  # > 0: both images wait in the backend's input buffers (valid until the next prepare)


# ------------------------------------------------------------------------------------------------ frames


# ------------------------------------------------------------------------------------------------ session
class Session:
    """One video stream through one export. Not thread-safe; one Session per stream.

    backend: a Backend over an export (activated on `__enter__` if needed). smplx: a skinner (an object with
    `.skin(rotmat, betas, expression, transl, c2w)`: `runtime.smplx.skinning.SMPLXModel` on the CPU or
    `runtime.smplx.gpu.CudaSkinner` on the GPU) or a path to a model file, or None (no vertices/joints).
    """

    def __init__(self, backend: Backend, smplx: Any = None, options: SessionOptions = SessionOptions()) -> None:
        self.backend = backend
        self.options = options
        self.smplx = load_smplx(smplx)
        self.width, self.height = (int(v) for v in backend.spec.resolution)
        self.size = max(self.width, self.height)
        self.square: int | None = None  # R, set when the session starts
        self.pipeline: FramePipeline | None = None
        self._owns_activation = False
        self._last_hw: tuple[int, int] | None = None
        self._warned_size = False
        self.gpu_preprocessor: Any = None  # device_frames.GpuFramePreparer once started, when used
        self._device_token = 0

    @classmethod
    def open(cls, export_dir: str | Path, backend: str = "ort-cpu", smplx_model: str | Path | None = None,
             options: SessionOptions = SessionOptions(), **backend_options: Any) -> "Session":
        """A Session over the export (ONNX or engine) directory `export_dir` with backend `backend`."""
        from human3r_edge.runtime.backends import open_backend

        return cls(open_backend(backend, export_dir, **streaming_backend_options(backend, backend_options)),
                   smplx_model, options)

    # ---------------------------------------------------------------------------------------------- lifecycle
    def __enter__(self) -> "Session":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> None:
        if not self.backend.is_active:
            self.backend.activate()
            self._owns_activation = True
        if self.pipeline is None:
            self.pipeline = FramePipeline(self.backend, pipeline_options(self.options))
            self.square = self.pipeline.square
        if self.gpu_preprocessor is None and self.options.preprocessing != "cpu":
            self._start_gpu_preprocessing()

    def _start_gpu_preprocessing(self) -> None:
        from human3r_edge.runtime.device_frames import GpuFramePreparer
        from human3r_edge.errors import BackendUnavailable

        wanted = self.options.preprocessing == "gpu"
        if not takes_device_feeds(self.backend):
            if wanted:
                raise Human3RError(msg("preprocessing='gpu'", "backend has no device input buffers",
                                       self.backend.name, "a GPU backend (trt, ort-cuda, ort-trt)",
                                       "use preprocessing='auto' or 'cpu'"))
            return
        try:
            self.gpu_preprocessor = GpuFramePreparer(self.backend, self.size, int(self.square or 0))
        except (BackendUnavailable, ImportError) as exc:
            if wanted:
                raise
            warnings.warn(msg("GPU preprocessing", "unavailable, using the CPU", str(exc)[:300]), stacklevel=3)

    @property
    def reader_transform(self) -> Any:
        """What a background frame reader may run on each frame: host preprocessing, or None when frames are
        preprocessed on the GPU (that must happen on the thread that runs the backend)."""
        return self._prepare_rgb if self.gpu_preprocessor is None else None

    def close(self) -> None:
        self.gpu_preprocessor = None
        if self._owns_activation:
            self.backend.deactivate()
            self._owns_activation = False
        self.pipeline = None

    def reset(self) -> None:
        """Start a new scene: initial state, new world frame (identity), people forgotten (ids never reused)."""
        self._require().reset()

    def _require(self) -> FramePipeline:
        if self.pipeline is None:
            raise Human3RError(msg("session", "not started", hint="use `with Session(...) as s:` or call start()"))
        return self.pipeline

    # ---------------------------------------------------------------------------------------------- frames
    def prepare(self, frame: Any, channel_order: str | None = None, *, stream: Any = None) -> PreparedFrame:
        """Host preprocessing of one frame (safe to call from a reader thread). channel_order overrides the
        session's for this frame; stream: see `step`."""
        tic = time.perf_counter()
        order = (channel_order or self.options.channel_order).upper()
        if self.gpu_preprocessor is not None:
            got = self.gpu_preprocessor.prepare(frame, order, stream=stream)
            if got is not None:
                img, hw = got
                self._note_size(hw)
                self._device_token += 1
                return PreparedFrame(img, None, hw, (time.perf_counter() - tic) * 1e3, self._device_token)
        a = normalize_frame(frame, stream=stream)
        hw = (int(a.shape[0]), int(a.shape[1]))
        self._note_size(hw)
        square = self.square or self._require().square
        return prepare_host(a, order, self.width, self.height, square, self.options.fit, tic)

    def _note_size(self, hw: tuple[int, int]) -> None:
        if self._last_hw is not None and hw != self._last_hw and not self._warned_size:
            warnings.warn(msg("frame", "size changed mid-stream", f"{self._last_hw[1]}x{self._last_hw[0]} -> "
                              f"{hw[1]}x{hw[0]}", hint="each frame is preprocessed on its own"), stacklevel=3)
            self._warned_size = True
        self._last_hw = hw

    def step(self, frame: Any, timestamp: float | None = None, *, stream: Any = None) -> FrameResult:
        """Process one frame (see the module docstring for accepted inputs) -> its FrameResult.

        stream: for a CUDA frame, the stream its producer wrote it on (an int CUstream handle, a pycuda Stream,
        a torch.cuda.Stream or a CuPy stream; C pipelines pass their own). The frame is read only after that
        stream's work is done. Without it, the frame's `__cuda_array_interface__` "stream" entry decides, and a
        frame that names none (torch exports no "stream" key) waits for the whole CUDA context."""
        self._require()
        return self.process(self.prepare(frame, stream=stream), timestamp)

    def process(self, prepared: PreparedFrame, timestamp: float | None = None) -> FrameResult:
        """Run an already prepared frame through the models and the host logic."""
        pipeline = self._require()
        if prepared.device_token:
            if prepared.device_token != self._device_token:
                raise Human3RError(msg("prepared frame", "its device images were overwritten by a later prepare",
                                       f"frame token {prepared.device_token}, latest {self._device_token}",
                                       hint="process each GPU-prepared frame before preparing the next"))
            out = pipeline.step(ON_DEVICE, ON_DEVICE)
        elif prepared.img_mhmr is None:
            raise Human3RError(msg("prepared frame", "has no human-branch image", None, "a frame from prepare()"))
        else:
            out = pipeline.step(prepared.img, prepared.img_mhmr)
        out.timings["preprocess"] = prepared.ms
        return self._result(out, prepared, timestamp)

    def run(self, source: Any, *, max_frames: int | None = None, queue_size: int = 4) -> Iterator[FrameResult]:
        """Iterate results over a source: a video file, an image folder, a camera index (decoded and
        preprocessed in a background thread, see video.py), a `video.FrameSource`, or any iterable of frames.
        Closing the iterator early stops the reader thread."""
        self._require()
        from human3r_edge.runtime import video

        if isinstance(source, (str, Path, int)):
            src: Any = video.open_source(source, queue_size=queue_size, transform=self.reader_transform,
                                         max_frames=max_frames)
        else:
            src = source
        if isinstance(src, video.FrameSource):
            with src:
                for item in src:
                    if isinstance(item.payload, PreparedFrame):
                        prepared = item.payload
                    elif item.image is not None:
                        prepared = self.prepare(item.image, "RGB")
                    else:
                        raise Human3RError(msg("source", "frames carry neither an image nor a prepared frame",
                                               type(item.payload).__name__, hint="open the source without a "
                                               "transform, or with transform=session.prepare"))
                    yield self.process(prepared, item.timestamp)
            return
        for i, frame in enumerate(_iterate(src)):
            if max_frames is not None and i >= max_frames:
                return
            yield self.step(frame)

    def _prepare_rgb(self, frame: np.ndarray) -> PreparedFrame:
        """Transform for video sources, whose frames are RGB (the reader converts from OpenCV's BGR)."""
        return self.prepare(frame, "RGB")

    # ---------------------------------------------------------------------------------------------- results
    def _result(self, out: StepOutput, prepared: PreparedFrame, timestamp: float | None) -> FrameResult:
        return build_result(out, prepared, timestamp, self.options, self.smplx, self.width, self.height)


# ------------------------------------------------------------------------------------------------ shared pieces
# (Session and runtime.multistream.MultiSession build on these)
def model_image(a: np.ndarray, order: str, width: int, height: int, fit: str) -> np.ndarray:
    """A normalised (H0, W0, 3) uint8 frame -> the (3, height, width) float32 model image, as the reference
    preprocesses it ('exact'), or covered and centre-cropped (fit='crop'); another size is a clear error."""
    size = max(width, height)
    h0, w0 = a.shape[:2]
    try:
        shape = pp.output_shape(w0, h0, size)
    except Human3RError:
        shape = None
    if shape == (height, width):
        return pp.preprocess_rgb(a, size, channel_order=order)
    if fit == "crop":
        return cover_crop(a, width, height, order)
    got = "an unusable size" if shape is None else f"{shape[1]}x{shape[0]}"
    raise Human3RError(msg("frame", "does not preprocess to the export resolution",
                           f"{w0}x{h0} -> {got}", f"{width}x{height} (WxH)",
                           "export at this resolution (human3r-edge export --resolution WxH), or use "
                           "SessionOptions(fit='crop') / --fit crop to crop frames to the export"))


def prepare_host(a: np.ndarray, order: str, width: int, height: int, square: int, fit: str,
                 tic: float | None = None) -> PreparedFrame:
    """Host preprocessing of a normalised frame (`frames.normalize_frame`) -> PreparedFrame (thread-safe)."""
    tic = time.perf_counter() if tic is None else tic
    img = model_image(a, order, width, height, fit)
    img_mhmr, _ = pp.pad_image(img, square)
    return PreparedFrame(img, img_mhmr, (int(a.shape[0]), int(a.shape[1])), (time.perf_counter() - tic) * 1e3)


_NOT_SKINNED: Any = object()  # people_of / build_result: skin here (the per-stream path)


def build_result(out: StepOutput, prepared: PreparedFrame, timestamp: float | None, options: SessionOptions,
                 smplx: Any, width: int, height: int, *, skin: Any = _NOT_SKINNED, skin_ms: float = 0.0
                 ) -> FrameResult:
    """The FrameResult of one pipeline step (people skinned with `smplx` when given and options.skin).
    skin: this step's SkinResult (or None) already computed by `skin_batch` (its share of time: skin_ms)."""
    o = options
    tic = time.perf_counter()
    people = people_of(out, options, smplx, skin)
    out.timings["skinning"] = (time.perf_counter() - tic) * 1e3 + skin_ms
    dense: dict[str, Any] = {}
    if o.dense:
        dense = dict(depth=np.ascontiguousarray(out.pts3d_self[..., 2]), points_cam=out.pts3d_self,
                     points_world=transform_points(out.c2w, out.pts3d_self), confidence=out.conf_self)
    mask = None
    if out.human_mask is not None:
        mask = np.ascontiguousarray(pp.unpad_image(out.human_mask, height, width))
    return FrameResult(index=out.index, timestamp=timestamp, image=to_image_u8(prepared.img), c2w=out.c2w,
                       intrinsics=out.K, focal=out.focal, segment=out.segment, people=people,
                       human_mask=mask, timings=out.timings, **dense)


def people_of(out: StepOutput, options: SessionOptions, smplx: Any, skin: Any = _NOT_SKINNED
              ) -> tuple[Person, ...]:
    """The Person records of one pipeline step (skin: its SkinResult from `skin_batch`, else skinned here)."""
    det, s = out.detections, out.smpl
    n = det.count
    if n == 0:
        return ()
    if skin is _NOT_SKINNED:
        skin = None
        if options.skin and smplx is not None:
            skin = smplx.skin(s["smpl_rotmat"], s["smpl_shape"], s["smpl_expression"], s["smpl_transl"], out.c2w)
    pelvis_rest = _rest_pelvis(getattr(smplx, "model", smplx), s["smpl_shape"], s["smpl_expression"])
    people = []
    for i in range(n):
        extra: dict[str, Any] = {}
        if skin is not None:
            extra = dict(vertices_cam=np.array(skin.v_cam[i]), joints_cam=np.array(skin.j_cam[i]),
                         vertices_world=np.array(skin.v_world[i]), joints_world=np.array(skin.j_world[i]))
            if pelvis_rest is not None:
                extra["smplx_transl"] = (np.asarray(skin.j_cam[i, 0], np.float32) - pelvis_rest[i])
        people.append(Person(track_id=int(out.track_ids[i]), score=float(det.scores[i]),
                             head_uv=det.loc_image[i].copy(), rotmat=s["smpl_rotmat"][i].copy(),
                             betas=s["smpl_shape"][i].copy(), expression=s["smpl_expression"][i].copy(),
                             transl=s["smpl_transl"][i].copy(), **extra))
    return tuple(people)


def skin_batch(smplx: Any, outs: Sequence[StepOutput], options: Sequence[SessionOptions]) -> list[Any]:
    """The SkinResult (or None: no skinning, no people) of every step of a multi-stream batch, with ONE skinning
    call for the people of all of them (split only where a GPU skinner's `max_people` buffers are smaller).

    Each stream has its own c2w, so the people are skinned in the camera frame and each step's world vertices
    and joints are its c2w applied on the host: equal to per-stream `smplx.skin(..., c2w)` within float rounding
    (the CPU model applies c2w the same way to the joints). A batch with one step to skin is that call exactly."""
    todo = [i for i, (out, o) in enumerate(zip(outs, options))
            if o.skin and smplx is not None and out.detections.count > 0]
    result: list[Any] = [None] * len(outs)
    if len(todo) == 1:
        s, c2w = outs[todo[0]].smpl, outs[todo[0]].c2w
        result[todo[0]] = smplx.skin(s["smpl_rotmat"], s["smpl_shape"], s["smpl_expression"], s["smpl_transl"], c2w)
    if len(todo) <= 1:
        return result
    from human3r_edge.runtime.smplx.skinning import SkinResult, apply_c2w

    params = [np.concatenate([outs[i].smpl[k] for i in todo]) for k in
              ("smpl_rotmat", "smpl_shape", "smpl_expression", "smpl_transl")]
    total = int(params[0].shape[0])
    chunk = int(getattr(smplx, "max_people", 0) or total)
    parts = [smplx.skin(*(p[lo:lo + chunk] for p in params), None) for lo in range(0, total, chunk)]
    v_cam = parts[0].v_cam if len(parts) == 1 else np.concatenate([r.v_cam for r in parts])
    j_cam = parts[0].j_cam if len(parts) == 1 else np.concatenate([r.j_cam for r in parts])
    lo = 0
    for i in todo:
        n, c2w = outs[i].detections.count, outs[i].c2w
        v, j = v_cam[lo:lo + n].copy(), j_cam[lo:lo + n].copy()
        lo += n
        result[i] = SkinResult(v_cam=v, j_cam=j, transl_pelvis=j[:, 0].copy(), v_world=apply_c2w(c2w, v),
                               j_world=apply_c2w(c2w, j))
    return result


def pipeline_options(options: SessionOptions) -> PipelineOptions:
    """The pipeline settings a session with `options` runs (the human mask comes from the encoder)."""
    opts = options.pipeline
    if options.human_mask and not opts.human_mask:
        opts = dataclasses.replace(opts, human_mask=True)
    return opts


def load_smplx(smplx: Any) -> Any:
    """A skinner object as given, or the model loaded from a path."""
    return _load_smplx(smplx) if isinstance(smplx, (str, Path)) else smplx


def streaming_backend_options(backend: str, options: dict[str, Any] | None = None) -> dict[str, Any]:
    """Backend options for streaming: ONNX Runtime backends default to allow_spinning=False, because the
    pipeline does host work between graph runs (detection, tracking, focal, skinning) and spinning ORT worker
    threads starve it (measured on the 2-core dev box: the host geometry went from ~1 ms to ~200 ms)."""
    opts = dict(options or {})
    if backend.startswith("ort"):
        opts.setdefault("allow_spinning", False)
    return opts


def _iterate(src: Any) -> Iterable[Any]:
    if isinstance(src, np.ndarray) and src.ndim == 4:
        return iter(src)  # a stack of frames (F, H, W, C)
    try:
        return iter(src)
    except TypeError as exc:
        raise Human3RError(msg("source", "not iterable", type(src).__name__,
                               "a path, a camera index, a FrameSource or an iterable of frames")) from exc


def _load_smplx(path: str | Path) -> Any:
    from human3r_edge.runtime.smplx.skinning import SMPLXModel  # lazy: the body model is optional

    return SMPLXModel.load(path)


def _rest_pelvis(model: Any, betas: np.ndarray, expression: np.ndarray) -> np.ndarray | None:
    """(P, 3) pelvis of the shaped rest body (what smplx rotates the body about), or None if the model does not
    expose its folded joint regressor (`j_template` (55, 3), `j_dirs` (20, 55*3))."""
    jt, jd = getattr(model, "j_template", None), getattr(model, "j_dirs", None)
    if jt is None or jd is None:
        return None
    coeffs = np.concatenate([betas, expression], axis=-1).astype(np.float32)  # (P, 20)
    return (np.asarray(jt, np.float32)[0] + coeffs @ np.asarray(jd, np.float32)[:, :3]).astype(np.float32)
