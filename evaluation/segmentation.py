"""Zero-shot text-guided video segmentation from the tokenizer's language-aligned codes (paper appendix B.1).

Per video and annotated object (the query is the object's name, e.g. "red square"):

1. Relevance: the cosine similarity of every token of one pyramid level to the query
   (`evaluation.semantic.token_text_similarity`; the video is encoded with the query as its prompt by default),
   `(T', H_l, W_l)` in [-1, 1]. The paper uses the deepest level `q^(L)` (`level=-1`, the default); note that its
   grid is `H / (8 · 8)` for the 64-px-multiple presets, i.e. a single token per frame at 64×64, so on small clips
   pass a shallower `level` or a larger `size` (the report records the grid used).
2. Probabilities: `normalize="minmax"` (default) maps the video's similarity volume linearly onto [0, 1] (min → 0,
   max → 1; a constant volume → 0.5); `normalize="sigmoid"` uses `sigmoid(s / temperature)` (absolute: a cosine of 0
   is 0.5).
3. Upsampling to the input lattice: bilinear in space (`align_corners=False`: a token covers its pixel block); in
   time, latent frame `t'` covers input frame 0 (`t' = 0`) or frames `4t' - 3 .. 4t'` (causal chunks).
   `temporal="linear"` (default, the paper's trilinear upsampling) places latent frame `t'` at the centre of its
   frames (0 for `t' = 0`, `4t' - 1.5` otherwise) and interpolates linearly between centres (clamped at the ends);
   `temporal="nearest"` gives every frame its own chunk's value (as `evaluation.localization`).
4. Refinement: a dense 3D CRF over `(x, y, t)` with the video's colours (`evaluation.crf.dense_crf_3d`), parameters
   given for the stored clip resolution. When `size` upsamples the clips, the CRF still runs at the stored
   resolution (probabilities and frames area-downsampled, the posterior upsampled bilinearly): upsampled frames hold
   no extra detail, and the cost grows with the pixel count; when `size` downsamples, it runs at `size` with its
   spatial parameters (θα, θγ, window dilation) scaled by the resize factor.
5. Masks: posterior (or, without CRF, the upsampled probabilities) `> threshold` (default 0.5).

Metrics (the report gives each with and without the CRF, to show its effect):

- J (DAVIS region similarity): per object, the mean over all frames of the per-frame IoU with the ground-truth mask
  (`evaluation.metrics.jaccard_j`; a frame where both are empty scores 1); "J" is the mean over objects.
- mAP (YouTube-VIS style, `evaluation.metrics.mask_ap`): each query gives one predicted instance, its mask track,
  labelled with the queried object's category (shape) and scored by the mean raw cosine similarity inside the mask
  (an empty mask is no prediction). Per category, predictions of all videos are ranked together and matched to the
  category's ground-truth instances by spatio-temporal IoU (`video_mask_iou`) — only within their own video; AP over
  IoU 0.50:0.05:0.95; mAP = mean over categories with ground truth. Because predictions are text-queried, every
  video has exactly one prediction per annotated object (no detection of unqueried objects): this measures
  referring segmentation quality ranked by confidence, not open-set detection. `"mAP_name"` repeats it with the
  object names ("red square") as classes, so a prediction can only match the object it was queried for.

Ground truth: the split's `annotations_vis.json` (YouTube-VIS style, `evaluation.clips.vis_instances`); with `size`,
masks go through the clip's own resize-and-crop (`ResizeInfo.apply_to_masks`: area resampling, coverage >= 0.5).
"""

from __future__ import annotations

import argparse
import logging
import os
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .clips import TEMPORAL_CHUNK, VIS_FILE, ClipReader, load_vis_annotations, split_folder, vis_instances
from .crf import dense_crf_3d
from .metrics import jaccard_j, mask_ap, video_mask_iou
from .semantic import _core, _level_index, token_text_similarity

logger = logging.getLogger(__name__)

