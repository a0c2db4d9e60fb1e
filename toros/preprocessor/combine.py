"""Combining frames into a master, streamed in row bands so that memory stays under the configured limit.

Every file is opened once; for each band, the same rows of every frame are stacked and combined, on all
cores (the frames of a band are read in parallel, and its rows are clipped in parallel chunks). The
sigma-clipped average is the astropy CCD Data Reduction Guide's recipe and what ``ccdproc.combine`` does:
one pass of ``astropy.stats.sigma_clip`` about the median with the MAD standard deviation, then the mean of
what remains.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import bottleneck
import numpy as np
from astropy.stats import sigma_clip

# Bytes of working memory per stacked value: the stack itself plus sigma_clip's temporaries.
WORKING_BYTES_PER_VALUE = 16
# Reading and clipping release the GIL: a band's frames are read, and its rows combined, on every core.
THREADS = os.cpu_count() or 1


def band_rows(frames: int, width: int, height: int, budget_bytes: int) -> int:
    """How many rows per band fit the budget."""
    return int(max(1, min(height, budget_bytes // max(1, frames * width * WORKING_BYTES_PER_VALUE))))


def combine_bands(
    count: int,
    shape: tuple[int, int],
    read_band: Callable[[int, int, int], np.ndarray],
    *,
    method: str,
    sigma_low: float,
    sigma_high: float,
    budget_bytes: int,
    scales: Sequence[float] | None = None,
    on_band: Callable[[int, int], None] | None = None,
) -> np.ndarray:
    """Combines ``count`` frames of ``shape``; ``read_band(i, start, stop)`` gives rows of frame i.

    ``scales`` multiply each frame before combining (e.g. 1/median for flats).
    """
    height, width = shape
    rows = band_rows(count, width, height, budget_bytes)
    result = np.empty(shape, dtype=np.float32)
    stack = np.empty((count, rows, width), dtype=np.float32)
    with ThreadPoolExecutor(THREADS, thread_name_prefix="combine") as pool:
        for start in range(0, height, rows):
            stop = min(height, start + rows)
            band = stack[:, : stop - start]

            def fill(index: int) -> None:
                band[index] = read_band(index, start, stop)
                if scales is not None:
                    band[index] *= np.float32(scales[index])

            list(pool.map(fill, range(count)))
            chunks = np.array_split(np.arange(stop - start), min(THREADS, stop - start))

            def combine_chunk(chunk: np.ndarray) -> None:
                first, last = int(chunk[0]), int(chunk[-1]) + 1
                result[start + first : start + last] = combine_stack(band[:, first:last], method, sigma_low, sigma_high)

            list(pool.map(combine_chunk, chunks))
            if on_band is not None:
                on_band(stop, height)
    return result


def combine_stack(stack: np.ndarray, method: str, sigma_low: float, sigma_high: float) -> np.ndarray:
    """Combines a (frames, rows, columns) stack along the first axis (the stack may be overwritten)."""
    if method == "median":
        return bottleneck.median(stack, axis=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns cannot happen with maxiters=1
        clipped = sigma_clip(
            stack, sigma_lower=sigma_low, sigma_upper=sigma_high, maxiters=1, cenfunc="median", stdfunc="mad_std",
            axis=0, masked=False, copy=False,
        )
    return bottleneck.nanmean(clipped, axis=0).astype(np.float32, copy=False)
