"""Stored frames as the console shows them: fetched from the daemon that keeps them (FetchFile, which confines
paths to its storage root), read decimated through a memory map (a 10560² frame is never loaded whole),
ZScaled to a PNG. Frames never change once stored, so previews are kept by module, path and size."""

from __future__ import annotations

import hashlib
import io
import json
import math
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits
from PIL import Image

from toros.floor.pictures import zscaled
from toros.generated import toros_pb2 as pb
from toros.web.hub import EventHub

CHUNK_BYTES = 4 * 1024 * 1024
_END_CARD = b"END" + b" " * 77


class NotAnImage(ValueError):
    """The file is not a FITS image the console can draw."""


class Previews:
    def __init__(self, hub: EventHub, keep: int = 256) -> None:
        self.hub = hub
        self._folder = Path(tempfile.mkdtemp(prefix="toros-web-"))
        self._pictures: OrderedDict[tuple[str, str, int], bytes] = OrderedDict()
        self._keep = keep
        self._lock = threading.Lock()

    def chunks(self, module: str, path: str) -> Iterator[pb.FileChunk]:
        return iter(self.hub.stub(module).FetchFile(pb.FetchFileRequest(path=path, chunk_size=CHUNK_BYTES)))

    def json(self, module: str, path: str) -> Any:
        """A small JSON file of a daemon (a plan, a sky view, labels)."""
        return json.loads(b"".join(chunk.data for chunk in self.chunks(module, path)))

    def png(self, module: str, path: str, size: int) -> bytes:
        """A preview at most ``size`` pixels on a side."""
        key = (module, path, size)
        with self._lock:
            if key in self._pictures:
                self._pictures.move_to_end(key)
                return self._pictures[key]
        with tempfile.NamedTemporaryFile(dir=self._folder, suffix=".fits") as local:
            digest = hashlib.sha256()
            for chunk in self.chunks(module, path):
                local.write(chunk.data)
                digest.update(chunk.data)
                if chunk.sha256 and chunk.sha256 != digest.hexdigest():
                    raise NotAnImage(f"{path}: the bytes received do not match the daemon's sha256")
            local.flush()
            picture = _draw(Path(local.name), size, path)
        with self._lock:
            self._pictures[key] = picture
            while len(self._pictures) > self._keep:
                self._pictures.popitem(last=False)
        return picture

    def header(self, module: str, path: str) -> str:
        """The primary header, read from the first chunks only."""
        call = self.hub.stub(module).FetchFile(pb.FetchFileRequest(path=path, chunk_size=64 * 1024))
        head = b""
        try:
            for chunk in call:
                head += chunk.data
                ends = [i for i in range(0, len(head) - 79, 80) if head[i : i + 80] == _END_CARD]
                if ends:
                    head = head[: ends[0] + 80]
                    break
                if len(head) > 2 * 1024 * 1024:
                    raise NotAnImage(f"{path}: no FITS header END within 2 MiB")
        finally:
            call.cancel()
        try:
            header = fits.Header.fromstring(head.decode("ascii"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise NotAnImage(f"{path}: not a FITS header: {exc}") from None
        return str(header.tostring(sep="\n", padding=False))


def _draw(local: Path, size: int, name: str) -> bytes:
    try:
        with fits.open(local, memmap=True, do_not_scale_image_data=True) as hdus:
            hdu = next((h for h in hdus if h.data is not None and h.data.ndim == 2), None)
            if hdu is None:
                raise NotAnImage(f"{name}: no 2-D image in the file")
            step = max(1, math.ceil(max(hdu.data.shape) / size))
            raw = np.asarray(hdu.data[::step, ::step], dtype=np.float64)
            image = raw * float(hdu.header.get("BSCALE", 1.0)) + float(hdu.header.get("BZERO", 0.0))
    except (OSError, TypeError) as exc:
        raise NotAnImage(f"{name}: not a readable FITS file: {exc}") from None
    buffer = io.BytesIO()
    Image.fromarray(zscaled(image), mode="L").save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()
