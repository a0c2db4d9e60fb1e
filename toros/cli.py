"""The ``toros`` command: run a daemon, and the operators' everyday calls to the daemons.

Every failure is one line on stderr and a non-zero exit: 2 for configuration and usage problems, 1 for a
daemon that is unreachable or refuses the request.
"""

from __future__ import annotations

import argparse
import base64
import json
import socket
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import grpc
import yaml
from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor

from toros import MODULES, __version__
from toros.config import Config, load_config
from toros.generated import toros_pb2 as pb
from toros.runtime.config import ConfigError, find_config_file
from toros.runtime.states import FINAL_STATES, state_name
from toros.runtime.validation import TASK_MODULES

UNARY_TIMEOUT = 30.0


if TYPE_CHECKING:
    from toros.preprocessor.references import ReferenceLibrary


class CliError(Exception):
    """A problem to report as one line; ``code`` is the exit status."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


# -- work orders from options ----------------------------------------------------------------------


def _option(field: FieldDescriptor) -> str:
    return "--" + field.name.replace("_", "-")


def _enum_choices(field: FieldDescriptor) -> list[str]:
    prefix = _enum_prefix(field)
    return [v.name[len(prefix) :].lower() for v in _enum_type(field).values if v.number != 0]


def _enum_prefix(field: FieldDescriptor) -> str:
    zero = _enum_type(field).values_by_number[0].name
    return zero[: -len("UNSPECIFIED")]


def _enum_type(field: FieldDescriptor) -> EnumDescriptor:
    assert field.enum_type is not None, f"{field.name} is an enum field"
    return field.enum_type


def _task_descriptor(task: str) -> Descriptor:
    """The message type of one task of WorkOrder.task."""
    descriptor = pb.WorkOrder.DESCRIPTOR.fields_by_name[task].message_type
    assert descriptor is not None, f"{task} is a message field"
    return cast(Descriptor, descriptor)


def _add_task_options(parser: argparse.ArgumentParser, descriptor: Descriptor) -> None:
    """One option per field of a task message, typed from the proto descriptor."""
    for field in descriptor.fields:
        kwargs: dict[str, Any] = {"dest": f"field_{field.name}", "metavar": field.name.upper()}
        repeated = field.is_repeated
        kind = field.message_type.full_name if field.message_type else None
        if kind == "google.protobuf.Duration":
            kwargs.update(type=float, metavar="SECONDS")
        elif kind == "google.protobuf.Timestamp":
            kwargs.update(metavar="ISO8601")
        elif field.message_type is not None:
            kwargs.update(type=json.loads, metavar="JSON", help=f"a {field.message_type.name} as JSON")
        elif field.enum_type is not None:
            kwargs.update(choices=_enum_choices(field), metavar="{" + ",".join(_enum_choices(field)) + "}")
        elif field.type == FieldDescriptor.TYPE_BOOL:
            kwargs.update(action="store_true")
            del kwargs["metavar"]
        elif field.type == FieldDescriptor.TYPE_BYTES:
            kwargs.update(type=Path, metavar="FILE", help="read from this file")
        elif field.type in (FieldDescriptor.TYPE_DOUBLE, FieldDescriptor.TYPE_FLOAT):
            kwargs.update(type=float)
        elif field.type == FieldDescriptor.TYPE_STRING:
            kwargs.update(type=str)
        else:
            kwargs.update(type=int)
        if repeated:
            kwargs["action"] = "append"
            kwargs.setdefault("help", "may be given several times")
        parser.add_argument(_option(field), **kwargs)


def _json_value(field: FieldDescriptor, value: Any) -> Any:
    kind = field.message_type.full_name if field.message_type else None
    if kind == "google.protobuf.Duration":
        return f"{value}s"
    if field.enum_type is not None:
        return _enum_prefix(field) + value.upper()
    if field.type == FieldDescriptor.TYPE_BYTES:
        try:
            return base64.b64encode(value.read_bytes()).decode()
        except OSError as exc:
            raise CliError(f"{_option(field)}: cannot read {value}: {exc.strerror}", 2) from None
    return value


def build_work_order(args: argparse.Namespace) -> pb.WorkOrder:
    """The work order described by ``--file`` and/or the task options."""
    order = pb.WorkOrder()
    if args.file:
        try:
            data = yaml.safe_load(Path(args.file).read_text(encoding="utf-8"))
            json_format.ParseDict(data, order)
        except OSError as exc:
            raise CliError(f"{args.file}: cannot read: {exc.strerror}", 2) from None
        except (yaml.YAMLError, json_format.ParseError, TypeError) as exc:
            raise CliError(f"{args.file}: not a valid work order: {exc}", 2) from None
    if args.task:
        descriptor = _task_descriptor(args.task)
        task = {}
        for field in descriptor.fields:
            value = getattr(args, f"field_{field.name}", None)
            if value is None or value is False:
                continue
            if isinstance(value, list):
                task[field.name] = [_json_value(field, v) for v in value]
            else:
                task[field.name] = _json_value(field, value)
        try:
            json_format.ParseDict(task, getattr(order, args.task))
        except json_format.ParseError as exc:
            raise CliError(f"{args.task}: {exc}", 2) from None
    if args.id:
        order.id = args.id
    if args.priority is not None:
        order.priority = args.priority
    order.requester = args.requester or order.requester or "toros-cli"
    if order.WhichOneof("task") is None:
        raise CliError("give a task (e.g. `toros submit telescope dome_control --action open`) or --file", 2)
    return order


# -- talking to daemons ----------------------------------------------------------------------------


def _config(args: argparse.Namespace) -> Config:
    return load_config(find_config_file(args.config))


def _stub(args: argparse.Namespace, module: str) -> tuple[Any, str]:
    from toros.client import frontdesk, module_address

    config = _config(args)
    address = args.address or module_address(config, module)
    stub, _channel = frontdesk(config, module, address)
    return stub, address


def _explain(error: grpc.RpcError, module: str, address: str) -> CliError:
    code = error.code()
    if code == grpc.StatusCode.UNAVAILABLE and _accepts_connections(address):
        return CliError(
            f"the {module} at {address} accepts connections but closed this one: it may require TLS or a client "
            f"certificate (security.tls: ca, client_cert, client_key) ({error.details()})"
        )
    if code == grpc.StatusCode.UNAVAILABLE:
        return CliError(f"cannot reach the {module} at {address}: is it running? ({error.details()})")
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return CliError(f"the {module} at {address} did not answer in time")
    if code == grpc.StatusCode.UNAUTHENTICATED:
        return CliError(f"the {module} at {address} refused the token: {error.details()} (check security.token)")
    return CliError(f"the {module} at {address} answered {code.name}: {error.details()}")


def _accepts_connections(address: str) -> bool:
    """Whether something listens at host:port (a daemon that refused the TLS handshake, not one that is down)."""
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=2):
            return True
    except (OSError, ValueError):
        return False


def _print_status(status: pb.WorkOrderStatus) -> None:
    print(f"{status.id}  {status.task}  {state_name(status.state)}  {status.progress_percent:.0f}%  {status.message}")
    for product in status.products:
        print(f"  {product.kind}: {product.path}")


def cmd_submit(args: argparse.Namespace) -> int:
    order = build_work_order(args)
    stub, address = _stub(args, args.module)
    try:
        receipt = stub.Submit(order, timeout=UNARY_TIMEOUT)
    except grpc.RpcError as exc:
        raise _explain(exc, args.module, address) from None
    note = " (already known: not run again)" if receipt.already_known else ""
    print(f"{receipt.id}{note}")
    if args.wait:
        args.work_order = receipt.id
        args.after, args.kind = 0, None
        return cmd_watch(args)
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    modules = [args.module] if args.module else list(MODULES)
    failures = 0
    for module in modules:
        stub, address = _stub(args, module)
        try:
            status = stub.GetStatus(pb.GetStatusRequest(), timeout=5.0)
        except grpc.RpcError as exc:
            failures += 1
            print(f"{module:<13} {address:<21} DOWN     {_explain(exc, module, address)}")
            continue
        clock = status.clock_time.ToDatetime().strftime("%Y-%m-%d %H:%M:%S")
        print(
            f"{status.module:<13} {address:<21} serving  v{status.version}  queued {status.queue_depth}"
            f"  running {status.running}  last event {status.last_sequence}  clock {clock} UTC"
            + (f"  {status.message}" if status.message else "")
        )
        if status.HasField("hold"):
            hold = status.hold
            since = hold.since.ToDatetime().strftime("%Y-%m-%d %H:%M:%S")
            waiting = f"; {hold.waiting_alert_targets} alert targets wait" if hold.waiting_alert_targets else ""
            print(
                f"  HOLD         by {hold.by or 'an anonymous client'} since {since} UTC"
                + (f": {hold.reason}" if hold.reason else "")
                + f"{waiting} (resume: toros submit telescope night_operation --step resume)"
            )
        for device in status.devices:
            state = pb.DeviceState.Name(device.state).removeprefix("DEVICE_STATE_").lower()
            print(f"  {device.name:<12} {state:<12} {device.driver:<10} {device.message}")
    return 1 if failures else 0


def cmd_work_order(args: argparse.Namespace) -> int:
    stub, address = _stub(args, args.module)
    try:
        _print_status(stub.GetWorkOrder(pb.GetWorkOrderRequest(id=args.id), timeout=UNARY_TIMEOUT))
    except grpc.RpcError as exc:
        raise _explain(exc, args.module, address) from None
    return 0


def cmd_cancel(args: argparse.Namespace) -> int:
    stub, address = _stub(args, args.module)
    try:
        _print_status(
            stub.CancelWorkOrder(pb.CancelWorkOrderRequest(id=args.id, reason=args.reason), timeout=UNARY_TIMEOUT)
        )
    except grpc.RpcError as exc:
        raise _explain(exc, args.module, address) from None
    return 0


def describe_event(event: pb.Event) -> str:
    kind = event.WhichOneof("kind") or "unknown"
    body = (
        json_format.MessageToDict(getattr(event, kind), preserving_proto_field_name=True) if kind != "unknown" else {}
    )
    detail = " ".join(f"{k}={v}" for k, v in body.items())
    when = event.time.ToDatetime().strftime("%H:%M:%S")
    return f"#{event.sequence} {when} {event.work_order_id or '-'} {kind} {detail}"


def cmd_watch(args: argparse.Namespace) -> int:
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    stub, address = _stub(args, args.module)
    kinds = ["EVENT_KIND_" + kind.upper() for kind in args.kind or []]
    request = pb.WatchRequest(after_sequence=args.after, work_order_id=args.work_order or "", kinds=kinds)
    stream = stub.Watch(request)
    outcome = 0
    try:
        if not args.work_order:
            for event in stream:
                print(describe_event(event), flush=True)
            return 0
        columns = (
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.percentage:>3.0f}%"),
            TimeElapsedColumn(),
        )
        with Progress(*columns, transient=False) as progress:
            bar = progress.add_task(args.work_order, total=100)
            for event in stream:
                kind = event.WhichOneof("kind")
                if kind == "work_order_update":
                    update = event.work_order_update
                    progress.update(
                        bar, completed=update.progress_percent, description=f"{args.work_order}: {update.message}"
                    )
                    if update.state in FINAL_STATES:
                        progress.console.print(f"{args.work_order}: {state_name(update.state)}: {update.message}")
                        outcome = 0 if update.state == pb.WORK_ORDER_STATE_DONE else 1
                        stream.cancel()
                        return outcome
                elif kind == "calibration_progress":
                    cp = event.calibration_progress
                    progress.update(
                        bar,
                        completed=cp.percent,
                        description=f"{args.work_order}: {cp.stage} {cp.frames_done}/{cp.frames_total}",
                    )
                else:
                    progress.console.print(describe_event(event))
    except grpc.RpcError as exc:
        if exc.code() == grpc.StatusCode.CANCELLED:
            return outcome
        raise _explain(exc, args.module, address) from None
    except KeyboardInterrupt:
        stream.cancel()
        return 130
    return outcome


def cmd_reprocess(args: argparse.Namespace) -> int:
    """A past night again: the science step (on the compute engine) and discovery, as a preprocessor work order."""
    step = {"science": pb.REPROCESS_STEP_SCIENCE, "discovery": pb.REPROCESS_STEP_DISCOVERY}[args.from_step]
    order = pb.WorkOrder(
        requester="toros-cli reprocess", reprocess_night=pb.ReprocessNight(night=args.night, from_step=step)
    )
    stub, address = _stub(args, "preprocessor")
    try:
        receipt = stub.Submit(order, timeout=UNARY_TIMEOUT)
    except grpc.RpcError as exc:
        raise _explain(exc, "preprocessor", address) from None
    print(receipt.id)
    if args.wait:
        args.module, args.work_order, args.after, args.kind = "preprocessor", receipt.id, 0, None
        return cmd_watch(args)
    return 0


def cmd_alert_replay(args: argparse.Namespace) -> int:
    """Replays notices from files (drills, tests, notices received by other means)."""
    stub, address = _stub(args, "alert")
    failures = 0
    for name in args.files:
        try:
            payload = Path(name).read_bytes()
        except OSError as exc:
            raise CliError(f"{name}: cannot read: {exc.strerror}", 2) from None
        try:
            receipt = stub.Submit(
                pb.WorkOrder(requester="toros-cli replay", process_alert=pb.ProcessAlert(payload=payload, source=name)),
                timeout=UNARY_TIMEOUT,
            )
        except grpc.RpcError as exc:
            failures += 1
            print(f"toros: {name}: {_explain(exc, 'alert', address)}", file=sys.stderr)
            continue
        print(f"{name}: {receipt.id}")
        if args.wait:
            while (
                status := stub.GetWorkOrder(pb.GetWorkOrderRequest(id=receipt.id), timeout=UNARY_TIMEOUT)
            ).state not in FINAL_STATES:
                time.sleep(0.2)
            print(f"  {state_name(status.state)}: {status.message}")
            failures += status.state != pb.WORK_ORDER_STATE_DONE
    return 1 if failures else 0


def cmd_alert_ingest(args: argparse.Namespace) -> int:
    """Builds (or confirms) the galaxy catalog's index ahead of time."""
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    from toros.floor.catalogs import BadCatalog, GalaxyIndex

    if args.file is None:
        config = _config(args)
        if config.alert.catalog is None:
            raise CliError(f"give a catalog FILE, or set alert.catalog in {config.source or 'the config'}", 2)
        path = Path(config.alert.catalog)
    else:
        path = Path(args.file)
    if not path.is_file():
        raise CliError(f"{path}: no such catalog file", 2)
    columns = (TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TimeRemainingColumn())
    with Progress(*columns) as progress:
        bar = progress.add_task(f"indexing {path.name}", total=path.stat().st_size)

        def report(galaxies: int, done: int, total: int) -> None:
            progress.update(bar, completed=done, description=f"indexing {path.name}: {galaxies:,} galaxies")

        try:
            index = GalaxyIndex.open(path, report)
        except BadCatalog as exc:
            raise CliError(str(exc), 2) from None
        progress.update(bar, completed=path.stat().st_size)
    print(f"{len(index):,} galaxies indexed in {GalaxyIndex.folder_for(path)}")
    return 0


