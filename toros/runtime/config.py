"""Node configuration: one YAML file, validated at start, frozen for the daemon's lifetime.

Lookup order: ``--config FILE``, else ``$TOROS_CONFIG``, else ``/etc/toros/toros.conf.yaml``.
Strings may reference environment variables as ``${NAME}`` so that secrets (database passwords, tokens)
need not be written in the file. Relative paths are taken relative to the config file's folder.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import re
import ssl
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

DEFAULT_CONFIG_PATH = Path("/etc/toros/toros.conf.yaml")
_ENV_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
Node = TypeVar("Node", bound="NodeConfig")


class ConfigError(Exception):
    """A configuration problem, reported as one line naming the file and the key."""


def _relative_to_config(path: Path | None, info: ValidationInfo) -> Path | None:
    if path is None or path.is_absolute():
        return path
    base = (info.context or {}).get("base_dir")
    return (Path(base) / path).resolve() if base else path.resolve()


ConfigPath = Annotated[Path, AfterValidator(_relative_to_config)]


class Section(BaseModel):
    """A section of the config file: unknown keys are errors, values are frozen once loaded."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class LoggingConfig(Section):
    file: ConfigPath | None = Path("/etc/toros/logs/toros.log")
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    max_bytes: int = Field(default=20 * 1024 * 1024, gt=0)
    backup_count: int = Field(default=10, ge=0)


class DatabaseConfig(Section):
    path: ConfigPath = Path("/var/lib/toros/toros.db")
    url: SecretStr | None = None

    @field_validator("url")
    @classmethod
    def _known_scheme(cls, url: SecretStr | None) -> SecretStr | None:
        if url is not None:
            scheme = url.get_secret_value().split(":", 1)[0]
            if not scheme.startswith(("postgresql", "sqlite")):
                raise ValueError(f"unsupported database scheme {scheme!r}: use postgresql://… or sqlite:///…")
        return url


class StorageConfig(Section):
    root: ConfigPath = Path("/var/lib/toros/data")
    file_mode: int = Field(
        default=0o640, ge=0, le=0o777, description="every file written (octal, e.g. 0640: the service's group reads)"
    )

    @field_validator("file_mode", mode="before")
    @classmethod
    def _octal(cls, mode: object) -> object:
        """A mode as octal digits ("0640", 0640 in YAML 1.1 is read as an octal integer already)."""
        if isinstance(mode, str):
            try:
                return int(mode, 8)
            except ValueError:
                raise ValueError(f"an octal file mode such as 0640, not {mode!r}") from None
        return mode

    @field_validator("file_mode")
    @classmethod
    def _not_for_everyone(cls, mode: int) -> int:
        if mode & 0o002:
            raise ValueError(f"{mode:04o}: files that everyone may write are refused")
        return mode


class TlsConfig(Section):
    cert: ConfigPath | None = None
    key: ConfigPath | None = None
    ca: ConfigPath | None = None
    require_client_cert: bool = False
    client_cert: ConfigPath | None = None
    client_key: ConfigPath | None = None

    @property
    def enabled(self) -> bool:
        return self.cert is not None

    def verify(self) -> None:
        """Checks that the configured files are what they claim (a certificate and its key, CA certificates),
        so that a garbage file is named at start rather than reported by gRPC as "cannot listen"."""
        for cert, key in (("cert", "key"), ("client_cert", "client_key")):
            if getattr(self, cert) is None:
                continue
            try:
                ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_cert_chain(getattr(self, cert), getattr(self, key))
            except ssl.SSLError as exc:
                raise ConfigError(
                    f"security.tls.{cert}/{key}: {getattr(self, cert)} and {getattr(self, key)} are not a PEM "
                    f"certificate and its private key ({exc.reason or 'unreadable'})"
                ) from None
            except OSError as exc:
                raise ConfigError(f"security.tls.{cert}/{key}: cannot read them: {exc.strerror}") from None
        if self.ca is not None:
            try:
                ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cafile=self.ca)
            except (ssl.SSLError, ValueError) as exc:
                raise ConfigError(
                    f"security.tls.ca: {self.ca} holds no PEM CA certificate ({getattr(exc, 'reason', None) or exc})"
                ) from None
            except OSError as exc:
                raise ConfigError(f"security.tls.ca: cannot read {self.ca}: {exc.strerror}") from None

    def read(self, key: str) -> bytes | None:
        """The PEM bytes of one of the files above (None when not configured)."""
        path: Path | None = getattr(self, key)
        if path is None:
            return None
        try:
            return path.read_bytes()
        except OSError as exc:
            raise ConfigError(f"security.tls.{key}: cannot read {path}: {exc.strerror}") from None

    @model_validator(mode="after")
    def _pairs(self) -> TlsConfig:
        if (self.key is None) != (self.cert is None):
            raise ValueError("cert and key must be given together")
        if (self.client_key is None) != (self.client_cert is None):
            raise ValueError("client_cert and client_key must be given together")
        return self


class SecurityConfig(Section):
    token: SecretStr | None = None
    tls: TlsConfig = TlsConfig()
    allow_insecure_network: bool = Field(
        default=False,
        description="a daemon or the console may listen beyond loopback without TLS (a warning at every start)",
    )


