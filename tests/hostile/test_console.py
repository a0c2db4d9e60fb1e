"""The web console under attack (hardening, second round): no viewer can stall it with event streams, wrong
passwords cost neither the rightful operator his login nor the console its memory, stored files are never served
as live pages, and every malformed request is a 4xx with the reason. The console runs as `toros serve web` in a
process of its own, so that its memory is its own."""

from __future__ import annotations

import json
import re
import sqlite3
import statistics
import subprocess
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import httpx
import pytest
from support import NIGHT_TIME, SMALL_CAMERA, TESTS, VENV_BIN, telescope_daemon, wait_for, write_config

from toros.config import load_config
from toros.demo import free_port
from toros.generated import toros_pb2 as pb
from toros.runtime.clock import Clock
from toros.runtime.config import DatabaseConfig
from toros.runtime.journal import Journal
from toros.web.accounts import hash_password

PASSWORD = "a long enough secret"
JOURNAL_EVENTS = 3000


@dataclass
class Console:
    url: str
    process: subprocess.Popen
    daemon: object

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise AssertionError("no VmRSS")

    def logged_in(self, name: str = "ana", client: httpx.Client | None = None) -> httpx.Client:
        client = client or httpx.Client(base_url=self.url, timeout=30, limits=httpx.Limits(max_connections=300))
        answer = client.post("/login", data={"username": name, "password": PASSWORD})
        assert answer.status_code == 303, answer.text
        return client


def fill_journal(database: Path, count: int) -> None:
    """A telescope journal of ``count`` device events, as a night of a few weeks leaves one."""
    Journal(DatabaseConfig(path=database), "telescope", Clock()).close()  # the schema
    moment = datetime.fromisoformat(NIGHT_TIME.replace("Z", "+00:00")).timestamp() - count
    with sqlite3.connect(database) as db:
        rows = []
        for sequence in range(1, count + 1):
            event = pb.Event(sequence=sequence, work_order_id="")
            event.time.FromSeconds(int(moment + sequence))
            state = pb.DEVICE_STATE_IDLE if sequence % 2 else pb.DEVICE_STATE_BUSY
            event.device_update.device.CopyFrom(
                pb.Device(name="dome", state=state, driver="simulator", message="x" * 80)
            )
            rows.append(("telescope", sequence, moment + sequence, "", event.SerializeToString()))
        db.executemany(
            "INSERT INTO events (module, sequence, time, work_order_id, payload) VALUES (?, ?, ?, ?, ?)", rows
        )


