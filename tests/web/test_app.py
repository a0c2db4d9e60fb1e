"""The web console over real HTTP (uvicorn on a free loopback port) in front of a real telescope daemon: accounts
and sessions, CSRF, roles, work orders with the gRPC refusals as HTTP answers, the daemons' status (one of
them down), and Server-Sent Events fanned out from one Watch per daemon, resumed with Last-Event-ID without a
gap or a duplicate."""

from __future__ import annotations

import hashlib
import io
import json
import os
import signal
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from argon2 import PasswordHasher
from support import (
    NIGHT_TIME,
    SMALL_CAMERA,
    VENV_BIN,
    confined,
    telescope_daemon,
    toros_cli,
    wait_for,
    write_config,
)

from toros.demo import free_port
from toros.generated import toros_pb2 as pb
from toros.scenarios import REFERENCE_MARGIN_DEG
from toros.web.accounts import hash_password
from toros.web.server import STREAMS_CLOSE_S, WebServer

PASSWORDS = {"ana": "ana's long secret", "vic": "vic's long secret"}
# Playwright's wait_for_function evaluates its string in the page, which the console's Content-Security-Policy
# forbids (as it should): pages a test polls that way let the test's own probes through. The policy itself is
# checked in a page that does not (test_in_a_browser_no_page_breaks_its_content_security_policy).
TEST_PROBES = True


@dataclass
class Site:
    server: WebServer
    daemon: Any
    config: Any  # the telescope daemon's

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.server.url, timeout=10, follow_redirects=False)

    def logged_in(self, name: str) -> tuple[httpx.Client, str]:
        """A client with a session, and its CSRF token."""
        client = self.client()
        answer = client.post("/login", data={"username": name, "password": PASSWORDS[name]})
        assert answer.status_code == 303, answer.text
        return client, client.get("/api/session").json()["csrf_token"]


@pytest.fixture
def site(make_config, start_daemon) -> Iterator[Site]:
    # A fixed port, so that a restarted daemon is where the console looks for it.
    telescope = {"port": free_port(), "mode": "manual", "camera": SMALL_CAMERA, "dome": {"shutter_s": 20.0}}
    clock = {"start": NIGHT_TIME, "rate": 200.0}
    daemon_config = make_config(clock=clock, telescope=telescope)
    daemon = start_daemon(daemon_config, telescope_daemon)
    users = [
        {"name": "ana", "role": "operator", "password_hash": hash_password(PASSWORDS["ana"])},
        {"name": "vic", "role": "viewer", "password_hash": hash_password(PASSWORDS["vic"])},
    ]
    config = make_config(
        clock=clock,
        telescope=telescope,
        alert={"port": free_port()},  # nobody there: the console says so and serves the rest
        preprocessor={"port": free_port()},
        web={"port": 0, "users": users, "login_failures_per_minute": 3, "max_request_bytes": 2 * 1024 * 1024},
    )
    server = WebServer(config)
    server.start()
    yield Site(server, daemon, daemon_config)
    server.stop()


def test_health_login_session_and_logout(site):
    client = site.client()
    assert client.get("/healthz").json() == {"ok": True}
    assert client.get("/api/status").status_code == 401
    assert client.get("/api/events").status_code == 401
    assert client.get("/").headers["location"] == "/login"
    assert "<form" in client.get("/login").text
    wrong = client.post("/login", data={"username": "ana", "password": "guess"})
    assert wrong.status_code == 401 and "Wrong name or password." in wrong.text
    right = client.post("/login", data={"username": "ana", "password": PASSWORDS["ana"]})
    assert right.status_code == 303 and right.headers["location"] == "/"
    cookie = right.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie and "secure" not in cookie  # no TLS here
    session = client.get("/api/session").json()
    assert session["user"] == "ana" and session["role"] == "operator" and len(session["csrf_token"]) > 30
    assert "ana (operator)" in client.get("/").text
    assert client.post("/logout").status_code == 403  # without the CSRF header the session stays
    assert client.get("/api/session").status_code == 200
    client.post("/logout", headers={"X-CSRF-Token": session["csrf_token"]})
    assert client.get("/api/session").status_code == 401


def test_wrong_passwords_are_rate_limited(site):
    client = site.client()
    for _ in range(3):
        assert client.post("/login", data={"username": "ana", "password": "guess"}).status_code == 401
    blocked = client.post("/login", data={"username": "ana", "password": PASSWORDS["ana"]})
    assert blocked.status_code == 429 and "wait a minute" in blocked.text


