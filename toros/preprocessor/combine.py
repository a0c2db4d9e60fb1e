"""Combining frames into a master, streamed in row bands so that memory stays under the configured limit.

Every file is opened once; for each band, the same rows of every frame are stacked and combined, on all
cores (the frames of a band are read in parallel, and its rows are clipped in parallel chunks). The
sigma-clipped average is the astropy CCD Data Reduction Guide's recipe and what ``ccdproc.combine`` does:
one pass of sigma clipping about the median with the MAD standard deviation, then the mean of what remains
(``clipped_mean``: the same result as ``astropy.stats.sigma_clip``, bit for bit, computed faster).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import bottleneck
import numpy as np

# Bytes of working memory budgeted per stacked value: the float32 stack, and room for the frames' readers and
# the result beside it (the clipping itself works in blocks of a few rows).
WORKING_BYTES_PER_VALUE = 16
MAD_TO_SIGMA = 1.482602218505602  # the standard deviation of a normal distribution per unit of MAD
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

            def fill(index: int, band: np.ndarray = band, start: int = start, stop: int = stop) -> None:
                band[index] = read_band(index, start, stop)
                if scales is not None:
                    band[index] *= np.float32(scales[index])

            list(pool.map(fill, range(count)))
            chunks = np.array_split(np.arange(stop - start), min(THREADS, stop - start))

            def combine_chunk(chunk: np.ndarray, band: np.ndarray = band, start: int = start) -> None:
                first, last = int(chunk[0]), int(chunk[-1]) + 1
                result[start + first : start + last] = combine_stack(band[:, first:last], method, sigma_low, sigma_high)

            list(pool.map(combine_chunk, chunks))
            if on_band is not None:
                on_band(stop, height)
    return result


def combine_stack(stack: np.ndarray, method: str, sigma_low: float, sigma_high: float) -> np.ndarray:
    """Combines a (frames, rows, columns) stack along the first axis (the stack may be overwritten)."""
    if method == "median":
        return np.asarray(bottleneck.median(stack, axis=0))
    return clipped_mean(stack, sigma_low, sigma_high)


@functools.cache
def sorting_network(n: int) -> tuple[tuple[int, int], ...]:
    """Compare-exchange pairs that sort ``n`` values (Batcher's odd-even merge sort, cut down to ``n``)."""
    size = 1 << max(0, (n - 1).bit_length())
    pairs = []
    p = 1
    while p < size:
        k = p
        while k >= 1:
            for j in range(k % p, size - k, 2 * k):
                for i in range(min(k, size - j - k)):
                    low, high = i + j, i + j + k
                    if low // (2 * p) == high // (2 * p) and high < n:
                        pairs.append((low, high))
            k //= 2
        p *= 2
    return tuple(pairs)


def _sort_in_place(rows: np.ndarray, scratch: np.ndarray) -> None:
    """Sorts ``rows`` (n, …) along the first axis with the network: whole-array min/max, no Python per pixel."""
    for a, b in sorting_network(len(rows)):
        np.minimum(rows[a], rows[b], out=scratch)
        np.maximum(rows[a], rows[b], out=rows[b])
        rows[a] = scratch


def _middle(sorted_rows: np.ndarray) -> np.ndarray:
    """The median of sorted rows in double precision: the middle value, or the mean of the two middle ones."""
    n = len(sorted_rows)
    if n % 2:
        return np.asarray(sorted_rows[n // 2], dtype=np.float64)
    return np.asarray(0.5 * (sorted_rows[n // 2].astype(np.float64) + sorted_rows[n // 2 - 1].astype(np.float64)))


def clipped_mean(stack: np.ndarray, sigma_low: float, sigma_high: float, block_rows: int = 16) -> np.ndarray:
    """The mean of each column of ``stack`` (frames, rows, columns) after one pass of sigma clipping about the
    median with the MAD standard deviation: bit for bit what ``astropy.stats.sigma_clip(..., maxiters=1,
    cenfunc="median", stdfunc="mad_std", axis=0)`` then ``bottleneck.nanmean`` give (bounds in double
    precision, as astropy's C code computes them), several times faster: the frames of a few rows at a time
    are sorted by a sorting network in cache-sized blocks instead of one column at a time. Overwrites the
    stack's rejected values with NaN."""
    n, rows, columns = stack.shape
    result = np.empty((rows, columns), dtype=np.float32)
    ordered = np.empty((n, block_rows, columns), dtype=np.float32)
    deviations = np.empty((n, block_rows, columns), dtype=np.float64)
    scratch32 = np.empty((block_rows, columns), dtype=np.float32)
    scratch64 = np.empty((block_rows, columns), dtype=np.float64)
    for start in range(0, rows, block_rows):
        stop = min(rows, start + block_rows)
        k = stop - start
        block, sorted_block, deviation = stack[:, start:stop], ordered[:, :k], deviations[:, :k]
        np.copyto(sorted_block, block)
        _sort_in_place(sorted_block, scratch32[:k])
        centre = _middle(sorted_block)
        np.subtract(sorted_block, centre, out=deviation)  # exact in double
        np.abs(deviation, out=deviation)
        _sort_in_place(deviation, scratch64[:k])
        std = _middle(deviation) * MAD_TO_SIGMA
        with np.errstate(invalid="ignore"):
            rejected = (block < centre - sigma_low * std) | (block > centre + sigma_high * std)
        np.copyto(block, np.float32(np.nan), where=rejected)
        result[start:stop] = bottleneck.nanmean(block, axis=0)
    return result