def _reference_library(args: argparse.Namespace) -> ReferenceLibrary:
    from toros.preprocessor.references import ReferenceLibrary

    config = _config(args)
    preprocessor = config.preprocessor
    return ReferenceLibrary(
        config.database, Path(config.storage.root), preprocessor.references, preprocessor.calibration.max_frame_bytes
    )


def cmd_references_import(args: argparse.Namespace) -> int:
    """Images with a celestial WCS (survey cutouts…) into the reference library; each named if refused."""
    _quiet_astropy()
    import time

    from toros.preprocessor.references import BadReference

    library = _reference_library(args)
    refused = 0
    try:
        for name in args.files:
            path = Path(name)
            try:
                reference = library.import_file(path, time.time(), filter=args.filter)
            except BadReference as exc:
                print(f"toros: {' '.join(str(exc).split())}", file=sys.stderr)
                refused += 1
                continue
            except OSError as exc:
                print(f"toros: {path}: {exc.strerror or exc}", file=sys.stderr)
                refused += 1
                continue
            print(
                f"reference {reference.id}: {reference.filter} at {reference.ra_deg:.4f} {reference.dec_deg:+.4f}, "
                f"radius {reference.radius_deg * 60:.1f} arcmin, taken {reference.taken} -> {reference.path}"
            )
    finally:
        library.close()
    return 1 if refused else 0