def test_work_orders_from_the_browser(site):
    ana, csrf = site.logged_in("ana")
    order = {"id": "web-click-1", "dome_control": {"action": "DOME_ACTION_OPEN"}}
    assert ana.post("/api/work-orders/telescope", json=order).status_code == 403  # no CSRF token
    forged = ana.post("/api/work-orders/telescope", json=order, headers={"X-CSRF-Token": "forged"})
    assert forged.status_code == 403 and "X-CSRF-Token" in forged.json()["error"]
    headers = {"X-CSRF-Token": csrf}
    first = ana.post("/api/work-orders/telescope", json=order, headers=headers)
    again = ana.post("/api/work-orders/telescope", json=order, headers=headers)  # a double click
    assert first.status_code == again.status_code == 200 and first.json() == again.json() == {"id": "web-click-1"}
    stub = site.server.app.state.console.hub.stub("telescope")
    assert stub.GetWorkOrder(pb.GetWorkOrderRequest(id="web-click-1")).requester == "web:ana"

    bad = {"observe_targets": {"targets": [{"name": "x", "ra_deg": 10.0, "dec_deg": 95.0}]}}
    refused = ana.post("/api/work-orders/telescope", json=bad, headers=headers)
    assert refused.status_code == 400 and refused.json()["grpc_status"] == "INVALID_ARGUMENT"
    assert "observe_targets.targets[0].dec_deg" in refused.json()["error"]
    not_json = ana.post("/api/work-orders/telescope", content=b"{", headers=headers)
    assert not_json.status_code == 400 and "not JSON" in not_json.json()["error"]
    unknown = ana.post("/api/work-orders/telescope", json={"launch": 1}, headers=headers)
    assert unknown.status_code == 400 and "launch" in unknown.json()["error"]
    assert ana.post("/api/work-orders/kitchen", json=order, headers=headers).status_code == 404
    down = ana.post("/api/work-orders/alert", json={"process_alert": {}}, headers=headers)
    assert down.status_code == 503 and down.json()["grpc_status"] == "UNAVAILABLE"
    huge = ana.post("/api/work-orders/telescope", content=b" " * (2 * 1024 * 1024 + 1), headers=headers)
    assert huge.status_code == 413 and "web.max_request_bytes (2097152 bytes)" in huge.json()["error"]
    chunked = ana.post("/api/work-orders/telescope", content=iter([b" " * 1024 * 1024] * 3), headers=headers)
    assert chunked.status_code == 413  # no Content-Length: read no further than the limit

    vic, vic_csrf = site.logged_in("vic")
    viewer = vic.post("/api/work-orders/telescope", json=order, headers={"X-CSRF-Token": vic_csrf})
    assert viewer.status_code == 403 and "viewer" in viewer.json()["error"]


def test_status_names_the_daemon_that_is_down(site):
    client, _ = site.logged_in("vic")
    statuses = {s["module"]: s for s in client.get("/api/status").json()}
    assert statuses["telescope"]["reachable"] and statuses["telescope"]["module"] == "telescope"
    assert {d["name"] for d in statuses["telescope"]["devices"]} >= {"mount", "dome", "camera"}
    assert not statuses["alert"]["reachable"] and "UNAVAILABLE" in statuses["alert"]["error"]


class Listener:
    """A browser's EventSource: reads /api/events in a thread, as (id, event, data) triples: the daemons' events
    in ``events``, the console's notices of a daemon going or coming back in ``notices``."""

    def __init__(self, client: httpx.Client, last_event_id: str | None = None) -> None:
        self.events: list[tuple[str, str, dict]] = []
        self.notices: list[dict] = []
        headers = {"Last-Event-ID": last_event_id} if last_event_id else {}
        self._response = client.send(client.build_request("GET", "/api/events", headers=headers), stream=True)
        assert self._response.status_code == 200
        assert self._response.headers["content-type"].startswith("text/event-stream")
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        fields: dict[str, str] = {}
        try:
            for line in self._response.iter_lines():
                if not line:
                    if fields.get("event") == "daemon":
                        self.notices.append(json.loads(fields["data"]))
                    elif "data" in fields:
                        self.events.append((fields.get("id", ""), fields.get("event", ""), json.loads(fields["data"])))
                    fields = {}
                elif not line.startswith(":"):
                    name, _, value = line.partition(":")
                    fields[name] = value.removeprefix(" ")
        except httpx.HTTPError:
            pass

    def close(self) -> None:
        self._response.close()


