"""Synthetic galaxy catalogs in the GLADE+ text format, for the demo, the tests and the benchmarks.

Galaxies are spread over the sky, with a fraction placed around a chosen position (by default the region of
the shipped sample sky map of MS181101ab) at plausible distances, so that an alert finds hosts to rank.
Numbers are formatted with numpy arithmetic, so tens of millions of lines take seconds.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

CHUNK = 1_000_000
SAMPLE_MAP_CENTRE = (194.3, -17.9)  # RA, Dec (degrees) of the MS181101ab sample map's most probable area


def _fixed(values: np.ndarray, integer_digits: int, decimals: int, signed: bool = False) -> np.ndarray:
    """Numbers as fixed-width ASCII columns (N, width), formatted with numpy arithmetic, not Python."""
    scaled = np.rint(np.abs(values) * 10**decimals).astype(np.int64)
    digits = integer_digits + decimals
    out = np.empty((len(values), digits + (decimals > 0) + signed), dtype=np.uint8)
    column = out.shape[1] - 1
    for position in range(digits):
        if decimals and position == decimals:
            out[:, column] = ord(".")
            column -= 1
        out[:, column] = ord("0") + scaled % 10
        scaled //= 10
        column -= 1
    if signed:
        out[:, 0] = np.where(values < 0, ord("-"), ord("+"))
    return out


def write_glade_plus(
    path: Path,
    count: int,
    seed: int = 1,
    *,
    near_fraction: float = 0.02,
    centre: tuple[float, float] = SAMPLE_MAP_CENTRE,
) -> None:
    """A GLADE+-format text catalog (only the number, RA, Dec, B and d_L are filled; the rest is null)."""
    rng = np.random.default_rng(seed)
    with open(path, "wb") as stream:
        for start in range(0, count, CHUNK):
            n = min(CHUNK, count - start)
            ra = rng.uniform(0, 360, n)
            dec = np.rad2deg(np.arcsin(rng.uniform(-1, 1, n)))
            near = rng.random(n) < near_fraction
            ra[near] = rng.normal(centre[0], 3.0, near.sum()) % 360
            dec[near] = np.clip(rng.normal(centre[1], 3.0, near.sum()), -90, 90)
            dist = np.where(near, rng.uniform(10, 120, n), rng.uniform(5, 500, n))
            numbers = np.arange(start, start + n) + 1.0
            stream.write(_lines(numbers, ra, dec, rng.uniform(10, 20, n), dist))


def _lines(numbers: np.ndarray, ra: np.ndarray, dec: np.ndarray, b_mag: np.ndarray, dist: np.ndarray) -> bytes:
    """GLADE+ rows with the number, RA, Dec, B and d_L filled."""
    n = len(numbers)
    null = np.frombuffer(b"null", dtype=np.uint8)
    pieces = [_fixed(numbers, 9, 0)]
    pieces += [np.tile(null, (n, 1))] * 7
    pieces += [_fixed(ra, 3, 6), _fixed(dec, 2, 6, signed=True), _fixed(b_mag, 2, 3)]
    pieces += [np.tile(null, (n, 1))] * 21
    pieces += [_fixed(dist, 5, 4)]
    pieces += [np.tile(null, (n, 1))] * 7
    widths = [p.shape[1] for p in pieces]
    line = np.full((n, sum(widths) + len(pieces)), ord(" "), dtype=np.uint8)
    offset = 0
    for piece, width in zip(pieces, widths, strict=True):
        line[:, offset : offset + width] = piece
        offset += width + 1
    line[:, -1] = ord("\n")
    return line.tobytes()