NORMALIZATIONS = ("minmax", "sigmoid")
TEMPORAL_MODES = ("linear", "nearest")
DEFAULT_THRESHOLD = 0.5
DEFAULT_TEMPERATURE = 0.1
# CRF parameters for clips at their stored resolution (~64 px, objects of 10-25 px): `dense_crf_3d`'s defaults (tuned
# on the procedural val split, see its docstring). `evaluate_segmentation` scales the spatial ones for downsized clips.
DEFAULT_CRF = {
    "n_iters": 5,
    "theta_alpha": 10.0,
    "theta_beta": 20.0,
    "theta_gamma": 1.5,
    "theta_time": 1.0,
    "w_appearance": 20.0,
    "w_smooth": 0.0,
    "window": 5,
    "temporal_window": 1,
    "dilation": 2,
}
SPATIAL_CRF_KEYS = ("theta_alpha", "theta_gamma")


# -------------------------------------------------------------------------------------------------------- outputs


@dataclass
class SegmentationOutput:
    """One query on one video.

    Args:
        similarity: float32 `(T', H_l, W_l)` token-text cosine similarity in [-1, 1].
        pixel_similarity: float32 `(T, H, W)` the similarity upsampled to the input lattice.
        probs: float32 `(T, H, W)` foreground probability in [0, 1] before the CRF.
        posterior: float32 `(T, H, W)` CRF posterior in [0, 1] (None without CRF).
        mask: bool `(T, H, W)` the final mask (`posterior` or `probs` `> threshold`).
        mask_no_crf: bool `(T, H, W)` `probs > threshold`.
    """

    similarity: torch.Tensor
    pixel_similarity: torch.Tensor
    probs: torch.Tensor
    posterior: torch.Tensor | None
    mask: torch.Tensor
    mask_no_crf: torch.Tensor


# -------------------------------------------------------------------------------------------------------- helpers


def latent_to_frame_weights(num_latent: int, num_frames: int, temporal: str = "linear") -> torch.Tensor:
    """Interpolation matrix from latent frames to input frames (module docstring, step 3).

    Args:
        num_latent: `T'`.
        num_frames: `T = 4 (T' - 1) + 1`.
        temporal: `"linear"` (between chunk centres) or `"nearest"` (each frame's own chunk).

    Returns:
        float32 `(T, T')`, rows sum to 1.
    """
    if temporal not in TEMPORAL_MODES:
        raise ValueError(f"temporal must be one of {TEMPORAL_MODES}, got {temporal!r}")
    if num_latent < 1 or num_frames != TEMPORAL_CHUNK * (num_latent - 1) + 1:
        raise ValueError(f"{num_latent} latent frames cover {TEMPORAL_CHUNK * (num_latent - 1) + 1} input frames "
                         f"(T = 4(T' - 1) + 1), got num_frames={num_frames}")
    frames = torch.arange(num_frames, dtype=torch.float64)
    weights = torch.zeros(num_frames, num_latent, dtype=torch.float64)
    if temporal == "nearest" or num_latent == 1:
        chunk = (frames.long() + TEMPORAL_CHUNK - 1) // TEMPORAL_CHUNK  # 0, 1,1,1,1, 2,2,2,2, ...
        weights[torch.arange(num_frames), chunk] = 1.0
        return weights.float()
    centres = torch.tensor([0.0] + [TEMPORAL_CHUNK * k - (TEMPORAL_CHUNK - 1) / 2 for k in range(1, num_latent)],
                           dtype=torch.float64)
    pos = frames.clamp(centres[0], centres[-1])
    right = torch.searchsorted(centres, pos, right=True).clamp(1, num_latent - 1)  # centres[right-1] <= pos
    left = right - 1
    frac = (pos - centres[left]) / (centres[right] - centres[left])
    rows = torch.arange(num_frames)
    weights[rows, left] += 1 - frac
    weights[rows, right] += frac
    return weights.float()


def upsample_to_video(volume: torch.Tensor, num_frames: int, height: int, width: int,
                      temporal: str = "linear") -> torch.Tensor:
    """Token-grid values `(T', H_l, W_l)` → input lattice `(T, H, W)` (bilinear in space, `temporal` in time).

    Values stay within the input's range (convex combinations).
    """
    if volume.ndim != 3:
        raise ValueError(f"volume must be (T', H_l, W_l), got shape {tuple(volume.shape)}")
    spatial = F.interpolate(volume.float()[:, None], size=(height, width), mode="bilinear", align_corners=False)
    weights = latent_to_frame_weights(volume.shape[0], num_frames, temporal).to(volume.device)
    return torch.einsum("ft,thw->fhw", weights, spatial[:, 0])


