"""Following a telescope's image stream: each announced image is found locally or fetched, verified, and
calibrated.

The stream position and the calibration frames waiting for their first science frame are kept in the
journal, so nothing is missed or done twice across restarts of either daemon: an event is processed again
only if the preprocessor stopped before recording it, and its work order id (``follow-<telescope>-<sequence>``)
makes the repeat a no-op.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

from toros.floor import journal_keys
from toros.floor.requesters import FOLLOWER
from toros.generated import toros_pb2 as pb
from toros.generated.toros_pb2_grpc import FrontDeskStub
from toros.preprocessor.settings import FollowedTelescope
from toros.runtime.files import (
    UnusablePath,
    atomic_write,
    confine,
    path_inside,
    sha256_of,
)
from toros.runtime.following import EventFollower
from toros.runtime.module import Services

log = logging.getLogger(__name__)

CALIBRATION_TYPES = {pb.IMAGE_TYPE_BIAS, pb.IMAGE_TYPE_DARK, pb.IMAGE_TYPE_FLAT}


class FetchFailed(Exception):
    """An image could not be had intact; the event is retried later."""


class TelescopeFollower:
    def __init__(self, telescope: FollowedTelescope, services: Services, storage_root: Path) -> None:
        self.telescope = telescope
        self.services = services
        self.journal = services.journal
        self.storage_root = storage_root
        self.requester = f"{FOLLOWER}{telescope.name}"
        self._pending_key = journal_keys.follow_pending(telescope.name)
        self.events = EventFollower(
            telescope.name,
            telescope.address,
            [pb.EVENT_KIND_IMAGE_READY],
            self._handle,
            services,
            journal_keys.follow_position(telescope.name),
            retry_on=(FetchFailed, OSError, ValueError),
        )

    def start(self) -> None:
        self.events.start()

    def stop(self) -> None:
        self.events.stop()

    @property
    def position(self) -> int:
        return self.events.position

    def _handle(self, stub: FrontDeskStub, event: pb.Event) -> None:
        image = event.image_ready
        path = self._local_copy(stub, image)
        pending = json.loads(self.journal.get_value(self._pending_key) or "[]")
        if image.image_type in CALIBRATION_TYPES:
            if str(path) not in pending:
                self.journal.set_value(self._pending_key, json.dumps(pending + [str(path)]))
            return
        if image.image_type != pb.IMAGE_TYPE_LIGHT:
            log.warning(
                "%s: image of unknown type %d from %s ignored", image.path, image.image_type, self.telescope.name
            )
            return
        order = pb.WorkOrder(
            id=f"follow-{self.telescope.name}-{event.sequence}",
            requester=self.requester,
            calibrate_images=pb.CalibrateImages(paths=pending + [str(path)]),
        )
        record, already_known = self.services.submit(order)
        if not already_known:
            log.info("%s: calibrating %s (%d calibration frames with it)", record.id, path.name, len(pending))
        self.journal.set_value(self._pending_key, "[]")

    def _local_copy(self, stub: FrontDeskStub, image: pb.ImageReady) -> Path:
        """The image inside this node's storage root, intact: in place if it is already there, else fetched."""
        try:
            here = confine(image.path, self.storage_root)
            if here.is_file() and sha256_of(here) == image.sha256:
                return here
        except UnusablePath:
            pass
        target = path_inside(
            self.storage_root, "incoming", self.telescope.name, image.night or "unknown", Path(image.path).name
        )
        if target.is_file() and sha256_of(target) == image.sha256:
            return target
        digest = hashlib.sha256()
        with atomic_write(target) as stream:
            last = None
            for chunk in stub.FetchFile(pb.FetchFileRequest(path=image.path)):
                digest.update(chunk.data)
                stream.write(chunk.data)
                last = chunk
            if last is None or digest.hexdigest() != image.sha256 or last.sha256 != image.sha256:
                raise FetchFailed(
                    f"{image.path}: sha256 of the fetched bytes does not match the announced {image.sha256}"
                )
        log.info("fetched %s from %s (%d bytes)", image.path, self.telescope.name, image.size_bytes)
        return target
