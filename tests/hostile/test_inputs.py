"""Hostile input: what an attacker, or an unlucky operator, sends, and what must hold all the same.

Notices of both formats mutated field by field (hypothesis) are refused with the field named, through Submit
and through the Kafka listener, which then carries on with the next notice; names that try to leave the
storage root; sky-map downloads that are not https, point at this machine, are huge, slow or silent; gzip
bombs, embedded, downloaded and as raw frames (memory read from /proc).
"""

from __future__ import annotations

import base64
import copy
import gzip
import http.server
import io
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from datetime import datetime
from pathlib import Path

import grpc
import numpy as np
import pytest
from astropy.io import fits
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lxml import etree
from support import DATA, MULTIORDER, SENSOR, FakeConsumer, calibrate, done, submit, wait_for

from toros.alert.listeners import KafkaListener
from toros.alert.notices import BadNotice, parse_notice
from toros.alert.settings import KafkaIntake, SkymapDownload
from toros.alert.skymap import BadSkymap, download, read_skymap
from toros.daemons import build_daemon
from toros.generated import toros_pb2 as pb
from toros.preprocessor.inventory import BadFrame, read_frame
from toros.preprocessor.settings import CalibrationConfig
from toros.runtime.files import OutsideStorageRoot, path_inside, safe_name
from toros.simulation.ccd import write_night
from toros.telescope.images import Exposure, file_name

JSON_NOTICE = json.loads((DATA / "MS181101ab-preliminary.json").read_text())
VOEVENT_NOTICE = (DATA / "MS181101ab-2-Preliminary.xml").read_bytes()
DELETE = object()

# Any JSON value, nested a little: what a broken or hostile producer may put in any field.
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**400)
    | st.floats()
    | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=8,
)


