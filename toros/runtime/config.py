"""Node configuration: one YAML file, validated at start, frozen for the daemon's lifetime.

Lookup order: ``--config FILE``, else ``$TOROS_CONFIG``, else ``/etc/toros/toros.conf.yaml``.
Strings may reference environment variables as ``${NAME}`` so that secrets (database passwords, tokens)
need not be written in the file. Relative paths are taken relative to the config file's folder.
"""

from __future__ import annotations

import os
import re
import ssl
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

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


class ConfigError(Exception):
    """A configuration problem, reported as one line naming the file and the key."""


def _relative_to_config(path: Path | None, info: ValidationInfo) -> Path | None:
    if path is None or path.is_absolute():
        return path
    base = (info.context or {}).get("base_dir")
    return (Path(base) / path).resolve() if base else path.resolve()


ConfigPath = Annotated[Path, AfterValidator(_relative_to_config)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LoggingConfig(_Section):
    file: ConfigPath | None = Path("/etc/toros/logs/toros.log")
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    max_bytes: int = Field(default=20 * 1024 * 1024, gt=0)
    backup_count: int = Field(default=10, ge=0)


class DatabaseConfig(_Section):
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


class StorageConfig(_Section):
    root: ConfigPath = Path("/var/lib/toros/data")


class TlsConfig(_Section):
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
                raise ConfigError(f"security.tls.{cert}/{key}: {getattr(self, cert)} and {getattr(self, key)} are not a PEM "
                                  f"certificate and its private key ({exc.reason or 'unreadable'})") from None
            except OSError as exc:
                raise ConfigError(f"security.tls.{cert}/{key}: cannot read them: {exc.strerror}") from None
        if self.ca is not None:
            try:
                ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cafile=self.ca)
            except (ssl.SSLError, ValueError) as exc:
                raise ConfigError(f"security.tls.ca: {self.ca} holds no PEM CA certificate ({getattr(exc, 'reason', None) or exc})") from None
            except OSError as exc:
                raise ConfigError(f"security.tls.ca: cannot read {self.ca}: {exc.strerror}") from None

    def read(self, key: str) -> bytes | None:
        """The PEM bytes of one of the files above (None when not configured)."""
        path = getattr(self, key)
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


class SecurityConfig(_Section):
    token: SecretStr | None = None
    tls: TlsConfig = TlsConfig()


class ClockConfig(_Section):
    start: datetime | None = None
    rate: float = Field(default=1.0, gt=0, le=1e6)

    @field_validator("start")
    @classmethod
    def _utc(cls, start: datetime | None) -> datetime | None:
        if start is not None and start.tzinfo is None:
            start = start.replace(tzinfo=timezone.utc)
        return start


class ServerConfig(_Section):
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


class Site(_Section):
    name: str
    latitude: float = Field(ge=-90, le=90)
    longitude: float = Field(ge=-180, le=360)
    elevation: float = Field(default=0.0, ge=-500, le=9000)


class Observatory(Site):
    telescope: str = Field(description="host:port of the observatory's telescope daemon")


class ExposurePlan(_Section):
    """What each relayed target asks of the telescope."""

    exposure_time_s: float = Field(default=60.0, gt=0, le=3600)
    exposure_count: int = Field(default=3, ge=1, le=1000)
    filter: str = "r"


class SkymapDownload(_Section):
    """How sky maps named by a notice are fetched: the notice is input from the network, so the URL, the size
    and the time it may take are all bounded."""

    timeout_s: float = Field(default=30.0, gt=0, le=600)
    retries: int = Field(default=3, ge=0, le=20)
    deadline_s: float = Field(default=180.0, gt=0, le=3600, description="the whole download, every attempt and wait")
    max_bytes: int = Field(default=256 * 1024 * 1024, ge=1024, le=8 * 1024**3, description="downloaded, and after gunzip")
    allow_http: bool = False
    allow_local_hosts: bool = False
    rewrite: dict[str, str] = Field(default_factory=dict, description="URL prefix -> replacement (offline mirrors)")


