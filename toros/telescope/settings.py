"""The telescope module's settings: its section of the config file (`telescope:`), one link per device."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from toros.floor.notifications import Notifications
from toros.floor.site import MACON, Constraints, Site
from toros.runtime.config import ConfigPath, Section, ServerConfig
from toros.simulation.psf import Optics
from toros.telescope.devices.equinox import Equinox
from toros.telescope.dome_geometry import DomeGeometry, PierSide


class IndiLink(Section):
    """Where an INDI device is: the indiserver and the device's INDI name."""

    host: str = "127.0.0.1"
    port: int = Field(default=7624, ge=1, le=65535)
    device: str = Field(min_length=1, description='the INDI device name, e.g. "Telescope Simulator"')
    timeout_s: float = Field(
        default=10.0, gt=0, le=600, description="longest wait for the server, a property, a command or an image"
    )


class DeviceLink(Section):
    """How the telescope reaches one device: its simulator, an ASCOM Alpaca server or an indiserver."""

    driver: str = "simulator"
    url: str | None = Field(default=None, description="Alpaca server, e.g. http://192.168.1.20:11111")
    device_number: int = Field(default=0, ge=0, le=99)
    indi: IndiLink | None = Field(default=None, description="INDI: {host, port, device, timeout_s}")

    @model_validator(mode="after")
    def _reachable(self) -> DeviceLink:
        if self.driver == "alpaca" and not self.url:
            raise ValueError("the alpaca driver needs url (e.g. http://host:11111)")
        if self.driver == "indi" and self.indi is None:
            raise ValueError('the indi driver needs indi: {host, port, device} (e.g. device: "CCD Simulator")')
        return self


class SerialDeviceLink(DeviceLink):
    """A device that may also sit on a serial line."""

    port: str | None = Field(
        default=None, description="serial device or pyserial URL, e.g. /dev/ttyUSB0, socket://host:port"
    )
    baudrate: int = Field(default=9600, ge=300, le=921600)
    timeout_s: float = Field(default=2.0, gt=0, le=60, description="per serial reply")
    retries: int = Field(
        default=3, ge=0, le=20, description="a timeout or a garbled reply is retried this often, then FAULT"
    )

    @model_validator(mode="after")
    def _has_port(self) -> SerialDeviceLink:
        if self.driver in ("lx200", "serial") and not self.port:
            raise ValueError(f"the {self.driver} driver needs port (a serial device or pyserial URL)")
        return self


class MountLink(SerialDeviceLink):
    driver: Literal["simulator", "lx200", "alpaca", "indi"] = "simulator"
    slew_rate_deg_s: float = Field(default=4.0, gt=0, le=90, description="simulator: slew speed")
    equinox: Literal["auto"] | Equinox = Field(
        default="auto",
        description="the coordinates the mount speaks; auto: INDI and LX200 of date (jnow), an Alpaca mount its "
        "EquatorialSystem, the simulator ICRS (j2000)",
    )


class MountGeometry(Section):
    """Where a German equatorial mount stands in the dome (``toros/telescope/dome_geometry.py``)."""

    mount_offset_m: tuple[float, float, float] = Field(
        default=(0.0, 0.0, 0.0), description="the RA and Dec axes' intersection: metres east, north, up of the centre"
    )
    dec_axis_offset_m: float = Field(
        default=0.0, ge=0, le=10, description="from that intersection to the optical axis, along the Dec axis"
    )
    aperture_m: float = Field(default=0.6, gt=0, le=10, description="the telescope's beam where it leaves the dome")
    pier_side: PierSide = Field(
        default=PierSide.AUTO, description="auto: west of the pier for targets east of the meridian | east | west"
    )


class DomeSync(Section):
    """The dome following the telescope while it tracks."""

    enabled: bool = True
    tolerance_deg: float | None = Field(
        default=None, gt=0, le=180, description="re-centre the slit beyond this; null: from slit width and aperture"
    )
    during_exposures: bool = Field(
        default=True, description="false: only between exposures (a dome whose rotation shakes the telescope)"
    )
    poll_s: float = Field(default=10.0, gt=0, le=600, description="clock seconds between looks")