def similarity_to_probs(similarity: torch.Tensor, normalize: str = "minmax",
                        temperature: float = DEFAULT_TEMPERATURE) -> torch.Tensor:
    """Cosine similarities (any shape, in [-1, 1]) → foreground probabilities in [0, 1] (module docstring, step 2)."""
    if normalize == "minmax":
        lo, hi = similarity.min(), similarity.max()
        if hi - lo <= 1e-12:
            return torch.full_like(similarity, 0.5, dtype=torch.float32)
        return ((similarity - lo) / (hi - lo)).float()
    if normalize == "sigmoid":
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature!r}")
        return torch.sigmoid(similarity.float() / temperature)
    raise ValueError(f"normalize must be one of {NORMALIZATIONS}, got {normalize!r}")


def scaled_crf_params(crf_params: dict | None, scale: float) -> dict:
    """`DEFAULT_CRF` updated with `crf_params`, spatial parameters (θα, θγ, dilation) multiplied by `scale`."""
    params = dict(DEFAULT_CRF)
    unknown = sorted(set(crf_params or {}) - set(DEFAULT_CRF) - {"backend", "eps"})
    if unknown:
        raise ValueError(f"unknown CRF parameter(s) {unknown}; expected some of {sorted(DEFAULT_CRF)}")
    params.update(crf_params or {})
    if not scale > 0:
        raise ValueError(f"scale must be > 0, got {scale!r}")
    for key in SPATIAL_CRF_KEYS:
        params[key] = float(params[key]) * scale
    params["dilation"] = max(1, round(params["dilation"] * scale))
    return params


def segment_video(
    model: torch.nn.Module,
    video: torch.Tensor,
    query: str,
    level: int = -1,
    use_crf: bool = True,
    threshold: float = DEFAULT_THRESHOLD,
    normalize: str = "minmax",
    temperature: float = DEFAULT_TEMPERATURE,
    temporal: str = "linear",
    crf_params: dict | None = None,
    condition_on_query: bool = True,
    crf_size: tuple[int, int] | None = None,
) -> SegmentationOutput:
    """Segment the object named by `query` in one clip (module docstring, steps 1-5).

    Args:
        model: a LaPQ (`quantizer_mode="pyramid"`) `PyraTokModel` or `AutoencoderPyraTok`.
        video: float `(3, T, H, W)` in [-1, 1], `T = 4k + 1`, H and W multiples of `config.spatial_multiple`.
        query: the text query (non-empty).
        level: pyramid level (0 = shallowest, -1 = deepest `q^(L)`, the paper's choice).
        use_crf: refine with `dense_crf_3d`.
        threshold: mask threshold in (0, 1).
        normalize, temperature: similarity → probability (`similarity_to_probs`).
        temporal: latent → input frame upsampling, `"linear"` or `"nearest"`.
        crf_params: full `dense_crf_3d` keyword arguments (default `DEFAULT_CRF`, unscaled).
        condition_on_query: encode the video with the query as its prompt.
        crf_size: run the CRF at this `(H_c, W_c)` (area-downsampled probabilities and frames; the posterior is
            upsampled bilinearly to `(H, W)`); None runs it at `(H, W)`.

    Returns:
        A `SegmentationOutput` (tensors on the model's device).
    """
    if not isinstance(video, torch.Tensor) or video.ndim != 4 or video.shape[0] != 3:
        shape = tuple(video.shape) if isinstance(video, torch.Tensor) else type(video).__name__
        raise ValueError(f"video must be (3, T, H, W), got {shape}")
    if not 0 < threshold < 1:
        raise ValueError(f"threshold must be in (0, 1), got {threshold!r}")
    _, num_frames, height, width = video.shape
    similarity = token_text_similarity(model, video[None], query, level=level,
                                       condition_on_query=condition_on_query)[0]  # (T', H_l, W_l)
    pixel_similarity = upsample_to_video(similarity, num_frames, height, width, temporal)
    probs = upsample_to_video(similarity_to_probs(similarity, normalize, temperature), num_frames, height, width,
                              temporal).clamp(0, 1)
    posterior = None
    if use_crf:
        params = dict(DEFAULT_CRF) if crf_params is None else crf_params
        frames = video.to(probs.device).float()
        if crf_size is None or tuple(crf_size) == (height, width):
            posterior = dense_crf_3d(probs, frames, **params)
        else:
            small = F.interpolate(probs[None], size=tuple(crf_size), mode="area")[0]  # (T, H_c, W_c)
            small_frames = F.interpolate(frames, size=tuple(crf_size), mode="area")  # (3, T, H_c, W_c)
            posterior = dense_crf_3d(small.clamp(0, 1), small_frames.clamp(-1, 1), **params)
            posterior = F.interpolate(posterior[None], size=(height, width), mode="bilinear", align_corners=False)[0]
    mask_no_crf = probs > threshold
    mask = posterior > threshold if posterior is not None else mask_no_crf
    return SegmentationOutput(similarity, pixel_similarity, probs, posterior, mask, mask_no_crf)


