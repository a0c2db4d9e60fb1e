"""The preprocessor module's settings: its section of the config file (`preprocessor:`)."""

from __future__ import annotations

from enum import StrEnum
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator

from toros.floor.site import Site
from toros.runtime.config import ConfigPath, Section, ServerConfig, is_loopback

ImageKind = Literal["bias", "dark", "flat", "light"]
DEFAULT_IMAGETYP: dict[str, ImageKind] = {
    "BIAS": "bias",
    "ZERO": "bias",
    "DARK": "dark",
    "FLAT": "flat",
    "SKYFLAT": "flat",
    "DOMEFLAT": "flat",
    "TWIFLAT": "flat",
    "LIGHT": "light",
    "OBJECT": "light",
    "SCIENCE": "light",
}


MAX_FRAME_BYTES = 2 * 1024**3  # an image file received (raw, imported, subtracted), decompressed


class CalibrationConfig(Section):
    """How the preprocessor builds masters and calibrates science frames."""

    combine: Literal["average", "median"] = "average"
    sigma_low: float = Field(default=3.0, gt=0)
    sigma_high: float = Field(default=3.0, gt=0)
    min_bias: int = Field(default=3, ge=1)
    min_dark: int = Field(default=3, ge=1)
    min_flat: int = Field(default=3, ge=1)
    memory_limit_bytes: int = Field(default=2 * 1024**3, ge=64 * 1024**2)
    max_frame_bytes: int = Field(default=MAX_FRAME_BYTES, ge=1024**2, description="a raw file, decompressed")
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


class ScienceConfig(Section):
    """The science step after calibration: WCS, zero point, catalog (``toros/preprocessor/science.py``)."""

    enabled: bool | None = Field(default=None, description="None: on when a reference catalog is configured")
    reference_catalog: ConfigPath | None = Field(
        default=None, description="CSV or FITS table: ra_deg, dec_deg and a magnitude column per filter"
    )
    detection_sigma: float = Field(
        default=1.5, gt=0, le=100, description="sep's threshold over the sky rms, per pixel (5 connected pixels)"
    )
    catalog_min_snr: float = Field(default=3.0, ge=0, description="sources kept in the frame's catalog")
    min_matches: int = Field(default=12, ge=4, le=10000, description="stars a solution needs")
    sources_for_matching: int = Field(default=50, ge=10, le=500, description="brightest sources given to astroalign")
    match_radius_arcsec: float = Field(default=2.0, gt=0, le=60)
    search_margin_arcmin: float = Field(
        default=5.0, ge=0, le=120, description="reference stars looked for beyond the field: the pointing error"
    )
    sip_degree: int = Field(default=2, ge=2, le=5)
    sip_above_arcmin: float = Field(default=30.0, gt=0, description="fields wider than this get SIP distortion")

    @property
    def active(self) -> bool:
        return self.reference_catalog is not None and self.enabled is not False


class ReferencesConfig(Section):
    """When a science-ready frame becomes the reference of its field and filter (``references.py``)."""

    enabled: bool = Field(default=True, description="science-ready frames may become references")
    same_field_arcmin: float = Field(default=5.0, gt=0, le=600, description="centres this close: the same field")
    min_depth_gain_mag: float = Field(default=0.2, ge=0, le=5, description="deeper by this much replaces")
    sharper_factor: float = Field(
        default=0.8, gt=0, le=1, description="a FWHM this much smaller replaces, if not shallower by the gain"
    )
    min_limmag: float = Field(default=17.0, ge=0, le=35, description="shallower frames never become references")
    max_fwhm_arcsec: float = Field(default=4.0, gt=0, le=60, description="blurrier frames never become references")