class DomeLink(SerialDeviceLink):
    driver: Literal["simulator", "serial", "alpaca", "indi"] = "simulator"
    kind: Literal["dome", "roof"] = Field(
        default="dome", description="roof: a roll-off roof, which neither rotates nor needs synchronising"
    )
    radius_m: float = Field(default=2.5, gt=0, le=50)
    slit_width_m: float = Field(default=1.2, gt=0, le=20)
    geometry: MountGeometry = MountGeometry()
    sync: DomeSync = DomeSync()
    rotation_deg_s: float = Field(default=5.0, gt=0, le=90, description="simulator: rotation speed")
    shutter_s: float = Field(default=60.0, ge=0, le=600, description="simulator: time to open or close the shutter")
    park_azimuth_deg: float = Field(default=180.0, ge=0, lt=360)

    def slit_geometry(self, latitude_deg: float) -> DomeGeometry:
        """Where the slit must be for the mount this section describes, at a site's latitude."""
        return DomeGeometry(
            self.radius_m, latitude_deg, self.geometry.mount_offset_m, self.geometry.dec_axis_offset_m,
            self.geometry.pier_side,
        )  # fmt: skip

    @model_validator(mode="after")
    def _fits_inside(self) -> DomeLink:
        offset = math.dist(self.geometry.mount_offset_m, (0.0, 0.0, 0.0)) + self.geometry.dec_axis_offset_m
        if self.kind == "dome" and offset + self.geometry.aperture_m / 2 >= self.radius_m:
            raise ValueError(
                f"geometry: the telescope would reach {offset + self.geometry.aperture_m / 2:.2f} m from the dome's "
                f"centre (mount offset, Dec axis offset and half the aperture), beyond radius_m {self.radius_m:g}"
            )
        if self.kind == "dome" and self.geometry.aperture_m > self.slit_width_m:
            raise ValueError(
                f"geometry: aperture_m {self.geometry.aperture_m:g} is wider than slit_width_m {self.slit_width_m:g}"
            )
        return self


class CameraLink(DeviceLink):
    driver: Literal["simulator", "alpaca", "indi"] = "simulator"
    width: int = Field(default=1024, ge=16, le=20000, description="simulator: image columns")
    height: int = Field(default=1024, ge=16, le=20000, description="simulator: image rows")
    overscan: int = Field(default=32, ge=0, le=1000, description="overscan columns on the right of each raw frame")
    readout_s: float = Field(default=5.0, ge=0, le=600, description="simulator: readout time")
    cooling_target_c: float = Field(default=-20.0, ge=-120, le=30)
    read_noise_e: float = Field(
        default=6.0, ge=0, le=1000, description="FITS RDNOISE (Alpaca cameras do not report it)"
    )
    image_timeout_s: float = Field(
        default=120.0, gt=0, le=3600, description="Alpaca: downloading one image may take this long"
    )
    binning: int = Field(default=1, ge=1, le=16, description="INDI: CCD_BINNING (the other drivers bin 1x1)")
    gain_e_adu: float = Field(
        default=1.0, gt=0, le=1000, description="FITS GAIN in e-/ADU for cameras that do not report it (INDI)"
    )
    instrument: str = "STA1600"
    pixel_scale_arcsec: float = Field(
        default=0.47, gt=0, le=60, description="on the sky; the raw light frames' WCS uses it"
    )

    @model_validator(mode="after")
    def _bins(self) -> CameraLink:
        if self.binning != 1 and self.driver != "indi":
            raise ValueError(
                f"binning {self.binning}: only the indi camera driver bins (the {self.driver} one reads 1x1)"
            )
        return self


class FilterWheelLink(DeviceLink):
    driver: Literal["simulator", "alpaca", "indi"] = "simulator"
    filters: tuple[str, ...] = ("clear", "g", "r", "i", "z")
    change_s: float = Field(default=3.0, ge=0, le=120, description="simulator: time per filter change")


class FlatLampLink(DeviceLink):
    """The flat-field lamp: simulated, an ASCOM Alpaca CoverCalibrator, or none (no dome flats at this site)."""

    driver: Literal["simulator", "alpaca", "indi", "none"] = "simulator"
    brightness: int | None = Field(default=None, ge=0, description="Alpaca: the lamp's brightness (None: its maximum)")


class BadWeather(Section):
    """A period of unsafe weather for the simulated weather station (drills and tests), in clock time."""

    start: datetime
    end: datetime
    reason: str = "high wind"

    @field_validator("start", "end")
    @classmethod
    def _utc(cls, moment: datetime) -> datetime:
        return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


class WeatherLink(DeviceLink):
    driver: Literal["simulator", "alpaca", "indi"] = "simulator"
    bad_weather: tuple[BadWeather, ...] = ()


