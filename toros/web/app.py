"""The web console: an ASGI app (Starlette) that is a gRPC client of the node's daemons.

HTTP contract (DESIGN.md): ``GET /healthz``; ``GET|POST /login``; ``POST /logout``; ``GET /api/session``;
``GET /api/status``; ``GET /api/events`` (Server-Sent Events, resumable with ``Last-Event-ID``);
``POST /api/work-orders/<module>``. The daemons' token never leaves this process."""

from __future__ import annotations

import asyncio
import contextlib
import html
import json
import logging
import mimetypes
import threading
import urllib.parse
import weakref
from collections import deque
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any

import grpc
from google.protobuf.json_format import MessageToDict, ParseDict, ParseError
from sse_starlette.sse import EventSourceResponse
from starlette.applications import Starlette
from starlette.concurrency import iterate_in_threadpool, run_in_threadpool
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import (
    HTMLResponse,
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from toros.config import Config
from toros.floor.astronomy import coming_night
from toros.generated import toros_pb2 as pb
from toros.runtime.files import safe_name
from toros.web.accounts import Accounts, Refusal, Session
from toros.web.hub import DAEMON, MODULES, EventHub, Subscriber, WebEvent, format_position, parse_position
from toros.web.pages import ACTIONS, LOGIN_PAGE, OVERVIEW_PAGE, PAGES
from toros.web.previews import NotAnImage, Previews
from toros.web.sky import Progress, sky_now, with_states

log = logging.getLogger(__name__)

COOKIE = "toros_session"
SAMPLES = Path(__file__).resolve().parent.parent / "data" / "alerts"
# gRPC refusals as HTTP answers: the status name and message go with them.
_HTTP_STATUS = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.UNAUTHENTICATED: 502,  # the console's own token was refused: its config is wrong
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.FAILED_PRECONDITION: 409,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
}


