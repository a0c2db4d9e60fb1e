"""Real or bogus: what a detection on the difference image looks like, and a classifier's score of it.

The features are dimensionless, so one model serves any pixel scale and seeing. The model is a random forest
(scikit-learn) trained by ``benchmarks/train_vetting.py`` on simulated pairs with injected point sources
(real) and the artefacts a subtraction leaves (bright-star residuals of a PSF or registration mismatch, cosmic
rays, hot pixels); its trees are versioned as JSON (``toros/data/vetting_forest.json``: text, reviewable, no
pickle) and evaluated here with numpy, so the daemons do not need scikit-learn to score.
"""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from toros.runtime.files import atomic_write

if TYPE_CHECKING:
    from toros.preprocessor.candidates import Candidate, Label
    from toros.preprocessor.sides import Side
    from toros.preprocessor.subtraction import Detection, Difference

FEATURES = (
    "snr",  # |S_corr| at the peak
    "fwhm_ratio",  # FWHM on D over the images' FWHM
    "elongation",
    "negative_fraction",  # opposite-sign flux on D within 2 FWHM over the same-sign flux
    "negative_pixels",  # opposite-sign pixels below -3σ on D within 2 FWHM
    "masked_pixels",  # unusable or repaired pixels within 2 FWHM
    "reference_contrast",  # log10(1 + reference flux / candidate flux) within 1 FWHM: bright-star residuals
    "sharpness",  # the science peak over the mean of its 8 neighbours: cosmic rays and hot pixels
    "psf_match",  # correlation of D's stamp with a Gaussian of the images' FWHM
    "science_spike",  # the sharpest pixel within 2 FWHM over its 3×3 median, in σ: a cosmic ray beside
    "reference_spike",  # the same on the reference: a defect there leaves lobes in D
    "star_offset",  # the nearest source of the reference, in FWHM (capped at 10): a star's residual
)
MODEL_FILE = Path(__file__).resolve().parent.parent / "data" / "vetting_forest.json"


@dataclass(frozen=True)
class Shape:
    fwhm_px: float
    elongation: float
    negative_pixels: int
    masked_pixels: int

    @classmethod
    def of(cls, row: np.ndarray, fwhm: float | None = None) -> Shape:
        index = {name: i for i, name in enumerate(FEATURES)}
        return cls(
            float(row[index["fwhm_ratio"]]) * (fwhm or 1.0),
            float(row[index["elongation"]]),
            int(row[index["negative_pixels"]]),
            int(row[index["masked_pixels"]]),
        )


