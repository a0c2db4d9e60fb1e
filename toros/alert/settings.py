"""The alert module's settings: its section of the config file (`alert:`)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from toros.floor.notifications import Notifications
from toros.floor.site import Site
from toros.runtime.config import ConfigPath, Section, ServerConfig, is_loopback


class Observatory(Site):
    telescope: str = Field(description="host:port of the observatory's telescope daemon")
    field_of_view_deg: float | tuple[float, float] | None = Field(
        default=None,
        description="the camera's field: a circle's diameter, or [width, height] aligned with RA and Dec; "
        "None: one galaxy per pointing, and no sky-map coverage for this site",
    )
    filters: tuple[str, ...] = Field(default=(), description="the filter names its wheel holds; empty: any")
    treasuremap_instrument_id: int | None = Field(
        default=None, ge=0, description="the instrument's id on the GW Treasure Map, for its pointing reports"
    )
    preprocessor: str | None = Field(
        default=None,
        description="host:port of the site's preprocessor daemon: its frames' depth and candidates join the campaign",
    )
    overhead_s: float = Field(
        default=60.0, ge=0, le=3600, description="per pointing: slew, settle and the readouts of its frames"
    )

    @field_validator("field_of_view_deg")
    @classmethod
    def _field_of_view(cls, value: float | tuple[float, float] | None) -> float | tuple[float, float] | None:
        sizes = value if isinstance(value, tuple) else () if value is None else (value,)
        if not all(0 < size <= 20 for size in sizes):
            raise ValueError("each size must be more than 0 and at most 20 degrees")
        return value


class ExposurePlan(Section):
    """What each relayed target asks of the telescope."""

    exposure_time_s: float = Field(default=60.0, gt=0, le=3600)
    exposure_count: int = Field(default=3, ge=1, le=1000)
    filter: str = "r"


class SkymapDownload(Section):
    """How sky maps named by a notice are fetched: the notice is input from the network, so the URL, the size
    and the time it may take are all bounded."""

    timeout_s: float = Field(default=30.0, gt=0, le=600)
    retries: int = Field(default=3, ge=0, le=20)
    deadline_s: float = Field(default=180.0, gt=0, le=3600, description="the whole download, every attempt and wait")
    max_bytes: int = Field(
        default=256 * 1024 * 1024, ge=1024, le=8 * 1024**3, description="downloaded, and after gunzip"
    )
    allow_http: bool = False
    allow_local_hosts: bool = False
    rewrite: dict[str, str] = Field(default_factory=dict, description="URL prefix -> replacement (offline mirrors)")


class KafkaLogin(Section):
    """How to reach a Kafka broker: GCN's, whose login is OAUTHBEARER against its identity provider, as
    gcn-kafka configures it, with the credentials here or in $GCN_KAFKA_CLIENT_ID / $GCN_KAFKA_CLIENT_SECRET;
    or another one (SCiMMA's Hopskotch, a site's mirror or its partners') with a user name and password
    (SCRAM-SHA-512 for Hopskotch, or PLAIN), always over TLS."""

    client_id: SecretStr | None = None
    client_secret: SecretStr | None = None
    domain: Literal["gcn.nasa.gov", "test.gcn.nasa.gov", "dev.gcn.nasa.gov"] = "gcn.nasa.gov"
    bootstrap_servers: str | None = Field(
        default=None, description="host:port[,host:port…] of another broker (a mirror); None: GCN's kafka.<domain>"
    )
    security_protocol: Literal["sasl_ssl", "plaintext"] = Field(
        default="sasl_ssl", description="plaintext only for brokers on this machine's loopback"
    )
    sasl_mechanism: Literal["OAUTHBEARER", "SCRAM-SHA-512", "SCRAM-SHA-256", "PLAIN"] = Field(
        default="OAUTHBEARER", description="OAUTHBEARER: GCN's login (client_id); the others: username and password"
    )
    username: str | None = None
    password: SecretStr | None = None
    ca_file: ConfigPath | None = Field(default=None, description="the broker's CA (PEM); None: the usual CAs")

    @model_validator(mode="after")
    def _plaintext_on_loopback_only(self) -> KafkaLogin:
        if self.security_protocol == "plaintext":
            hosts = [server.rsplit(":", 1)[0].strip("[]") for server in (self.bootstrap_servers or "").split(",")]
            if not self.bootstrap_servers or not all(is_loopback(host) for host in hosts):
                raise ValueError(
                    "security_protocol plaintext needs bootstrap_servers on loopback (notices unencrypted)"
                )
        if self.sasl_mechanism != "OAUTHBEARER":
            if not self.username or self.password is None:
                raise ValueError(f"sasl_mechanism {self.sasl_mechanism} needs username and password")
            if self.security_protocol != "sasl_ssl":
                raise ValueError(f"sasl_mechanism {self.sasl_mechanism} sends a password: only over sasl_ssl")
        return self


class KafkaIntake(KafkaLogin):
    """GCN Kafka (igwn.gwalert JSON), or another broker carrying the same alerts (SCiMMA's Hopskotch, as Avro;
    a site's mirror)."""

    enabled: bool = False
    topics: tuple[str, ...] = ("igwn.gwalert",)
    group_id: str = "toros-alert"
    session_timeout_s: float = Field(
        default=10.0, ge=6.0, le=300.0,
        description="a consumer that died holds its partitions this long (after a kill -9, notices wait so long)",
    )  # fmt: skip


class CampaignPublishing(KafkaLogin):
    """The campaigns published as our own notices on a Kafka topic (gcn-kafka's producer), for partners to
    listen to: each event's campaign JSON (key: the superevent id) whenever it changes. Off by default."""

    enabled: bool = False
    topic: str = Field(default="toros.campaign", min_length=1, max_length=249, pattern=r"^[A-Za-z0-9._-]+$")


class VoeventIntake(Section):
    """GCN Classic VOEvent over TCP (pygcn)."""

    enabled: bool = False
    host: tuple[str, ...] = ("45.58.43.186", "68.169.57.253")
    port: int = Field(default=8099, ge=1, le=65535)
    ivorn: str = "ivo://toros/alert"


class SecondLook(Section):
    """Each vetted candidate of an alert's frames observed again: its rise or decline (the same filter) or its
    colour (another filter, where the site has references in it)."""

    enabled: bool = True
    delay_s: float = Field(default=1800.0, ge=0, le=7 * 86400, description="after its first detection")
    filter: str | None = Field(default=None, description="None: the alert's exposure filter")
    exposure_count: int = Field(default=2, ge=1, le=100)
    exposure_time_s: float | None = Field(default=None, gt=0, le=3600, description="None: the alert's")
    priority: int = Field(default=80, ge=0, le=100, description="above routine work, below new alert fields (90)")


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
    min_moon_separation_deg: float = Field(default=20.0, ge=0, le=180)
    far_threshold_hz: float | None = Field(default=None, gt=0)
    significant_only: bool = False
    exposure: ExposurePlan = ExposurePlan()
    skymap: SkymapDownload = SkymapDownload()
    relay_retry_s: float = Field(default=600.0, ge=0, le=86400)
    site_behind_s: float = Field(
        default=1800.0, ge=1, le=86400,
        description="a site whose next pointing is this late (down, closed, slower than planned) has its list "
        "cancelled and its galaxies moved to the other sites",
    )  # fmt: skip
    kafka: KafkaIntake = KafkaIntake()
    campaign_kafka: CampaignPublishing = CampaignPublishing()
    second_look: SecondLook = SecondLook()
    voevent: VoeventIntake = VoeventIntake()
    notify: Notifications = Notifications()
