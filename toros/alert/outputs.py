"""What an alert leaves for people: target lists as CSV and JSON, and a PNG of the sky map with the targets."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import astropy.units as u
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from astropy_healpix import healpix_to_lonlat, level_to_nside, lonlat_to_healpix  # noqa: E402
from contourpy import contour_generator  # noqa: E402

from toros.alert.coordination import Pointing  # noqa: E402
from toros.alert.skymap import SkyMap  # noqa: E402
from toros.runtime.files import atomic_write, path_inside  # noqa: E402

FIELDS = ("order", "name", "ra_deg", "dec_deg", "start", "duration_s", "probability", "galaxies")


def target_record(order: int, pointing: Pointing) -> dict[str, Any]:
    """A pointing as people and the console read it: where, when, the galaxies it was chosen for."""
    best = pointing.galaxies[0]
    return {
        "order": order,
        "name": pointing.name,
        "ra_deg": round(pointing.ra_deg, 6),
        "dec_deg": round(pointing.dec_deg, 6),
        "start": pointing.start.isoformat().replace("+00:00", "Z"),
        "duration_s": pointing.duration_s,
        "probability": pointing.probability,
        "distance_mpc": best.distance_mpc,
        "galaxies": [asdict(g) for g in pointing.galaxies],
    }


def write_targets(folder: Path, observatory: str, pointings: list[Pointing]) -> list[Path]:
    """A site's pointings as CSV (the galaxies' names joined) and JSON (the galaxies in full)."""
    records = [target_record(order, p) for order, p in enumerate(pointings, start=1)]
    csv_path = path_inside(folder, f"targets-{observatory}.csv")
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=FIELDS, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(r | {"galaxies": "; ".join(g["name"] for g in r["galaxies"])} for r in records)
    with atomic_write(csv_path, "w") as stream:
        stream.write(text.getvalue())
    json_path = path_inside(folder, f"targets-{observatory}.json")
    with atomic_write(json_path, "w") as stream:
        json.dump(records, stream, indent=1)
    return [csv_path, json_path]


CONTOUR_LEVELS = (0.5, 0.9)
SKY_GRID_DEG = 1.0  # the whole sky's contours; the zoom's grid is finer (ZOOM_POINTS across the region)
ZOOM_POINTS = 240


def _sampler(skymap: SkyMap, levels: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """(sorted first deepest-order index of each pixel, their credible levels, the deepest order)."""
    level, ipix = skymap.level_ipix
    deepest = int(level.max())
    starts = ipix.astype(np.int64) << (2 * (deepest - level.astype(np.int64)))
    order = np.argsort(starts, kind="stable")
    return starts[order], levels[order], deepest


def _contours(
    sampler: tuple[np.ndarray, np.ndarray, int], ra: np.ndarray, dec: np.ndarray
) -> dict[str, list[list[list[float]]]]:
    """Contour polylines (RA, Dec in degrees) of the credible levels on a grid of RA × Dec."""
    starts, levels, deepest = sampler
    grid_ra, grid_dec = np.meshgrid(ra, dec)
    index = lonlat_to_healpix(
        np.remainder(grid_ra, 360.0) * u.deg, grid_dec * u.deg, level_to_nside(deepest), order="nested"
    ).astype(np.int64)
    value = levels[np.searchsorted(starts, index, side="right") - 1]
    generator = contour_generator(ra, dec, value)  # the default line type: one (N, 2) array per line
    return {
        f"{level:g}": [np.round(np.asarray(line), 3).tolist() for line in generator.lines(level) if len(line) > 1]
        for level in CONTOUR_LEVELS
    }


def sky_view(skymap: SkyMap, credible: np.ndarray) -> dict[str, object]:
    """What a browser needs to draw the sky map: credible contours on the whole sky and on a zoom of the
    region (RA continuous across 0h there), the region's bounds and the most probable position."""
    levels = skymap.credible_levels()
    sampler = _sampler(skymap, levels)
    whole = _contours(
        sampler, np.arange(0.0, 360.0 + SKY_GRID_DEG, SKY_GRID_DEG), np.arange(-90.0, 90.0 + SKY_GRID_DEG, SKY_GRID_DEG)
    )
    level, ipix = skymap.level_ipix
    lon, lat = healpix_to_lonlat(ipix[credible], level_to_nside(level[credible]), order="nested")
    ra, dec = lon.to_value(u.deg), lat.to_value(u.deg)
    centre = float(
        np.remainder(np.rad2deg(np.arctan2(np.sin(np.deg2rad(ra)).mean(), np.cos(np.deg2rad(ra)).mean())), 360.0)
    )
    offset = np.remainder(ra - centre + 180.0, 360.0) - 180.0
    pixel_deg = float(np.rad2deg(np.sqrt(skymap.pixel_area()[credible].max())))
    pad = max(1.0, 2 * pixel_deg)
    ra_low, ra_high = centre + float(offset.min()) - pad, centre + float(offset.max()) + pad
    dec_low, dec_high = max(-90.0, float(dec.min()) - pad), min(90.0, float(dec.max()) + pad)
    zoom = _contours(sampler, np.linspace(ra_low, ra_high, ZOOM_POINTS), np.linspace(dec_low, dec_high, ZOOM_POINTS))
    areas = {
        f"{c:g}": round(float(skymap.pixel_area()[levels <= c].sum() * (180 / np.pi) ** 2), 1) for c in CONTOUR_LEVELS
    }
    return {
        "contours": whole,
        "zoom": {"ra": [round(ra_low, 3), round(ra_high, 3)], "dec": [round(dec_low, 3), round(dec_high, 3)],
                 "contours": zoom},
        "area_deg2": areas,
        "most_probable": [round(v, 4) for v in skymap.most_probable()],
    }  # fmt: skip