def _quiet_astropy() -> None:
    """Files from outside make astropy warn (truncated data, odd padding, fixed WCS cards): the command says what
    matters itself, in one line, so astropy's own warnings are not printed."""
    from astropy import log as astropy_log

    astropy_log.setLevel("ERROR")


def cmd_difference(args: argparse.Namespace) -> int:
    """ZOGY of any two images (no daemon): difference, significance and the candidates table."""
    _quiet_astropy()
    from toros.preprocessor.discovery import DiscoveryFailed, discover, write_products

    science, reference = Path(args.science), Path(args.reference)
    for path in (science, reference):
        if not path.is_file():
            raise CliError(f"{path}: no such file", 2)
    try:
        result = discover(science, reference)
    except DiscoveryFailed as exc:
        raise CliError(str(exc)) from None
    out = Path(args.out) if args.out else science.parent
    try:
        paths = write_products(result, out)
    except OSError as exc:
        raise CliError(f"--out {out}: cannot write the products there: {exc.strerror or exc}", 2) from None
    for note in result.notes:
        print(f"note: {note}")
    positive = [c for c in result.candidates if not c.negative]
    print(
        f"{len(result.candidates)} detections of |S_corr| >= 5 ({len(positive)} positive); "
        f"registration shift ({result.shift_px[0]:+.2f}, {result.shift_px[1]:+.2f}) px on {result.common_stars} stars"
    )
    for candidate in result.candidates[:5]:
        mag = f"{candidate.mag:6.2f} ± {candidate.mag_err:.2f}" if candidate.mag is not None else "   -   "
        print(
            f"  {candidate.ra_deg:10.6f} {candidate.dec_deg:+10.6f}  x {candidate.x:7.1f} y {candidate.y:7.1f}  "
            f"mag {mag}  S/N {candidate.snr:6.1f}  score {candidate.score:.2f}{'  negative' if candidate.negative else ''}"
        )
    for path in paths:
        print(path)
    return 0