def test_events_stream_from_one_watch_and_resume_without_gap_or_duplicate(site):
    ana, csrf = site.logged_in("ana")
    browsers = [Listener(ana) for _ in range(5)]
    time.sleep(0.3)  # subscribed
    submit = {"take_calibrations": {"image_type": "IMAGE_TYPE_BIAS", "count": 3}}
    first = ana.post("/api/work-orders/telescope", json=submit, headers={"X-CSRF-Token": csrf}).json()["id"]
    wait_for(lambda: any(e[2].get("kind") == "image_ready" for e in browsers[0].events), timeout=30)
    hub = site.server.app.state.console.hub
    assert hub.watches["telescope"] == 1  # five browsers, one Watch
    seen = browsers[0].events[:]
    event_id, kind, data = seen[0]
    assert data["module"] == "telescope" and data["work_order_id"] == first and kind == data["kind"]
    assert event_id.startswith("alert:0,telescope:") and data["sequence"] > 0
    for browser in browsers:
        browser.close()

    # The browser was away while a second work order ran: it comes back with the last id it saw.
    second = ana.post("/api/work-orders/telescope", json=submit, headers={"X-CSRF-Token": csrf}).json()["id"]
    stub = hub.stub("telescope")
    wait_for(lambda: stub.GetWorkOrder(pb.GetWorkOrderRequest(id=second)).state == pb.WORK_ORDER_STATE_DONE, timeout=30)
    back = Listener(ana, last_event_id=seen[0][0])
    expected = [
        e.sequence for e in stub.Watch(pb.WatchRequest(after_sequence=seen[0][2]["sequence"], replay_only=True))
    ]
    wait_for(lambda: len(back.events) >= len(expected), timeout=20)
    back.close()
    assert [e[2]["sequence"] for e in back.events][: len(expected)] == expected  # no gap, no duplicate
    assert {e[2]["work_order_id"] for e in back.events} >= {second}


def test_a_daemon_that_restarts_is_shown_down_then_its_events_resume_without_a_gap(site, start_daemon):
    ana, csrf = site.logged_in("ana")
    browser = Listener(ana)
    bias = {"take_calibrations": {"image_type": "IMAGE_TYPE_BIAS", "count": 1}}
    first = ana.post("/api/work-orders/telescope", json=bias, headers={"X-CSRF-Token": csrf}).json()["id"]
    wait_for(lambda: any(e[2]["work_order_id"] == first and e[1] == "image_ready" for e in browser.events), timeout=30)

    site.daemon.stop(grace=0.5)  # as kill -9 looks from outside: the daemon is gone
    down = time.monotonic()
    wait_for(lambda: not ana.get("/api/status").json()[1]["reachable"], timeout=2)
    assert time.monotonic() - down < 2
    # Pushed to the browser at once (an earlier notice may say it came up, if the console started just before).
    notice = wait_for(lambda: next((n for n in browser.notices if not n["reachable"]), None), timeout=2)
    assert notice["module"] == "telescope" and "UNAVAILABLE" in notice["error"]
    assert notice["sequence"] == browser.events[-1][2]["sequence"] and notice["work_order_id"] == ""
    events_while_down = len(browser.events)

    restarted = start_daemon(site.config, telescope_daemon)
    wait_for(lambda: ana.get("/api/status").json()[1]["reachable"], timeout=10)  # its badge turns green
    wait_for(lambda: browser.notices[-1]["reachable"], timeout=10)
    second = ana.post("/api/work-orders/telescope", json=bias, headers={"X-CSRF-Token": csrf}).json()["id"]
    wait_for(lambda: any(e[2]["work_order_id"] == second and e[1] == "image_ready" for e in browser.events), timeout=30)
    browser.close()
    sequences = [e[2]["sequence"] for e in browser.events]
    assert len(browser.events) > events_while_down
    journal = [e.sequence for e in restarted_watch(restarted.port, after=sequences[0] - 1, until=sequences[-1])]
    assert sequences == journal  # every event of the daemon, across its restart, once and in order


def restarted_watch(port: int, after: int, until: int) -> list[pb.Event]:
    import grpc

    from toros.generated import toros_pb2_grpc as pb_grpc

    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        events = pb_grpc.FrontDeskStub(channel).Watch(pb.WatchRequest(after_sequence=after, replay_only=True))
        return [e for e in events if e.sequence <= until]


def test_sigterm_stops_the_console_within_seconds_while_browsers_hold_their_streams(tmp_path):
    """Browsers never close an event stream: ``systemctl stop`` must not wait on them."""
    port = free_port()
    users = [{"name": "ana", "role": "operator", "password_hash": hash_password(PASSWORDS["ana"])}]
    config = write_config(tmp_path, web={"port": port, "users": users})
    process = subprocess.Popen(
        [str(VENV_BIN / "toros"), "serve", "web", "--config", str(config)], stderr=subprocess.PIPE, text=True
    )
    try:
        client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10, follow_redirects=False)
        wait_for(lambda: _answers(client), timeout=30)
        assert client.post("/login", data={"username": "ana", "password": PASSWORDS["ana"]}).status_code == 303
        browsers = [Listener(client) for _ in range(3)]
        time.sleep(0.3)  # the streams are open on the console
        process.send_signal(signal.SIGTERM)
        started = time.monotonic()
        assert process.wait(timeout=30) == 0
        assert time.monotonic() - started < STREAMS_CLOSE_S + 3
        for browser in browsers:
            browser.close()
    finally:
        process.kill()
    assert "Traceback" not in process.stderr.read()


