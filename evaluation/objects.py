"""Object fidelity of a reconstruction, scored inside ground-truth object masks.

Whole-frame PSNR is dominated by the background: a tokenizer that returns every object grey can still score well.
Per object (its visible mask over all frames of the clip) this module reports

- `delta_e_2000` / `delta_e_76`: the colour error of the object's mean colour, source vs reconstruction, as CIEDE2000
  (Sharma, Wu & Dalal 2005; the primary figure) and CIE76 (Euclidean distance in CIELAB). The mean is taken over the
  mask's pixels in sRGB, then converted to CIELAB with the standard formulas (sRGB companding, the sRGB → XYZ matrix
  of IEC 61966-2-1, D65 white, CIE 1976 L*a*b* with ε = 216/24389, κ = 24389/27);
- `psnr`: PSNR over the mask's pixels only (all channels, data range 2 on [-1, 1] frames, as the whole-frame PSNR);
- `source_name` / `reconstruction_name` / `name_survives`: the mean colour named by the nearest (CIEDE2000) colour
  of the procedural palette (`training.make_shards.OBJECT_COLORS`), and whether the reconstruction keeps the
  source's name.

Objects whose mask has no pixel on the scored frames (e.g. after truncation or resizing) are skipped and counted.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import torch

from pyratok.training.make_shards import OBJECT_COLORS

# IEC 61966-2-1 (sRGB) linear RGB -> CIE XYZ, D65.
_XYZ_FROM_RGB = torch.tensor(
    [[0.412453, 0.357580, 0.180423], [0.212671, 0.715160, 0.072169], [0.019334, 0.119193, 0.950227]],
    dtype=torch.float64,
)
# The reference white of that matrix (its row sums), so sRGB white maps to L* = 100, a* = b* = 0.
_D65_WHITE = _XYZ_FROM_RGB.sum(dim=1)
_EPSILON = 216 / 24389
_KAPPA = 24389 / 27


def srgb_to_lab(rgb: torch.Tensor | np.ndarray) -> torch.Tensor:
    """sRGB in [0, 1] → CIELAB (D65, 2° observer).

    Args:
        rgb: `(..., 3)` sRGB values in [0, 1] (values outside are clipped).

    Returns:
        float64 `(..., 3)`: L* in [0, 100], a*, b*.
    """
    rgb = torch.as_tensor(rgb, dtype=torch.float64)
    if rgb.ndim < 1 or rgb.shape[-1] != 3:
        raise ValueError(f"rgb must have shape (..., 3), got {tuple(rgb.shape)}")
    rgb = rgb.clamp(0.0, 1.0)
    linear = torch.where(rgb > 0.04045, ((rgb + 0.055) / 1.055) ** 2.4, rgb / 12.92)
    xyz = linear @ _XYZ_FROM_RGB.T / _D65_WHITE
    f = torch.where(xyz > _EPSILON, xyz.clamp_min(1e-12) ** (1 / 3), (_KAPPA * xyz + 16) / 116)
    fx, fy, fz = f.unbind(-1)
    return torch.stack([116 * fy - 16, 500 * (fx - fy), 200 * (fy - fz)], dim=-1)


def delta_e_76(lab1: torch.Tensor, lab2: torch.Tensor) -> torch.Tensor:
    """CIE76 colour difference: Euclidean distance of `(..., 3)` CIELAB colours → `(...)`."""
    lab1, lab2 = torch.as_tensor(lab1, dtype=torch.float64), torch.as_tensor(lab2, dtype=torch.float64)
    return (lab1 - lab2).square().sum(dim=-1).sqrt()


def delta_e_2000(lab1: torch.Tensor, lab2: torch.Tensor) -> torch.Tensor:
    """CIEDE2000 colour difference (k_L = k_C = k_H = 1) of `(..., 3)` CIELAB colours → `(...)`.

    Formulas of G. Sharma, W. Wu, E. N. Dalal, "The CIEDE2000 color-difference formula: implementation notes,
    supplementary test data, and mathematical observations", Color Res. Appl. 30 (2005), eqs. (1)-(22).
    """
    lab1, lab2 = torch.as_tensor(lab1, dtype=torch.float64), torch.as_tensor(lab2, dtype=torch.float64)
    if lab1.shape[-1:] != (3,) or lab2.shape[-1:] != (3,):
        raise ValueError(f"CIELAB inputs must have shape (..., 3), got {tuple(lab1.shape)} and {tuple(lab2.shape)}")
    l1, a1, b1 = lab1.unbind(-1)
    l2, a2, b2 = lab2.unbind(-1)
    c_bar = (torch.hypot(a1, b1) + torch.hypot(a2, b2)) / 2
    g = 0.5 * (1 - torch.sqrt(c_bar**7 / (c_bar**7 + 25.0**7)))
    a1p, a2p = (1 + g) * a1, (1 + g) * a2
    c1p, c2p = torch.hypot(a1p, b1), torch.hypot(a2p, b2)
    h1p = torch.rad2deg(torch.atan2(b1, a1p)) % 360
    h2p = torch.rad2deg(torch.atan2(b2, a2p)) % 360
    h1p = torch.where(c1p == 0, torch.zeros_like(h1p), h1p)
    h2p = torch.where(c2p == 0, torch.zeros_like(h2p), h2p)

    d_l = l2 - l1
    d_c = c2p - c1p
    dh = h2p - h1p
    dh = torch.where(dh > 180, dh - 360, torch.where(dh < -180, dh + 360, dh))
    dh = torch.where(c1p * c2p == 0, torch.zeros_like(dh), dh)
    d_h = 2 * torch.sqrt(c1p * c2p) * torch.sin(torch.deg2rad(dh) / 2)

    l_bar = (l1 + l2) / 2
    cp_bar = (c1p + c2p) / 2
    h_sum = h1p + h2p
    h_bar = torch.where(
        (h1p - h2p).abs() <= 180, h_sum / 2, torch.where(h_sum < 360, (h_sum + 360) / 2, (h_sum - 360) / 2)
    )
    h_bar = torch.where(c1p * c2p == 0, h_sum, h_bar)
    t = (
        1
        - 0.17 * torch.cos(torch.deg2rad(h_bar - 30))
        + 0.24 * torch.cos(torch.deg2rad(2 * h_bar))
        + 0.32 * torch.cos(torch.deg2rad(3 * h_bar + 6))
        - 0.20 * torch.cos(torch.deg2rad(4 * h_bar - 63))
    )
    d_theta = 30 * torch.exp(-(((h_bar - 275) / 25) ** 2))
    r_c = 2 * torch.sqrt(cp_bar**7 / (cp_bar**7 + 25.0**7))
    s_l = 1 + 0.015 * (l_bar - 50) ** 2 / torch.sqrt(20 + (l_bar - 50) ** 2)
    s_c = 1 + 0.045 * cp_bar
    s_h = 1 + 0.015 * cp_bar * t
    r_t = -torch.sin(torch.deg2rad(2 * d_theta)) * r_c
    return torch.sqrt(
        (d_l / s_l) ** 2 + (d_c / s_c) ** 2 + (d_h / s_h) ** 2 + r_t * (d_c / s_c) * (d_h / s_h)
    )


def palette_lab(palette: Mapping[str, Sequence[int]] = OBJECT_COLORS) -> tuple[list[str], torch.Tensor]:
    """Names and CIELAB `(K, 3)` of a palette of 8-bit sRGB colours."""
    if not palette:
        raise ValueError("the colour palette is empty")
    names = list(palette)
    rgb = torch.tensor([palette[n] for n in names], dtype=torch.float64) / 255
    return names, srgb_to_lab(rgb)


def colour_name(rgb: torch.Tensor | Sequence[float], palette: Mapping[str, Sequence[int]] = OBJECT_COLORS) -> str:
    """The palette name nearest (CIEDE2000) to one sRGB colour in [0, 1], `(3,)`."""
    names, lab = palette_lab(palette)
    distance = delta_e_2000(srgb_to_lab(torch.as_tensor(rgb, dtype=torch.float64))[None], lab)
    return names[int(distance.argmin())]


def _psnr(x: torch.Tensor, y: torch.Tensor, data_range: float = 2.0) -> float:
    mse = float((x - y).square().mean())
    return math.inf if mse == 0 else 10 * math.log10(data_range**2 / mse)


@torch.no_grad()
def object_scores(
    source: torch.Tensor,
    reconstruction: torch.Tensor,
    masks: torch.Tensor | np.ndarray,
    labels: Sequence[str | None] | None = None,
    palette: Mapping[str, Sequence[int]] = OBJECT_COLORS,
) -> list[dict | None]:
    """Score each object of one clip inside its mask.

    Args:
        source: `(3, T, H, W)` in [-1, 1], the clip the model saw.
        reconstruction: `(3, T, H, W)` in [-1, 1] (clamp it first).
        masks: bool `(N, T, H, W)`, one visible-pixel mask per object on the same frames.
        labels: optional annotated colour name per object (`"red"`, ...); reported as `label`.
        palette: named 8-bit sRGB colours for the names.

    Returns:
        Per object either None (its mask has no pixel: skipped) or `{"pixels", "label", "source_rgb",
        "reconstruction_rgb" (mean sRGB in [0, 255]), "delta_e_2000", "delta_e_76", "psnr" (dB, inf if
        identical), "source_name", "reconstruction_name", "name_survives"}`.
    """
    masks = torch.as_tensor(np.asarray(masks) if not isinstance(masks, torch.Tensor) else masks).bool()
    if source.shape != reconstruction.shape or source.ndim != 4 or source.shape[0] != 3:
        raise ValueError(
            f"source and reconstruction must both be (3, T, H, W), got {tuple(source.shape)} and "
            f"{tuple(reconstruction.shape)}"
        )
    if masks.ndim != 4 or tuple(masks.shape[1:]) != tuple(source.shape[1:]):
        raise ValueError(f"masks must be (N, {', '.join(map(str, source.shape[1:]))}), got {tuple(masks.shape)}")
    if labels is not None and len(labels) != masks.shape[0]:
        raise ValueError(f"got {len(labels)} labels for {masks.shape[0]} masks")
    names, pal_lab = palette_lab(palette)
    src = source.detach().double().cpu().flatten(1)  # (3, T*H*W)
    rec = reconstruction.detach().double().cpu().flatten(1)
    rows: list[dict | None] = []
    for i, mask in enumerate(masks.flatten(1).cpu()):
        count = int(mask.sum())
        if count == 0:
            rows.append(None)
            continue
        s, r = src[:, mask], rec[:, mask]  # (3, P)
        s_rgb, r_rgb = (s.mean(dim=1) + 1) / 2, (r.mean(dim=1) + 1) / 2
        s_lab, r_lab = srgb_to_lab(s_rgb), srgb_to_lab(r_rgb)
        s_name = names[int(delta_e_2000(s_lab[None], pal_lab).argmin())]
        r_name = names[int(delta_e_2000(r_lab[None], pal_lab).argmin())]
        rows.append({
            "pixels": count,
            "label": None if labels is None else labels[i],
            "source_rgb": [round(float(v) * 255, 2) for v in s_rgb],
            "reconstruction_rgb": [round(float(v) * 255, 2) for v in r_rgb],
            "delta_e_2000": float(delta_e_2000(s_lab, r_lab)),
            "delta_e_76": float(delta_e_76(s_lab, r_lab)),
            "psnr": _psnr(r, s),
            "source_name": s_name,
            "reconstruction_name": r_name,
            "name_survives": s_name == r_name,
        })
    return rows


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def summarize_objects(rows: Sequence[dict | None]) -> dict:
    """Averages over scored objects (None entries are the skipped ones).

    Returns:
        `{"num_objects", "skipped_empty", "delta_e_2000", "delta_e_76", "psnr", "name_survival",
        "source_name_matches_label"}`: means over scored objects (None when there are none); `psnr` is the mean of
        finite per-object values; `name_survival` and `source_name_matches_label` are fractions in [0, 1], the
        latter over objects with a label (a check of the naming itself: texture darkens some objects' mean colour).
    """
    scored = [r for r in rows if r is not None]
    finite_psnr = [r["psnr"] for r in scored if math.isfinite(r["psnr"])]
    labelled = [r for r in scored if r.get("label") is not None]
    return {
        "num_objects": len(scored),
        "skipped_empty": len(rows) - len(scored),
        "delta_e_2000": _mean([r["delta_e_2000"] for r in scored]),
        "delta_e_76": _mean([r["delta_e_76"] for r in scored]),
        "psnr": _mean(finite_psnr) if finite_psnr or not scored else math.inf,
        "name_survival": _mean([float(r["name_survives"]) for r in scored]),
        "source_name_matches_label": _mean([float(r["source_name"] == r["label"]) for r in labelled]),
    }


__all__ = [
    "colour_name",
    "delta_e_2000",
    "delta_e_76",
    "object_scores",
    "palette_lab",
    "srgb_to_lab",
    "summarize_objects",
]