def cmd_candidates(args: argparse.Namespace) -> int:
    """Transient candidates from the database (of one alert), with their reports."""
    from datetime import UTC, datetime

    from toros.preprocessor.candidates import CandidateStore
    from toros.runtime.files import path_inside, safe_name

    config = _config(args)
    store = CandidateStore(config.database)
    try:
        found = store.candidates(args.alert)
        searched = store.searches(args.alert)
        labels = store.labels()
    finally:
        store.close()
    scope = f" of {args.alert}" if args.alert else ""
    print(f"{len(searched)} frames searched{scope}, {len(found)} candidates, {len(labels)} labelled")
    if args.labels:
        from toros.preprocessor.vetting import write_labelled

        rows = write_labelled(Path(args.labels), [(c, labels[c.name]) for c in found if c.name in labels])
        print(f"labels: {rows} labelled detections with their features in {args.labels}")
    for c in found:
        best = c.best
        mag = f"{best.mag:.2f} ± {best.mag_err:.2f} {best.filter}" if best.mag is not None and best.mag_err else "-"
        host = "-"
        if c.host is not None:
            kpc = f", {c.host.offset_kpc:.1f} kpc" if c.host.offset_kpc is not None else ""
            host = f'{c.host.name} ({c.host.offset_arcsec:.1f}"{kpc})'
        first = datetime.fromtimestamp(c.first_seen, UTC).strftime("%Y-%m-%d %H:%M:%S")
        print(
            f"{c.name}  {c.ra_deg:10.6f} {c.dec_deg:+10.6f}  first {first} UTC, {len(c.history)} detection"
            f"{'s' if len(c.history) != 1 else ''}  mag {mag}  score {best.score:.2f}  host {host}"
            + (f"  [{', '.join(sorted(c.flags))}]" if c.flags else "")
            + (f"  labelled {labels[c.name].verdict.value} by {labels[c.name].requester}" if c.name in labels else "")
        )
        print(f"    triplet {best.triplet}")
    if args.alert:
        folder = path_inside(Path(config.storage.root), "reports", safe_name(args.alert, "alert"))
        for name in ("gcn-circular-draft.txt", "tns-at-report.json", "candidates.json"):
            if (folder / name).exists():
                print(f"report {folder / name}")
        packets = sorted((folder / "avro").glob("*.avro")) if (folder / "avro").is_dir() else []
        if packets:
            print(f"report {folder / 'avro'} ({len(packets)} Avro alert packets)")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """A night from a scenario file (the shipped campaign by default), every daemon on loopback, then the
    campaign it made."""
    _quiet_astropy()
    from toros import demo
    from toros.scenarios import SHIPPED, ScenarioError

    try:
        return demo.main(Path(args.scenario) if args.scenario else SHIPPED, Path(args.out))
    except ScenarioError as exc:
        raise CliError(str(exc), 2) from None