def _mean_ap(predictions: list[dict], ground_truth: list[dict], key: str) -> dict:
    """YouTube-VIS mAP with classes `key` ("category" or "name"): module docstring."""
    gt_by_class: dict[str, list[dict]] = defaultdict(list)
    for gt in ground_truth:
        gt_by_class[gt[key]].append(gt)
    pred_by_class: dict[str, list[dict]] = defaultdict(list)
    for pred in predictions:
        pred_by_class[pred[key]].append(pred)
    per_class = {}
    for cls, gts in sorted(gt_by_class.items()):
        preds = pred_by_class.get(cls, [])
        ious = np.zeros((len(preds), len(gts)))
        for i, pred in enumerate(preds):
            for j, gt in enumerate(gts):
                if pred["video"] == gt["video"]:
                    ious[i, j] = video_mask_iou(pred["mask"], gt["mask"])
        per_class[cls] = mask_ap([p["score"] for p in preds], ious)
    keys = next(iter(per_class.values())).keys()
    return {k: float(np.mean([ap[k] for ap in per_class.values()])) for k in keys}


def _metrics(objects: list[dict], ground_truth: list[dict], mask_key: str) -> dict:
    predictions = [
        {"video": o["video"], "category": o["category"], "name": o["name"], "mask": o[mask_key],
         "score": o[f"{mask_key}_score"]}
        for o in objects if o[mask_key].any()
    ]
    by_category = _mean_ap(predictions, ground_truth, "category")
    by_name = _mean_ap(predictions, ground_truth, "name")
    return {
        "J": float(np.mean([o[f"J_{mask_key}"] for o in objects])),
        "mAP": by_category["AP"],
        **{f"mAP@{k[3:]}": v for k, v in by_category.items() if k != "AP"},
        "mAP_name": by_name["AP"],
        "num_predictions": len(predictions),
    }


# ------------------------------------------------------------------------------------------------------------ API


