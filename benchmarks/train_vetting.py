"""Trains the real/bogus classifier and writes toros/data/vetting_forest.json (reproducible: same seeds, same
trees).

    .venv/bin/python benchmarks/train_vetting.py [--pairs 48] [--check]

The data are generated, never downloaded: pairs of simulated frames (``toros.simulation.fakes``) with
injected point sources — blank sky and on galaxies, seeing ratios 1–2.5 either way, residual misregistration
up to 0.3 px, pixels of 0.47", 0.7" and 1" — and the artefacts a subtraction meets: cosmic rays and hot pixels the calibration missed,
bright-star residuals, and, in one pair in four, a registration left to the WCS with up to 0.6 px of error.
A detection within 1.5 px of an injected source is real; every other one is bogus. The last quarter of the
pairs is held out and the script prints the purity and completeness there. ``--check`` retrains and fails if
the versioned file differs (the model is reproducible).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from scipy.spatial import cKDTree

from toros.preprocessor import vetting
from toros.preprocessor.discovery import DiscoverySettings, discover
from toros.simulation.fakes import make_pair

SIZE = 1024
PIXEL_SCALES = (0.47, 0.7, 1.0)  # TOROS's, and coarser: the features must not depend on the sampling


def examples(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(features, labels, snr) of every positive detection of one generated pair."""
    rng = np.random.default_rng(10_000 + seed)
    misaligned = seed % 4 == 3
    with tempfile.TemporaryDirectory() as folder:
        pair = make_pair(
            Path(folder), seed, size=SIZE, fakes=80, pixel_scale=float(rng.choice(PIXEL_SCALES)),
            misregistration_px=float(rng.uniform(0.1, 0.6)) if misaligned else None,
            cosmic_rays=int(rng.integers(10, 60)), hot_pixels=int(rng.integers(5, 40)),
        )  # fmt: skip
        result = discover(pair.new, pair.reference, DiscoverySettings(refine=not misaligned, vet=False))
    positive = np.array([not c.negative for c in result.candidates], dtype=bool)
    if not positive.any():
        return np.empty((0, len(vetting.FEATURES))), np.empty(0, bool), np.empty(0)
    xy = np.array([[c.x, c.y] for c in result.candidates])[positive]
    truth = np.array([[f.x, f.y] for f in pair.fakes])
    distance, _ = cKDTree(truth).query(xy)
    snr = np.array([c.snr for c in result.candidates])[positive]
    return result.features[positive], distance < 1.5, snr


def generate(seeds: range) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    with ProcessPoolExecutor(max_workers=2) as pool:
        parts = list(pool.map(examples, seeds))
    group = np.concatenate([np.full(len(p[1]), seed) for seed, p in zip(seeds, parts, strict=True)])
    return (
        np.concatenate([p[0] for p in parts]),
        np.concatenate([p[1] for p in parts]),
        np.concatenate([p[2] for p in parts]),
        group,
    )


def main() -> int:
    from sklearn.ensemble import RandomForestClassifier

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pairs", type=int, default=48)
    parser.add_argument("--check", action="store_true", help="fail if the versioned model differs")
    parser.add_argument(
        "--labels",
        type=Path,
        metavar="FILE.csv",
        help="people's labels of real detections (toros candidates --labels), added to the training set",
    )
    arguments = parser.parse_args()
    features, labels, snr, group = generate(range(arguments.pairs))
    held_out = group >= arguments.pairs * 3 // 4
    if arguments.labels:  # trained on, never held out: the held-out figures stay those of the simulated pairs
        extra, real = vetting.read_labelled(arguments.labels)
        print(f"{len(real)} labelled detections from {arguments.labels}: {real.sum()} real, {(~real).sum()} bogus")
        features, labels = np.concatenate([features, extra]), np.concatenate([labels, real])
        snr, group = np.concatenate([snr, extra[:, 0]]), np.concatenate([group, np.full(len(real), -1)])
        held_out = np.concatenate([held_out, np.zeros(len(real), dtype=bool)])
    print(f"{len(labels)} detections from {arguments.pairs} pairs: {labels.sum()} real, {(~labels).sum()} bogus")
    forest = RandomForestClassifier(
        n_estimators=60, max_depth=9, min_samples_leaf=4, class_weight="balanced", random_state=0, n_jobs=1
    )
    forest.fit(features[~held_out], labels[~held_out])
    model = vetting.forest_to_json(forest)
    model["training"] = {
        "pairs": arguments.pairs,
        "frame": SIZE,
        "pixel_scales": list(PIXEL_SCALES),
        "detections": int((~held_out).sum()),
        "real": int(labels[~held_out].sum()),
        "sklearn": __import__("sklearn").__version__,
        "script": "benchmarks/train_vetting.py",
    }
    text = json.dumps(model, separators=(",", ":"), sort_keys=True) + "\n"
    probability = forest.predict_proba(features[held_out])[:, 1]
    _report(probability, labels[held_out], snr[held_out])
    if arguments.check:
        same = vetting.MODEL_FILE.read_text() == text
        print("the versioned model is reproduced" if same else "the versioned model DIFFERS from a retraining")
        return 0 if same else 1
    vetting.MODEL_FILE.write_text(text)
    vetting._forest.cache_clear()
    ours = vetting.score(features[held_out])
    assert np.allclose(ours, probability, atol=1e-6), "the JSON forest must score as scikit-learn does"
    print(f"wrote {vetting.MODEL_FILE} ({len(text) // 1024} KiB); numpy and scikit-learn scores agree")
    return 0


def _report(probability: np.ndarray, labels: np.ndarray, snr: np.ndarray) -> None:
    for floor in (5.0, 7.5, 10.0):
        chosen = snr >= floor
        for threshold in (0.5, 0.7, 0.8, 0.9):
            accepted = chosen & (probability >= threshold)
            purity = labels[accepted].mean() if accepted.any() else float("nan")
            completeness = accepted[chosen & labels].mean() if (chosen & labels).any() else float("nan")
            print(
                f"held out, S/N >= {floor:4.1f}, score >= {threshold}: purity {purity:.3f}, "
                f"completeness {completeness:.3f} ({(chosen & labels).sum()} real, {(chosen & ~labels).sum()} bogus)"
            )


if __name__ == "__main__":
    sys.exit(main())