def cmd_campaign(args: argparse.Namespace) -> int:
    """An event's campaign as the alert daemon keeps it (the latest updated when no id is given)."""
    from toros.alert.campaign import CAMPAIGN_FILE, describe
    from toros.runtime.files import UnusablePath, path_inside

    root = Path(_config(args).storage.root) / "campaigns"
    if args.alert_id:
        try:
            path = path_inside(root, args.alert_id, CAMPAIGN_FILE)
        except UnusablePath as exc:
            raise CliError(f"{args.alert_id}: not an event id ({exc})", 2) from None
        if not path.is_file():
            raise CliError(f"no campaign for {args.alert_id} under {root}", 1)
    else:
        found = sorted(root.glob(f"*/{CAMPAIGN_FILE}"), key=lambda p: p.stat().st_mtime) if root.is_dir() else []
        if not found:
            raise CliError(f"no campaign yet under {root}", 1)
        path = found[-1]
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise CliError(f"{path}: cannot read: {exc}", 1) from None
    print(json.dumps(data, indent=1) if args.json else describe(data) + f"\n({path})")
    return 0


def cmd_references_list(args: argparse.Namespace) -> int:
    """The reference library, one line per reference (current ones marked *)."""
    library = _reference_library(args)
    try:
        found = library.all()
    finally:
        library.close()
    if not found:
        print("the reference library is empty")
        return 0
    print("  id  filter        RA       Dec radius' taken (UTC)       depth  FWHM\"  source")
    for r in found:
        depth = f"{r.depth:.2f}" if r.depth is not None else "-"
        fwhm = f"{r.fwhm_arcsec:.2f}" if r.fwhm_arcsec is not None else "-"
        print(
            f"{r.id:>4}{'*' if r.current else ' '} {r.filter:6} {r.ra_deg:9.4f} {r.dec_deg:+9.4f} "
            f"{r.radius_deg * 60:6.1f} {r.taken:16} {depth:>6} {fwhm:>6}  {r.source}  {r.path}"
        )
    return 0