@torch.no_grad()
def evaluate_segmentation(
    model: torch.nn.Module,
    split_dir: str | os.PathLike,
    level: int = -1,
    size: int | tuple[int, int] | None = None,
    use_crf: bool = True,
    threshold: float = DEFAULT_THRESHOLD,
    max_videos: int | None = None,
    num_frames: int | None = None,
    normalize: str = "minmax",
    temperature: float = DEFAULT_TEMPERATURE,
    temporal: str = "linear",
    crf_params: dict | None = None,
    condition_on_query: bool = True,
    annotations: str | os.PathLike | None = None,
    keep_per_object: bool = True,
) -> dict:
    """Zero-shot text-guided video segmentation J and mAP on an eval split (module docstring).

    Args:
        model: a LaPQ (`quantizer_mode="pyramid"`) `PyraTokModel`.
        split_dir: folder of `*.tar` eval shards with `annotations_vis.json`.
        level: pyramid level of the relevance maps (-1: deepest, the paper's `q^(L)`).
        size: evaluate at this resolution (int or `(H, W)`; clips and masks resized and centre-cropped); None keeps
            the stored resolution. Must be a multiple of `config.spatial_multiple`.
        use_crf: report the CRF-refined masks as the main result ("metrics"); the unrefined masks are always
            reported too ("metrics_no_crf").
        threshold: mask threshold in (0, 1).
        max_videos: evaluate at most this many annotated videos (sorted by key).
        num_frames: frames per clip (4k + 1; default: all valid).
        normalize, temperature, temporal: see `segment_video`.
        crf_params: overrides of `DEFAULT_CRF` (unscaled: for the stored resolution).
        condition_on_query: encode each video with the query as its prompt.
        annotations: YouTube-VIS JSON (default `split_dir/annotations_vis.json`).
        keep_per_object: include per-object J and scores in the report.

    Returns:
        `{"task", "num_videos", "num_objects", "skipped", "settings": {...}, "metrics": {"J", "mAP", "mAP@0.50",
        ..., "mAP_name", "num_predictions"}, "metrics_no_crf": {...}, "per_object": [{"video", "name", "category",
        "J", "J_no_crf", "score"}], "seconds_per_object"}`; "metrics" equals "metrics_no_crf" when `use_crf` is
        False. All J / AP values in [0, 1].
    """
    core = _core(model)
    model.eval()
    level_index = _level_index(core, level)
    if not 0 < threshold < 1:
        raise ValueError(f"threshold must be in (0, 1), got {threshold!r}")
    if max_videos is not None and (not isinstance(max_videos, int) or max_videos < 1):
        raise ValueError(f"max_videos must be a positive int or None, got {max_videos!r}")
    similarity_to_probs(torch.zeros(2), normalize, temperature)  # validate early
    latent_to_frame_weights(1, 1, temporal)
    scaled_crf_params(crf_params, 1.0)

    ann_path = split_folder(split_dir) / VIS_FILE if annotations is None else Path(annotations)
    vis = load_vis_annotations(ann_path)
    reader = ClipReader(split_dir, num_frames=num_frames, size=size)
    annotated = sorted(name for name, video in vis["videos_by_name"].items()
                       if vis["annotations_by_video"][video["id"]])
    missing = sorted(set(annotated) - set(reader.index))
    reader.keys = sorted(set(annotated) & set(reader.index))[:max_videos]
    if not reader.keys:
        raise ValueError(f"no annotated video of {ann_path} is in the shards of {split_dir}")

    objects, ground_truth, settings = [], [], None
    start = time.perf_counter()
    for clip in reader:
        _, t, h, w = clip.video.shape
        scale = clip.resize.scaled_size[0] / clip.resize.source_size[0]  # pixels per stored pixel
        # Upsampled clips: CRF at the stored resolution (the crop's extent in stored pixels); else at (h, w).
        crf_size = (round(h / scale), round(w / scale)) if scale > 1 else None
        params = scaled_crf_params(crf_params, min(scale, 1.0))
        for inst in vis_instances(vis, clip.key):
            gt = clip.resize.apply_to_masks(inst["masks"][:t])  # (T, h, w) bool
            out = segment_video(model, clip.video, inst["name"], level=level_index, use_crf=use_crf,
                                threshold=threshold, normalize=normalize, temperature=temperature,
                                temporal=temporal, crf_params=params, condition_on_query=condition_on_query,
                                crf_size=crf_size)
            sim = out.pixel_similarity.cpu()
            obj = {"video": clip.key, "name": inst["name"], "category": inst["category"]}
            for key, mask in (("mask", out.mask.cpu().numpy()), ("mask_no_crf", out.mask_no_crf.cpu().numpy())):
                obj[key] = mask
                obj[f"J_{key}"] = jaccard_j(mask, gt)
                obj[f"{key}_score"] = float(sim[torch.from_numpy(mask)].mean()) if mask.any() else float("nan")
            objects.append(obj)
            ground_truth.append({**obj, "mask": gt})
            if settings is None:
                grid = tuple(out.similarity.shape)
                if grid[1] * grid[2] == 1:
                    logger.warning("level %d has a 1x1 token grid at %dx%d: its masks cover whole frames; use a "
                                   "shallower --level or a larger --size", level_index, h, w)
                settings = {"token_grid": list(grid), "resolution": [t, h, w],
                            "crf": {**params, "resolution": list(crf_size or (h, w))} if use_crf else None}
    if not objects:
        raise ValueError(f"no decodable annotated clips in {split_dir} ({reader.stats.skipped} skipped)")
    elapsed = time.perf_counter() - start

    metrics_no_crf = _metrics(objects, ground_truth, "mask_no_crf")
    metrics = _metrics(objects, ground_truth, "mask") if use_crf else dict(metrics_no_crf)
    per_object = [
        {"video": o["video"], "name": o["name"], "category": o["category"], "J": o["J_mask"],
         "J_no_crf": o["J_mask_no_crf"], "score": o["mask_score"]}
        for o in objects
    ]
    return {
        "task": "segmentation",
        "num_videos": len({o["video"] for o in objects}),
        "num_objects": len(objects),
        "missing_videos": missing,
        "skipped": reader.stats.as_dict()["skipped_keys"],
        "settings": {
            "annotations": str(ann_path),
            "level": level_index,
            **settings,
            "use_crf": use_crf,
            "threshold": threshold,
            "normalize": normalize,
            "temperature": temperature if normalize == "sigmoid" else None,
            "temporal": temporal,
            "condition_on_query": condition_on_query,
        },
        "metrics": metrics,
        "metrics_no_crf": metrics_no_crf,
        "per_object": per_object if keep_per_object else [],
        "seconds_per_object": elapsed / len(objects),
    }