def write_sky_view(path: Path, view: dict[str, object]) -> Path:
    with atomic_write(path, "w") as stream:
        json.dump(view, stream, separators=(",", ":"))
    return path


def plot_skymap(
    path: Path, skymap: SkyMap, credible: np.ndarray, title: str, targets: dict[str, list[Pointing]]
) -> Path:
    """The credible region (colour: probability density) and each site's targets: the whole sky (Mollweide,
    RA increasing to the left), and a zoom on the region with the targets numbered by rank."""
    level, ipix = skymap.level_ipix
    lon, lat = healpix_to_lonlat(ipix[credible], level_to_nside(level[credible]), order="nested")
    ra, dec = lon.to_value(u.deg), lat.to_value(u.deg)
    density = skymap.probdensity[credible]
    figure = plt.figure(figsize=(14, 5.5))
    sky = figure.add_subplot(1, 2, 1, projection="mollweide")
    wrapped = np.remainder(ra + 180.0, 360.0) - 180.0
    sky.scatter(-np.deg2rad(wrapped), np.deg2rad(dec), c=density, s=2, cmap="viridis", linewidths=0)
    sky.set_xticklabels(["10h", "8h", "6h", "4h", "2h", "0h", "22h", "20h", "18h", "16h", "14h"])
    sky.grid(True)
    sky.set_title(title, fontsize=10)
    zoom = figure.add_subplot(1, 2, 2)
    centre = np.remainder(np.rad2deg(np.arctan2(np.sin(np.deg2rad(ra)).mean(), np.cos(np.deg2rad(ra)).mean())), 360.0)
    offset = np.remainder(ra - centre + 180.0, 360.0) - 180.0  # RA relative to the region's centre
    points = zoom.scatter(centre + offset, dec, c=density, s=4, cmap="viridis", linewidths=0)
    for (site, rows), marker in zip(targets.items(), "o^sDv*", strict=False):  # six markers: enough sites
        if not rows:
            continue
        target_ra = centre + np.remainder(np.array([r.ra_deg for r in rows]) - centre + 180.0, 360.0) - 180.0
        target_dec = np.array([r.dec_deg for r in rows])
        for plot in (sky, zoom):
            x = -np.deg2rad(np.remainder(target_ra + 180.0, 360.0) - 180.0) if plot is sky else target_ra
            y = np.deg2rad(target_dec) if plot is sky else target_dec
            plot.scatter(
                x, y, marker=marker, s=40, facecolors="none", edgecolors="red", label=f"{site}: {len(rows)} targets"
            )
        for number, (x, y) in enumerate(zip(target_ra, target_dec, strict=True), start=1):
            zoom.annotate(str(number), (x, y), xytext=(3, 3), textcoords="offset points", fontsize=7, color="red")
    zoom.invert_xaxis()
    zoom.set_xlabel("RA [deg]")
    zoom.set_ylabel("Dec [deg]")
    zoom.set_title("credible region and targets (numbered by rank)", fontsize=10)
    zoom.grid(True, alpha=0.3)
    if targets:
        zoom.legend(loc="best", fontsize=8)
    figure.colorbar(points, ax=zoom, label="probability density [1/sr]")
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    plt.close(figure)
    with atomic_write(path) as stream:
        stream.write(buffer.getvalue())
    return path