def cmd_plan(args: argparse.Namespace) -> int:
    """A night plan (JSON and PNG altitude chart) for a CSV of targets, with the site and constraints of a config."""
    from datetime import date

    from toros.telescope.plan_file import BadTargetFile, plan_from_file

    path = find_config_file(args.config)
    config = load_config(path) if path else Config()
    try:
        night = date.fromisoformat(args.night)
    except ValueError:
        raise CliError(f"--night: not a date YYYY-MM-DD: {args.night!r}", 2) from None
    try:
        result = plan_from_file(config.telescope, Path(args.targets), night, Path(args.out))
    except BadTargetFile as exc:
        raise CliError(str(exc), 2) from None
    except OSError as exc:
        raise CliError(f"{args.out}: cannot write the plan: {exc.strerror}", 1) from None
    plan = result.plan
    if plan.start is None:
        print(f"night {plan.night} at {config.telescope.site.name}: no dark time")
    else:
        print(
            f"night {plan.night} at {config.telescope.site.name}: dark from {plan.start:%H:%M} to {plan.end:%H:%M} UTC"
        )
    print(
        f"{len(plan.blocks)} of {len(result.targets)} targets planned; plan in {result.json_path}, chart in {result.png_path}"
    )
    names = {t.key: t.name for t in result.targets}
    for key, reason in plan.unobservable.items():
        print(f"  not observable: {names[key]} (line {key}): {reason}")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from toros.daemons import serve
    from toros.runtime.server import StartupError

    path = find_config_file(args.config)
    if path is None:
        raise CliError("no config file: give --config FILE, set TOROS_CONFIG, or create /etc/toros/toros.conf.yaml", 2)
    if args.module == "web":
        from toros.web.server import serve as serve_web

        serve_web(load_config(path))
        return 0
    if args.module in ("dask-scheduler", "dask-worker"):
        from toros.preprocessor import cluster_commands
        from toros.runtime.logs import setup_logging

        config = load_config(path)
        setup_logging(config.logging, args.module)
        compute = config.preprocessor.compute
        command = (
            cluster_commands.scheduler_command(compute)
            if args.module == "dask-scheduler"
            else cluster_commands.worker_command(compute, args.processes)
        )
        cluster_commands.run(command)
    try:
        serve(args.module, load_config(path))
    except StartupError as exc:
        raise CliError(f"cannot start the {args.module}: {exc}", 1) from None
    return 0


MIN_PASSWORD_LENGTH = 12


def cmd_hash_password(args: argparse.Namespace) -> int:
    """A password's argon2id hash for web.users: asked twice without echo on a terminal, else read from the first
    line of standard input; at least MIN_PASSWORD_LENGTH characters."""
    import getpass

    from toros.web.accounts import hash_password

    if sys.stdin.isatty():
        password = getpass.getpass("Password (at least 12 characters, not shown): ")
        if password and getpass.getpass("The same again: ") != password:
            raise CliError("the two passwords differ: nothing was hashed", 2)
    else:
        password = sys.stdin.readline().rstrip("\r\n")
    if not password:
        raise CliError("no password on standard input (e.g. `toros web hash-password < file`, or type it)", 2)
    if len(password) < MIN_PASSWORD_LENGTH:
        raise CliError(f"the password has {len(password)} characters: at least {MIN_PASSWORD_LENGTH} are needed", 2)
    print(hash_password(password))
    return 0