def _answers(client: httpx.Client) -> bool:
    try:
        return client.get("/healthz").status_code == 200
    except httpx.HTTPError:
        return False


def test_hash_password_reads_standard_input():
    result = toros_cli("web", "hash-password", input="a long enough secret\n")
    assert result.returncode == 0, result.stderr
    assert PasswordHasher().verify(result.stdout.strip(), "a long enough secret")
    empty = toros_cli("web", "hash-password", input="")
    assert empty.returncode == 2 and empty.stderr.startswith("toros: no password on standard input")


def test_in_a_browser_the_overview_is_live_and_a_viewer_has_no_controls(site, browser, tmp_path):
    page = browser.new_page(bypass_csp=TEST_PROBES)
    page.goto(f"{site.server.url}/")
    assert page.url.endswith("/login")
    page.fill("input[name=username]", "ana")
    page.fill("input[name=password]", "wrong")
    page.click("button[type=submit]")
    assert page.text_content("#message") == "Wrong name or password."
    page.fill("input[name=username]", "ana")
    page.fill("input[name=password]", PASSWORDS["ana"])
    page.click("button[type=submit]")
    page.wait_for_selector("#daemons tr")
    rows = {r.split("\t")[0]: r for r in page.locator("#daemons tr").all_inner_texts()}
    assert "reachable" in rows["telescope"] and "unreachable" in rows["alert"]
    page.wait_for_selector("text=live")
    client, csrf = site.logged_in("ana")
    order = {"id": "from-the-page", "take_calibrations": {"image_type": "IMAGE_TYPE_BIAS", "count": 1}}
    client.post("/api/work-orders/telescope", json=order, headers={"X-CSRF-Token": csrf})
    page.wait_for_selector("#log >> text=image_ready from-the-page", timeout=30_000)
    page.wait_for_function(
        "document.querySelector('#images img') && document.querySelector('#images img').naturalWidth > 0"
    )
    page.click("#images a:text('header')")
    page.wait_for_selector("#header:has-text('WORKORD')")
    # The log filtered by kind, then a past night replayed from the journal.
    page.select_option("#filters select[name=kind]", "image_ready")
    visible = [t for t in page.locator("#log div:visible").all_inner_texts()]
    assert visible and all(" image_ready " in t for t in visible)
    page.fill("#replay input[name=night]", "2026-11-22")
    page.click("#replay button")
    page.wait_for_selector("#replayed div >> text=from-the-page")
    assert page.text_content("#replay .reason").endswith(" events")
    page.screenshot(path=str(tmp_path / "overview.png"), full_page=True)
    page.click("#logout button")
    page.wait_for_url("**/login")


def log_in(page: Any, url: str, name: str) -> None:
    page.goto(f"{url}/login")
    page.fill("input[name=username]", name)
    page.fill("input[name=password]", PASSWORDS[name])
    page.click("button[type=submit]")
    page.wait_for_selector("#daemons tr")


def test_in_a_browser_an_operator_acts_and_a_bad_field_is_marked(site, browser, tmp_path):
    page = browser.new_page()
    log_in(page, site.server.url, "ana")
    # A risky button asks twice.
    page.click("#open")
    assert page.text_content("#open") == "Really open the dome? Click again"
    page.click("#open")
    page.wait_for_selector("#actions .action .reason.up")
    stub = site.server.app.state.console.hub.stub("telescope")
    opened = page.text_content("#actions .action .reason.up").removeprefix("accepted: ")
    assert stub.GetWorkOrder(pb.GetWorkOrderRequest(id=opened)).requester == "web:ana"
    page.click("#night-open")
    assert page.text_content("#night-open") == "Really open for the night? Click again"
    page.click("#prepare")  # the dome is open: the daemon's reason appears beside the button
    page.wait_for_selector("#prepare ~ .reason.down")
    assert "the dome is open: close it before taking bias and dark frames" in page.text_content("#prepare ~ .reason")
    # A declination out of range: the daemon names the field, the page marks it.
    page.fill("#observe input[name=name]", "NGC 1566")
    page.fill("#observe input[name=ra_deg]", "65.0")
    page.fill("#observe input[name=dec_deg]", "95")
    page.click("#observe button")
    page.wait_for_selector("#observe input[name=dec_deg].invalid")
    assert "dec_deg" in page.text_content("#observe .reason")
    assert not page.locator("#observe input[name=ra_deg].invalid").count()
    # A long calibration series, cancelled from the page with a reason.
    client, csrf = site.logged_in("ana")
    long = {
        "id": "long-darks",
        "take_calibrations": {"image_type": "IMAGE_TYPE_DARK", "count": 50, "exposure_time": "600s"},
    }
    client.post("/api/work-orders/telescope", json=long, headers={"X-CSRF-Token": csrf})
    page.fill("#cancel input[name=id]", "long-darks")
    page.fill("#cancel input[name=reason]", "wrong exposure")
    page.click("#cancel button")
    page.wait_for_selector("#cancel .reason.up")
    wait_for(
        lambda: stub.GetWorkOrder(pb.GetWorkOrderRequest(id="long-darks")).state == pb.WORK_ORDER_STATE_CANCELLED,
        timeout=30,
    )
    assert "ana: wrong exposure" in stub.GetWorkOrder(pb.GetWorkOrderRequest(id="long-darks")).message
    page.screenshot(path=str(tmp_path / "actions.png"), full_page=True)

    viewer = browser.new_page()
    log_in(viewer, site.server.url, "vic")
    assert viewer.locator("#actions").count() == 0 and "vic (viewer)" in viewer.text_content("h1")