INLINE_TYPES = frozenset({"image/png", "image/jpeg"})  # stored files the console shows (previews are PNG too)
SECURITY_HEADERS = [
    (
        b"content-security-policy",
        b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; connect-src 'self'; "
        b"form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    ),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
]


class SecurityHeaders:
    """Every answer says what the browser may do with it: scripts and styles from the console's own static files
    only (no inline script), never in a frame, never sniffed as another type. A plain ASGI wrapper: it adds the
    headers without buffering streamed answers (event streams, downloads)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *SECURITY_HEADERS]
            await send(message)

        await self.app(scope, receive, with_headers)


def _error(status: int, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": message} | extra, status_code=status)


def _grpc_error(error: grpc.RpcError) -> JSONResponse:
    """A daemon's refusal as the HTTP answer, with the gRPC status and message."""
    code = error.code()
    return _error(_HTTP_STATUS.get(code, 502), error.details() or code.name, grpc_status=code.name)


class _Refused(Exception):
    """A daemon said no: ``response`` is the HTTP answer that says so."""

    def __init__(self, response: Response) -> None:
        self.response = response


LOGIN_BODY_BYTES = 4096  # a name and a password
REPLAY_THREADS = 4  # browsers catching up at once (a journal page read, then sent, each), whatever their number


@dataclass(eq=False)
class StreamSlot:
    """One open event stream, counted against its session's share and the console's total until released."""

    slots: StreamSlots
    session: str
    released: bool = False

    def release(self) -> None:
        self.slots.release(self)


class StreamSlots:
    """Event streams are capped in total and per session: each holds a connection, a queue and its catching up."""

    def __init__(self, total: int, per_session: int) -> None:
        self.total, self.per_session = total, per_session
        self._open: dict[str, int] = {}
        self._lock = threading.Lock()

    @property
    def count(self) -> int:
        with self._lock:
            return sum(self._open.values())

    def take(self, session: str) -> StreamSlot | str:
        """A slot, or why there is none (the answer is 429)."""
        with self._lock:
            if self._open.get(session, 0) >= self.per_session:
                return (
                    f"this session has {self.per_session} event streams open already (web.max_streams_per_session): "
                    "close a tab or wait"
                )
            if sum(self._open.values()) >= self.total:
                return f"the console serves {self.total} event streams already (web.max_streams): try again later"
            self._open[session] = self._open.get(session, 0) + 1
        return StreamSlot(self, session)

    def release(self, slot: StreamSlot) -> None:
        with self._lock:
            if slot.released:
                return
            slot.released = True
            left = self._open.get(slot.session, 1) - 1
            if left > 0:
                self._open[slot.session] = left
            else:
                self._open.pop(slot.session, None)


class Console:
    """The console's state: accounts, sessions, the hub of daemon events."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.accounts = Accounts(config.web)
        self.hub = EventHub(config)
        self.streams = StreamSlots(config.web.max_streams, config.web.max_streams_per_session)
        self.replays = ThreadPoolExecutor(REPLAY_THREADS, thread_name_prefix="web-replay")
        self.catching_up = asyncio.Semaphore(REPLAY_THREADS)  # browsers sent their missed events at once
        self.previews = Previews(self.hub)
        self.secure_cookie = config.web.tls is not None
        self._calibrated_frames: set[int] = set()
        # The preprocessor's name for this node's telescope (its follow work orders say which frame they
        # calibrate): the one at the telescope's address, else the first followed.
        address = f"{config.telescope.ip}:{config.telescope.port}"
        follows = config.preprocessor.follow
        self.follow_name = next((f.name for f in follows if f.address == address), follows[0].name if follows else "")

    def session(self, request: Request) -> Session | None:
        return self.accounts.session(request.cookies.get(COOKIE))

    def _asked(self, request: Request) -> tuple[Session, str] | Response:
        """Someone logged in asking one daemon (the path's module); or the answer that refuses it."""
        session = self.session(request)
        if session is None:
            return _error(401, "not logged in")
        module = request.path_params["module"]
        if module not in MODULES:
            return _error(404, f"no module {module!r} (one of {', '.join(MODULES)})")
        return session, module

    def _file_request(self, request: Request) -> tuple[str, str] | Response:
        """The module and path of a file request; or the answer that refuses it."""
        asked = self._asked(request)
        if isinstance(asked, Response):
            return asked
        path = request.query_params.get("path", "")
        if not path:
            return _error(400, "path: the stored file's path is required (as image_ready gives it)")
        return asked[1], path

    async def preview(self, request: Request) -> Response:
        asked = self._file_request(request)
        if isinstance(asked, Response):
            return asked
        size_text = request.query_params.get("size", "256")
        if not size_text.isdigit() or not 16 <= int(size_text) <= 2048:
            return _error(400, f"size: a whole number of pixels from 16 to 2048, not {size_text!r}")
        try:
            picture = await run_in_threadpool(self.previews.png, *asked, int(size_text))
        except grpc.RpcError as error:
            return _grpc_error(error)
        except NotAnImage as exc:
            return _error(422, str(exc))
        return Response(picture, media_type="image/png", headers={"Cache-Control": "private, max-age=86400"})

    async def header(self, request: Request) -> Response:
        asked = self._file_request(request)
        if isinstance(asked, Response):
            return asked
        try:
            text = await run_in_threadpool(self.previews.header, *asked)
        except grpc.RpcError as error:
            return _grpc_error(error)
        except NotAnImage as exc:
            return _error(422, str(exc))
        return PlainTextResponse(text)

    async def download(self, request: Request) -> Response:
        asked = self._file_request(request)
        if isinstance(asked, Response):
            return asked
        chunks = self.previews.chunks(*asked)
        try:
            first = await run_in_threadpool(next, chunks)  # a refusal (no such file) is an answer, not a stream
        except grpc.RpcError as error:
            return _grpc_error(error)

        async def rest() -> AsyncIterator[bytes]:
            yield first.data
            async for chunk in iterate_in_threadpool(chunks):
                yield chunk.data

        name = safe_name(asked[1].rsplit("/", 1)[-1], "file")
        media = mimetypes.guess_type(name)[0] or "application/octet-stream"
        # Only what the console itself shows is shown in the browser: any other stored file (an HTML or SVG
        # file among the products, say) is a download, never a live page of the console's origin.
        inline = media in INLINE_TYPES and not request.query_params.get("download")
        return StreamingResponse(
            rest(),
            media_type=media if inline else "application/octet-stream",
            headers={
                "Content-Disposition": f'{"inline" if inline else "attachment"}; filename="{name}"',
                "Content-Length": str(first.size_bytes),
            },
        )

    async def history(self, request: Request) -> Response:
        """The latest events from a daemon's journal: of some kinds (``kind``, repeated), of a work order
        (``work_order_id``), of a past night (``night``: its replay), at most ``limit``."""
        asked = self._asked(request)
        if isinstance(asked, Response):
            return asked
        module = asked[1]
        kinds: list[str] = []  # the enum's names, which the message takes as they are
        for kind in request.query_params.getlist("kind"):
            name = f"EVENT_KIND_{kind.upper()}"
            if name not in pb.EventKind.keys():
                return _error(400, f"kind: no event kind {kind!r}")
            kinds.append(name)
        limit_text = request.query_params.get("limit", "50")
        if not limit_text.isdigit() or not 1 <= int(limit_text) <= 1000:
            return _error(400, f"limit: a whole number from 1 to 1000, not {limit_text!r}")
        watch = pb.WatchRequest(
            kinds=kinds, replay_only=True, work_order_id=request.query_params.get("work_order_id", "")
        )
        night_text = request.query_params.get("night", "")
        try:
            night = date.fromisoformat(night_text) if night_text else None
        except ValueError:
            return _error(400, f"night: a date as YYYY-MM-DD, not {night_text!r}")
        # A night runs from local noon to local noon at the node's site (mean solar time, as the nights' folders).
        site = self.config.telescope.site
        start = (
            datetime.combine(night, time(12), UTC) - timedelta(hours=site.longitude / 15.0)
            if night is not None
            else None
        )

        def replay() -> list[dict[str, Any]]:
            events: deque[dict[str, Any]] = deque(maxlen=int(limit_text))
            for event in self.hub.stub(module).Watch(watch, timeout=30):
                moment = event.time.ToDatetime(tzinfo=UTC)
                if start is None or start <= moment < start + timedelta(days=1):
                    events.append(WebEvent.of(module, event).data)
            return list(events)

        try:
            return JSONResponse(await run_in_threadpool(replay))
        except grpc.RpcError as error:
            return _grpc_error(error)

    async def work_order(self, request: Request) -> Response:
        asked = self._asked(request)
        if isinstance(asked, Response):
            return asked
        try:
            status = await self._call(
                self.hub.stub(asked[1]).GetWorkOrder, pb.GetWorkOrderRequest(id=request.path_params["id"])
            )
        except _Refused as refused:
            return refused.response
        return JSONResponse(MessageToDict(status, preserving_proto_field_name=True))

    def _plan(self) -> tuple[datetime, str, Any]:
        """The telescope's clock, its night and the night's plan (None before there is one)."""
        status = self.hub.stub("telescope").GetStatus(pb.GetStatusRequest(), timeout=10)
        now = status.clock_time.ToDatetime(tzinfo=UTC)
        night, _ = coming_night(self.config.telescope.site, self.config.telescope.constraints, now)
        folder = night.isoformat()
        try:
            return now, folder, self.previews.json("telescope", f"{folder}/plan.json")
        except grpc.RpcError as error:
            if error.code() != grpc.StatusCode.NOT_FOUND:
                raise
            return now, folder, None

    async def tonight(self, request: Request) -> Response:
        """The telescope's night plan: its picture's path and its JSON (None before there is a plan)."""
        if self.session(request) is None:
            return _error(401, "not logged in")
        try:
            now, folder, plan = await run_in_threadpool(self._plan)
        except grpc.RpcError as error:
            return _grpc_error(error)
        clock = now.isoformat().replace("+00:00", "Z")
        return JSONResponse({"night": folder, "now": clock, "plan_png": f"{folder}/plan.png", "plan": plan})

    async def sky(self, request: Request) -> Response:
        """An alert's sky view (its ``process_alert`` work order's ``sky_view`` product) with each target's
        state now, and the Sun, the Moon and the horizon at the node's site."""
        if self.session(request) is None:
            return _error(401, "not logged in")
        try:
            status = await self._call(
                self.hub.stub("alert").GetWorkOrder, pb.GetWorkOrderRequest(id=request.path_params["id"])
            )
        except _Refused as refused:
            return refused.response
        path = next((p.path for p in status.products if p.kind == "sky_view"), None)
        if path is None:
            return _error(404, f"work order {status.id} has no sky view (it relayed nothing: {status.message})")
        try:
            view = await run_in_threadpool(self._sky, path)
        except grpc.RpcError as error:
            return _grpc_error(error)
        return JSONResponse(view)

    def _sky(self, path: str) -> dict[str, Any]:
        view = self.previews.json("alert", path)
        try:
            now, _, plan = self._plan()
        except grpc.RpcError as error:  # the telescope is down: what the alert daemon knows, said so
            view["telescope_error"] = f"{error.code().name}: {error.details()}"
            return with_states(view, {})
        progress = {site["name"]: self._progress(site, now, plan) for site in view.get("sites", [])}
        view["now"] = sky_now(self.config.telescope.site, self.config.telescope.constraints, now)
        return with_states(view, progress)

    def _progress(self, site: dict[str, Any], now: datetime, plan: Any) -> Progress | None:
        """What this node's telescope and preprocessor say of a site's relayed work order (None when the
        telescope does not know it: another node's)."""
        if not site.get("accepted"):
            return None
        telescope = self.hub.stub("telescope")
        try:
            order = telescope.GetWorkOrder(pb.GetWorkOrderRequest(id=site["work_order_id"]), timeout=10)
        except grpc.RpcError as error:
            if error.code() != grpc.StatusCode.NOT_FOUND:
                raise
            return None
        progress = Progress(order, now)
        for block in (plan or {}).get("blocks", []):
            progress.blocks[block["key"]] = (block["start"], block["end"])
        for entry in (plan or {}).get("unobservable", []):
            progress.unobservable[entry["key"]] = entry["reason"]
        frames = pb.WatchRequest(work_order_id=order.id, kinds=[pb.EVENT_KIND_IMAGE_READY], replay_only=True)
        for event in telescope.Watch(frames, timeout=30):
            if event.image_ready.image_type == pb.IMAGE_TYPE_LIGHT:
                progress.frames.setdefault(event.image_ready.object, []).append(event.sequence)
        progress.calibrated = {s for s in sum(progress.frames.values(), []) if self._calibrated(s)}
        return progress

    def _calibrated(self, sequence: int) -> bool:
        """Whether the preprocessor calibrated the telescope's frame of this image_ready sequence (its follow
        work order is done); remembered once true."""
        if sequence in self._calibrated_frames:
            return True
        for followed in self.config.preprocessor.follow:
            request = pb.GetWorkOrderRequest(id=f"follow-{followed.name}-{sequence}")
            try:
                state = self.hub.stub("preprocessor").GetWorkOrder(request, timeout=5).state
            except grpc.RpcError:
                continue
            if state == pb.WORK_ORDER_STATE_DONE:
                self._calibrated_frames.add(sequence)
                return True
        return False

    async def samples(self, request: Request) -> Response:
        """The sample notices shipped with TOROS, to replay as drills."""
        if self.session(request) is None:
            return _error(401, "not logged in")
        name = request.path_params.get("name")
        if name is None:
            return JSONResponse(sorted(p.name for p in SAMPLES.iterdir() if p.suffix in (".json", ".xml")))
        path = SAMPLES / name
        if "/" in name or path.suffix not in (".json", ".xml") or not path.is_file():
            return _error(404, f"no sample notice {name!r}")
        return Response(path.read_bytes(), media_type="application/octet-stream")

    # -- pages -------------------------------------------------------------------------------------

    async def healthz(self, request: Request) -> Response:
        return JSONResponse({"ok": True})

    async def overview(self, request: Request) -> Response:
        session = self.session(request)
        if session is None:
            return RedirectResponse("/login", status_code=303)
        page = OVERVIEW_PAGE.replace("{user}", html.escape(session.user)).replace("{role}", session.role.value)
        page = page.replace("{follow}", html.escape(self.follow_name, quote=True))
        return HTMLResponse(page.replace("{actions}", ACTIONS if session.role.commands else ""))

    async def page(self, request: Request) -> Response:
        """The other pages: the same frame, their own script."""
        session = self.session(request)
        if session is None:
            return RedirectResponse("/login", status_code=303)
        body = PAGES[request.url.path]
        return HTMLResponse(body.replace("{user}", html.escape(session.user)).replace("{role}", session.role.value))

    async def login_form(self, request: Request) -> Response:
        return HTMLResponse(LOGIN_PAGE.replace("{message}", ""))

    async def login(self, request: Request) -> Response:
        # The peer's address (a forwarded one only from web.trusted_proxies: uvicorn is told so).
        client = request.client.host if request.client else "unknown"
        body = await self._body(request, LOGIN_BODY_BYTES, "a login form")
        if isinstance(body, Response):
            return body
        try:
            form = urllib.parse.parse_qs(body.decode(), max_num_fields=10)
        except (UnicodeDecodeError, ValueError) as exc:
            return _error(400, f"not a login form: {exc}")
        name, password = (form.get(field, [""])[0] for field in ("username", "password"))
        attempt = self.accounts.attempt(client, name, password)
        if isinstance(attempt, Refusal):
            log.warning("web: login for %r from %s refused: %s", name[:64], client, attempt.value)
            message = html.escape(attempt.value[0].upper() + attempt.value[1:]) + "."
            return HTMLResponse(LOGIN_PAGE.replace("{message}", message), status_code=429)
        made = await asyncio.wrap_future(attempt)  # argon2 on the login threads
        if made is None:
            log.warning("web: a wrong name or password for %r from %s", name[:64], client)
            return HTMLResponse(LOGIN_PAGE.replace("{message}", "Wrong name or password."), status_code=401)
        token, session = made
        log.info("web: %s (%s) logged in from %s", session.user, session.role.value, client)
        response = RedirectResponse("/", status_code=303)
        response.set_cookie(
            COOKIE,
            token,
            max_age=int(self.config.web.session_minutes * 60),
            httponly=True,
            samesite="strict",
            secure=self.secure_cookie,
        )
        return response

    async def logout(self, request: Request) -> Response:
        session = self.session(request)
        if session is not None:
            if request.headers.get("x-csrf-token") != session.csrf_token:
                return _error(403, "missing or wrong X-CSRF-Token header (GET /api/session gives it)")
            self.accounts.logout(request.cookies.get(COOKIE))
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(COOKIE)
        return response

    # -- the API -----------------------------------------------------------------------------------

    async def api_session(self, request: Request) -> Response:
        session = self.session(request)
        if session is None:
            return _error(401, "not logged in")
        return JSONResponse({"user": session.user, "role": session.role.value, "csrf_token": session.csrf_token})

    async def api_status(self, request: Request) -> Response:
        if self.session(request) is None:
            return _error(401, "not logged in")
        statuses = await asyncio.gather(*(run_in_threadpool(self.hub.status, module) for module in MODULES))
        return JSONResponse(list(statuses))

    async def api_events(self, request: Request) -> Response:
        token = request.cookies.get(COOKIE)
        if self.accounts.session(token) is None:
            return _error(401, "not logged in")
        assert token is not None, "a session has a token"
        slot = self.streams.take(token)
        if isinstance(slot, str):
            return _error(429, slot)
        since = parse_position(request.headers.get("last-event-id"))
        # Subscribed before the answer starts: whatever happens once the browser has its 200 reaches it.
        subscriber, now = self.hub.subscribe()
        stream = self._stream(subscriber, now, since, slot)
        weakref.finalize(stream, slot.release)  # a stream the server never started still gives its slot back
        return EventSourceResponse(stream, ping=15)

    async def _stream(
        self, subscriber: Subscriber, now: dict[str, int], since: dict[str, int] | None, slot: StreamSlot
    ) -> AsyncIterator[bytes]:
        """What a browser missed since its Last-Event-ID, then everything live; never a duplicate. What it missed
        is read a page at a time on the replay threads and sent a page at a time, a few browsers at once whatever
        their number (so that catching up never holds the threads and the loop the other requests use), and it
        stops when the browser goes."""
        sent = dict(since or now)
        loop = asyncio.get_running_loop()
        try:
            for module in MODULES if since is not None else ():
                while sent[module] < now[module]:
                    async with self.catching_up:  # a page at a time: every browser catching up moves on
                        chunk = await loop.run_in_executor(self.replays, self._replay_page, module, sent, now)
                    if not chunk:
                        break  # the daemon is down: its events come when it is back
                    yield chunk
            while (live := await subscriber.queue.get()) is not None:  # None: too far behind, it reconnects
                if live.kind == DAEMON:
                    yield f"event: {DAEMON}\r\ndata: {live.json}\r\n\r\n".encode()
                elif live.sequence > sent[live.module]:
                    sent[live.module] = live.sequence
                    yield self._sse(live, sent)
        finally:
            self.hub.unsubscribe(subscriber)
            slot.release()

    def _replay_page(self, module: str, sent: dict[str, int], now: dict[str, int]) -> bytes:
        """The next page a browser missed of one daemon, read and written out on a replay thread (the event loop
        only sends it); advances ``sent``. Empty: the daemon is down."""
        chunk = bytearray()
        for event in self.hub.page(module, sent[module], now[module]):
            if event.sequence > sent[module]:
                sent[module] = event.sequence
                chunk += self._sse(event, sent)
        return bytes(chunk)

    @staticmethod
    def _sse(event: WebEvent, sent: dict[str, int]) -> bytes:
        """One event as Server-Sent Events write it (``data`` JSON is one line)."""
        return f"id: {format_position(sent)}\r\nevent: {event.kind}\r\ndata: {event.json}\r\n\r\n".encode()

    async def _command(self, request: Request) -> tuple[Session, str, Any] | Response:
        """A command's session, module and JSON body; or the answer that refuses it."""
        asked = self._asked(request)
        if isinstance(asked, Response):
            return asked
        session, module = asked
        if not session.role.commands:
            return _error(403, f"{session.user} is a viewer: viewers give no commands")
        if request.headers.get("x-csrf-token") != session.csrf_token:
            return _error(403, "missing or wrong X-CSRF-Token header (GET /api/session gives it)")
        body = await self._body(request)
        if isinstance(body, Response):
            return body
        try:
            return session, module, json.loads(body or b"{}")
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            return _error(400, f"the body is not JSON: {exc}")
        except RecursionError:
            return _error(400, "the body nests JSON too deeply (a work order is a few levels deep)")

    async def _body(self, request: Request, limit: int | None = None, what: str = "") -> bytes | Response:
        """The request's body, read no further than ``limit`` (``web.max_request_bytes``: a notice uploaded for a
        drill is the largest thing a browser sends)."""
        cap = (
            f"{what}: at most {limit} bytes"
            if limit
            else f"web.max_request_bytes ({self.config.web.max_request_bytes} bytes)"
        )
        limit = limit or self.config.web.max_request_bytes
        declared = request.headers.get("content-length", "")
        too_large = _error(413, f"the request is larger than {cap}")
        if declared.isdigit() and int(declared) > limit:
            return too_large
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                return too_large
        return bytes(body)

    @staticmethod
    async def _call(method: Any, request: Any) -> Any:
        """A daemon call; a gRPC refusal becomes the HTTP answer (raised as _Refused)."""
        try:
            return await run_in_threadpool(method, request, timeout=10)
        except grpc.RpcError as error:
            raise _Refused(_grpc_error(error)) from None

    async def submit(self, request: Request) -> Response:
        command = await self._command(request)
        if isinstance(command, Response):
            return command
        session, module, body = command
        try:
            order = ParseDict(body, pb.WorkOrder())
        except (ParseError, RecursionError) as exc:
            return _error(400, f"not a work order: {exc}")
        order.requester = f"web:{session.user}"
        try:
            receipt = await self._call(self.hub.stub(module).Submit, order)
        except _Refused as refused:
            return refused.response
        log.info("web: %s submitted %s to %s", session.user, receipt.id, module)
        return JSONResponse({"id": receipt.id})

    async def cancel(self, request: Request) -> Response:
        command = await self._command(request)
        if isinstance(command, Response):
            return command
        session, module, body = command
        reason = f"{session.user}: {str(body.get('reason', '')).strip() if isinstance(body, dict) else ''}"
        cancel = pb.CancelWorkOrderRequest(id=request.path_params["id"], reason=reason.rstrip(": "))
        try:
            status = await self._call(self.hub.stub(module).CancelWorkOrder, cancel)
        except _Refused as refused:
            return refused.response
        log.info("web: %s cancelled %s on %s", session.user, cancel.id, module)
        return JSONResponse({"id": status.id, "state": pb.WorkOrderState.Name(status.state), "message": status.message})


def make_app(config: Config) -> Starlette:
    """The console for a node's config; its hub starts and stops with the app."""
    console = Console(config)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await run_in_threadpool(console.hub.start)
        yield
        await run_in_threadpool(console.hub.stop)
        console.replays.shutdown(wait=False, cancel_futures=True)
        console.accounts.close()

    app = Starlette(
        routes=[
            Route("/healthz", console.healthz),
            Route("/", console.overview),
            Route("/login", console.login_form, methods=["GET"]),
            Route("/login", console.login, methods=["POST"]),
            Route("/logout", console.logout, methods=["POST"]),
            Route("/api/session", console.api_session),
            Route("/api/status", console.api_status),
            Route("/api/events", console.api_events),
            Route("/api/work-orders/{module}", console.submit, methods=["POST"]),
            Route("/api/work-orders/{module}/{id}/cancel", console.cancel, methods=["POST"]),
            Route("/api/work-orders/{module}/{id}", console.work_order),
            Route("/api/history/{module}", console.history),
            Route("/api/tonight", console.tonight),
            Route("/api/sky/{id}", console.sky),
            Route("/api/samples", console.samples),
            Route("/api/samples/{name}", console.samples),
            Route("/alerts", console.page),
            Route("/tonight", console.page),
            Route("/api/preview/{module}", console.preview),
            Route("/api/header/{module}", console.header),
            Route("/api/files/{module}", console.download),
            Mount("/static", StaticFiles(directory=Path(__file__).resolve().parent / "static"), name="static"),
        ],
        lifespan=lifespan,
        middleware=[Middleware(SecurityHeaders)],
    )
    app.state.console = console
    return app