# -- argument parsing ------------------------------------------------------------------------------


def _add_submit_options(parser: argparse.ArgumentParser, *, suppress: bool) -> None:
    """Options of `submit`, accepted before or after the task name."""

    def default(value: Any) -> Any:
        return argparse.SUPPRESS if suppress else value

    parser.add_argument(
        "--config", default=default(None), help="config file (default: $TOROS_CONFIG, then /etc/toros/toros.conf.yaml)"
    )
    parser.add_argument(
        "--address", default=default(None), help="host:port of the daemon, instead of the one in the config"
    )
    parser.add_argument("--file", default=default(None), help="a whole work order as YAML or JSON (proto field names)")
    parser.add_argument("--id", default=default(None), help="idempotency key (default: assigned by the daemon)")
    parser.add_argument("--priority", type=int, default=default(None), help="0-100, higher first (default 50)")
    parser.add_argument("--requester", default=default(None), help="who asks (default toros-cli)")
    parser.add_argument(
        "--wait", action="store_true", default=default(False), help="follow the work order until it finishes"
    )


def _sequence(text: str) -> int:
    """An event sequence number: 0 to 2**64 - 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if not 0 <= value < 2**64:
        raise argparse.ArgumentTypeError(f"must be 0 or more (an event sequence number), got {value}")
    return value


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="toros", description="TOROS pipeline manager")
    top.add_argument("--version", action="version", version=f"toros {__version__}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", help="config file (default: $TOROS_CONFIG, then /etc/toros/toros.conf.yaml)")
    client = argparse.ArgumentParser(add_help=False, parents=[common])
    client.add_argument("--address", help="host:port of the daemon, instead of the one in the config")
    commands = top.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", parents=[common], help="run a daemon (or the web console) in the foreground")
    serve.add_argument("module", choices=(*MODULES, "web", "dask-scheduler", "dask-worker"))
    serve.add_argument(
        "--processes", default="auto", help="dask-worker: worker processes on this machine (default: one per core)"
    )
    serve.set_defaults(run=cmd_serve)

    web = commands.add_parser("web", help="the web console's accounts")
    web_commands = web.add_subparsers(dest="web_command", required=True, metavar="WEB_COMMAND")
    hash_password = web_commands.add_parser(
        "hash-password", help="read a password on standard input, print its hash for web.users[].password_hash"
    )
    hash_password.set_defaults(run=cmd_hash_password)

    submit = commands.add_parser("submit", help="submit a work order")
    submit.add_argument("module", choices=MODULES)
    _add_submit_options(submit, suppress=False)
    tasks = submit.add_subparsers(dest="task", metavar="TASK")
    for task, module in TASK_MODULES.items():
        descriptor = _task_descriptor(task)
        task_parser = tasks.add_parser(task, help=f"{module}: {descriptor.name}")
        _add_submit_options(task_parser, suppress=True)
        _add_task_options(task_parser, descriptor)
    submit.set_defaults(run=cmd_submit)

    status = commands.add_parser("status", parents=[client], help="state of one or all daemons")
    status.add_argument("module", nargs="?", choices=MODULES)
    status.set_defaults(run=cmd_status)

    work_order = commands.add_parser("work-order", parents=[client], help="state of one work order")
    work_order.add_argument("module", choices=MODULES)
    work_order.add_argument("id")
    work_order.set_defaults(run=cmd_work_order)

    cancel = commands.add_parser("cancel", parents=[client], help="cancel a work order")
    cancel.add_argument("module", choices=MODULES)
    cancel.add_argument("id")
    cancel.add_argument("--reason", default="cancelled by an operator")
    cancel.set_defaults(run=cmd_cancel)

    reprocess = commands.add_parser(
        "reprocess", parents=[client], help="a past night's science step and discovery again (preprocessor work order)"
    )
    reprocess.add_argument("--night", required=True, metavar="YYYY-MM-DD")
    reprocess.add_argument("--from", dest="from_step", choices=("science", "discovery"), default="science")
    reprocess.add_argument("--wait", action="store_true", help="follow the work order until it finishes")
    reprocess.set_defaults(run=cmd_reprocess)

    alert = commands.add_parser("alert", help="alert robot: replay notices, index the galaxy catalog")
    alert_commands = alert.add_subparsers(dest="alert_command", required=True, metavar="ACTION")
    replay = alert_commands.add_parser("replay", parents=[client], help="submit notices from files (drills, tests)")
    replay.add_argument("files", nargs="+", metavar="FILE", help="VOEvent XML, igwn.gwalert JSON or Avro")
    replay.add_argument("--wait", action="store_true", help="wait for each to be processed")
    replay.set_defaults(run=cmd_alert_replay)
    ingest = alert_commands.add_parser("ingest-catalog", help="build the galaxy catalog's index ahead of time")
    ingest.add_argument(
        "file", nargs="?", help="GLADE+ text, GLADE 2.3 / CSV, or GWGC (default: the config's alert.catalog)"
    )
    ingest.add_argument(
        "--config",
        help="config file whose alert.catalog to index (default: $TOROS_CONFIG, then /etc/toros/toros.conf.yaml)",
    )
    ingest.set_defaults(run=cmd_alert_ingest)

    references = commands.add_parser("references", help="the reference library (images to subtract)")
    reference_commands = references.add_subparsers(dest="references_command", required=True, metavar="ACTION")
    importing = reference_commands.add_parser(
        "import", parents=[common], help="add images with a celestial WCS (survey cutouts…)"
    )
    importing.add_argument("files", nargs="+", metavar="FILE", help="FITS images with a WCS")
    importing.add_argument("--filter", help="the images' filter when their header has no FILTER")
    importing.set_defaults(run=cmd_references_import)
    listing = reference_commands.add_parser("list", parents=[common], help="every reference, current ones marked *")
    listing.set_defaults(run=cmd_references_list)

    candidates = commands.add_parser(
        "candidates", parents=[common], help="transient candidates found by the preprocessor, and their reports"
    )
    candidates.add_argument("--alert", metavar="ID", help="only this alert's (superevent id)")
    candidates.add_argument(
        "--labels",
        metavar="FILE.csv",
        help="write the labelled candidates' detections with the classifier's features (for train_vetting.py --labels)",
    )
    candidates.set_defaults(run=cmd_candidates)

    campaign = commands.add_parser(
        "campaign", parents=[common], help="an event's campaign: sites, pointings, coverage, candidates, timeline"
    )
    campaign.add_argument("alert_id", nargs="?", metavar="ALERT_ID", help="the superevent id (default: the latest)")
    campaign.add_argument("--json", action="store_true", help="the whole campaign as JSON")
    campaign.set_defaults(run=cmd_campaign)

    demo = commands.add_parser(
        "demo", help="run a night from a scenario file on loopback daemons and print its campaign (make demo)"
    )
    demo.add_argument("--scenario", metavar="FILE", help="a scenario (YAML; default: the shipped two-site campaign)")
    demo.add_argument("--out", metavar="DIR", default="demo", help="where the night's nodes live (default: ./demo)")
    demo.set_defaults(run=cmd_demo)

    difference = commands.add_parser(
        "difference", help="subtract a reference from a science image (ZOGY) and list what changed; no daemon"
    )
    difference.add_argument("science", metavar="SCIENCE.fits")
    difference.add_argument("reference", metavar="REFERENCE.fits")
    difference.add_argument("--out", metavar="DIR", help="where the products go (default: beside SCIENCE)")
    difference.set_defaults(run=cmd_difference)

    plan = commands.add_parser("plan", parents=[common], help="plan a night for a CSV of targets (JSON + PNG chart)")
    plan.add_argument(
        "--targets",
        required=True,
        metavar="FILE.csv",
        help="columns name, ra_deg, dec_deg [, exposure_time_s, exposure_count, priority, score]",
    )
    plan.add_argument(
        "--night", required=True, metavar="YYYY-MM-DD", help="the night's date (local date at noon before it)"
    )
    plan.add_argument(
        "--out", required=True, metavar="plan.json", help="where to write the plan; the chart goes beside it as .png"
    )
    plan.set_defaults(run=cmd_plan)

    watch = commands.add_parser("watch", parents=[client], help="follow a daemon's events")
    watch.add_argument("module", choices=MODULES)
    watch.add_argument("--work-order", help="only this work order, with a progress bar, until it finishes")
    watch.add_argument("--after", type=_sequence, default=0, help="start after this event sequence (default: all)")
    watch.add_argument(
        "--kind", action="append", choices=[k.removeprefix("EVENT_KIND_").lower() for k in pb.EventKind.keys()[1:]]
    )
    watch.set_defaults(run=cmd_watch)
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return int(args.run(args))
    except ConfigError as exc:
        print(f"toros: config error: {exc}", file=sys.stderr)
        return 2
    except CliError as exc:
        print(f"toros: {' '.join(str(exc).split())}", file=sys.stderr)  # one line, whatever a library said
        return exc.code
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