@pytest.fixture
def console(tmp_path, start_daemon) -> Iterator[Console]:
    (tmp_path / "telescope").mkdir()
    telescope = {"port": free_port(), "mode": "manual", "camera": SMALL_CAMERA}
    clock = {"start": NIGHT_TIME, "rate": 1.0}
    daemon_config = write_config(tmp_path / "telescope", clock=clock, telescope=telescope)
    fill_journal(tmp_path / "telescope" / "toros.db", JOURNAL_EVENTS)
    daemon = start_daemon(load_config(daemon_config), telescope_daemon)
    (tmp_path / "web").mkdir()
    port = free_port()
    users = [
        {"name": name, "role": "operator" if name != "vic" else "viewer", "password_hash": hash_password(PASSWORD)}
        for name in ("ana", "bea", "vic")
    ]
    config = write_config(
        tmp_path / "web",
        clock=clock,
        telescope=telescope,
        alert={"port": free_port()},
        preprocessor={"port": free_port()},
        web={"port": port, "users": users, "max_streams": 130, "max_streams_per_session": 125},
        logging={"file": "logs/toros.log", "level": "INFO"},
    )
    process = subprocess.Popen(
        [str(VENV_BIN / "toros"), "serve", "web", "--config", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=open(tmp_path / "web" / "stderr.log", "wb"),  # noqa: SIM115
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _answers(url), timeout=60, interval=0.2)
        yield Console(url, process, daemon)
    finally:
        process.terminate()
        process.wait(timeout=30)


def _answers(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


class Flood:
    """``count`` browsers catching up at once (``sse_flood.py``, in a process of its own)."""

    def __init__(self, console: Console, client: httpx.Client, count: int) -> None:
        cookie = client.cookies["toros_session"]
        script = TESTS / "sse_flood.py"
        self.process = subprocess.Popen(
            [str(VENV_BIN / "python"), str(script), console.url, cookie, str(count)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None and self.process.stdout.readline().strip() == "open"

    def stop(self) -> list[int]:
        out, _ = self.process.communicate("", timeout=60)
        return json.loads(out.strip().splitlines()[-1])


def _status_times(client: httpx.Client, count: int) -> list[float]:
    times = []
    for _ in range(count):
        started = time.perf_counter()
        assert client.get("/api/status").status_code == 200
        times.append(time.perf_counter() - started)
    return times


def p99(values: list[float]) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[98]


def test_120_replaying_streams_neither_stall_the_status_nor_grow_the_console(console):
    viewer = console.logged_in("vic")
    _status_times(viewer, 5)  # warm
    alone = _status_times(viewer, 60)
    rss_before = console.rss_mb()
    streams_before = console.daemon.frontdesk.open_streams  # the console's own Watch
    flood = Flood(console, viewer, 120)
    try:
        during = _status_times(viewer, 200)  # a p99 of 200: one stall of a loaded machine is not the 99th
        rss_during = console.rss_mb()
    finally:
        received = flood.stop()
    print(f"status p99: {p99(alone) * 1e3:.1f} ms alone, {p99(during) * 1e3:.1f} ms with 120 replaying streams")
    # The target is 100 ms (met on an idle machine: docs/performance.md). A machine so loaded that the status
    # alone is slow is given three times its own figure: with two busy loops and the other test worker, the
    # console's threads and the flood's share two cores four ways (seen: 50 ms alone, 143 ms during). A stall,
    # what this guards against, is seconds.
    assert p99(during) <= max(0.100, 3 * p99(alone)), (p99(alone), p99(during))
    assert rss_during - rss_before < 150, "one page of replay per stream, never the journal"
    assert len(received) == 120 and min(received) > 0
    # Gone clients stop their replays: the daemon's Watch calls end, the memory stays.
    wait_for(lambda: console.daemon.frontdesk.open_streams == streams_before, timeout=20)
    assert console.rss_mb() - rss_before < 150


def test_one_stream_replays_the_whole_journal_page_by_page_without_gap(console):
    client = console.logged_in("ana")
    sequences = []
    with client.stream("GET", "/api/events", headers={"Last-Event-ID": "alert:0,telescope:0,preprocessor:0"}) as answer:
        for line in answer.iter_lines():
            if line.startswith("id:"):
                sequences.append(int(line.split("telescope:")[1].split(",")[0]))
                if len(sequences) == JOURNAL_EVENTS:
                    break
    assert sequences == list(range(1, JOURNAL_EVENTS + 1))


def test_streams_are_capped_per_session_and_in_all_with_a_clear_429(console):
    ana = console.logged_in("ana")
    bea = console.logged_in("bea")
    opened = []
    try:
        for _ in range(125):
            opened.append(ana.send(ana.build_request("GET", "/api/events"), stream=True))
            assert opened[-1].status_code == 200
        refused = ana.get("/api/events")
        assert refused.status_code == 429 and "web.max_streams_per_session" in refused.json()["error"]
        for _ in range(5):
            opened.append(bea.send(bea.build_request("GET", "/api/events"), stream=True))
            assert opened[-1].status_code == 200
        full = bea.get("/api/events")
        assert full.status_code == 429 and "web.max_streams" in full.json()["error"]
        assert ana.get("/api/status").status_code == 200, "the rest of the console serves on"
    finally:
        for response in opened:
            response.close()
    # Closed streams give their slots back.
    wait_for(lambda: bea.send(bea.build_request("GET", "/api/events"), stream=True).status_code == 200, timeout=20)


# -- logins -----------------------------------------------------------------------------------------------


def _from(console: Console, address: str) -> httpx.Client:
    """A client whose connections leave from ``address`` (any of 127.0.0.0/8 is this machine)."""
    return httpx.Client(base_url=console.url, timeout=60, transport=httpx.HTTPTransport(local_address=address))


def _try(client: httpx.Client, password: str, name: str = "ana", **headers: str) -> int:
    return client.post("/login", data={"username": name, "password": password}, headers=headers).status_code


def test_a_forged_forwarded_address_does_not_dodge_the_limit(console):
    client = _from(console, "127.0.0.7")
    answers = [_try(client, "guess", **{"X-Forwarded-For": f"203.0.113.{i}"}) for i in range(30)]
    assert answers[:5] == [401] * 5 and set(answers[5:]) == {429}
    blocked = client.post("/login", data={"username": "ana", "password": PASSWORD})
    assert blocked.status_code == 429 and "from this address: wait a minute" in blocked.text
    assert _try(_from(console, "127.0.0.8"), PASSWORD) == 303, "the operator, from another address, logs in"


def test_concurrent_guesses_are_counted_whole_and_checked_a_few_at_a_time(console):
    rss_before = console.rss_mb()
    peak = [rss_before]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak.append(console.rss_mb())
            time.sleep(0.02)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        # 40 at once from one address: five are checked, the rest refused at once.
        one = [_from(console, "127.0.0.9") for _ in range(40)]
        with ThreadPoolExecutor(40) as pool:
            answers = list(pool.map(lambda c: _try(c, "guess"), one))
        assert answers.count(401) == 5 and answers.count(429) == 35
        # 40 at once from 40 addresses: two checks at a time and eight waiting; the others 429 at once.
        many = [_from(console, f"127.0.1.{i}") for i in range(40)]
        with ThreadPoolExecutor(40) as pool:
            answers = list(pool.map(lambda c: _try(c, "guess", name="bea"), many))
        assert answers.count(401) >= 10 and answers.count(401) + answers.count(429) == 40
    finally:
        done.set()
        sampler.join()
    assert max(peak) < 400, f"the console peaked at {max(peak):.0f} MB (it started at {rss_before:.0f} MB)"
    assert _try(_from(console, "127.0.0.10"), PASSWORD) == 303


def test_an_account_under_attack_refuses_its_attackers_not_its_user(console):
    attackers = [_from(console, f"127.0.2.{i}") for i in range(25)]  # fewer than five guesses each
    for round in range(3):
        for client in attackers[: 25 - round]:
            _try(client, f"guess {round}")
    # More than web.login_failures_per_account_per_minute (20) for ana: those who failed must wait, even right.
    refused = attackers[0].post("/login", data={"username": "ana", "password": PASSWORD})
    assert refused.status_code == 429 and "for this account from this address" in refused.text
    assert _try(attackers[0], PASSWORD, name="bea") == 303, "other accounts are not theirs to lock"
    assert _try(_from(console, "127.0.2.200"), PASSWORD) == 303, "ana, from her own address, logs in"


def test_forwarded_addresses_count_when_they_come_from_a_trusted_proxy(tmp_path):
    from toros.web.server import WebServer

    users = [{"name": "ana", "role": "operator", "password_hash": hash_password(PASSWORD)}]
    config = load_config(
        write_config(
            tmp_path, web={"port": 0, "users": users, "trusted_proxies": ["127.0.0.1"]}, alert={"port": free_port()}
        )
    )
    server = WebServer(config)
    server.start()
    try:
        proxy = httpx.Client(base_url=server.url, timeout=30)
        for i in range(6):  # six clients behind the proxy, one wrong password each: none is blocked
            assert _try(proxy, "guess", **{"X-Forwarded-For": f"198.51.100.{i}"}) == 401
        same = [_try(proxy, "guess", **{"X-Forwarded-For": "198.51.100.77"}) for _ in range(6)]
        assert same[-1] == 429
    finally:
        server.stop()


# -- what the browser is given ---------------------------------------------------------------------------


def test_stored_files_other_than_pictures_are_downloads_never_live_pages(console, tmp_path):
    root = tmp_path / "telescope" / "data"
    (root / "evil.html").write_text("<script>alert(document.cookie)</script>")
    (root / "evil.svg").write_text('<svg xmlns="http://www.w3.org/2000/svg" onload="alert(1)"/>')
    (root / "plan.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 32)
    viewer = console.logged_in("vic")
    for name in ("evil.html", "evil.svg"):
        answer = viewer.get("/api/files/telescope", params={"path": name})
        assert answer.status_code == 200
        assert answer.headers["content-type"] == "application/octet-stream"
        assert answer.headers["content-disposition"].startswith("attachment;")
        assert answer.headers["x-content-type-options"] == "nosniff"
    picture = viewer.get("/api/files/telescope", params={"path": "plan.png"})
    assert picture.headers["content-type"] == "image/png" and picture.headers["content-disposition"].startswith(
        "inline;"
    )


def test_every_page_forbids_inline_script_and_framing(console):
    client = console.logged_in("ana")
    for path in ("/login", "/", "/alerts", "/tonight", "/api/status", "/healthz"):
        answer = client.get(path)
        policy = answer.headers["content-security-policy"]
        assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy and "unsafe-inline" not in policy
        assert answer.headers["x-frame-options"] == "DENY" and answer.headers["x-content-type-options"] == "nosniff"
        if answer.headers["content-type"].startswith("text/html"):
            html = answer.text
            assert "<script>" not in html and "<style>" not in html and " style=" not in html, path
            assert not re.search(r"\son[a-z]+=", html), f"{path}: an inline event handler"


def test_malformed_requests_are_4xx_with_the_reason(console):
    ana = console.logged_in("ana")
    csrf = ana.get("/api/session").json()["csrf_token"]
    headers = {"X-CSRF-Token": csrf, "Content-Type": "application/json"}
    deep = ana.post("/api/work-orders/telescope", content=b"[" * 100_000 + b"]" * 100_000, headers=headers)
    assert deep.status_code == 400 and "nests JSON too deeply" in deep.json()["error"]
    deep_object = b'{"dome_control": ' * 50_000 + b"{}" + b"}" * 50_000
    assert ana.post("/api/work-orders/telescope", content=deep_object, headers=headers).status_code == 400
    huge_login = httpx.post(f"{console.url}/login", content=b"username=ana&password=" + b"x" * 100_000,
                            headers={"Content-Type": "application/x-www-form-urlencoded"})  # fmt: skip
    assert huge_login.status_code == 413 and "a login form: at most 4096 bytes" in huge_login.json()["error"]
    assert ana.get("/api/status").status_code == 200, "and it serves on"