class _UtcMoment(Section):
    @field_validator("start", "epoch", check_fields=False)
    @classmethod
    def _utc(cls, moment: datetime) -> datetime:
        return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


class KilonovaSpec(_UtcMoment):
    """A kilonova like AT2017gfo at ``distance_mpc``, from the merger time ``start``."""

    kind: Literal["kilonova"]
    ra_deg: float = Field(ge=0, lt=360)
    dec_deg: float = Field(ge=-90, le=90)
    start: datetime
    distance_mpc: float = Field(gt=0, le=10000)


class SupernovaSpec(_UtcMoment):
    """A type Ia or II supernova at ``distance_mpc``, its r-band peak at ``peak_time``."""

    kind: Literal["supernova_ia", "supernova_ii"]
    ra_deg: float = Field(ge=0, lt=360)
    dec_deg: float = Field(ge=-90, le=90)
    peak_time: datetime
    distance_mpc: float = Field(gt=0, le=10000)

    @field_validator("peak_time")
    @classmethod
    def _utc_peak(cls, moment: datetime) -> datetime:
        return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


class VariableStarSpec(_UtcMoment):
    kind: Literal["variable"]
    ra_deg: float = Field(ge=0, lt=360)
    dec_deg: float = Field(ge=-90, le=90)
    mean_mag: float = Field(ge=-2, le=30)
    amplitude_mag: float = Field(ge=0, le=5)
    period_days: float = Field(gt=0, le=10000)
    epoch: datetime


class AsteroidSpec(_UtcMoment):
    kind: Literal["asteroid"]
    ra_deg: float = Field(ge=0, lt=360)
    dec_deg: float = Field(ge=-90, le=90)
    epoch: datetime
    rate_arcsec_per_hour: float = Field(ge=0, le=36000)
    position_angle_deg: float = Field(ge=0, lt=360)
    mag: float = Field(ge=-2, le=30)


TransientSpec = Annotated[KilonovaSpec | SupernovaSpec | VariableStarSpec | AsteroidSpec, Field(discriminator="kind")]


class SimulatedOptics(Section):
    """The simulated telescope's PSF (``toros.simulation.psf``): its profile, and how it widens and elongates
    from the optical axis to the field's corner."""

    profile: Literal["moffat", "gaussian"] = Field(default="moffat", description="moffat, as seeing makes stars")
    beta: float = Field(default=3.0, ge=1.5, le=10.0, description="Moffat beta: 2.5-4.5 typical, lower = wider wings")
    corner_fwhm_growth: float = Field(
        default=0.15, ge=0.0, le=2.0, description="FWHM at the field's corner over the axis's, minus 1"
    )
    corner_ellipticity: float = Field(default=0.10, ge=0.0, lt=0.9, description="1 - b/a at the corner, radial")
    field_radius_deg: float = Field(
        default=0.99, gt=0.0, le=10.0, description="axis to corner: 0.99 for the CDK24 + STA1600's 1.4 deg field"
    )

    def optics(self) -> Optics:
        return Optics(self.profile, self.beta, self.corner_fwhm_growth, self.corner_ellipticity, self.field_radius_deg)


class SimulatedSkySettings(Section):
    """What the simulated camera sees (``toros.simulation.sky``); the real camera drivers ignore it."""

    psf: SimulatedOptics = SimulatedOptics()
    faintest_star_mag: float = Field(default=21.5, ge=10, le=26, description="r magnitude of the faintest star")
    seeing_arcsec: tuple[float, float] = Field(default=(1.2, 2.4), description="FWHM drawn per frame in this range")
    pointing_error_arcsec: float = Field(
        default=30.0, ge=0, le=7200, description="rms per axis of the mount's error, new at each slew"
    )
    galaxy_catalog: ConfigPath | None = Field(
        default=None, description="galaxies drawn where they are (as alert.catalog)"
    )
    transients: tuple[TransientSpec, ...] = ()

    @model_validator(mode="after")
    def _seeing(self) -> SimulatedSkySettings:
        low, high = self.seeing_arcsec
        if not 0.3 <= low <= high <= 10:
            raise ValueError("seeing_arcsec must be [low, high] with 0.3 <= low <= high <= 10")
        return self


