"""The web console's section of the node config (`web:`): where it listens, its accounts, TLS."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path

from pydantic import Field, field_validator, model_validator

from toros.runtime.config import Section


class Role(StrEnum):
    """What a person may do: look (viewer), also command the observatory (operator), everything (admin)."""

    VIEWER = "viewer"
    OPERATOR = "operator"
    ADMIN = "admin"

    @property
    def commands(self) -> bool:
        return self is not Role.VIEWER


class WebUser(Section):
    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.@-]+$")
    role: Role = Role.VIEWER
    password_hash: str = Field(min_length=1, description="from `toros web hash-password` (argon2id)")

    @field_validator("password_hash")
    @classmethod
    def _argon2(cls, value: str) -> str:
        if not value.startswith("$argon2"):
            raise ValueError("not an argon2 hash: make one with `toros web hash-password`")
        return value


class WebTls(Section):
    cert: Path
    key: Path


class WebConfig(Section):
    ip: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    users: list[WebUser] = []
    tls: WebTls | None = None
    session_minutes: float = Field(default=480.0, gt=0, le=7 * 24 * 60, description="a login lasts this long")
    login_failures_per_minute: int = Field(
        default=5, ge=1, le=1000, description="wrong passwords an address may try per minute before it must wait"
    )
    login_failures_per_account_per_minute: int = Field(
        default=20,
        ge=1,
        le=10000,
        description="wrong passwords for one account per minute, from any addresses, beyond which the addresses "
        "that failed on it must wait (its user, from an address of their own, still logs in)",
    )
    login_checks_at_once: int = Field(
        default=2, ge=1, le=16, description="password checks run at once (argon2id: 64 MiB and ~0.1 s each)"
    )
    login_queue: int = Field(default=8, ge=0, le=1000, description="logins that wait for a check; beyond, 429 at once")
    trusted_proxies: tuple[str, ...] = Field(
        default=(),
        description="addresses of reverse proxies whose X-Forwarded-For is believed; none: the peer's own address",
    )
    max_streams: int = Field(
        default=200, ge=1, le=10000, description="event streams (browser pages) the console serves at once, in all"
    )
    max_streams_per_session: int = Field(
        default=8, ge=1, le=1000, description="event streams one login may hold open (a page or tab each)"
    )
    max_request_bytes: int = Field(
        default=16 * 1024 * 1024,
        ge=1024,
        le=96 * 1024 * 1024,
        description="the largest request body: a notice uploaded for a drill, base64 in JSON, is the largest",
    )

    @model_validator(mode="after")
    def _unique_names(self) -> WebConfig:
        names = [user.name for user in self.users]
        if len(names) != len(set(names)):
            raise ValueError("web.users: each name once")
        return self