def test_in_a_browser_the_close_button_holds_the_robot_and_every_page_says_so(site, browser):
    page = browser.new_page()
    log_in(page, site.server.url, "ana")
    assert page.locator("#hold").is_hidden()
    page.click("#close")
    stub = site.server.app.state.console.hub.stub("telescope")
    wait_for(lambda: stub.GetStatus(pb.GetStatusRequest()).hold.by == "web:ana", timeout=30)
    page.wait_for_selector("#hold:visible")
    assert page.text_content("#hold .what").startswith("Telescope on hold by web:ana since ")
    viewer = browser.new_page()
    log_in(viewer, site.server.url, "vic")
    for path in ("/", "/alerts", "/tonight"):  # every page, for every role; only operators may resume
        viewer.goto(f"{site.server.url}{path}")
        viewer.wait_for_selector("#hold:visible")
        assert "on hold by web:ana" in viewer.text_content("#hold .what")
        assert viewer.locator("#hold button").count() == 0
    page.goto(f"{site.server.url}/alerts")
    page.wait_for_selector("#hold:visible")
    page.click("#hold button")
    page.wait_for_selector("#hold", state="hidden", timeout=30_000)  # the hold_update event hid it
    assert not stub.GetStatus(pb.GetStatusRequest()).HasField("hold")
    ended = list(stub.Watch(pb.WatchRequest(kinds=[pb.EVENT_KIND_HOLD_UPDATE], replay_only=True)))[-1]
    assert ended.hold_update.ended_by == "web:ana"


def test_in_a_browser_no_page_breaks_its_content_security_policy(site, browser):
    page = browser.new_page()
    violations: list[str] = []
    page.on(
        "console",
        lambda message: violations.append(message.text) if "Content Security Policy" in message.text else None,
    )
    log_in(page, site.server.url, "ana")
    page.wait_for_selector("#devices tr")  # the overview's script ran
    for path, ready in (("/alerts", "#alerts"), ("/tonight", "#night")):
        page.goto(f"{site.server.url}{path}")
        page.wait_for_selector(ready)
    page.goto(f"{site.server.url}/")
    page.wait_for_selector("text=live")
    page.click("#close")  # the actions' script ran
    page.wait_for_selector("#close ~ .reason.up")
    assert violations == []
    assert page.evaluate("getComputedStyle(document.body).backgroundColor") == "rgb(16, 20, 26)", (
        "the stylesheet applies"
    )


def test_previews_headers_and_downloads_of_stored_frames(site):
    ana = site.logged_in("vic")[0]  # a viewer may look
    operator, csrf = site.logged_in("ana")
    order = {"id": "frames", "take_calibrations": {"image_type": "IMAGE_TYPE_BIAS", "count": 1}}
    operator.post("/api/work-orders/telescope", json=order, headers={"X-CSRF-Token": csrf})
    stub = site.server.app.state.console.hub.stub("telescope")
    wait_for(
        lambda: stub.GetWorkOrder(pb.GetWorkOrderRequest(id="frames")).state == pb.WORK_ORDER_STATE_DONE, timeout=30
    )
    ready = next(iter(stub.Watch(pb.WatchRequest(kinds=[pb.EVENT_KIND_IMAGE_READY], replay_only=True)))).image_ready
    started = time.monotonic()
    preview = ana.get("/api/preview/telescope", params={"path": ready.path, "size": 32})
    assert preview.status_code == 200 and preview.headers["content-type"] == "image/png"
    from PIL import Image

    picture = Image.open(io.BytesIO(preview.content))
    assert max(picture.size) <= 32 and picture.mode == "L" and time.monotonic() - started < 5
    header = ana.get("/api/header/telescope", params={"path": ready.path})
    assert "IMAGETYP= 'BIAS" in header.text and "WORKORD = 'frames" in header.text
    download = ana.get("/api/files/telescope", params={"path": ready.path})
    assert download.status_code == 200 and hashlib.sha256(download.content).hexdigest() == ready.sha256
    assert ready.path.rsplit("/", 1)[-1] in download.headers["content-disposition"]
    # Paths outside the daemon's storage root, files that are not there, sizes out of range: clear refusals.
    outside = ana.get("/api/preview/telescope", params={"path": "/etc/passwd"})
    assert outside.status_code in (400, 403) and "storage root" in outside.json()["error"]
    assert ana.get("/api/files/telescope", params={"path": "nowhere.fits"}).status_code == 404
    assert ana.get("/api/preview/telescope", params={"path": ready.path, "size": 9999}).status_code == 400
    assert ana.get("/api/preview/telescope").status_code == 400
    assert site.client().get("/api/preview/telescope", params={"path": ready.path}).status_code == 401