class DiscoveryConfig(Section):
    """Transient discovery: difference imaging against the reference library, candidates and reports
    (``transients.py``)."""

    enabled: bool | None = Field(default=None, description="None: on when the science step is")
    alert_frames: bool = Field(default=True, description="search every science frame of an alert's targets")
    every_frame: bool = Field(default=False, description="search routine frames too (a survey)")
    threshold: float = Field(default=5.0, ge=3, le=100, description="|S_corr| of a detection")
    min_score: float = Field(default=0.7, ge=0, le=1, description="real/bogus score a candidate needs")
    min_snr: float = Field(
        default=6.0, ge=3, le=100, description="S/N a candidate needs (5σ peaks of noise: a few per frame)"
    )
    match_radius_arcsec: float = Field(default=1.0, gt=0, le=10, description="detections this close: one candidate")
    galaxy_catalog: ConfigPath | None = Field(default=None, description="for host galaxies; None: alert.catalog")
    host_search_kpc: float = Field(default=50.0, gt=0, le=1000, description="galaxies this close are hosts")
    cutout_arcsec: float = Field(default=30.0, ge=5, le=600, description="side of the triplet stamps")
    tile: int = Field(default=1024, ge=128, le=8192, description="ZOGY tile side, pixels (memory: ~30 tile²×8 B)")

    def active(self, science_active: bool) -> bool:
        return science_active and self.enabled is not False


class TnsReporting(Section):
    """The site's identity in the TNS bulk AT report (``tns-at-report.json``): the numeric ids the TNS gives a
    group, an instrument, its filters and units. An id left unset is written empty and named in the log."""

    reporter: str = Field(default="TOROS Collaboration", max_length=1000, description="authors of the report")
    group_id: int | None = Field(default=None, ge=0, description="your TNS reporting group id")
    data_source_id: int | None = Field(default=None, ge=0, description="discovery data source id; None: group_id")
    instrument_id: int | None = Field(default=None, ge=0, description="the TNS id of this telescope+camera")
    filter_ids: dict[str, int] = Field(
        default_factory=dict, description="the site's filter names (FILTER) to TNS filter ids"
    )
    flux_unit_id: int = Field(default=1, ge=0, description="TNS flux unit id of the magnitudes (1: AB mag)")
    at_type: int = Field(default=1, ge=0, description="TNS AT type id (1: PSN)")
    observer: str = Field(default="Robot", max_length=200, description="the photometry's observer")
    proprietary_period_days: float = Field(default=0.0, ge=0, le=3650, description="before the TNS makes it public")
    proprietary_groups: tuple[int, ...] = Field(default=(), description="TNS groups that see it meanwhile")


class ReportsConfig(Section):
    """What the preprocessor writes for people and brokers under ``storage.root/reports/<alert>/``
    (``reports.py``)."""

    author: str = Field(
        default="TOROS Collaboration", max_length=1000,
        description="the GCN circular's FROM line (\"A. Person (Institute) on behalf of ...\")",
    )  # fmt: skip
    programid: int = Field(default=1, ge=0, le=255, description="the Avro packets' programid (ZTF: 1 public)")
    fids: dict[str, int] = Field(
        default_factory=lambda: {"g": 1, "r": 2, "i": 3},
        description="the Avro packets' fid of each filter name (ZTF's numbering; 0 for others)",
    )
    tns: TnsReporting = TnsReporting()


class FollowedTelescope(Section):
    """A telescope whose image stream the preprocessor follows."""

    name: str = Field(pattern=r"^[A-Za-z0-9._-]{1,64}$")
    address: str = Field(description="host:port of the telescope daemon")


class ComputeEngineName(StrEnum):
    LOCAL = "local"  # in the preprocessor's own processes and threads
    DASK = "dask"  # on a Dask distributed cluster


class WhenUnreachable(StrEnum):
    """What per-frame work does when the Dask scheduler cannot be reached: a frame is never lost."""

    LOCAL = "local"  # computed here, said in the work order
    WAIT = "wait"  # retried until ``wait_s``, then the frame is named as not done


