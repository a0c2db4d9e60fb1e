"""Server interceptors: bearer-token authentication and one log line per call."""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import grpc
from google.protobuf.message import DecodeError

from toros.runtime.logs import work_order_context

log = logging.getLogger("toros.rpc")

# The health check answers without a token, so that load balancers and systemd probes need no secret.
OPEN_METHODS_PREFIX = "/grpc.health.v1.Health/"
# Read-only calls are logged at DEBUG so that polling clients do not flood the log.
QUIET_METHODS = {"GetWorkOrder", "GetStatus"}


class MalformedRequest:
    """A request whose bytes are not the method's message: answered INVALID_ARGUMENT by the handler wrapper,
    instead of gRPC's own INTERNAL and a logged traceback for every such request."""

    def __init__(self, problem: str) -> None:
        self.problem = problem


if TYPE_CHECKING:  # grpc's classes are generic in their stubs only
    Handler = grpc.RpcMethodHandler[Any, Any]
    Behaviour = Callable[[Any, grpc.ServicerContext], Any]
    Continuation = Callable[[grpc.HandlerCallDetails], Handler | None]


def _lenient(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    if deserializer is None:
        return None

    def parse(data: bytes) -> Any:
        try:
            return deserializer(data)
        except DecodeError as exc:
            return MalformedRequest(str(exc) or "cannot be parsed")

    return parse


def _rebuild(handler: Handler, unary: Behaviour, stream: Behaviour, *, deserialize: bool = True) -> Handler:
    """The handler with its behaviour replaced; ``deserialize=False`` hands the behaviour the raw bytes."""
    deserializer = _lenient(handler.request_deserializer) if deserialize else None
    serializer = handler.response_serializer
    if handler.unary_unary is not None:
        return grpc.unary_unary_rpc_method_handler(
            unary, request_deserializer=deserializer, response_serializer=serializer
        )
    if handler.unary_stream is not None:
        return grpc.unary_stream_rpc_method_handler(
            stream, request_deserializer=deserializer, response_serializer=serializer
        )
    if handler.stream_unary is not None:
        return grpc.stream_unary_rpc_method_handler(
            unary, request_deserializer=deserializer, response_serializer=serializer
        )
    return grpc.stream_stream_rpc_method_handler(
        stream, request_deserializer=deserializer, response_serializer=serializer
    )


def _bearer_token(metadata: Any) -> bytes | None:
    """The token of an ``authorization: Bearer <token>`` header (the scheme in any case, RFC 7235)."""
    for key, value in metadata or ():
        if key == "authorization":
            scheme, _, token = (value.encode() if isinstance(value, str) else value).strip().partition(b" ")
            if scheme.lower() == b"bearer":
                return token.strip()
    return None


class TokenAuthInterceptor(grpc.ServerInterceptor):
    """Requires ``authorization: Bearer <token>`` on every call but the health check (reflection included:
    it tells what the daemon serves). A refused request is never parsed."""

    def __init__(self, token: str) -> None:
        self._expected = token.encode()

    def intercept_service(self, continuation: Continuation, details: grpc.HandlerCallDetails) -> Handler | None:
        handler = continuation(details)
        if handler is None or details.method.startswith(OPEN_METHODS_PREFIX):
            return handler
        given = _bearer_token(details.invocation_metadata)
        if given is not None and hmac.compare_digest(given, self._expected):
            return handler

        def refuse(_request: Any, context: grpc.ServicerContext) -> Any:
            log.warning("%s refused: missing or wrong token from %s", details.method, context.peer())
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or wrong token (authorization: Bearer …)")

        return _rebuild(handler, refuse, refuse, deserialize=False)


def _refuse_malformed(request: Any, context: grpc.ServicerContext) -> None:
    if isinstance(request, MalformedRequest):
        context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"request: not a valid message: {request.problem}")


def _work_order_id(request: Any) -> str:
    for field in ("work_order_id", "id"):
        value = getattr(request, field, "")
        if isinstance(value, str) and value:
            return value
    return ""


class LoggingInterceptor(grpc.ServerInterceptor):
    """Logs method, work order id, status code and duration of every call."""

    def intercept_service(self, continuation: Continuation, details: grpc.HandlerCallDetails) -> Handler | None:
        handler = continuation(details)
        if handler is None or (handler.unary_unary is None and handler.unary_stream is None):
            return handler
        method = details.method.rsplit("/", 1)[-1]
        level = (
            logging.DEBUG if method in QUIET_METHODS or details.method.startswith(OPEN_METHODS_PREFIX) else logging.INFO
        )

        def finish(
            context: grpc.ServicerContext, work_order: str, started: float, failed: bool, extra: str = ""
        ) -> None:
            code = context.code() or (grpc.StatusCode.UNKNOWN if failed else grpc.StatusCode.OK)  # type: ignore[attr-defined]  # grpc has it, its stubs not yet
            name = code.name if isinstance(code, grpc.StatusCode) else str(code)
            log.log(
                logging.WARNING if name not in ("OK", "CANCELLED") and level == logging.INFO else level,
                "%s %s %s %.1f ms%s",
                method,
                work_order or "-",
                name,
                (time.perf_counter() - started) * 1e3,
                extra,
                extra={"work_order": work_order or "-"},
            )

        respond, respond_stream = handler.unary_unary, handler.unary_stream

        def unary(request: Any, context: grpc.ServicerContext) -> Any:
            assert respond is not None, "_rebuild serves a unary method with this"
            started, work_order, failed = time.perf_counter(), _work_order_id(request), True
            try:
                _refuse_malformed(request, context)
                with work_order_context(work_order):
                    response = respond(request, context)
                work_order = work_order or _work_order_id(response)
                failed = False
                return response
            finally:
                finish(context, work_order, started, failed)

        def stream(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            assert respond_stream is not None, "_rebuild serves a streaming method with this"
            started, work_order, failed, sent = time.perf_counter(), _work_order_id(request), True, 0
            try:
                _refuse_malformed(request, context)
                for item in respond_stream(request, context):
                    sent += 1
                    yield item
                failed = False
            finally:
                finish(context, work_order, started, failed and context.is_active(), f", {sent} messages")

        return _rebuild(handler, unary, stream)