class KafkaIntake(_Section):
    """GCN Kafka (igwn.gwalert JSON). Credentials here or in $GCN_KAFKA_CLIENT_ID / $GCN_KAFKA_CLIENT_SECRET."""

    enabled: bool = False
    client_id: SecretStr | None = None
    client_secret: SecretStr | None = None
    domain: str = "gcn.nasa.gov"
    topics: tuple[str, ...] = ("igwn.gwalert",)
    group_id: str = "toros-alert"


class VoeventIntake(_Section):
    """GCN Classic VOEvent over TCP (pygcn)."""

    enabled: bool = False
    host: tuple[str, ...] = ("45.58.43.186", "68.169.57.253")
    port: int = Field(default=8099, ge=1, le=65535)
    ivorn: str = "ivo://toros/alert"


class Notifications(_Section):
    """Optional messages when targets are relayed (off by default; failures never stop the relay)."""

    webhook: str | None = None
    email_to: tuple[str, ...] = ()
    email_from: str = "toros@localhost"
    smtp_host: str | None = None
    smtp_port: int = Field(default=25, ge=1, le=65535)


class AlertConfig(ServerConfig):
    port: int = Field(default=50051, ge=0, le=65535)
    max_message_bytes: int = Field(default=64 * 1024 * 1024 + 4096, ge=64 * 1024, le=1024**3)  # embedded sky maps
    catalog: ConfigPath | None = None
    process_test_alerts: bool = False
    targets_per_observatory: int = Field(default=30, ge=1, le=10000)
    observatories: tuple[Observatory, ...] = ()
    credible_level: float = Field(default=0.9, gt=0, le=1)
    luminosity_weighting: bool = False
    min_altitude_deg: float = Field(default=30.0, ge=0, lt=90)
    twilight_sun_altitude_deg: float = Field(default=-12.0, ge=-18, le=0)
    far_threshold_hz: float | None = Field(default=None, gt=0)
    significant_only: bool = False
    exposure: ExposurePlan = ExposurePlan()
    skymap: SkymapDownload = SkymapDownload()
    relay_retry_s: float = Field(default=600.0, ge=0, le=86400)
    kafka: KafkaIntake = KafkaIntake()
    voevent: VoeventIntake = VoeventIntake()
    notify: Notifications = Notifications()


MACON = Site(name="macon", latitude=-24.62, longitude=-67.32, elevation=4650)


class DeviceLink(_Section):
    """How the telescope reaches one device: its simulator or an ASCOM Alpaca server."""

    driver: str = "simulator"
    url: str | None = Field(default=None, description="Alpaca server, e.g. http://192.168.1.20:11111")
    device_number: int = Field(default=0, ge=0, le=99)

    @model_validator(mode="after")
    def _reachable(self) -> DeviceLink:
        if self.driver == "alpaca" and not self.url:
            raise ValueError("the alpaca driver needs url (e.g. http://host:11111)")
        return self


class SerialDeviceLink(DeviceLink):
    """A device that may also sit on a serial line."""

    port: str | None = Field(default=None, description="serial device or pyserial URL, e.g. /dev/ttyUSB0, socket://host:port")
    baudrate: int = Field(default=9600, ge=300, le=921600)
    timeout_s: float = Field(default=2.0, gt=0, le=60, description="per serial reply")
    retries: int = Field(default=3, ge=0, le=20, description="a timeout or a garbled reply is retried this often, then FAULT")

    @model_validator(mode="after")
    def _has_port(self) -> SerialDeviceLink:
        if self.driver in ("lx200", "serial") and not self.port:
            raise ValueError(f"the {self.driver} driver needs port (a serial device or pyserial URL)")
        return self


class MountLink(SerialDeviceLink):
    driver: Literal["simulator", "lx200", "alpaca"] = "simulator"
    slew_rate_deg_s: float = Field(default=4.0, gt=0, le=90, description="simulator: slew speed")


class DomeLink(SerialDeviceLink):
    driver: Literal["simulator", "serial", "alpaca"] = "simulator"
    rotation_deg_s: float = Field(default=5.0, gt=0, le=90, description="simulator: rotation speed")
    shutter_s: float = Field(default=60.0, ge=0, le=600, description="simulator: time to open or close the shutter")
    park_azimuth_deg: float = Field(default=180.0, ge=0, lt=360)