def test_history_work_orders_and_tonights_plan(site, browser, tmp_path):
    ana, csrf = site.logged_in("ana")
    target = {"name": "NGC 1566", "ra_deg": 65.0, "dec_deg": -54.9, "exposure_time": "60s", "exposure_count": 1}
    below = {"name": "Polaris", "ra_deg": 37.95, "dec_deg": 89.26}
    order = {"id": "tonight", "observe_targets": {"targets": [target, below]}}
    assert ana.post("/api/work-orders/telescope", json=order, headers={"X-CSRF-Token": csrf}).status_code == 200
    status = ana.get("/api/work-orders/telescope/tonight").json()
    assert status["id"] == "tonight" and status["requester"] == "web:ana"
    assert ana.get("/api/work-orders/telescope/nothing").status_code == 404
    tonight = wait_for(lambda: (t := ana.get("/api/tonight").json())["plan"] and t, timeout=30)
    assert tonight["plan_png"] == f"{tonight['night']}/plan.png"
    assert [b["name"] for b in tonight["plan"]["blocks"]] == ["NGC 1566"]  # Polaris never rises there
    picture = wait_for(  # drawn just after the JSON is written
        lambda: (p := ana.get("/api/files/telescope", params={"path": tonight["plan_png"]})).status_code == 200 and p,
        timeout=30,
    )
    assert picture.headers["content-type"] == "image/png" and picture.headers["content-disposition"].startswith(
        "inline"
    )
    history = ana.get("/api/history/telescope", params={"kind": "work_order_update", "limit": 2}).json()
    assert len(history) == 2 and all(e["kind"] == "work_order_update" for e in history)
    assert ana.get("/api/history/telescope", params={"kind": "weather"}).status_code == 400
    night = ana.get("/api/history/telescope", params={"night": "2026-11-22", "work_order_id": "tonight"}).json()
    assert night and {e["work_order_id"] for e in night} == {"tonight"}
    assert ana.get("/api/history/telescope", params={"night": "2026-11-21"}).json() == []
    assert ana.get("/api/history/telescope", params={"night": "yesterday"}).status_code == 400
    assert ana.get("/api/history/alert", params={"kind": "alert_processed"}).status_code == 503

    page = browser.new_page(bypass_csp=TEST_PROBES)
    log_in(page, site.server.url, "vic")
    page.click("nav >> text=Tonight")
    page.wait_for_function("document.querySelector('#plan') && document.querySelector('#plan').naturalWidth > 0")
    assert "NGC 1566" in page.text_content("#blocks") and "Polaris" not in page.text_content("#blocks")
    page.screenshot(path=str(tmp_path / "tonight.png"), full_page=True)
    page.click("nav >> text=Alerts and candidates")
    page.wait_for_selector("#alerts:has-text('the alert daemon: ')")  # it is down: the page says so
    page.wait_for_selector("#triplets:has-text('the preprocessor: ')")


# -- the whole observatory in browsers -----------------------------------------------------------------------


@dataclass
class Observatory:
    node: Any  # toros.demo.Node: the three daemons as processes
    server: WebServer
    folder: Path


@pytest.fixture
def observatory(tmp_path) -> Iterator[Observatory]:
    """The demo's node (alert, telescope and preprocessor as processes; small frames, clock ×120) at dusk, before
    its calibrations, with the console in front of it."""
    from toros import demo
    from toros.config import load_config

    folder = tmp_path / "node"
    config = demo.write_config(folder, frame=256, pixel_scale=1.0, rate=120.0, galaxies=3000,
                               clock_start="2026-05-01T21:55:00Z")  # fmt: skip
    scenario = demo.plan_scenario(config)
    demo.write_reference_stars(folder, scenario.targets, 256 / 3600.0 * 0.71 + REFERENCE_MARGIN_DEG)
    document = yaml.safe_load(config.read_text())
    document["web"] = {"port": 0, "users": [
        {"name": "ana", "role": "operator", "password_hash": hash_password(PASSWORDS["ana"])},
        {"name": "vic", "role": "viewer", "password_hash": hash_password(PASSWORDS["vic"])},
    ]}  # fmt: skip
    config.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    node = demo.Node(config)
    server = None
    try:
        for module in demo.MODULES:
            node.start(module)
        server = WebServer(load_config(config))
        server.start()
        yield Observatory(node, server, folder)
    finally:
        if server is not None:
            server.stop()
        node.stop()


