"""The three deployment graphs and the name, dtype and shape of every tensor they exchange.

The exporter builds its ONNX graphs to exactly these specs and writes them into export.json; the runtime and
every backend read them from there. Shapes are static: humans enter the decoder as K padded slots with a
validity mask, so the engines never change shape from frame to frame.

    encoder     img, img_mhmr  ->  enc_tokens, dino_tokens, det_scores, det_offsets, human_mask
    decoder     enc_tokens, dino_tokens (linked), state, mem (ping-pong), human slots, flags
                ->  state_out, mem_out, camera_pose, pts3d_self, conf_self, human_tokens, human_dino_tokens, ...
    smpl_head   human_tokens, human_dino_tokens (linked)  ->  smpl_rotmat, smpl_shape, smpl_expression, smpl_transl

Detection thresholding, NMS, slot filling, tracking, reset and pose chaining stay in the runtime (host).
"""
from __future__ import annotations

from human3r_edge.runtime.config import Human3RConfig
from human3r_edge.errors import Human3RError, msg
from human3r_edge.runtime.iospec import GraphSpec, StatePair, TensorSpec

ENCODER, DECODER, SMPL_HEAD = "encoder", "decoder", "smpl_head"
# Heads the runtime never uses: dropped by `export --lean`.
LEAN_DROPPED = ("pts3d_other", "conf_other", "rgb")
NUM_BODY_ROTS = 53  # global + 21 body + 15 left hand + 15 right hand + jaw


def check_resolution(width: int, height: int, patch: int = 16) -> None:
    for what, v in (("width", width), ("height", height)):
        if not isinstance(v, int) or v <= 0 or v % patch:
            raise Human3RError(msg("resolution", f"{what} must be a positive multiple of {patch}", v,
                                   f"e.g. 512x288 (16:9) or 512x384 (4:3)",
                                   "the reference crops to multiples of 16; pass --resolution WxH accordingly"))