class CameraLink(DeviceLink):
    driver: Literal["simulator", "alpaca"] = "simulator"
    width: int = Field(default=1024, ge=16, le=20000, description="simulator: image columns")
    height: int = Field(default=1024, ge=16, le=20000, description="simulator: image rows")
    overscan: int = Field(default=32, ge=0, le=1000, description="overscan columns on the right of each raw frame")
    readout_s: float = Field(default=5.0, ge=0, le=600, description="simulator: readout time")
    cooling_target_c: float = Field(default=-20.0, ge=-120, le=30)
    read_noise_e: float = Field(default=6.0, ge=0, le=1000, description="FITS RDNOISE (Alpaca cameras do not report it)")
    image_timeout_s: float = Field(default=120.0, gt=0, le=3600, description="Alpaca: downloading one image may take this long")
    instrument: str = "STA1600"


class FilterWheelLink(DeviceLink):
    driver: Literal["simulator", "alpaca"] = "simulator"
    filters: tuple[str, ...] = ("clear", "g", "r", "i", "z")
    change_s: float = Field(default=3.0, ge=0, le=120, description="simulator: time per filter change")


class BadWeather(_Section):
    """A period of unsafe weather for the simulated weather station (drills and tests), in clock time."""

    start: datetime
    end: datetime
    reason: str = "high wind"

    @field_validator("start", "end")
    @classmethod
    def _utc(cls, moment: datetime) -> datetime:
        return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


class WeatherLink(DeviceLink):
    driver: Literal["simulator", "alpaca"] = "simulator"
    bad_weather: tuple[BadWeather, ...] = ()


class Constraints(_Section):
    """When a target may be observed."""

    min_altitude_deg: float = Field(default=30.0, ge=0, lt=90)
    max_airmass: float = Field(default=2.5, ge=1, le=40)
    twilight_sun_altitude_deg: float = Field(default=-12.0, ge=-18, le=0, description="night: the Sun below this")
    min_moon_separation_deg: float = Field(default=20.0, ge=0, le=180)
    horizon: tuple[tuple[float, float], ...] = Field(
        default=(), description="(azimuth, minimum altitude) points of the local horizon, degrees; interpolated"
    )
    time_step_s: float = Field(default=120.0, ge=10, le=1800, description="resolution of the night plan")


class RoutineCalibrations(_Section):
    """What the robotic night takes."""

    bias_count: int = Field(default=10, ge=0, le=1000)
    dark_count: int = Field(default=5, ge=0, le=1000)
    dark_times_s: tuple[float, ...] = (60.0,)
    flat_count: int = Field(default=5, ge=0, le=1000)
    flat_filters: tuple[str, ...] = ("r",)
    flat_target_adu: float = Field(default=25000.0, gt=0, le=65535, description="sky flats aim at this mean level")
    flat_min_exposure_s: float = Field(default=1.0, gt=0, le=600)
    flat_max_exposure_s: float = Field(default=60.0, gt=0, le=3600)
    flat_sun_altitude_deg: tuple[float, float] = Field(default=(-12.0, -3.0), description="sky flats while the Sun is in this band")
    dome_flat_exposure_s: float = Field(default=5.0, gt=0, le=3600)


class TargetDefaults(_Section):
    """Exposure settings for targets that leave them unset."""

    exposure_time_s: float = Field(default=60.0, gt=0, le=3600)
    exposure_count: int = Field(default=1, ge=1, le=1000)
    filter: str = "r"
    overhead_s: float = Field(default=30.0, ge=0, le=3600, description="slew and settle time added to each target")


class SafetyConfig(_Section):
    poll_s: float = Field(default=30.0, gt=0, le=3600, description="clock seconds between weather and device checks")
    watchdog_s: float = Field(default=900.0, gt=0, le=86400, description="close when the night has not moved for this long")
    reopen_after_s: float = Field(default=1800.0, ge=0, le=86400, description="the robotic night reopens after this long of safe weather")