def states_on(page: Any) -> dict[str, str]:
    """Each target's state as the alerts page colours it (the zoomed map)."""
    return page.evaluate(
        """() => Object.fromEntries([...document.querySelectorAll("section.alert svg.sky:last-child circle.target")]
                 .map((c) => [c.dataset.name, c.dataset.state]))"""
    )


@pytest.mark.timeout(360)
def test_in_browsers_an_alert_drill_is_followed_through_the_night(observatory, browser, tmp_path):
    """The issue's scenario: an operator replays the sample alert as a drill at dusk; the contours and targets
    appear, planned, and change colour as the night goes on; thumbnails arrive with their calibrated frames; the telescope is
    killed (its badge turns red within 2 s) and restarted (the log continues without a gap); a viewer sees the
    same, has no controls and is refused; nothing is requested outside the node."""
    url = observatory.server.url
    shots = Path(os.environ.get("TOROS_SCREENSHOTS", tmp_path))
    operator = browser.new_context(viewport={"width": 1280, "height": 900}, bypass_csp=TEST_PROBES)
    outside = confined(operator, url)
    overview = operator.new_page()
    log_in(overview, url, "ana")
    overview.wait_for_selector("#stream:text('live')")
    alerts = operator.new_page()
    alerts.goto(f"{url}/alerts")

    viewer = browser.new_context(viewport={"width": 1280, "height": 900}, bypass_csp=TEST_PROBES)
    outside += confined(viewer, url)
    watcher = viewer.new_page()
    log_in(watcher, url, "vic")
    watcher.wait_for_selector("#stream:text('live')")
    assert watcher.locator("#actions").count() == 0
    refused = watcher.evaluate(
        """async () => {
             const session = await (await fetch("/api/session")).json();
             const answer = await fetch("/api/work-orders/telescope", {method: "POST",
               headers: {"Content-Type": "application/json", "X-CSRF-Token": session.csrf_token},
               body: JSON.stringify({dome_control: {action: "DOME_ACTION_CLOSE"}})});
             return [answer.status, (await answer.json()).error];
           }"""
    )
    assert refused[0] == 403 and "viewer" in refused[1]

    # A file that is not a notice: refused, the reason beside the button.
    overview.wait_for_function("document.querySelectorAll('#drill select option').length > 1")
    overview.set_input_files(
        "#drill input[name=notice]", {"name": "notes.txt", "mimeType": "text/plain", "buffer": b"bring coffee"}
    )
    overview.click("#drill button")
    overview.wait_for_selector("#drill .reason.down")
    assert "process_alert.payload" in overview.text_content("#drill .reason")
    overview.set_input_files("#drill input[name=notice]", [])
    # The drill: a shipped sample notice, replayed from the operator's page.
    overview.wait_for_function("document.querySelectorAll('#drill select option').length > 1")
    overview.select_option("#drill select[name=sample]", "MS181101ab-preliminary.json")
    overview.click("#drill button")
    overview.wait_for_selector("#drill .reason.up")
    alerts.wait_for_selector("section.alert[data-ready=sky] svg.sky circle.target", timeout=60_000)
    alerts.wait_for_selector("section.alert svg.sky polyline.contour")
    banner = alerts.text_content("section.alert h3")
    assert "MS181101ab-drill PRELIMINARY" in banner and "DRILL" in banner and "6 targets relayed" in banner
    assert alerts.locator("section.alert svg.sky:first-child circle.sun").count() == 1
    assert alerts.locator("table.galaxies tbody tr").count() >= 6
    wait_for(lambda: "planned" in states_on(alerts).values(), timeout=30)
    first = states_on(alerts)
    assert len(first) == 6 and set(first.values()) <= {"relayed", "planned"}, first  # it is not dark yet
    hover = alerts.locator("section.alert svg.sky:last-child circle.target title").first.text_content()
    assert "RA " in hover and "Dec " in hover and any(s in hover for s in ("planned", "observing", "relayed"))
    alerts.screenshot(path=str(shots / "alerts.png"), full_page=True)

    # The current target, on the overview while it is observed.
    overview.wait_for_selector("#daemons tr:has-text('telescope') td:has-text('; target GLADE+')", timeout=120_000)
    # Thumbnails within a second of image_ready, and their calibrated frames beside them.
    overview.wait_for_function(
        "document.querySelector('#images img.raw') && document.querySelector('#images img.raw').naturalWidth > 0",
        timeout=120_000,
    )
    overview.wait_for_selector("#calibration progress", timeout=60_000)
    overview.wait_for_function(
        "[...document.querySelectorAll('#images img.calibrated')].some((i) => i.naturalWidth > 0)", timeout=60_000
    )
    figure = overview.locator("#images figure:has(img.calibrated)").first
    figure.locator("button.blink").click()
    overview.wait_for_function("[...document.querySelectorAll('#images figure')].some((f) => f.dataset.timer)")
    figure.locator("button.blink").click()
    overview.screenshot(path=str(shots / "overview.png"), full_page=True)

    # A target observed: its colour changes on the page.
    wait_for(lambda: any(s in ("observed", "calibrated") for s in states_on(alerts).values()), timeout=120)

    # kill -9 the telescope mid-night: both browsers show it down within 2 s.
    observatory.node.kill("telescope")
    killed = time.monotonic()
    for page in (overview, watcher):
        page.wait_for_selector("#daemons tr:has-text('telescope') td.down", timeout=2_000)
    assert time.monotonic() - killed < 2.5
    observatory.node.start("telescope")
    for page in (overview, watcher):
        page.wait_for_selector("#daemons tr:has-text('telescope') td.up", timeout=20_000)
    # The night goes on: every target calibrated in the end, and the log has every telescope event once.
    wait_for(lambda: set(states_on(alerts).values()) == {"calibrated"}, timeout=180)
    stub = observatory.node.stub("telescope")
    for page in (overview, watcher):
        logged = page.evaluate(
            "[...document.querySelectorAll('#log div')].filter((d) => d.dataset.module === 'telescope')"
            ".map((d) => Number(d.dataset.sequence)).reverse()"
        )
        journal = [
            e.sequence
            for e in stub.Watch(pb.WatchRequest(after_sequence=logged[0] - 1, replay_only=True), timeout=30)
            if e.sequence <= logged[-1]
        ]
        assert logged == journal, "a gap or a duplicate in the browser's log across the restart"
    assert watcher.evaluate(
        "[...document.querySelectorAll('#log div')].some((d) => d.textContent.includes('image_ready'))"
    )
    alerts.reload()
    alerts.wait_for_selector("section.alert[data-ready=sky]")
    assert set(states_on(alerts).values()) == {"calibrated"}
    alerts.screenshot(path=str(shots / "alerts-calibrated.png"), full_page=True)
    tonight = operator.new_page()
    tonight.goto(f"{url}/tonight")
    tonight.wait_for_function("document.querySelector('#plan') && document.querySelector('#plan').naturalWidth > 0")

    # Every target observed (7 rows: one was interrupted); the plan is rewritten just after the last frame.
    def observed_rows() -> int:
        tonight.reload()
        tonight.wait_for_function("document.querySelector('#night').textContent.startsWith('night ')")
        return tonight.locator("#observed tr").count()

    wait_for(lambda: observed_rows() >= 6, timeout=60, interval=1)
    observed = {row.split("\t")[0] for row in tonight.locator("#observed tr").all_inner_texts()}
    assert observed == set(states_on(alerts)), observed
    tonight.screenshot(path=str(shots / "tonight.png"), full_page=True)
    assert outside == [], f"requests outside the node: {outside}"