def graph_specs(cfg: Human3RConfig, width: int, height: int, max_people: int = 16, lean: bool = False,
                streams: int = 1) -> tuple[GraphSpec, ...]:
    """Specs of the encoder, decoder step and SMPL-X head graphs for `cfg` at image size `width`x`height`.

    `streams` = N > 1 gives the multi-stream graphs: every tensor gets a leading stream axis (dynamic 1..N, see
    iospec.py): (1, ...) tensors become (N, ...), the per-slot vectors (K,) become (N, K) and the flags (1,)
    become (N,). N = 1 gives the single-stream graphs, unchanged."""
    if not isinstance(streams, int) or isinstance(streams, bool) or streams < 1:
        raise Human3RError(msg("--streams", "must be an integer >= 1", repr(streams), ">= 1 (default 1)",
                               "N is the most streams batched through one set of engines"))
    if streams > 1:
        return tuple(_batched(g, streams) for g in graph_specs(cfg, width, height, max_people, lean))
    check_resolution(width, height, cfg.patch_size)
    if not isinstance(max_people, int) or max_people < 1:
        raise Human3RError(msg("max_people", "K must be an int >= 1", max_people, ">= 1 (default 16)"))
    K = max_people
    W, H = width, height
    N = (H // cfg.patch_size) * (W // cfg.patch_size)
    R = cfg.mhmr_img_res
    g = cfg.mhmr_grid
    bd = cfg.backbone_spec.embed_dim
    D, Ce, S, M = cfg.dec_embed_dim, cfg.enc_embed_dim, cfg.state_size, cfg.local_mem_size
    f32 = "float32"

    def t(name: str, shape: tuple[int, ...], doc: str, dtype: str = f32) -> TensorSpec:
        return TensorSpec(name, dtype, shape, doc)

    encoder = GraphSpec(
        ENCODER, "encoder.onnx",
        inputs=(
            t("img", (1, 3, H, W), "CUT3R image, RGB, (x/255-0.5)/0.5 in [-1,1], NCHW"),
            t("img_mhmr", (1, 3, R, R), "img resized to fit RxR (bilinear) and centre-padded with -1"),
        ),
        outputs=(
            t("enc_tokens", (1, N, Ce), "CUT3R encoder output after enc_norm, row-major patches"),
            t("dino_tokens", (1, g * g, bd), "DINOv2 tokens (final norm, cls dropped), row-major cells"),
            t("det_scores", (1, g, g), "sigmoid(mlp_classif)*(1-2e-6)+1e-6 before NMS"),
            t("det_offsets", (1, g, g, 2), "mlp_offset (dx, dy) in cells"),
            t("human_mask", (1, R, R), "sigmoid-with-eps of mlp_msk, pixel-shuffled, padded RxR square"),
        ),
    )
    dec_out = [
        t("state_out", (1, S, D), "next state (TTT3R-gated when ttt3r=1 and first=0)"),
        t("mem_out", (1, M, 2 * D), "next pose-retriever memory (never gated)"),
        t("camera_pose", (1, 7), "t*expm1|t|/|t| (3) + unit quaternion wxyz with w>=0; cam-to-world of segment"),
        t("pts3d_self", (1, H, W, 3), "point map in the current camera frame"),
        t("conf_self", (1, H, W), "1+exp(x) confidence of pts3d_self"),
        t("pts3d_other", (1, H, W, 3), "cross-view DPT point map (segment world frame); unused by the demo"),
        t("conf_other", (1, H, W), "confidence of pts3d_other"),
        t("rgb", (1, H, W, 3), "rgb head in [-1,1]; unused by the demo"),
        t("human_tokens", (1, K, D), "dec_norm-ed final decoder tokens of the K human slots (zeros if invalid)"),
        t("human_dino_tokens", (1, K, bd), "DINOv2 token of each slot's detection cell"),
        t("ttt3r_gate", (1, S), "sigmoid of the mean state->image cross-attention logit (diagnostic)"),
    ]
    if lean:
        dec_out = [o for o in dec_out if o.name not in LEAN_DROPPED]
    decoder = GraphSpec(
        DECODER, "decoder.onnx",
        inputs=(
            t("enc_tokens", (1, N, Ce), "linked from the encoder"),
            t("dino_tokens", (1, g * g, bd), "linked from the encoder"),
            t("state", (1, S, D), "recurrent state (ping-pong with state_out)"),
            t("mem", (1, M, 2 * D), "pose-retriever memory (ping-pong with mem_out)"),
            t("human_cell", (K,), "DINOv2 cell index (row-major h*g+w) of each slot; 0 for padding", "int32"),
            t("human_patch", (K,), "CUT3R patch index (row-major y*W/16+x) of each slot's head; 0 for padding",
              "int32"),
            t("human_valid", (K,), "1.0 for a real detection, 0.0 for a padded slot"),
            t("first", (1,), "1.0 on the first frame of a segment (pose_token, no TTT3R gate), else 0.0"),
            t("ttt3r", (1,), "1.0 to gate the state update with TTT3R, 0.0 for plain CUT3R"),
        ),
        outputs=tuple(dec_out),
        state=(StatePair("state", "state_out"), StatePair("mem", "mem_out")),
    )
    smpl = GraphSpec(
        SMPL_HEAD, "smpl_head.onnx",
        inputs=(
            t("human_tokens", (1, K, D), "linked from the decoder"),
            t("human_dino_tokens", (1, K, bd), "linked from the decoder"),
        ),
        outputs=(
            t("smpl_rotmat", (1, K, NUM_BODY_ROTS, 3, 3), "rotations from 6D by Gram-Schmidt"),
            t("smpl_shape", (1, K, 10), "betas"),
            t("smpl_expression", (1, K, 10), "expression coefficients"),
            t("smpl_transl", (1, K, 3), "head joint in camera coordinates"),
        ),
    )
    return (encoder, decoder, smpl)


# single-stream tensors without a leading batch axis: they gain one in the multi-stream graphs
_UNBATCHED = ("human_cell", "human_patch", "human_valid", "first", "ttt3r")


def _batched(g: GraphSpec, n: int) -> GraphSpec:
    def b(t: TensorSpec) -> TensorSpec:
        if t.name in _UNBATCHED:
            shape = (n,) + (t.shape if t.shape != (1,) else ())
        else:
            if t.shape[0] != 1:
                raise AssertionError(f"{t.name}: axis 0 is not a batch axis of 1: {t.shape}")
            shape = (n,) + t.shape[1:]
        return TensorSpec(t.name, t.dtype, shape, t.doc, batched=True)

    return GraphSpec(g.name, g.file, tuple(b(t) for t in g.inputs), tuple(b(t) for t in g.outputs), g.state,
                     g.fp16_file)
