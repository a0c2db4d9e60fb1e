"""Watch and FetchFile: replay then follow with no gap or duplicate, filters, stream limits, file transfer."""

from __future__ import annotations

import hashlib
import threading
import time

import grpc
import pytest
from support import dome_order, wait_for

from toros.generated import toros_pb2 as pb
from toros.generated.toros_pb2_grpc import FrontDeskStub


def test_watch_replays_then_follows_live_without_gap_or_duplicate(stub, drill):
    for i in range(20):
        stub.Submit(dome_order(f"before-{i}", action=pb.DOME_ACTION_CLOSE))
    seen: list[int] = []
    stream = stub.Watch(pb.WatchRequest(after_sequence=5))
    submitted = threading.Event()

    def submit_more():
        for i in range(30):
            stub.Submit(dome_order(f"during-{i}"))
        submitted.set()

    threading.Thread(target=submit_more).start()
    for event in stream:
        seen.append(event.sequence)
        if submitted.is_set() and event.sequence >= drill.journal.events.last_sequence and len(seen) > 50:
            break
    stream.cancel()
    assert seen[0] == 6
    assert seen == list(range(6, 6 + len(seen))), "a gap or a duplicate at the hand-over"


def test_watch_reads_the_journal_when_behind_the_memory_window(stub, drill):
    for i in range(10):
        stub.Submit(dome_order(f"w-{i}"))
    wait_for(lambda: drill.journal.events.last_sequence >= 10)
    drill.journal.events._events.clear()  # as after a restart: nothing in memory, all in the journal
    drill.journal.events._sequences.clear()
    replayed = [e.sequence for e in stub.Watch(pb.WatchRequest(replay_only=True))]
    assert replayed == list(range(1, len(replayed) + 1)) and len(replayed) >= 10


def test_watch_filters_by_work_order_and_kind(stub):
    stub.Submit(
        pb.WorkOrder(id="obs", observe_targets=pb.ObserveTargets(targets=[pb.Target(name="a", ra_deg=1, dec_deg=2)]))
    )
    stub.Submit(dome_order("other"))
    wait_for(lambda: stub.GetWorkOrder(pb.GetWorkOrderRequest(id="obs")).state == pb.WORK_ORDER_STATE_DONE)
    only_obs = list(stub.Watch(pb.WatchRequest(work_order_id="obs", replay_only=True)))
    assert only_obs and {e.work_order_id for e in only_obs} == {"obs"}
    images = list(stub.Watch(pb.WatchRequest(kinds=[pb.EVENT_KIND_IMAGE_READY], replay_only=True)))
    assert [e.WhichOneof("kind") for e in images] == ["image_ready"]


def test_cancelled_streams_free_their_slot_and_unary_calls_never_starve(make_config, start_daemon):
    daemon = start_daemon(make_config(telescope={"port": 0, "max_streams": 3, "rpc_threads": 2}))
    with grpc.insecure_channel(f"127.0.0.1:{daemon.port}") as channel:
        stub = FrontDeskStub(channel)
        streams = [stub.Watch(pb.WatchRequest()) for _ in range(3)]
        wait_for(lambda: daemon.frontdesk._stream_slots._value == 0)
        # All stream slots are taken: unary calls still answer, a fourth stream is refused.
        for i in range(5):
            assert stub.Submit(dome_order(f"u{i}"), timeout=5).id == f"u{i}"
            assert stub.GetStatus(pb.GetStatusRequest(), timeout=5).module == "telescope"
        with pytest.raises(grpc.RpcError) as error:
            next(iter(stub.Watch(pb.WatchRequest(), timeout=5)))
        assert error.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        for stream in streams:
            stream.cancel()
        wait_for(lambda: daemon.frontdesk._stream_slots._value == 3, timeout=5)
        assert next(iter(stub.Watch(pb.WatchRequest(), timeout=5))).sequence == 1


