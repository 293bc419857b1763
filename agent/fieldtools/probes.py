"""Shortcut probes and confidence slices for ``edge-guard stress`` (no labels needed).

Shortcut probes edit the parts of an image a model should *not* rely on and count how often
its prediction changes:

* ``corner_*``: a corner block (25% of the width x 12% of the height) where timestamps,
  logos and camera names are burned in, filled with the block's median colour;
* ``strip_*``: a border strip (10% of the height top/bottom, 8% of the width left/right);
* ``background_blur`` / ``background_flat``: everything outside the region of interest
  blurred strongly / replaced by the image's mean colour. The region of interest is the
  central 60% x 60% for classifiers and the clean detections' boxes (plus 10% margin) for
  detectors (images without detections are skipped).

A model that changes its mind when a corner is masked relies on the overlay; one that
changes with the background relies on context more than on the object.

Confidence slices split every evaluated image (clean and corrupted) into quintiles of a
measurable proxy from the frame statistics — brightness, blur (Laplacian variance),
saturation — and report mean confidence and flip rate per bucket, marking weak ones.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from agent.fieldtools.robustness import Evaluator, Observed, changed

__all__ = ["PROBES", "confidence_slices", "probe_variants", "run_probes"]

U8 = npt.NDArray[np.uint8]

PROBES: tuple[str, ...] = (
    "corner_tl", "corner_tr", "corner_bl", "corner_br",
    "strip_top", "strip_bottom", "strip_left", "strip_right",
    "background_blur", "background_flat",
)
#: A bucket is weak when its mean confidence is this far below the overall mean ...
WEAK_CONFIDENCE_GAP: float = 0.10
#: ... or its flip rate this far above the overall flip rate.
WEAK_FLIP_GAP: float = 0.15


def _fill_median(image: U8, y0: int, y1: int, x0: int, x1: int) -> U8:
    out = image.copy()
    region = out[y0:y1, x0:x1]
    if region.size:
        region[...] = np.median(region.reshape(-1, 3), axis=0).astype(np.uint8)
    return out


def _roi_mask(image: U8, detections: npt.NDArray[np.float32] | None) -> npt.NDArray[np.bool_] | None:
    """True inside the region of interest; None when a detector found nothing (probe not applicable)."""
    h, w = image.shape[:2]
    mask = np.zeros((h, w), dtype=bool)
    if detections is None:  # classifier: centre crop
        mask[int(0.2 * h) : int(0.8 * h), int(0.2 * w) : int(0.8 * w)] = True
        return mask
    if detections.shape[0] == 0:
        return None
    for x1, y1, x2, y2 in detections[:, :4]:
        mx, my = 0.1 * (x2 - x1), 0.1 * (y2 - y1)
        mask[max(0, int(y1 - my)) : min(h, int(y2 + my) + 1), max(0, int(x1 - mx)) : min(w, int(x2 + mx) + 1)] = True
    return mask


def probe_variants(image: U8, clean: Observed) -> dict[str, U8]:
    """The probe images of one clean image (a probe that does not apply is left out)."""
    h, w = image.shape[:2]
    cw, chh = max(1, int(0.25 * w)), max(1, int(0.12 * h))
    sh, sw = max(1, int(0.10 * h)), max(1, int(0.08 * w))
    out = {
        "corner_tl": _fill_median(image, 0, chh, 0, cw),
        "corner_tr": _fill_median(image, 0, chh, w - cw, w),
        "corner_bl": _fill_median(image, h - chh, h, 0, cw),
        "corner_br": _fill_median(image, h - chh, h, w - cw, w),
        "strip_top": _fill_median(image, 0, sh, 0, w),
        "strip_bottom": _fill_median(image, h - sh, h, 0, w),
        "strip_left": _fill_median(image, 0, h, 0, sw),
        "strip_right": _fill_median(image, 0, h, w - sw, w),
    }
    detections = None if clean.output is None else clean.output.detections
    mask = _roi_mask(image, detections)
    if mask is not None:
        sigma = max(3.0, 0.03 * max(h, w))
        blurred = cv2.GaussianBlur(image, (0, 0), sigmaX=sigma)
        flat = np.empty_like(image)
        flat[...] = image.reshape(-1, 3).mean(axis=0).astype(np.uint8)
        out["background_blur"] = np.where(mask[..., None], image, blurred).astype(np.uint8)
        out["background_flat"] = np.where(mask[..., None], image, flat).astype(np.uint8)
    return out


def run_probes(
    images: Sequence[U8],
    clean: Sequence[Observed],
    evaluate: Evaluator,
    progress: Callable[[int], None] | None = None,
) -> dict[str, dict[str, Any]]:
    """Per probe: images it applied to, share whose prediction changed, mean confidence drop."""
    acc: dict[str, list[float]] = {p: [0, 0, 0.0] for p in PROBES}  # n, flips, conf_drop sum
    for i, (image, obs) in enumerate(zip(images, clean, strict=True)):
        if obs.output is None:
            continue
        variants = probe_variants(image, obs)
        for (name, _), o in zip(variants.items(), evaluate(list(variants.values())), strict=True):
            if o.output is None:
                continue
            a = acc[name]
            a[0] += 1
            a[1] += int(changed(obs.output, o.output))
            a[2] += obs.output.confidence - o.output.confidence
        if progress is not None:
            progress(i + 1)
    return {
        name: {
            "n": int(n),
            "flip_rate": None if n == 0 else round(flips / n, 4),
            "conf_drop": None if n == 0 else round(drop / n, 4),
        }
        for name, (n, flips, drop) in acc.items()
    }


def confidence_slices(
    rows: Sequence[tuple[float, float, float, float, bool | None]], buckets: int = 5
) -> dict[str, Any]:
    """Quantile buckets of brightness, blur and saturation with mean confidence and flip rate each."""
    if len(rows) < buckets * 2:
        return {"note": f"too few evaluated images for {buckets} buckets ({len(rows)})", "proxies": {}}
    data = np.array([r[:4] for r in rows], dtype=np.float64)  # (n, 4)
    flips = np.array([np.nan if r[4] is None else float(r[4]) for r in rows], dtype=np.float64)
    conf_all = float(data[:, 3].mean())
    flip_all = float(np.nanmean(flips)) if np.isfinite(flips).any() else float("nan")
    proxies: dict[str, list[dict[str, Any]]] = {}
    for j, proxy in enumerate(("brightness", "blur", "saturation")):
        x = data[:, j]
        edges = np.unique(np.quantile(x, np.linspace(0.0, 1.0, buckets + 1)))
        idx = np.clip(np.searchsorted(edges, x, side="right") - 1, 0, len(edges) - 2)
        out: list[dict[str, Any]] = []
        for b in range(len(edges) - 1):
            sel = idx == b
            if not sel.any():
                continue
            conf = float(data[sel, 3].mean())
            f = flips[sel]
            flip = float(np.nanmean(f)) if np.isfinite(f).any() else None
            weak = conf < conf_all - WEAK_CONFIDENCE_GAP or (
                flip is not None and flip > flip_all + WEAK_FLIP_GAP
            )
            out.append({
                "range": [round(float(edges[b]), 3), round(float(edges[b + 1]), 3)],
                "n": int(sel.sum()),
                "mean_confidence": round(conf, 4),
                "flip_rate": None if flip is None else round(flip, 4),
                "weak": bool(weak),
            })
        proxies[proxy] = out
    return {
        "overall": {"n": len(rows), "mean_confidence": round(conf_all, 4),
                    "flip_rate": None if np.isnan(flip_all) else round(flip_all, 4)},
        "proxies": proxies,
    }
