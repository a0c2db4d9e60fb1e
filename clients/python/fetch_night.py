#!/usr/bin/env python3
"""Copy a night's images from a telescope node to a local folder, each checked against its sha256.

    fetch_night.py --config /etc/toros/toros.conf.yaml --night 2026-11-22 --out ./2026-11-22 [--type light]

Reads the telescope's image_ready events (Watch, replay only) and pulls each image with FetchFile; a file
already there with the right checksum is skipped, so the script can be run again after an interruption.
Files are written under a temporary name and renamed when complete.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

import grpc

from toros.client import frontdesk
from toros.config import load_config
from toros.generated import toros_pb2 as pb
from toros.runtime.config import ConfigError, find_config_file
from toros.runtime.files import atomic_write, sha256_of

TYPES = {
    "bias": pb.IMAGE_TYPE_BIAS,
    "dark": pb.IMAGE_TYPE_DARK,
    "flat": pb.IMAGE_TYPE_FLAT,
    "light": pb.IMAGE_TYPE_LIGHT,
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", help="node config (default: $TOROS_CONFIG, then /etc/toros/toros.conf.yaml)")
    parser.add_argument("--address", help="host:port of the telescope, instead of the configured one")
    parser.add_argument("--night", required=True, help="YYYY-MM-DD, the night's local date at noon")
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--type", choices=sorted(TYPES), action="append", help="only these image types (default: all)")
    args = parser.parse_args()
    try:
        path = find_config_file(args.config)
        config = load_config(path) if path else load_config(None)
    except ConfigError as exc:
        print(f"fetch_night: {exc}", file=sys.stderr)
        return 2
    wanted = {TYPES[t] for t in args.type} if args.type else set(TYPES.values())
    stub, channel = frontdesk(config, "telescope", args.address)
    copied = skipped = 0
    with channel:
        try:
            events = stub.Watch(pb.WatchRequest(replay_only=True, kinds=[pb.EVENT_KIND_IMAGE_READY]), timeout=300)
            images = [
                e.image_ready
                for e in events
                if e.image_ready.night == args.night and e.image_ready.image_type in wanted
            ]
            for image in images:
                target = args.out / Path(image.path).name
                if target.is_file() and sha256_of(target) == image.sha256:
                    skipped += 1
                    continue
                digest = hashlib.sha256()
                with atomic_write(target) as stream:
                    for chunk in stub.FetchFile(pb.FetchFileRequest(path=image.path), timeout=600):
                        digest.update(chunk.data)
                        stream.write(chunk.data)
                    if digest.hexdigest() != image.sha256:
                        raise ValueError(f"{image.path}: checksum mismatch, not kept")
                copied += 1
                print(f"{target} ({image.size_bytes:,} bytes)")
        except grpc.RpcError as exc:
            print(f"fetch_night: {exc.code().name}: {exc.details()}", file=sys.stderr)
            return 2
        except ValueError as exc:
            print(f"fetch_night: {exc}", file=sys.stderr)
            return 1
    print(f"{copied} images copied, {skipped} already there, night {args.night}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