# ------------------------------------------------------------------------------------------------------------ CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Segmentation flags for `pyratok-eval segmentation` (the CLI adds --data, --out, --size, --max-clips, ...)."""
    parser.add_argument("--level", type=int, default=-1,
                        help="pyramid level of the relevance maps (-1: deepest q^(L), as the paper; its grid is 1x1 "
                             "per frame at 64x64 — use --level 0 or a larger --size there)")
    parser.add_argument("--no-crf", action="store_true", help="report unrefined masks as the main result")
    parser.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD, help="mask threshold in (0, 1)")
    parser.add_argument("--normalize", choices=NORMALIZATIONS, default="minmax",
                        help="similarity -> probability: per-video min-max, or sigmoid(s / --temperature)")
    parser.add_argument("--temperature", type=float, default=DEFAULT_TEMPERATURE, help="for --normalize sigmoid")
    parser.add_argument("--temporal", choices=TEMPORAL_MODES, default="linear",
                        help="latent -> input frame upsampling (linear between chunk centres, or nearest chunk)")
    parser.add_argument("--no-query-prompt", action="store_true",
                        help="encode the videos without text instead of with the query as prompt")
    parser.add_argument("--crf-iters", type=int, default=DEFAULT_CRF["n_iters"], help="CRF mean-field iterations")
    for key in ("theta_alpha", "theta_beta", "theta_gamma", "theta_time", "w_appearance", "w_smooth"):
        parser.add_argument(f"--crf-{key.replace('_', '-')}", type=float, default=DEFAULT_CRF[key],
                            help=f"CRF {key} (dense_crf_3d), at the stored clip resolution")
    parser.add_argument("--crf-window", type=int, default=DEFAULT_CRF["window"], help="CRF appearance window radius")
    parser.add_argument("--crf-backend", choices=("torch", "pydensecrf"), default="torch",
                        help="windowed torch CRF, or the fully connected pydensecrf (pip install pydensecrf2)")
    parser.add_argument("--no-per-object", action="store_true", help="leave per-object results out of the report")


def run(args: argparse.Namespace, model: torch.nn.Module) -> dict:
    """`pyratok-eval segmentation`: `evaluate_segmentation` with the parsed flags."""
    crf_params = {"n_iters": args.crf_iters, "window": args.crf_window, "backend": args.crf_backend}
    for key in ("theta_alpha", "theta_beta", "theta_gamma", "theta_time", "w_appearance", "w_smooth"):
        crf_params[key] = getattr(args, f"crf_{key}")
    return evaluate_segmentation(
        model, args.data, level=args.level, size=args.size, use_crf=not args.no_crf, threshold=args.threshold,
        max_videos=args.max_clips, num_frames=args.num_frames, normalize=args.normalize,
        temperature=args.temperature, temporal=args.temporal, crf_params=crf_params,
        condition_on_query=not args.no_query_prompt, keep_per_object=not args.no_per_object,
    )


__all__ = [
    "DEFAULT_CRF",
    "SegmentationOutput",
    "add_arguments",
    "evaluate_segmentation",
    "latent_to_frame_weights",
    "run",
    "segment_video",
    "similarity_to_probs",
    "upsample_to_video",
]