def is_loopback(host: str) -> bool:
    """A host literal of this machine only ("localhost", 127.0.0.0/8, ::1). Any other name may resolve elsewhere."""
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def plaintext_beyond_loopback(key: str, ip: str, encrypted: bool, security: SecurityConfig) -> str | None:
    """Why listening on ``ip`` without TLS is refused (None: it is not, or it is allowed; then it is logged)."""
    if encrypted or is_loopback(ip):
        return None
    if security.allow_insecure_network:
        logging.getLogger("toros").warning(
            "security.allow_insecure_network: %s %s without TLS: tokens, passwords and work orders cross the network "
            "in the clear",
            key,
            ip,
        )
        return None
    return (
        f"{key}: {ip} is beyond loopback without TLS: tokens, passwords and work orders would cross the network in "
        "the clear; configure TLS, or set security.allow_insecure_network: true"
    )


class ClockConfig(Section):
    start: datetime | None = None
    rate: float = Field(default=1.0, gt=0, le=1e6)
    shared_from: datetime | None = Field(
        default=None,
        description="the real instant at which the simulated clock reads `start`: the daemons of a simulated "
        "network given the same one agree on the time (null: each starts its clock when it serves)",
    )

    @field_validator("start", "shared_from")
    @classmethod
    def _utc(cls, start: datetime | None) -> datetime | None:
        if start is not None and start.tzinfo is None:
            start = start.replace(tzinfo=UTC)
        return start


class ServerConfig(Section):
    """Settings every daemon has: where it listens and how many threads it may use."""

    ip: str = "127.0.0.1"
    port: int = Field(ge=0, le=65535)
    workers: int = Field(default=2, ge=1, le=64)
    rpc_threads: int = Field(default=16, ge=2, le=256)
    max_streams: int = Field(default=100, ge=1, le=10000)
    grace_seconds: float = Field(default=10.0, ge=0, le=600)
    max_attempts: int = Field(default=3, ge=1, le=100)
    max_message_bytes: int = Field(default=4 * 1024 * 1024, ge=64 * 1024, le=1024**3)
    handshake_timeout_s: float = Field(default=10.0, gt=0, le=600)
    idle_connection_s: float = Field(default=600.0, gt=0, le=86400)


class NodeConfig(Section):
    """What every daemon of a node reads: logging, the database, the storage, security and the clock. The node's
    whole config (these plus a section per module) is composed where the modules are known (``toros.config``)."""

    logging: LoggingConfig = LoggingConfig()
    database: DatabaseConfig = DatabaseConfig()
    storage: StorageConfig = StorageConfig()
    security: SecurityConfig = SecurityConfig()
    clock: ClockConfig = ClockConfig()
    source: Path | None = Field(default=None, exclude=True, description="the file this was loaded from")

    def server(self, module: str) -> ServerConfig:
        """The listening settings of one module's daemon (its section)."""
        section = getattr(self, module, None)
        if not isinstance(section, ServerConfig):
            raise ConfigError(f"no section for a {module} daemon")
        return section


def find_config_file(explicit: str | os.PathLike[str] | None) -> Path | None:
    """The config file to use: explicit, else $TOROS_CONFIG, else the system default if it exists."""
    if explicit:
        return Path(explicit)
    from_env = os.environ.get("TOROS_CONFIG")
    if from_env:
        return Path(from_env)
    return DEFAULT_CONFIG_PATH if DEFAULT_CONFIG_PATH.exists() else None


def _expand_environment(node: Any, where: str, file: Path) -> Any:
    if isinstance(node, dict):
        return {k: _expand_environment(v, f"{where}.{k}" if where else str(k), file) for k, v in node.items()}
    if isinstance(node, list):
        return [_expand_environment(v, f"{where}[{i}]", file) for i, v in enumerate(node)]
    if isinstance(node, str):

        def substitute(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in os.environ:
                raise ConfigError(f"{file}: {where}: environment variable {name} is not set")
            return os.environ[name]

        return _ENV_REFERENCE.sub(substitute, node)
    return node


def describe_error(error: ValidationError, file: Path) -> str:
    first = error.errors()[0]
    key = ".".join(str(part) for part in first["loc"]) or "(top level)"
    if first["type"] == "extra_forbidden":
        text = "unknown key"
    elif first["type"] == "missing":
        text = "required key is missing"
    else:
        text = first["msg"]
        if "input" in first and not isinstance(first["input"], (dict, list)) and "secret" not in key:
            text += f" (got {first['input']!r})"
    more = error.error_count() - 1
    return f"{file}: {key}: {text}" + (f" (and {more} more problem{'s' * (more > 1)})" if more else "")


def text_line(file: Path, offset: int) -> int:
    """The 1-based line of a byte offset in a file."""
    with open(file, "rb") as stream:
        return stream.read(offset).count(b"\n") + 1


def load_model(path: str | os.PathLike[str] | None, model: type[Node]) -> Node:
    """Loads a config file and validates it as ``model``; ``None`` gives the model's defaults."""
    if path is None:
        return model()
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{file}: config file not found") from None
    except OSError as exc:
        raise ConfigError(f"{file}: cannot read config file: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        line = text_line(file, exc.start)
        raise ConfigError(f"{file}: not UTF-8 text (byte {exc.object[exc.start]:#04x} at line {line})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"{file}: not valid YAML{where}: {getattr(exc, 'problem', exc)}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{file}: the top level must be a mapping of sections, not {type(data).__name__}")
    data = _expand_environment(data, "", file)
    try:
        config = model.model_validate(data, context={"base_dir": file.resolve().parent})
    except ValidationError as exc:
        raise ConfigError(describe_error(exc, file)) from None
    return config.model_copy(update={"source": file.resolve()})