class ComputeTls(Section):
    """Dask's TLS (``tls://`` scheduler addresses): the cluster's CA, and this client's certificate and key."""

    ca: ConfigPath
    cert: ConfigPath
    key: ConfigPath


class ComputeConfig(Section):
    """Where per-frame work (a science frame's calibration, science step and difference imaging) runs: ``local``
    or a Dask cluster."""

    engine: ComputeEngineName = ComputeEngineName.LOCAL
    scheduler: str = Field(default="tcp://127.0.0.1:8786", description="the Dask scheduler's address")
    tls: ComputeTls | None = None
    connect_timeout_s: float = Field(default=10.0, gt=0, le=600)
    task_timeout_s: float = Field(default=900.0, gt=0, le=86400, description="one frame's task, queueing included")
    retries: int = Field(default=2, ge=0, le=10, description="a task that fails (e.g. its worker died) runs again")
    resources: dict[str, float] = Field(
        default_factory=dict, description="worker resources each task needs (`dask worker --resources`)"
    )
    storage_on_workers: str | None = Field(
        default=None, description="where the workers mount this node's storage root; None: at the same path"
    )
    unreachable: WhenUnreachable = WhenUnreachable.LOCAL
    wait_s: float = Field(default=600.0, ge=0, le=86400, description="with unreachable: wait, how long to retry")
    allow_insecure: bool = Field(
        default=False,
        description="allow a tcp:// scheduler beyond loopback: anyone who reaches it runs code on the cluster",
    )

    @field_validator("scheduler")
    @classmethod
    def _address(cls, address: str) -> str:
        scheme, _, rest = address.partition("://")
        if scheme not in ("tcp", "tls") or not rest.rpartition(":")[2].isdigit():
            raise ValueError(f"a Dask scheduler address as tcp://host:port or tls://host:port, not {address!r}")
        return address

    @property
    def scheduler_host(self) -> str:
        return self.scheduler.partition("://")[2].rpartition(":")[0].strip("[]")

    @property
    def scheduler_port(self) -> int:
        return int(self.scheduler.rpartition(":")[2])

    @property
    def encrypted(self) -> bool:
        return self.scheduler.startswith("tls://")

    @property
    def exposed(self) -> bool:
        """Plain tcp beyond loopback (only with ``allow_insecure``)."""
        return not self.encrypted and not is_loopback(self.scheduler_host)

    @model_validator(mode="after")
    def _not_open_to_the_network(self) -> ComputeConfig:
        """A Dask scheduler and its workers run the pickles they are sent: without TLS they stay on loopback."""
        if self.encrypted and self.tls is None:
            raise ValueError("scheduler: a tls:// scheduler needs compute.tls (the site CA, a certificate and key)")
        if self.exposed and not self.allow_insecure:
            raise ValueError(
                f"scheduler: {self.scheduler} is plain tcp beyond loopback: a Dask scheduler and its workers run the "
                "code they are sent, so anyone who reaches it runs code on the cluster. Use tls:// with compute.tls, "
                "or set compute.allow_insecure: true on a network nobody else reaches"
            )
        return self


class PreprocessorConfig(ServerConfig):
    port: int = Field(default=50053, ge=0, le=65535)
    http: str | None = "http://127.0.0.1:50053"
    site: Site | None = Field(default=None, description="where the frames are taken; None: the telescope section's")
    calibration: CalibrationConfig = CalibrationConfig()
    science: ScienceConfig = ScienceConfig()
    references: ReferencesConfig = ReferencesConfig()
    discovery: DiscoveryConfig = DiscoveryConfig()
    reports: ReportsConfig = ReportsConfig()
    follow: tuple[FollowedTelescope, ...] = ()
    compute: ComputeConfig = ComputeConfig()

    @field_validator("http")
    @classmethod
    def _url(cls, url: str | None) -> str | None:
        if url is not None:
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError(f"not an http(s) URL: {url!r}")
        return url
