#!/usr/bin/env python3
"""Ask a telescope to observe the targets of a CSV file (an operator's list), and follow the work order.

    observe_csv.py --config /etc/toros/toros.conf.yaml --targets tonight.csv [--alert-id S261123a] [--wait]

The CSV has a header with name, ra_deg, dec_deg and optionally exposure_time_s, exposure_count, filter,
priority and score (as for `toros plan`). Uses the generated stubs and the node's config (address, TLS,
token). Exit code 0 when the work order was accepted (with --wait: when it finished DONE).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import grpc

from toros.client import frontdesk
from toros.config import load_config
from toros.generated import toros_pb2 as pb
from toros.runtime.config import ConfigError, find_config_file
from toros.runtime.states import FINAL_STATES, state_name
from toros.telescope.plan_file import BadTargetFile, read_target_file


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", help="node config (default: $TOROS_CONFIG, then /etc/toros/toros.conf.yaml)")
    parser.add_argument("--address", help="host:port of the telescope, instead of the configured one")
    parser.add_argument("--targets", required=True, type=Path)
    parser.add_argument(
        "--alert-id", default="", help="the alert these targets follow up (they then pre-empt routine ones)"
    )
    parser.add_argument("--id", default="", help="idempotency key: resubmitting it does not observe twice")
    parser.add_argument("--wait", action="store_true", help="follow the work order until it finishes")
    args = parser.parse_args()
    try:
        path = find_config_file(args.config)
        config = load_config(path) if path else load_config(None)
        targets = [target for target, _ in read_target_file(args.targets, config.telescope)]
    except (ConfigError, BadTargetFile) as exc:
        print(f"observe_csv: {exc}", file=sys.stderr)
        return 2
    stub, channel = frontdesk(config, "telescope", args.address)
    with channel:
        try:
            order = pb.WorkOrder(
                id=args.id,
                requester="observe_csv",
                observe_targets=pb.ObserveTargets(targets=targets, alert_id=args.alert_id),
            )
            receipt = stub.Submit(order, timeout=30)
            print(
                f"{receipt.id}: {len(targets)} targets submitted"
                + (" (already known)" if receipt.already_known else "")
            )
            if not args.wait:
                return 0
            for event in stub.Watch(pb.WatchRequest(work_order_id=receipt.id)):
                if event.HasField("image_ready"):
                    print(f"  image {event.image_ready.path}")
                elif event.work_order_update.state in FINAL_STATES:
                    update = event.work_order_update
                    print(f"{state_name(update.state).upper()}: {update.message}")
                    return 0 if update.state == pb.WORK_ORDER_STATE_DONE else 1
        except grpc.RpcError as exc:
            print(f"observe_csv: {exc.code().name}: {exc.details()}", file=sys.stderr)
            return 2
    return 1


if __name__ == "__main__":
    sys.exit(main())