def json_paths(value: object, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every member of the sample notice, at every depth, and a few that it lacks but parsers read."""
    paths = []
    if isinstance(value, dict):
        for key, member in value.items():
            paths.append(prefix + (key,))
            paths += json_paths(member, prefix + (key,))
    return paths


JSON_FIELDS = json_paths(JSON_NOTICE) + [("serial",), ("event", "properties", "HasMassGap")]


def mutated_json(path: tuple[str, ...], value: object) -> bytes:
    notice = copy.deepcopy(JSON_NOTICE)
    parent = notice
    for key in path[:-1]:
        parent = parent[key]
    if value is DELETE:
        parent.pop(path[-1], None)
    else:
        parent[path[-1]] = value
    return json.dumps(notice).encode()


def accepted_or_refused_naming(payload: bytes, field: str) -> None:
    """The parser either reads the notice or refuses it with its own reason naming the field, never with
    another exception and never through the catch-all."""
    try:
        parse_notice(payload)
    except BadNotice as exc:
        assert not str(exc).startswith("unreadable notice"), f"{field}: the parser did not know this case: {exc}"
        assert field in str(exc), f"{field} not named in: {exc}"


@pytest.mark.parametrize("path", JSON_FIELDS, ids=".".join)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(value=json_values | st.just(DELETE))
def test_every_field_of_a_gwalert_json_notice_mutated(path, value):
    accepted_or_refused_naming(mutated_json(path, value), ".".join(path))


VOEVENT_PARAMS = [p.get("name") for p in etree.fromstring(VOEVENT_NOTICE).iter("Param")]
xml_text = st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=30)


@pytest.mark.parametrize("name", VOEVENT_PARAMS)
@settings(max_examples=25, deadline=None)
@given(value=xml_text | st.none())
def test_every_param_of_a_voevent_mutated(name, value):
    root = etree.fromstring(VOEVENT_NOTICE)
    param = next(p for p in root.iter("Param") if p.get("name") == name)
    if value is None:
        param.getparent().remove(param)
    else:
        param.set("value", value)
    accepted_or_refused_naming(etree.tostring(root), name)


@pytest.mark.parametrize("element", ["Who/Date", ".//WhereWhen//ISOTime"])
@settings(max_examples=25, deadline=None)
@given(value=xml_text)
def test_voevent_times_mutated(element, value):
    root = etree.fromstring(VOEVENT_NOTICE)
    root.find(element).text = value
    accepted_or_refused_naming(etree.tostring(root), "Date" if element == "Who/Date" else "ISOTime")


def test_json_nested_100k_deep_is_refused():
    with pytest.raises(BadNotice, match="nested too deeply"):
        parse_notice(b"[" * 100_000 + b"]" * 100_000, pb.ALERT_FORMAT_GWALERT_JSON)
    deep_event = (
        b'{"superevent_id": "S1", "alert_type": "PRELIMINARY", "event": ' + b'{"a":' * 100_000 + b"1" + b"}" * 100_001
    )
    with pytest.raises(BadNotice, match="nested too deeply"):
        parse_notice(deep_event)


BAD_NOTICES = [
    (mutated_json(("event", "significant"), {}), "event.significant: must be true or false"),
    (mutated_json(("event", "far"), "often"), "event.far: must be a number"),
    (mutated_json(("serial",), "abc"), "serial: must be an integer"),
    (mutated_json(("event", "properties"), ["HasNS"]), "event.properties: must be an object or null"),
    (mutated_json(("event", "properties", "HasNS"), "yes"), "event.properties.HasNS: must be a number"),
    (mutated_json(("event", "instruments"), "H1,L1"), "event.instruments: must be a list of strings"),
    (mutated_json(("superevent_id",), ["S1"]), "superevent_id: must be a string"),
    (mutated_json(("superevent_id",), "../x"), "superevent_id: must be 1-64 characters"),
    (mutated_json(("alert_type",), "/tmp/x"), "alert_type: must be a word"),
    (
        VOEVENT_NOTICE.replace(b'name="Pkt_Ser_Num" value="2"', b'name="Pkt_Ser_Num" value="two"'),
        "Pkt_Ser_Num: must be a whole number",
    ),
    (VOEVENT_NOTICE.replace(b'value="MS181101ab"', b'value="/tmp/x"'), "GraceID: must be 1-64 characters"),
]


@pytest.mark.parametrize("payload, reason", BAD_NOTICES, ids=[r.split(":")[0] for _, r in BAD_NOTICES])
def test_bad_fields_are_refused_naming_them(payload, reason):
    with pytest.raises(BadNotice, match=reason.replace(".", r"\.")):
        parse_notice(payload)


def test_submit_answers_invalid_argument_naming_the_field_and_keeps_serving(observatory):
    _, alert = observatory
    _, stub = alert()
    for index, (payload, reason) in enumerate(BAD_NOTICES):
        with pytest.raises(grpc.RpcError) as error:
            submit(stub, payload, f"bad-{index}")
        assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT, error.value.details()
        assert error.value.details().startswith(f"process_alert.payload: {reason}")
    submit(stub, "MS181101ab-preliminary.json", "good")
    assert "macon: 5 targets accepted" in done(stub, "good").message


def test_kafka_intake_goes_past_every_bad_notice(observatory):
    """Before: the first bad notice raised out of the listener, which reconnected and read it again, forever."""
    _, alert = observatory
    daemon, stub = alert()
    log = [payload for payload, _ in BAD_NOTICES] + [
        b'{"a":' * 100_000,
        (DATA / "MS181101ab-preliminary.json").read_bytes(),
    ]
    committed: list[int] = []
    listener = KafkaListener(
        KafkaIntake(enabled=True), daemon.module.receive, lambda: FakeConsumer(log, committed, daemon.journal)
    )
    listener.start()
    try:
        wait_for(lambda: committed == list(range(len(log))), timeout=30)
    finally:
        listener.stop()
    good = f"kafka-igwn.gwalert-0-{len(log) - 1}"
    assert "macon: 5 targets accepted" in done(stub, good).message
    for offset, (_, reason) in enumerate(BAD_NOTICES):
        events = list(stub.Watch(pb.WatchRequest(work_order_id=f"kafka-igwn.gwalert-0-{offset}", replay_only=True)))
        assert events[0].alert_processed.message.startswith(f"refused: process_alert.payload: {reason}")
        assert "(raw notice " in events[0].alert_processed.message


# -- nothing derived from input leaves the storage root ----------------------------------------------


@pytest.mark.parametrize("text", ["../x", "/tmp/x", "..", ".", "", "a/../../b", "x\x00y", "é" * 300, "-rf"])
def test_names_from_input_stay_one_safe_component(text, tmp_path):
    name = safe_name(text)
    assert name and "/" not in name and not name.startswith(".") and len(name) <= 100
    assert path_inside(tmp_path, "alerts", text, text).parent.parent.parent == tmp_path


def test_a_link_out_of_the_root_is_refused(tmp_path):
    (tmp_path / "root").mkdir()
    (tmp_path / "root" / "alerts").symlink_to(tmp_path)
    with pytest.raises(OutsideStorageRoot):
        path_inside(tmp_path / "root", "alerts", "S1")


def test_a_raw_object_name_cannot_leave_the_night_folder():
    exposure = Exposure(pb.IMAGE_TYPE_LIGHT, 30.0, "r", "../../../etc/cron.d/x", datetime(2026, 1, 1), "wo")
    assert file_name(exposure, 1) == "20260101T000000-000001-light-.._.._etc_cron.d_x.fits"  # one name, no folder


def test_a_filter_name_from_a_raw_header_cannot_place_masters_outside_the_root(tmp_path):
    """Before: FILTER = '../../../../evil' put the master flat outside the storage root."""
    root = tmp_path / "root"
    paths = write_night(root / "2026-11-23", SENSOR, lights=1, filter="../../../../evil")
    result, recorder = calibrate(root, paths)
    assert result.calibrated and not result.problems
    for path, _ in recorder.products:
        assert root.resolve() in path.resolve().parents, path
    assert not list(tmp_path.glob("evil*"))


# -- sky-map downloads --------------------------------------------------------------------------------


class Hostile(http.server.BaseHTTPRequestHandler):
    """A web server that misbehaves in the ways the review tried."""

    protocol_version = "HTTP/1.1"

    def do_GET(self):
        if self.path == "/map.fits":
            body = MULTIORDER.read_bytes()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        elif self.path == "/declared-huge":
            self.send_response(200)
            self.send_header("Content-Length", str(600 * 1024 * 1024))
            self.end_headers()
            self.wfile.write(b"\0" * 1024)
        elif self.path == "/endless":  # no length: zeros until the client hangs up
            self.send_response(200)
            self.send_header("Connection", "close")
            self.end_headers()
            try:
                while True:
                    self.wfile.write(b"\0" * 65536)
            except OSError:
                pass
        elif self.path == "/slow":  # a byte now and then: every read is within the timeout
            self.send_response(200)
            self.send_header("Content-Length", "1000")
            self.end_headers()
            try:
                for _ in range(1000):
                    self.wfile.write(b"x")
                    self.wfile.flush()
                    time.sleep(0.3)
            except OSError:
                pass
        elif self.path == "/to-localhost":
            self.send_response(302)
            self.send_header("Location", f"http://localhost:{self.server.server_port}/map.fits")
            self.send_header("Content-Length", "0")
            self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def hostile_server():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hostile)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()


def no_wait(seconds: float) -> None:
    time.sleep(min(seconds, 0.1))


LOCAL = dict(allow_http=True, allow_local_hosts=True, retries=0, timeout_s=2)


@pytest.mark.parametrize(
    "url, reason",
    [
        ("file:///etc/passwd", "the file scheme is not allowed (only https"),
        ("file:///dev/zero", "the file scheme is not allowed"),
        ("ftp://example.org/map.fits", "the ftp scheme is not allowed"),
        (
            "http://example.org/map.fits",
            "the http scheme is not allowed (only https; alert.skymap.allow_http allows http)",
        ),
        ("https://127.0.0.1/map.fits", "127.0.0.1 is a private, loopback or link-local address"),
        ("https://localhost/map.fits", "localhost is a private, loopback or link-local address"),
        ("https://[::1]/map.fits", "::1 is a private, loopback or link-local address"),
        ("https://169.254.169.254/latest/meta-data", "169.254.169.254 is a private, loopback or link-local address"),
        ("https://[::ffff:127.0.0.1]/x", "is a private, loopback or link-local address"),
        ("https://10.1.2.3/map.fits", "10.1.2.3 is a private, loopback or link-local address"),
        ("https://172.20.0.5/map.fits", "172.20.0.5 is a private, loopback or link-local address"),
        ("https://192.168.1.10/map.fits", "192.168.1.10 is a private, loopback or link-local address"),
        ("https://100.64.0.1/map.fits", "100.64.0.1 is a private, loopback or link-local address"),  # CGNAT
        ("https://[fd00::1]/map.fits", "fd00::1 is a private, loopback or link-local address"),  # ULA
    ],
)
def test_refused_urls_are_never_fetched(url, reason):
    started = time.monotonic()
    with pytest.raises(BadSkymap, match=reason.replace("(", r"\(").replace(")", r"\)").replace(".", r"\.")):
        download(url, SkymapDownload(retries=3), no_wait)
    assert time.monotonic() - started < 1, "refused at once, not retried"


def test_a_mirror_rewrite_is_the_operators_and_may_be_local(hostile_server):
    settings = SkymapDownload(rewrite={"https://gracedb.example/": f"{hostile_server}/"})
    assert bytes(download("https://gracedb.example/map.fits", settings, no_wait)) == MULTIORDER.read_bytes()


def test_a_redirect_to_this_machine_is_refused(hostile_server):
    settings = SkymapDownload(allow_http=True, rewrite={"https://gracedb.example/": f"{hostile_server}/"})
    with pytest.raises(BadSkymap, match="localhost is a private, loopback or link-local address"):
        download("https://gracedb.example/to-localhost", settings, no_wait)


def test_a_declared_huge_body_is_refused_before_it_is_read(hostile_server):
    with pytest.raises(BadSkymap, match=r"629145600 bytes is more than alert\.skymap\.max_bytes \(1048576\)"):
        download(f"{hostile_server}/declared-huge", SkymapDownload(max_bytes=1 << 20, **LOCAL), no_wait)


def test_an_endless_body_stops_at_the_cap(hostile_server):
    with pytest.raises(BadSkymap, match=r"more than alert\.skymap\.max_bytes \(1048576\) bytes"):
        download(f"{hostile_server}/endless", SkymapDownload(max_bytes=1 << 20, **LOCAL), no_wait)


def test_a_slow_server_is_cut_at_the_deadline(hostile_server):
    """Before: each read had its own timeout, so a byte every 3 s ran for minutes."""
    started = time.monotonic()
    with pytest.raises(BadSkymap, match=r"not done within alert\.skymap\.deadline_s \(2 s\)"):
        download(f"{hostile_server}/slow", SkymapDownload(deadline_s=2, **{**LOCAL, "retries": 5}), no_wait)
    assert time.monotonic() - started < 4


def test_a_server_that_never_answers_is_cut_at_the_deadline():
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        started = time.monotonic()
        with pytest.raises(BadSkymap, match="deadline_s"):
            download(
                f"http://127.0.0.1:{silent.getsockname()[1]}/map.fits",
                SkymapDownload(deadline_s=2, **{**LOCAL, "timeout_s": 30, "retries": 3}),
                no_wait,
            )
        assert time.monotonic() - started < 4


# -- gzip bombs -----------------------------------------------------------------------------------------


def gzip_bomb(gib: float = 1.0) -> bytes:
    """Gzip members of 16 MiB of zeros, concatenated: about 1 MB that decompresses to ``gib`` GiB."""
    member = gzip.compress(b"\0" * (16 << 20), compresslevel=9)
    return member * int(gib * 64)


def test_an_embedded_gzip_bomb_is_refused_within_the_cap_of_memory():
    """Before: gzip.decompress held the whole GiB (the daemon reached 2.4 GB)."""
    script = (
        "import sys, resource\n"
        "from toros.alert.skymap import BadSkymap, read_skymap\n"
        "bomb = sys.stdin.buffer.read()\n"
        "before = int(open('/proc/self/status').read().split('VmHWM:')[1].split()[0])\n"
        "try:\n"
        "    read_skymap(bomb, max_bytes=64 << 20)\n"
        "except BadSkymap as exc:\n"
        "    print(exc)\n"
        "after = int(open('/proc/self/status').read().split('VmHWM:')[1].split()[0])\n"
        "print((after - before) // 1024)\n"
    )
    bomb = gzip_bomb()
    assert len(bomb) < 1.5e6
    run = subprocess.run([sys.executable, "-c", script], input=bomb, capture_output=True, timeout=120)
    message, grown_mib = run.stdout.decode().strip().splitlines()
    assert message == "gzipped sky map of more than 67108864 bytes once decompressed (alert.skymap.max_bytes)", (
        run.stderr
    )
    assert int(grown_mib) < 64 * 1.25 + 16, f"peak memory grew by {grown_mib} MiB for a 64 MiB cap"


def test_a_gzip_bomb_in_a_notice_fails_its_work_order_and_the_daemon_serves_on(observatory):
    _, alert = observatory
    _, stub = alert(skymap={"max_bytes": 8 << 20})
    notice = copy.deepcopy(JSON_NOTICE)
    notice["event"]["skymap"] = base64.b64encode(gzip_bomb(0.25)).decode()
    submit(stub, json.dumps(notice).encode(), "bomb")
    status = done(stub, "bomb")
    assert status.state == pb.WORK_ORDER_STATE_FAILED
    assert "sky map unavailable: gzipped sky map of more than 8388608 bytes" in status.message
    submit(stub, "MS181101ab-preliminary.json", "after")
    assert done(stub, "after").state == pb.WORK_ORDER_STATE_DONE


def test_a_downloaded_map_too_big_once_gunzipped_is_refused():
    with pytest.raises(BadSkymap, match=r"more than 1048576 bytes once decompressed"):
        read_skymap(gzip.compress(MULTIORDER.read_bytes() * 2), max_bytes=1 << 20)
    assert read_skymap(gzip.compress(MULTIORDER.read_bytes())).has_distance


def test_a_gzipped_raw_frame_too_big_once_decompressed_is_named_and_refused(tmp_path):
    header = fits.Header({"IMAGETYP": "BIAS", "EXPTIME": 0.0})
    plain = io.BytesIO()
    fits.PrimaryHDU(np.zeros((1024, 1024), np.int16), header).writeto(plain)
    frame = tmp_path / "bias.fits.gz"
    frame.write_bytes(gzip.compress(plain.getvalue()) + gzip_bomb(1 / 64))
    with pytest.raises(
        BadFrame, match=r"gzip data of more than 4194304 bytes once decompressed \(calibration\.max_frame_bytes\)"
    ):
        read_frame(frame, CalibrationConfig(max_frame_bytes=4 << 20))
    frame.write_bytes(gzip.compress(plain.getvalue()))
    assert read_frame(frame, CalibrationConfig(max_frame_bytes=4 << 20)).kind == "bias"
    plain_frame = tmp_path / "bias.fits"
    plain_frame.write_bytes(plain.getvalue())
    with pytest.raises(BadFrame, match=r"bytes, more than calibration\.max_frame_bytes \(1048576\)"):
        read_frame(plain_frame, CalibrationConfig(max_frame_bytes=1 << 20))


# -- only regular files inside the root are read ------------------------------------------------------


def test_a_fifo_among_the_frames_is_named_and_blocks_nothing(tmp_path):
    """Before: opening the FIFO blocked the worker forever, and CancelWorkOrder could not stop it."""
    night = tmp_path / "2026-11-23"
    paths = write_night(night, SENSOR, lights=1)
    fifo = night / "pipe.fits"
    os.mkfifo(fifo)
    result, _ = calibrate(tmp_path, paths + [fifo])
    assert len(result.calibrated) == 1
    assert f"pipe.fits: {fifo}: is a FIFO, not a regular file" in result.problems


def test_links_out_of_the_root_are_not_followed(tmp_path):
    """Before: calibrate_night read through links to files outside the root (a master bias was built of them)."""
    root = tmp_path / "root"
    night = root / "2026-11-23"
    paths = write_night(night, SENSOR, lights=1)
    outside = write_night(tmp_path / "elsewhere", SENSOR, biases=3, darks=0, flats=0, lights=0, seed=7)
    links = []
    for index, target in enumerate(outside):
        links.append(night / f"zz-bias-{index}.fits")
        links[-1].symlink_to(target)
    result, _ = calibrate(root, paths + links)
    assert len(result.calibrated) == 1
    for link in links:
        assert any(p.startswith(f"{link.name}: ") and "is outside the storage root" in p for p in result.problems), (
            result.problems
        )
    bias = next(m for m in result.masters if "bias" in m.name)
    assert fits.getheader(bias)["NCOMBINE"] == 5, "built from the night's own five biases only"


def test_submit_refuses_a_fifo_to_calibrate(make_config, start_daemon, tmp_path):
    from toros.generated.toros_pb2_grpc import FrontDeskStub

    daemon = start_daemon(make_config(preprocessor={"port": 0}), lambda c: build_daemon("preprocessor", c))
    fifo = daemon.storage_root / "pipe.fits"
    os.mkfifo(fifo)
    stub = FrontDeskStub(grpc.insecure_channel(f"127.0.0.1:{daemon.port}"))
    with pytest.raises(grpc.RpcError) as error:
        stub.Submit(pb.WorkOrder(calibrate_images=pb.CalibrateImages(paths=[str(fifo)])))
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.value.details() == "calibrate_images.paths[0]: is not a regular file"


# -- products belong to their inputs ---------------------------------------------------------------------


def test_a_raw_with_the_stem_of_an_already_calibrated_frame_gets_its_own_product(tmp_path):
    """Before: it was reported calibrated with the old product, made from another file by another work order."""
    night = tmp_path / "2026-11-23"
    paths = write_night(night, SENSOR, lights=1)
    first, _ = calibrate(tmp_path, paths)
    light = next(p for p in paths if fits.getval(p, "IMAGETYP") == "LIGHT")
    other = tmp_path / "incoming" / "scope" / light.name
    other.parent.mkdir(parents=True)
    other.write_bytes(
        write_night(tmp_path / "other", SENSOR, biases=0, darks=0, flats=0, lights=1, seed=5)[0].read_bytes()
    )
    second, _ = calibrate(tmp_path, paths[:-1] + [other])
    assert first.calibrated[0].name == light.name.replace(".fits", "_cal.fits")
    assert second.calibrated[0] != first.calibrated[0] and second.calibrated[0].name.endswith("_cal.fits")
    assert fits.getval(second.calibrated[0], "RAWID").startswith("incoming/scope/")
    assert not np.array_equal(fits.getdata(first.calibrated[0]), fits.getdata(second.calibrated[0]))
    again, _ = calibrate(tmp_path, paths[:-1] + [other])
    assert again.calibrated == second.calibrated, "the same raw again: its own product is reused"


def test_temporary_files_left_by_a_crash_are_removed_and_one_being_written_is_not(tmp_path, make_config, start_daemon):
    from toros.runtime.files import atomic_write, remove_stale_parts

    night = tmp_path / "data" / "2026-11-23"
    night.mkdir(parents=True)
    stale = night / ".frame.fits.abc123.part"
    stale.write_bytes(b"half a frame")
    with atomic_write(night / "live.fits") as stream:
        stream.write(b"being written")
        assert remove_stale_parts(tmp_path / "data") == [stale]
        assert len(list(night.glob(".live.fits.*.part"))) == 1
    assert (night / "live.fits").read_bytes() == b"being written"
    stale.write_bytes(b"half a frame")
    start_daemon(make_config(telescope={"port": 0}, storage={"root": str(tmp_path / "data")}))
    assert not stale.exists()


# -- degenerate calibration data --------------------------------------------------------------------------


def degenerate_copies(frames: list[Path], value: float, count: int, prefix: str) -> list[Path]:
    """Copies of the first of ``frames`` (same header and setup) whose every pixel is ``value``."""
    copies = []
    for index in range(count):
        header = fits.getheader(frames[0])
        for keyword in ("BZERO", "BSCALE"):
            header.remove(keyword, ignore_missing=True)
        data = np.full(fits.getdata(frames[0]).shape, value, np.float32)
        copies.append(frames[0].with_name(f"{prefix}-{index}.fits"))
        fits.PrimaryHDU(data, header).writeto(copies[-1])
    return copies


def of_type(paths: list[Path], imagetyp: str) -> list[Path]:
    return [p for p in paths if fits.getval(p, "IMAGETYP") == imagetyp]


def test_flats_of_median_zero_or_nan_are_named_and_the_night_goes_on(tmp_path):
    """Before: a flat of median 0 failed the whole night with ZeroDivisionError."""
    night = tmp_path / "2026-11-23"
    paths = write_night(night, SENSOR, biases=0, darks=0, flats=3, lights=1)
    flats = of_type(paths, "FLAT")
    zero = degenerate_copies(flats, 0.0, 2, "zero-flat")
    nan = degenerate_copies(flats, np.nan, 2, "nan-flat")
    result, _ = calibrate(tmp_path, paths + zero + nan)
    for path in zero:
        assert f"{path.name}: median 0: not a usable flat frame" in result.problems
    for path in nan:
        assert f"{path.name}: median nan: not a usable flat frame" in result.problems
    flat = next(m for m in result.masters if "flat" in m.name)
    assert fits.getval(flat, "NCOMBINE") == 3 and np.isfinite(fits.getdata(flat)).all()


def test_a_master_of_nan_frames_is_refused(tmp_path):
    """Before: all-NaN biases gave a 100% NaN master bias, and the work order ended DONE without a word."""
    night = tmp_path / "2026-11-23"
    paths = write_night(night, SENSOR, biases=1, darks=0, flats=0, lights=1)
    nan = degenerate_copies(of_type(paths, "BIAS"), np.nan, 4, "nan-bias")
    result, _ = calibrate(tmp_path, [p for p in paths if p not in of_type(paths, "BIAS")] + nan)
    assert "master bias: 100% of its pixels are not finite: refused" in result.problems
    assert not result.masters and not result.calibrated


# -- a full disk is a FAULT, as documented ------------------------------------------------------------------


def test_a_frame_bigger_than_the_free_space_faults_the_camera(telescope, tiny_disk):  # noqa: F811
    """Before: ENOSPC inside astropy's write surfaced as AttributeError from its free-space check, so the
    camera never went to FAULT "storage: …"."""
    from support import calibrations, devices, run

    stub = telescope(storage=str(tiny_disk), camera={"width": 320, "height": 256, "overscan": 0, "readout_s": 1.0})
    status = run(stub, pb.WorkOrder(id="big", take_calibrations=calibrations(pb.IMAGE_TYPE_BIAS, 1)))
    assert status.state == pb.WORK_ORDER_STATE_FAILED and "No space left on device" in status.message, status.message
    camera = devices(stub)["camera"]
    assert camera.state == pb.DEVICE_STATE_FAULT
    assert camera.message == f"storage: cannot store images under {tiny_disk}: No space left on device"
    assert not list(tiny_disk.rglob(".*.fits.*.part")), "no partial frame"


def test_a_notice_that_cannot_be_kept_is_unavailable_not_unknown(observatory, tiny_disk):
    """Before: the alert daemon answered UNKNOWN "[Errno 28] No space left on device"."""
    _, alert = observatory
    daemon, stub = alert()
    daemon.storage_root = tiny_disk  # where this daemon keeps notices from now on: a full disk
    daemon.module.storage_root = tiny_disk
    with open(tiny_disk / "filler", "wb", buffering=0) as filler, pytest.raises(OSError):
        while True:
            filler.write(b"\0" * 4096)
    with pytest.raises(grpc.RpcError) as error:
        submit(stub, "MS181101ab-retraction.json", "full")
    assert error.value.code() == grpc.StatusCode.UNAVAILABLE
    assert error.value.details().startswith(
        f"not accepted, try again: storage: cannot keep the notice under {tiny_disk}/alerts/raw: No space left on device"
    )
    (tiny_disk / "filler").unlink()
    submit(stub, "MS181101ab-retraction.json", "room-again")
    assert done(stub, "room-again").state == pb.WORK_ORDER_STATE_DONE


def test_write_fits_reports_a_full_disk_as_enospc(tiny_disk):
    import errno

    from toros.floor.fitsfiles import write_fits

    with pytest.raises(OSError) as error:
        write_fits(tiny_disk / "big.fits", [fits.PrimaryHDU(np.zeros((512, 512), np.float32))])
    assert error.value.errno == errno.ENOSPC
    assert list(tiny_disk.iterdir()) == []


# -- FetchFile ends ---------------------------------------------------------------------------------------


def fetching(stub, path: Path, chunk_size: int = 64 << 10):
    return stub.FetchFile(pb.FetchFileRequest(path=str(path), chunk_size=chunk_size))


def test_a_file_that_shrinks_while_fetched_ends_the_stream(stub, drill):  # noqa: F811
    """Before: 20,000 empty chunks in 0.9 s, and never one marked last."""
    path = drill.storage_root / "night" / "shrinking.fits"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"x" * (32 << 20))  # more than flow control lets the daemon send ahead of this reader
    stream = fetching(stub, path)
    first = next(stream)
    with open(path, "r+b") as file:
        file.truncate(1000)
    assert first.offset == 0 and not first.last
    with pytest.raises(grpc.RpcError) as error:
        list(stream)
    assert error.value.code() == grpc.StatusCode.ABORTED
    # the daemon may have read a chunk or two ahead of the reader before the file was cut
    assert re.fullmatch(
        rf"path: {re.escape(repr(str(path)))} shrank from 33554432 to \d+ bytes while it was sent; fetch it again",
        error.value.details(),
    ), error.value.details()


def test_a_file_written_to_while_fetched_ends_aborted_and_one_replaced_is_served_as_it_was(stub, drill):  # noqa: F811
    path = drill.storage_root / "night" / "growing.fits"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"a" * (32 << 20))
    stream = fetching(stub, path)
    next(stream)
    with open(path, "ab") as file:
        file.write(b"more")
    with pytest.raises(grpc.RpcError) as error:
        list(stream)
    assert error.value.code() == grpc.StatusCode.ABORTED and "was written to while it was sent" in error.value.details()
    old = b"o" * (1 << 20)
    path.write_bytes(old)
    stream = fetching(stub, path)
    chunks = [next(stream)]
    replacement = path.with_name("new.fits")
    replacement.write_bytes(b"n" * 10)
    os.replace(replacement, path)
    chunks += list(stream)
    assert b"".join(c.data for c in chunks) == old and chunks[-1].last
    assert chunks[-1].sha256 == __import__("hashlib").sha256(old).hexdigest()


def test_stalled_fetch_streams_hold_little_memory(tmp_path):
    """Before: about 21 MB of the daemon's memory per stream that a client stopped reading (4 MiB chunks)."""
    from support import launch, write_config

    from toros.generated.toros_pb2_grpc import FrontDeskStub

    data = tmp_path / "data"
    data.mkdir()
    (data / "big.fits").write_bytes(os.urandom(64 << 20))
    config = write_config(tmp_path, telescope={"port": 0}, storage={"root": str(data)})
    process, port = launch(config, tmp_path / "port")

    def rss_mib() -> float:
        return int(Path(f"/proc/{process.pid}/status").read_text().split("VmRSS:")[1].split()[0]) / 1024

    channels, streams = [], []
    try:
        before = rss_mib()
        for _ in range(10):
            channels.append(
                grpc.insecure_channel(f"127.0.0.1:{port}", options=[("grpc.max_receive_message_length", 8 << 20)])
            )
            streams.append(fetching(FrontDeskStub(channels[-1]), data / "big.fits", chunk_size=4 << 20))
            next(streams[-1])
        time.sleep(3)  # the daemon sends what flow control lets it, then waits for the readers
        grown = rss_mib() - before
        assert grown < 40, f"10 stalled streams hold {grown:.0f} MiB"
    finally:
        for stream in streams:
            stream.cancel()
        for channel in channels:
            channel.close()
        process.terminate()
        process.wait(timeout=30)


# -- the front door ---------------------------------------------------------------------------------------


def raw_call(channel: grpc.Channel, method: str, data: bytes, **kwargs):
    return channel.unary_unary(f"/toros.v1.FrontDesk/{method}")(data, **kwargs)


def test_reflection_needs_the_token_and_health_does_not(make_config, start_daemon):
    """Before: server reflection answered without the token."""
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    daemon = start_daemon(make_config(security={"token": "s3cret"}))
    question = reflection_pb2.ServerReflectionRequest(list_services="")
    with grpc.insecure_channel(f"127.0.0.1:{daemon.port}") as channel:
        reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
        with pytest.raises(grpc.RpcError) as error:
            next(reflection.ServerReflectionInfo(iter([question])))
        assert error.value.code() == grpc.StatusCode.UNAUTHENTICATED
        answer = next(reflection.ServerReflectionInfo(iter([question]), metadata=[("authorization", "Bearer s3cret")]))
        assert "toros.v1.FrontDesk" in {s.name for s in answer.list_services_response.service}
        health = health_pb2_grpc.HealthStub(channel)
        assert health.Check(health_pb2.HealthCheckRequest()).status == health_pb2.HealthCheckResponse.SERVING


@pytest.mark.parametrize("header", ["bearer s3cret", "BEARER s3cret", "Bearer  s3cret "])
def test_the_bearer_scheme_is_case_insensitive(make_config, start_daemon, header):
    """Before: only "Bearer" exactly was accepted (RFC 7235 makes the scheme case-insensitive)."""
    from toros.generated.toros_pb2_grpc import FrontDeskStub

    daemon = start_daemon(make_config(security={"token": "s3cret"}))
    with grpc.insecure_channel(f"127.0.0.1:{daemon.port}") as channel:
        assert (
            FrontDeskStub(channel).GetStatus(pb.GetStatusRequest(), metadata=[("authorization", header)]).module
            == "telescope"
        )
        with pytest.raises(grpc.RpcError) as error:
            FrontDeskStub(channel).GetStatus(pb.GetStatusRequest(), metadata=[("authorization", "Basic s3cret")])
        assert error.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_malformed_requests_are_refused_in_one_line(make_config, start_daemon, caplog):
    """Before: each malformed request without the token logged a traceback (it was parsed, then refused)."""
    daemon = start_daemon(make_config(security={"token": "s3cret"}))
    with grpc.insecure_channel(f"127.0.0.1:{daemon.port}") as channel:
        for _ in range(3):
            with pytest.raises(grpc.RpcError) as error:
                raw_call(channel, "Submit", b"\xff\xff\xff garbage")
            assert error.value.code() == grpc.StatusCode.UNAUTHENTICATED
        with pytest.raises(grpc.RpcError) as error:
            raw_call(channel, "Submit", b"\xff\xff\xff garbage", metadata=[("authorization", "Bearer s3cret")])
        assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert error.value.details().startswith("request: not a valid message")
    assert not [r for r in caplog.records if r.exc_info], "no traceback logged"


def test_unknown_fields_are_not_journaled(stub, drill):  # noqa: F811
    """Before: a 30 MB unknown field was stored with the work order."""
    order = pb.WorkOrder(id="with-junk", dome_control=pb.DomeControl(action=pb.DOME_ACTION_OPEN)).SerializeToString()
    junk = b"\xfa\x3f" + bytes([0x80, 0x80, 0x40]) + b"j" * (1 << 20)  # field 1023, length-delimited, 1 MiB
    with grpc.insecure_channel(f"127.0.0.1:{drill.port}") as channel:
        raw_call(channel, "Submit", order + junk, timeout=10)
    stored = drill.journal.get("with-junk").work_order_bytes
    assert len(stored) < 100 and b"jjjj" not in stored  # the order as sent, with its create_time, no junk


def test_the_largest_request_is_a_setting_of_each_daemon(make_config, start_daemon):
    order = pb.WorkOrder(
        id="big", requester="x", dome_control=pb.DomeControl(action=pb.DOME_ACTION_OPEN)
    ).SerializeToString()
    padded = order + b"\xfa\x3f" + bytes([0x80, 0x80, 0x80, 0x03]) + b"j" * (6 << 20)  # 6 MiB of an unknown field
    small = start_daemon(make_config(telescope={"port": 0}))
    with grpc.insecure_channel(f"127.0.0.1:{small.port}") as channel:
        with pytest.raises(grpc.RpcError) as error:
            raw_call(channel, "Submit", padded)
        assert error.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    large = start_daemon(make_config(telescope={"port": 0, "max_message_bytes": 8 << 20}))
    with grpc.insecure_channel(f"127.0.0.1:{large.port}") as channel:
        raw_call(channel, "Submit", padded)
    assert large.journal.get("big") is not None


@pytest.mark.parametrize("id", ["order\n", "order\r", "\norder", "a" * 129])
def test_work_order_ids_match_in_full(stub, id):  # noqa: F811
    """Before: '$' let a trailing newline through."""
    with pytest.raises(grpc.RpcError) as error:
        stub.Submit(pb.WorkOrder(id=id, dome_control=pb.DomeControl(action=pb.DOME_ACTION_OPEN)))
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT and error.value.details().startswith(
        "id: must be 1-128"
    )


def test_long_paths_are_invalid_arguments_naming_the_field(stub, tmp_path):  # noqa: F811
    """Before: UNKNOWN, with the absolute path, from the file system's ENAMETOOLONG."""
    with pytest.raises(grpc.RpcError) as error:
        list(stub.FetchFile(pb.FetchFileRequest(path="a/" * 2500)))
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.value.details() == "path: path is 5000 bytes long, at most 4096"
    with pytest.raises(grpc.RpcError) as error:
        list(stub.FetchFile(pb.FetchFileRequest(path="night/" + "x" * 300)))
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.value.details() == "path: a name in the path is 300 bytes long, at most 255"


# -- start-up and CLI errors are one line ------------------------------------------------------------------


def serve(config: Path, module: str = "telescope") -> subprocess.CompletedProcess:
    from support import toros_cli

    return toros_cli("serve", module, "--config", str(config), timeout=60)


def last_line(result: subprocess.CompletedProcess) -> str:
    assert "Traceback" not in result.stderr, result.stderr
    return result.stderr.strip().splitlines()[-1]


@pytest.fixture
def read_only_folder(tmp_path):
    """A folder nobody may write to, root included: a read-only tmpfs."""
    folder = tmp_path / "read-only"
    folder.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,ro", "tmpfs", str(folder)], check=True)
    yield folder
    subprocess.run(["umount", "-l", str(folder)], check=False)


def test_a_database_in_a_read_only_folder(tmp_path, read_only_folder):
    from support import write_config

    config = write_config(tmp_path, telescope={"port": 0}, database={"path": str(read_only_folder / "toros.db")})
    result = serve(config)
    assert result.returncode == 1
    assert last_line(result).startswith(
        f"toros: cannot start the telescope: database sqlite:///{read_only_folder}/toros.db: "
    )


def test_an_unreachable_postgresql(tmp_path):
    from support import write_config

    from toros.demo import free_port

    port = free_port()
    config = write_config(
        tmp_path, telescope={"port": 0}, database={"url": f"postgresql://toros:hidden@127.0.0.1:{port}/toros"}
    )
    result = serve(config)
    assert result.returncode == 1 and "hidden" not in result.stderr
    assert last_line(result).startswith(
        f"toros: cannot start the telescope: database postgresql+psycopg://toros:***@127.0.0.1:{port}/toros: connection failed"
    )


@pytest.mark.parametrize(
    "content, reason", [(None, "no such catalog file"), ("hello world\n", "unknown catalog format")]
)
def test_a_missing_or_foreign_catalog(tmp_path, content, reason):
    from support import write_config

    catalog = tmp_path / "catalog.txt"
    if content is not None:
        catalog.write_text(content)
    config = write_config(tmp_path, alert={"port": 0, "catalog": str(catalog)})
    result = serve(config, "alert")
    assert result.returncode == 2
    assert last_line(result).startswith(f"toros: config error: alert.catalog: {catalog}: {reason}")


def test_a_config_that_is_not_utf8(tmp_path):
    config = tmp_path / "toros.conf.yaml"
    config.write_bytes(b"telescope:\n  port: 0\n  # caf\xe9\n")
    result = serve(config)
    assert result.returncode == 2
    assert last_line(result) == f"toros: config error: {config}: not UTF-8 text (byte 0xe9 at line 3)"


def test_a_garbage_tls_certificate_is_named(tmp_path):
    """Before: reported as "cannot listen on …"."""
    from support import write_config

    (tmp_path / "cert.pem").write_text("garbage\n")
    (tmp_path / "key.pem").write_text("garbage\n")
    config = write_config(
        tmp_path,
        telescope={"port": 0},
        security={"tls": {"cert": str(tmp_path / "cert.pem"), "key": str(tmp_path / "key.pem")}},
    )
    result = serve(config)
    assert result.returncode == 2
    assert last_line(result).startswith(
        f"toros: config error: security.tls.cert/key: {tmp_path}/cert.pem and {tmp_path}/key.pem are not a PEM certificate and its private key"
    )


def test_a_negative_watch_position_is_a_usage_error(tmp_path):
    from support import toros_cli, write_config

    result = toros_cli("watch", "telescope", "--after", "-5", "--config", str(write_config(tmp_path)))
    assert result.returncode == 2
    assert (
        last_line(result)
        == "toros watch: error: argument --after: must be 0 or more (an event sequence number), got -5"
    )


def test_mutual_tls_without_a_client_certificate_is_not_called_down(
    tmp_path, make_config, start_daemon, pki, mutual_tls
):
    """Before: "cannot reach the telescope …: is it running?", of a daemon that was running."""
    from support import toros_cli, write_config

    daemon = start_daemon(make_config(security={"tls": mutual_tls}))
    (tmp_path / "client").mkdir()
    config = write_config(
        tmp_path / "client", security={"tls": {"ca": str(pki["ca_cert"])}}, telescope={"port": daemon.port}
    )
    result = toros_cli("work-order", "telescope", "x", "--address", f"localhost:{daemon.port}", "--config", str(config))
    assert result.returncode == 1
    assert last_line(result).startswith(
        f"toros: the telescope at localhost:{daemon.port} accepts connections but closed this one: it may require TLS or a client certificate"
    )


def test_ingest_catalog_takes_the_configs_catalog(tmp_path, glade_catalog):  # noqa: F811
    """Before: `toros alert ingest-catalog --config FILE`, as documented, was refused."""
    from support import toros_cli, write_config

    config = write_config(tmp_path, alert={"catalog": str(glade_catalog)})
    result = toros_cli("alert", "ingest-catalog", "--config", str(config))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("galaxies indexed in " + str(glade_catalog) + ".toros-index")


def test_connections_that_never_finish_their_handshake_are_closed(make_config, start_daemon):
    """Before: each one was kept for 120 s; 110 of them used up a 128-descriptor limit."""
    from toros.generated.toros_pb2_grpc import FrontDeskStub

    daemon = start_daemon(make_config(telescope={"port": 0, "handshake_timeout_s": 1}))
    idle = [socket.create_connection(("127.0.0.1", daemon.port)) for _ in range(50)]
    try:
        for sock in idle:
            sock.settimeout(10)
            assert sock.recv(1024 * 1024) is not None  # the server's settings frame, or the close
        closed = 0
        for sock in idle:
            try:
                while sock.recv(65536):
                    pass
                closed += 1
            except TimeoutError:
                pass
        assert closed == 50
        with grpc.insecure_channel(f"127.0.0.1:{daemon.port}") as channel:
            assert FrontDeskStub(channel).GetStatus(pb.GetStatusRequest()).module == "telescope"
    finally:
        for sock in idle:
            sock.close()


# -- work orders of any shape ---------------------------------------------------------------------------------


def message_values(descriptor, depth: int = 0) -> st.SearchStrategy:
    """Any message of this type: every field set or not, with values of its type, valid or not."""
    from google.protobuf.descriptor import FieldDescriptor as F

    scalars = {
        F.TYPE_STRING: st.text(max_size=40) | st.sampled_from(["", "../../etc/passwd", "/dev/zero", "a" * 5000, "x\n"]),
        F.TYPE_BYTES: st.binary(max_size=64),
        F.TYPE_BOOL: st.booleans(),
        F.TYPE_DOUBLE: st.floats(width=64),
        F.TYPE_FLOAT: st.floats(width=32),
        F.TYPE_INT32: st.integers(-(2**31), 2**31 - 1),
        F.TYPE_SINT32: st.integers(-(2**31), 2**31 - 1),
        F.TYPE_INT64: st.integers(-(2**63), 2**63 - 1),
        F.TYPE_UINT32: st.integers(0, 2**32 - 1),
        F.TYPE_UINT64: st.integers(0, 2**64 - 1),
        F.TYPE_ENUM: st.integers(-5, 40),
    }
    fields = {}
    for field in descriptor.fields:
        if field.type == F.TYPE_MESSAGE:
            if depth > 2:
                continue
            value = message_values(field.message_type, depth + 1)
        else:
            value = scalars[field.type]
        fields[field.name] = st.lists(value, max_size=3) if field.is_repeated else value
    return st.fixed_dictionaries({}, optional=fields).map(lambda values: (descriptor, values))


def build(descriptor, values: dict):
    from google.protobuf import message_factory
    from google.protobuf.descriptor import FieldDescriptor as F

    message = message_factory.GetMessageClass(descriptor)()
    for name, value in values.items():
        field = descriptor.fields_by_name[name]
        items = value if field.is_repeated else [value]
        for item in items:
            if field.type == F.TYPE_MESSAGE:
                built = build(*item)
                if field.is_repeated:
                    getattr(message, name).add().CopyFrom(built)
                else:
                    getattr(message, name).CopyFrom(built)
            elif field.is_repeated:
                getattr(message, name).append(item)
            else:
                setattr(message, name, item)
    return message


ACCEPTABLE = {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.UNIMPLEMENTED}


def submit_any(stub, task: str, values) -> None:
    """A work order of any shape is accepted, or refused with the reason naming a field; never an error of
    the daemon's own (UNKNOWN, INTERNAL)."""
    order = pb.WorkOrder(id=f"any-{abs(hash(repr(values))) % 10**12}")
    getattr(order, task).CopyFrom(build(*values))
    try:
        stub.Submit(order, timeout=30)
    except grpc.RpcError as error:
        assert error.code() in ACCEPTABLE, (task, error.code(), error.details())
        if error.code() == grpc.StatusCode.INVALID_ARGUMENT:
            assert error.details().startswith(f"{task}") or error.details().startswith("task:"), error.details()


def submit_many_shapes(stub, task: str) -> None:
    @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
    @given(values=message_values(pb.WorkOrder.DESCRIPTOR.fields_by_name[task].message_type))
    def check(values):
        submit_any(stub, task, values)

    check()


@pytest.mark.parametrize("task", ["observe_targets", "take_calibrations", "night_operation", "dome_control"])
def test_telescope_work_orders_of_any_shape(task, make_config, start_daemon):
    from toros.generated.toros_pb2_grpc import FrontDeskStub

    daemon = start_daemon(make_config(telescope={"port": 0, "workers": 1}, clock={"rate": 1000.0}))
    with grpc.insecure_channel(f"127.0.0.1:{daemon.port}") as channel:
        submit_many_shapes(FrontDeskStub(channel), task)


@pytest.mark.parametrize("task", ["calibrate_night", "calibrate_images"])
def test_preprocessor_work_orders_of_any_shape(task, make_config, start_daemon):
    from toros.generated.toros_pb2_grpc import FrontDeskStub

    daemon = start_daemon(
        make_config(preprocessor={"port": 0, "workers": 1}), lambda c: build_daemon("preprocessor", c)
    )
    with grpc.insecure_channel(f"127.0.0.1:{daemon.port}") as channel:
        submit_many_shapes(FrontDeskStub(channel), task)


def test_alert_work_orders_of_any_shape(observatory):
    _, alert = observatory
    _, stub = alert()
    submit_many_shapes(stub, "process_alert")