def test_the_console_over_tls_sets_a_secure_cookie_and_sessions_expire(make_config, tmp_path):
    from pki import Authority

    authority = Authority(tmp_path / "pki")
    cert, key = authority.issue("console", ["127.0.0.1"])
    users = [{"name": "ana", "role": "operator", "password_hash": hash_password(PASSWORDS["ana"])}]
    config = make_config(
        alert={"port": free_port()}, telescope={"port": free_port()}, preprocessor={"port": free_port()},
        web={"port": 0, "users": users, "tls": {"cert": str(cert), "key": str(key)}, "session_minutes": 0.02},
    )  # fmt: skip
    server = WebServer(config)
    server.start()
    try:
        assert server.url.startswith("https://127.0.0.1:")
        trust = ssl.create_default_context(cafile=str(authority.ca))
        with httpx.Client(base_url=server.url, verify=trust, follow_redirects=False) as client:
            assert client.get("/healthz").json() == {"ok": True}
            login = client.post("/login", data={"username": "ana", "password": PASSWORDS["ana"]})
            cookie = login.headers["set-cookie"].lower()
            assert login.status_code == 303 and "secure" in cookie and "httponly" in cookie
            assert client.get("/api/session").json()["user"] == "ana"
            time.sleep(1.5)  # the session lasted 1.2 s
            expired = client.get("/api/session")
            assert expired.status_code == 401 and expired.json()["error"] == "not logged in"
        with httpx.Client(base_url=server.url.replace("https", "http"), timeout=5) as plain:
            with pytest.raises(httpx.HTTPError):  # no plain HTTP beside TLS
                plain.get("/healthz")
    finally:
        server.stop()