class RoutineCalibrations(Section):
    """What the robotic night takes."""

    bias_count: int = Field(default=10, ge=0, le=1000)
    dark_count: int = Field(default=5, ge=0, le=1000)
    dark_times_s: tuple[float, ...] = (60.0,)
    flat_count: int = Field(default=5, ge=0, le=1000)
    flat_filters: tuple[str, ...] = ("r",)
    flat_target_adu: float = Field(default=25000.0, gt=0, le=65535, description="sky flats aim at this mean level")
    flat_min_exposure_s: float = Field(default=1.0, gt=0, le=600)
    flat_max_exposure_s: float = Field(default=60.0, gt=0, le=3600)
    flat_sun_altitude_deg: tuple[float, float] = Field(
        default=(-12.0, -3.0), description="sky flats while the Sun is in this band"
    )
    dome_flat_exposure_s: float = Field(default=5.0, gt=0, le=3600)


class TargetDefaults(Section):
    """Exposure settings for targets that leave them unset."""

    exposure_time_s: float = Field(default=60.0, gt=0, le=3600)
    exposure_count: int = Field(default=1, ge=1, le=1000)
    filter: str = "r"
    overhead_s: float = Field(default=30.0, ge=0, le=3600, description="slew and settle time added to each target")


class AlertPreemption(Section):
    """What an alert's target does to an exposure in progress (a routine target's, or calibration frames'):
    the first minutes after a merger are worth far more than any routine frame."""

    routine_exposure: Literal["abort", "finish_frame"] = Field(
        default="abort", description="abort: stop the exposure at once; finish_frame: give way after it"
    )
    finish_below_s: float = Field(
        default=15.0, ge=0, le=3600, description="an exposure with less than this left (or reading out) finishes"
    )
    aborted_frames: Literal["keep", "discard"] = Field(
        default="keep",
        description="keep: stored under <night>/aborted/ with ABORTED = T and its true EXPTIME, never announced",
    )


class SafetyConfig(Section):
    poll_s: float = Field(default=30.0, gt=0, le=3600, description="clock seconds between weather and device checks")
    watchdog_s: float = Field(
        default=900.0, gt=0, le=86400, description="close when the night has not moved for this long"
    )
    reopen_after_s: float = Field(
        default=1800.0, ge=0, le=86400, description="the robotic night reopens after this long of safe weather"
    )
    max_sun_altitude_deg: float = Field(
        default=-3.0,
        ge=-18.0,
        le=10.0,
        description="the dome does not open while the Sun is higher (an operator's order may override it)",
    )


class HoldConfig(Section):
    """An operator's hold (set by an operator's close): alerts that arrive meanwhile wait for it."""

    wake_on_alert: bool = Field(
        default=False, description="an alert's targets that wait for the hold are sent to `notify`"
    )
    notify: Notifications = Notifications()

    @model_validator(mode="after")
    def _somewhere_to_wake(self) -> HoldConfig:
        if self.wake_on_alert and not self.notify.enabled:
            raise ValueError("wake_on_alert needs hold.notify (a webhook, or e-mail with an SMTP host)")
        return self


class TelescopeConfig(ServerConfig):
    port: int = Field(default=50052, ge=0, le=65535)
    workers: int = Field(
        default=8, ge=1, le=64, description="observe_targets orders wait for the night on a worker each"
    )
    mode: Literal["robotic", "manual"] = "robotic"
    site: Site = MACON
    name: str = Field(default="TOROS", description="FITS TELESCOP")
    mount: MountLink = MountLink()
    dome: DomeLink = DomeLink()
    camera: CameraLink = CameraLink()
    filter_wheel: FilterWheelLink = FilterWheelLink()
    weather: WeatherLink = WeatherLink()
    flat_lamp: FlatLampLink = FlatLampLink()
    sky: SimulatedSkySettings = SimulatedSkySettings()
    constraints: Constraints = Constraints()
    calibrations: RoutineCalibrations = RoutineCalibrations()
    targets: TargetDefaults = TargetDefaults()
    safety: SafetyConfig = SafetyConfig()
    preemption: AlertPreemption = AlertPreemption()
    hold: HoldConfig = HoldConfig()

    @model_validator(mode="after")
    def _flats_below_the_daylight_limit(self) -> TelescopeConfig:
        high = self.calibrations.flat_sun_altitude_deg[1]
        if high > self.safety.max_sun_altitude_deg:
            raise ValueError(
                f"calibrations.flat_sun_altitude_deg: its top ({high:+.1f}) is above safety.max_sun_altitude_deg "
                f"({self.safety.max_sun_altitude_deg:+.1f}): the dome may not open for those flats"
            )
        return self
