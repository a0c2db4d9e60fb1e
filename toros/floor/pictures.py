"""Images as people look at them: a ZScale stretch to 8 bits, shared by triplets and the console's previews."""

from __future__ import annotations

import numpy as np


def zscaled(image: np.ndarray) -> np.ndarray:
    """The image on its ZScale limits as uint8 (NaN shown as the low limit), row 0 at the bottom as FITS
    pixels lie (flipped for a picture whose row 0 is the top)."""
    from astropy.visualization import ZScaleInterval

    finite = image[np.isfinite(image)]
    low, high = ZScaleInterval().get_limits(finite) if finite.size > 10 else (0.0, 1.0)
    scaled = np.clip((np.nan_to_num(image, nan=low) - low) / max(high - low, 1e-12), 0.0, 1.0)
    return np.flipud((scaled * 255).astype(np.uint8))
