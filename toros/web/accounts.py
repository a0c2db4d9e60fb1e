"""Who is using the console: passwords (argon2id), sessions (a random token in an HttpOnly cookie, a CSRF token
per session) and limits on wrong passwords.

A password check costs 64 MiB and a good fraction of a second (argon2id's point), so an attacker must not be
able to make many: checks run a few at a time on threads of their own, a bounded queue waits for them, and
beyond it a login is refused at once. Wrong passwords are counted per address and per account, and an attempt
counts from the moment it is accepted (not when its check ends), so a burst of concurrent guesses is counted
whole. An account under attack refuses only the addresses that have failed on it: its rightful user, from an
address of their own, still logs in."""

from __future__ import annotations

import secrets
import threading
import time
from collections import OrderedDict, deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from enum import Enum

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from toros.web.settings import Role, WebConfig

_HASHER = PasswordHasher()
# Checked against when the name is unknown, so a wrong name costs as long as a wrong password.
_DUMMY_HASH = _HASHER.hash(secrets.token_hex(16))
WINDOW_S = 60.0
MAX_TRACKED = 10_000  # addresses and names whose failures are remembered: the oldest are forgotten beyond


def hash_password(password: str) -> str:
    return _HASHER.hash(password)


@dataclass(frozen=True)
class Session:
    user: str
    role: Role
    csrf_token: str
    expires: float  # time.monotonic()


class Refusal(Enum):
    """Why a login is refused before its password is checked (HTTP 429 each)."""

    ADDRESS = "too many wrong passwords from this address: wait a minute and try again"
    ACCOUNT = "too many wrong passwords for this account from this address: wait a minute and try again"
    BUSY = "too many logins are being checked: try again in a few seconds"


class Failures:
    """Times of wrong passwords (and of attempts still being checked) per key, over the last minute; bounded."""

    def __init__(self) -> None:
        self._times: OrderedDict[str, deque[float]] = OrderedDict()

    def count(self, key: str, now: float) -> int:
        times = self._times.get(key)
        if times is None:
            return 0
        while times and times[0] < now - WINDOW_S:
            times.popleft()
        if not times:
            del self._times[key]
            return 0
        return len(times)

    def add(self, key: str, now: float) -> None:
        self._times.setdefault(key, deque()).append(now)
        self._times.move_to_end(key)
        while len(self._times) > MAX_TRACKED:
            self._times.popitem(last=False)

    def forget_one(self, key: str) -> None:
        """An attempt that turned out right is not a failure."""
        times = self._times.get(key)
        if times:
            times.pop()


class Accounts:
    def __init__(self, config: WebConfig) -> None:
        self._users = {user.name: user for user in config.users}
        self._lifetime_s = config.session_minutes * 60.0
        self._per_address = config.login_failures_per_minute
        self._per_account = config.login_failures_per_account_per_minute
        self._sessions: dict[str, Session] = {}
        self._by_address = Failures()
        self._by_account = Failures()
        self._by_address_on_account = Failures()
        self._lock = threading.Lock()
        self._checks = ThreadPoolExecutor(config.login_checks_at_once, thread_name_prefix="web-login")
        self._capacity = config.login_checks_at_once + config.login_queue
        self._pending = 0

    def close(self) -> None:
        self._checks.shutdown(wait=False, cancel_futures=True)

    def attempt(self, address: str, name: str, password: str) -> Future[tuple[str, Session] | None] | Refusal:
        """A login: refused at once (the reason), or its password check, queued (the future gives a new session
        for the right password, None for a wrong one). The attempt counts as a failure until its check says it
        was right."""
        now = time.monotonic()
        account = name[:64]
        pair = f"{address}\n{account}"
        with self._lock:
            if self._by_address.count(address, now) >= self._per_address:
                return Refusal.ADDRESS
            if (
                self._by_account.count(account, now) >= self._per_account
                and self._by_address_on_account.count(pair, now) > 0
            ):
                return Refusal.ACCOUNT
            if self._pending >= self._capacity:
                return Refusal.BUSY
            self._pending += 1
            for failures, key in (
                (self._by_address, address),
                (self._by_account, account),
                (self._by_address_on_account, pair),
            ):
                failures.add(key, now)
        try:
            return self._checks.submit(self._check, address, account, pair, name, password)
        except RuntimeError:  # shut down
            with self._lock:
                self._pending -= 1
            return Refusal.BUSY

    def _check(self, address: str, account: str, pair: str, name: str, password: str) -> tuple[str, Session] | None:
        try:
            user = self._users.get(name)
            try:
                _HASHER.verify(user.password_hash if user else _DUMMY_HASH, password)
                right = user is not None
            except (VerificationError, InvalidHashError):
                right = False
            if not right or user is None:
                return None
            token = secrets.token_urlsafe(32)
            session = Session(user.name, user.role, secrets.token_urlsafe(32), time.monotonic() + self._lifetime_s)
            with self._lock:
                self._sessions[token] = session
                for failures, key in (
                    (self._by_address, address),
                    (self._by_account, account),
                    (self._by_address_on_account, pair),
                ):
                    failures.forget_one(key)
            return token, session
        finally:
            with self._lock:
                self._pending -= 1

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