class TelescopeConfig(ServerConfig):
    port: int = Field(default=50052, ge=0, le=65535)
    workers: int = Field(default=8, ge=1, le=64, description="observe_targets orders wait for the night on a worker each")
    mode: Literal["robotic", "manual"] = "robotic"
    site: Site = MACON
    name: str = Field(default="TOROS", description="FITS TELESCOP")
    mount: MountLink = MountLink()
    dome: DomeLink = DomeLink()
    camera: CameraLink = CameraLink()
    filter_wheel: FilterWheelLink = FilterWheelLink()
    weather: WeatherLink = WeatherLink()
    constraints: Constraints = Constraints()
    calibrations: RoutineCalibrations = RoutineCalibrations()
    targets: TargetDefaults = TargetDefaults()
    safety: SafetyConfig = SafetyConfig()


ImageKind = Literal["bias", "dark", "flat", "light"]
DEFAULT_IMAGETYP: dict[str, ImageKind] = {
    "BIAS": "bias", "ZERO": "bias", "DARK": "dark", "FLAT": "flat", "SKYFLAT": "flat", "DOMEFLAT": "flat",
    "TWIFLAT": "flat", "LIGHT": "light", "OBJECT": "light", "SCIENCE": "light",
}


class CalibrationConfig(_Section):
    """How the preprocessor builds masters and calibrates science frames."""

    combine: Literal["average", "median"] = "average"
    sigma_low: float = Field(default=3.0, gt=0)
    sigma_high: float = Field(default=3.0, gt=0)
    min_bias: int = Field(default=3, ge=1)
    min_dark: int = Field(default=3, ge=1)
    min_flat: int = Field(default=3, ge=1)
    memory_limit_bytes: int = Field(default=2 * 1024**3, ge=64 * 1024**2)
    max_frame_bytes: int = Field(default=2 * 1024**3, ge=1024**2, description="a raw file, decompressed")
    imagetyp: dict[str, ImageKind] = DEFAULT_IMAGETYP
    biassec: str | None = None
    trimsec: str | None = None
    gain: float | Literal["header"] | None = None
    hot_pixel_sigma: float = Field(default=10.0, gt=0)
    flat_low: float = Field(default=0.5, gt=0)
    flat_high: float = Field(default=1.5, gt=0)
    cosmic_ray_processes: int = Field(default=2, ge=1, le=64)

    @field_validator("imagetyp")
    @classmethod
    def _upper(cls, mapping: dict[str, ImageKind]) -> dict[str, ImageKind]:
        return {key.strip().upper(): kind for key, kind in mapping.items()}


class FollowedTelescope(_Section):
    """A telescope whose image stream the preprocessor follows."""

    name: str = Field(pattern=r"^[A-Za-z0-9._-]{1,64}$")
    address: str = Field(description="host:port of the telescope daemon")


class PreprocessorConfig(ServerConfig):
    port: int = Field(default=50053, ge=0, le=65535)
    http: str | None = "http://127.0.0.1:50053"
    calibration: CalibrationConfig = CalibrationConfig()
    follow: tuple[FollowedTelescope, ...] = ()

    @field_validator("http")
    @classmethod
    def _url(cls, url: str | None) -> str | None:
        if url is not None:
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError(f"not an http(s) URL: {url!r}")
        return url


class Config(_Section):
    logging: LoggingConfig = LoggingConfig()
    database: DatabaseConfig = DatabaseConfig()
    storage: StorageConfig = StorageConfig()
    security: SecurityConfig = SecurityConfig()
    clock: ClockConfig = ClockConfig()
    alert: AlertConfig = AlertConfig()
    telescope: TelescopeConfig = TelescopeConfig()
    preprocessor: PreprocessorConfig = PreprocessorConfig()
    source: Path | None = Field(default=None, exclude=True, description="the file this was loaded from")

    def server(self, module: str) -> ServerConfig:
        """The listening settings of one module's daemon."""
        return getattr(self, module)


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


def _describe(error: ValidationError, file: Path) -> str:
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


def load_config(path: str | os.PathLike[str] | None) -> Config:
    """Loads and validates a config file; ``None`` gives the built-in defaults."""
    if path is None:
        return Config()
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
        config = Config.model_validate(data, context={"base_dir": file.resolve().parent})
    except ValidationError as exc:
        raise ConfigError(_describe(exc, file)) from None
    return config.model_copy(update={"source": file.resolve()})