def test_fetch_file_streams_chunks_with_size_and_sha256(stub, drill):
    blob = bytes(range(256)) * 10_000  # 2.56 MB
    path = drill.storage_root / "night" / "blob.fits"
    path.parent.mkdir(parents=True)
    path.write_bytes(blob)
    chunks = list(stub.FetchFile(pb.FetchFileRequest(path="night/blob.fits", chunk_size=1 << 20)))
    # 1 MiB preferred, 256 KiB served: the most one chunk may be, so that a slow reader holds little memory
    assert len(chunks) == 10 and [c.offset for c in chunks] == [i * (256 << 10) for i in range(10)]
    assert b"".join(c.data for c in chunks) == blob
    assert all(c.size_bytes == len(blob) for c in chunks)
    assert chunks[-1].last and chunks[-1].sha256 == hashlib.sha256(blob).hexdigest()
    assert not any(c.sha256 for c in chunks[:-1])


def test_fetch_file_of_an_empty_file(stub, drill):
    (drill.storage_root / "empty.txt").write_bytes(b"")
    chunks = list(stub.FetchFile(pb.FetchFileRequest(path=str(drill.storage_root / "empty.txt"))))
    assert len(chunks) == 1 and chunks[0].last and chunks[0].sha256 == hashlib.sha256(b"").hexdigest()


@pytest.mark.parametrize(
    "path, code, words",
    [
        ("../toros.db", grpc.StatusCode.INVALID_ARGUMENT, "outside the storage root"),
        ("/etc/passwd", grpc.StatusCode.INVALID_ARGUMENT, "outside the storage root"),
        ("missing.fits", grpc.StatusCode.NOT_FOUND, "no stored file"),
        ("", grpc.StatusCode.INVALID_ARGUMENT, "path: must not be empty"),
    ],
)
def test_fetch_file_refuses_paths_outside_the_root_and_missing_files(stub, path, code, words):
    with pytest.raises(grpc.RpcError) as error:
        list(stub.FetchFile(pb.FetchFileRequest(path=path)))
    assert error.value.code() == code and words in error.value.details()


def test_a_symlink_out_of_the_root_is_refused(stub, drill, tmp_path):
    outside = tmp_path / "secret.txt"
    outside.write_text("secret")
    (drill.storage_root / "link.txt").symlink_to(outside)
    with pytest.raises(grpc.RpcError) as error:
        list(stub.FetchFile(pb.FetchFileRequest(path="link.txt")))
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_watch_streams_end_when_the_daemon_stops(make_config, start_daemon):
    daemon = start_daemon(make_config())
    with grpc.insecure_channel(f"127.0.0.1:{daemon.port}") as channel:
        stream = FrontDeskStub(channel).Watch(pb.WatchRequest())
        stream.initial_metadata()  # the daemon has the stream (a call still in flight is gRPC core's to settle)
        started = time.monotonic()
        daemon.stop(grace=30.0)
        try:
            for _ in stream:
                pass
        except grpc.RpcError as error:  # the stream may end cleanly or be cut as the server closes
            assert error.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED)
        assert time.monotonic() - started < 5.0


def test_a_simulated_clock_carries_on_after_a_restart(make_config, start_daemon):
    from toros.runtime.clock import Clock

    config = make_config(clock={"start": "2026-11-23T03:00:00Z", "rate": 1000.0})
    first = start_daemon(config)
    with grpc.insecure_channel(f"127.0.0.1:{first.port}") as channel:
        stub = FrontDeskStub(channel)
        stub.Submit(dome_order("before-restart"))
        wait_for(
            lambda: stub.GetWorkOrder(pb.GetWorkOrderRequest(id="before-restart")).state == pb.WORK_ORDER_STATE_DONE
        )
        last = list(stub.Watch(pb.WatchRequest(replay_only=True)))[-1].time.ToNanoseconds() / 1e9
    first.stop(grace=1.0)
    assert last > Clock(config.clock.start).timestamp() + 1.0  # the drill's clock moved on
    second = start_daemon(config)
    with grpc.insecure_channel(f"127.0.0.1:{second.port}") as channel:
        status = FrontDeskStub(channel).GetStatus(pb.GetStatusRequest())
    assert status.clock_time.ToNanoseconds() / 1e9 >= last, "the night goes on instead of starting again at clock.start"
