"""Who is using the console: passwords (argon2id), sessions (a random token in an HttpOnly cookie, a CSRF token
per session) and a limit on wrong passwords."""

from __future__ import annotations

import secrets
import threading
import time
from collections import deque
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from toros.web.settings import Role, WebConfig

_HASHER = PasswordHasher()
# Checked against when the name is unknown, so a wrong name costs as long as a wrong password.
_DUMMY_HASH = _HASHER.hash(secrets.token_hex(16))


def hash_password(password: str) -> str:
    return _HASHER.hash(password)


@dataclass(frozen=True)
class Session:
    user: str
    role: Role
    csrf_token: str
    expires: float  # time.monotonic()


class Accounts:
    def __init__(self, config: WebConfig) -> None:
        self._users = {user.name: user for user in config.users}
        self._lifetime_s = config.session_minutes * 60.0
        self._limit = config.login_failures_per_minute
        self._sessions: dict[str, Session] = {}
        self._failures: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def login_blocked(self, client: str) -> bool:
        """Too many wrong passwords from this client in the last minute."""
        now = time.monotonic()
        with self._lock:
            failures = self._failures.get(client)
            while failures and failures[0] < now - 60.0:
                failures.popleft()
            return failures is not None and len(failures) >= self._limit

    def login(self, client: str, name: str, password: str) -> tuple[str, Session] | None:
        """A new session (its token and itself) for the right password; None, counted, for a wrong one."""
        user = self._users.get(name)
        try:
            _HASHER.verify(user.password_hash if user else _DUMMY_HASH, password)
            ok = user is not None
        except (VerificationError, InvalidHashError):
            ok = False
        if not ok or user is None:
            with self._lock:
                self._failures.setdefault(client, deque()).append(time.monotonic())
            return None
        token = secrets.token_urlsafe(32)
        session = Session(user.name, user.role, secrets.token_urlsafe(32), time.monotonic() + self._lifetime_s)
        with self._lock:
            self._sessions[token] = session
        return token, session

    def session(self, token: str | None) -> Session | None:
        """The live session of a cookie's token; an expired one is forgotten."""
        if not token:
            return None
        with self._lock:
            session = self._sessions.get(token)
            if session is not None and session.expires < time.monotonic():
                del self._sessions[token]
                return None
            return session

    def logout(self, token: str | None) -> None:
        with self._lock:
            self._sessions.pop(token or "", None)
