"""What an alert leaves for people: target lists as CSV and JSON, and a PNG of the sky map with the targets."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import astropy.units as u
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from astropy_healpix import healpix_to_lonlat, level_to_nside  # noqa: E402

from toros.alert.skymap import SkyMap  # noqa: E402
from toros.runtime.files import atomic_write  # noqa: E402

FIELDS = ("rank", "name", "ra_deg", "dec_deg", "distance_mpc", "score")


def write_targets(folder: Path, observatory: str, targets: list[dict]) -> list[Path]:
    csv_path = folder / f"targets-{observatory}.csv"
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=FIELDS)
    writer.writeheader()
    writer.writerows({k: t[k] for k in FIELDS} for t in targets)
    with atomic_write(csv_path, "w") as stream:
        stream.write(text.getvalue())
    json_path = folder / f"targets-{observatory}.json"
    with atomic_write(json_path, "w") as stream:
        json.dump(targets, stream, indent=1)
    return [csv_path, json_path]


def plot_skymap(path: Path, skymap: SkyMap, credible: np.ndarray, title: str, targets: dict[str, list[dict]]) -> Path:
    """A Mollweide view of the credible region (colour: probability density) and each site's targets."""
    level, ipix = skymap.level_ipix
    lon, lat = healpix_to_lonlat(ipix[credible], level_to_nside(level[credible]), order="nested")
    ra = np.remainder(lon.to_value(u.deg) + 180.0, 360.0) - 180.0
    figure = plt.figure(figsize=(10, 5.5))
    axes = figure.add_subplot(111, projection="mollweide")
    points = axes.scatter(-np.deg2rad(ra), lat.to_value(u.rad), c=skymap.probdensity[credible], s=2, cmap="viridis", linewidths=0)
    for (site, rows), marker in zip(targets.items(), "o^sDv*"):
        if rows:
            ra_t = np.remainder(np.array([r["ra_deg"] for r in rows]) + 180.0, 360.0) - 180.0
            axes.scatter(-np.deg2rad(ra_t), np.deg2rad([r["dec_deg"] for r in rows]), marker=marker, s=30,
                         facecolors="none", edgecolors="red", label=f"{site}: {len(rows)} targets")
    axes.grid(True)
    axes.set_xticklabels([f"{h}h" for h in (14, 16, 18, 20, 22, 0, 2, 4, 6, 8, 10)])
    axes.set_title(title)
    figure.colorbar(points, ax=axes, orientation="horizontal", fraction=0.05, pad=0.08, label="probability density [1/sr]")
    if targets:
        axes.legend(loc="lower right", fontsize=8)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110)
    plt.close(figure)
    with atomic_write(path) as stream:
        stream.write(buffer.getvalue())
    return path