def _stamp(image: np.ndarray, x: int, y: int, half: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A square cut (NaN beyond the edges) and its pixel offsets from (x, y)."""
    height, width = image.shape
    stamp = np.full((2 * half + 1, 2 * half + 1), np.nan, dtype=np.float64)  # bool images come as 0/1
    y0, y1, x0, x1 = max(0, y - half), min(height, y + half + 1), max(0, x - half), min(width, x + half + 1)
    if y1 > y0 and x1 > x0:
        stamp[y0 - (y - half) : y1 - (y - half), x0 - (x - half) : x1 - (x - half)] = image[y0:y1, x0:x1]
    dy, dx = np.mgrid[-half : half + 1, -half : half + 1]
    return stamp, dx, dy


def _spike(stamp: np.ndarray, within: np.ndarray, sigma: float) -> float:
    """The largest excess of a pixel over the median of its 3×3 neighbourhood within the circle, in σ."""
    from scipy import ndimage

    filled = np.where(np.isfinite(stamp), stamp, 0.0)
    excess = (filled - ndimage.median_filter(filled, size=3)) / max(sigma, 1e-9)
    return float(min(np.max(np.where(within, excess, 0.0)), 100.0))


def features(
    difference: Difference, science: Side, reference: Side, detection: Detection, fwhm: float, star_offset_px: float
) -> list[float]:
    """The FEATURES of one detection (its sign applied: a fading source looks like a new one)."""
    sign = 1.0 if detection.score >= 0 else -1.0
    x, y = int(round(detection.x)), int(round(detection.y))
    half = max(3, int(math.ceil(2 * fwhm)))
    d, dx, dy = _stamp(difference.difference, x, y, half)
    d = sign * d
    radius = np.hypot(dx, dy)
    within = radius <= 2 * fwhm
    core = radius <= 1.5 * fwhm
    weights = np.where(core & np.isfinite(d), np.clip(d, 0, None), 0.0)
    total = weights.sum()
    fwhm_d, elongation = 0.0, 1.0
    if total > 0:
        mx, my = (weights * dx).sum() / total, (weights * dy).sum() / total
        xx = (weights * (dx - mx) ** 2).sum() / total
        yy = (weights * (dy - my) ** 2).sum() / total
        xy = (weights * (dx - mx) * (dy - my)).sum() / total
        spread = math.sqrt(max(((xx - yy) / 2) ** 2 + xy**2, 0.0))
        major, minor = (xx + yy) / 2 + spread, max((xx + yy) / 2 - spread, 1e-6)
        # A Gaussian cut at 1.5 FWHM keeps about 0.94 of its variance.
        fwhm_d = 2.3548 * math.sqrt(max(major + minor, 1e-6) / 2 / 0.94)
        elongation = math.sqrt(max(major, 1e-6) / minor)
    finite = np.isfinite(d) & within
    positive = np.clip(d[finite], 0, None).sum()
    negative = np.clip(-d[finite], 0, None).sum()
    negative_fraction = negative / max(positive, 1e-6)
    negative_pixels = int((d[finite] < -3.0).sum())
    s, _, _ = _stamp(science.data, x, y, half)
    r, _, _ = _stamp(reference.data, x, y, half)
    cleaned_s, _, _ = _stamp(science.cleaned, x, y, half)
    masked = within & (~np.isfinite(s) | ~np.isfinite(r) | (np.nan_to_num(cleaned_s) > 0))
    inner = radius <= fwhm
    candidate_flux = max(abs(detection.flux), 1e-6)
    reference_flux = max(float(np.nansum(np.clip(r[inner], 0, None))) / max(reference.counts_factor, 1e-6), 0.0)
    reference_contrast = math.log10(1.0 + reference_flux / candidate_flux)
    centre = half
    neighbours = s[centre - 1 : centre + 2, centre - 1 : centre + 2].copy()
    peak = neighbours[1, 1]
    neighbours[1, 1] = np.nan
    around = float(np.nanmean(neighbours)) if np.isfinite(neighbours).any() else 0.0
    sharpness = float(peak / max(around, science.sigma)) if np.isfinite(peak) else 0.0
    model = np.exp(-(radius**2) / (2 * (fwhm / 2.3548) ** 2))
    good = np.isfinite(d) & within
    psf_match = 0.0
    if good.sum() > 3 and np.std(d[good]) > 0:
        psf_match = float(np.corrcoef(d[good], model[good])[0, 1])
    return [
        abs(detection.score), fwhm_d / fwhm, elongation, negative_fraction, negative_pixels, int(masked.sum()),
        reference_contrast, min(sharpness, 100.0), psf_match, _spike(s, within, science.sigma),
        _spike(r, within, reference.sigma), min(star_offset_px / fwhm, 10.0),
    ]  # fmt: skip


@cache
def _forest() -> list[dict[str, np.ndarray]]:
    model = json.loads(MODEL_FILE.read_text())
    if tuple(model["features"]) != FEATURES:
        raise ValueError(f"{MODEL_FILE.name} was trained on other features: run benchmarks/train_vetting.py")
    return [{key: np.asarray(value) for key, value in tree.items()} for tree in model["trees"]]


def score(rows: np.ndarray) -> np.ndarray:
    """The forest's probability that each row of FEATURES is a real point source (0..1)."""
    rows = np.atleast_2d(np.asarray(rows, dtype=np.float64))
    if rows.shape[0] == 0:
        return np.empty(0)
    rows = np.nan_to_num(rows, nan=0.0, posinf=1e6, neginf=-1e6)
    trees = _forest()
    total = np.zeros(rows.shape[0])
    everyone = np.arange(rows.shape[0])
    for tree in trees:
        node = np.zeros(rows.shape[0], dtype=np.int64)
        while True:
            inner = tree["left"][node] >= 0
            if not inner.any():
                break
            feature = tree["feature"][node]
            go_left = rows[everyone, np.maximum(feature, 0)] <= tree["threshold"][node]
            node = np.where(inner, np.where(go_left, tree["left"][node], tree["right"][node]), node)
        total += tree["value"][node]
    return total / len(trees)


def write_labelled(path: Path, labelled: list[tuple[Candidate, Label]]) -> int:
    """People's labels as training examples: one CSV row per detection of each labelled candidate, with the
    features its record kept (detections recorded before features were kept are left out). Returns the rows."""
    rows = 0
    with atomic_write(path, "w") as stream:
        writer = csv.writer(stream)
        writer.writerow(["candidate", "label", "by", "frame", "snr", "score", *FEATURES])
        for candidate, label in labelled:
            for detection in candidate.history:
                try:
                    values = json.loads(Path(detection.record).read_text()).get("features")
                except (OSError, ValueError):
                    continue
                if not values or set(values) != set(FEATURES):
                    continue
                writer.writerow([candidate.name, label.verdict.value, label.requester, detection.frame,
                                 detection.snr, detection.score, *(values[f] for f in FEATURES)])  # fmt: skip
                rows += 1
    return rows


def read_labelled(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(features, real) of a file ``write_labelled`` wrote."""
    with path.open(newline="") as stream:
        rows = list(csv.DictReader(stream))
    features = np.array([[float(r[f]) for f in FEATURES] for r in rows]).reshape(-1, len(FEATURES))
    return features, np.array([r["label"] == "real" for r in rows], dtype=bool)


def forest_to_json(forest: object) -> dict[str, object]:
    """A fitted ``RandomForestClassifier`` (classes 0 bogus, 1 real) as plain lists."""
    trees = []
    for estimator in forest.estimators_:  # type: ignore[attr-defined]
        tree = estimator.tree_
        value = tree.value[:, 0, :]
        real = value[:, 1] / np.maximum(value.sum(axis=1), 1e-12)
        trees.append(
            {
                "feature": tree.feature.tolist(),
                "threshold": [round(float(t), 6) for t in tree.threshold],
                "left": tree.children_left.tolist(),
                "right": tree.children_right.tolist(),
                "value": [round(float(v), 6) for v in real],
            }
        )
    return {"features": list(FEATURES), "trees": trees}
