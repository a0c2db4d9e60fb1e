"""Device drivers against protocol simulators: LX200 and the serial dome on a pty (opened by pyserial),
ASCOM Alpaca over HTTP against the Alpaca simulator; and the simulators' own timing."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import astropy.units as u
import numpy as np
import pytest
from astropy.coordinates import TETE, SkyCoord
from astropy.time import Time

from toros.floor.sky_geometry import tan_wcs
from toros.runtime.clock import Clock
from toros.simulation.ccd import Sensor
from toros.simulation.sky import Conditions, Scene, SimulatedSky
from toros.telescope.devices import CommandRefused, DeviceError
from toros.telescope.devices.alpaca import (
    AlpacaCamera,
    AlpacaDome,
    AlpacaFilterWheel,
    AlpacaFlatLamp,
    AlpacaMount,
    AlpacaSafetyMonitor,
)
from toros.telescope.devices.equinox import Equinox, icrs_to_mount, mount_to_icrs
from toros.telescope.devices.lx200 import (
    Lx200Mount,
    format_dec,
    format_ra,
    parse_dec,
    parse_ra,
)
from toros.telescope.devices.serial_dome import SerialDome
from toros.telescope.devices.serial_link import GarbledReply
from toros.telescope.devices.simulated import (
    Light,
    SimulatedCamera,
    SimulatedDome,
    SimulatedFilterWheel,
    SimulatedFlatLamp,
    SimulatedMount,
    SimulatedWeather,
)
from toros.telescope.protocol_simulators.alpaca import AlpacaSimulator, SafetyState
from toros.telescope.protocol_simulators.serial import (
    DomeProtocolSimulator,
    Lx200Simulator,
    PtyServer,
)
from toros.telescope.settings import CameraLink, DeviceLink, DomeLink, FlatLampLink, MountLink

START = datetime(2026, 11, 23, 3, 0, tzinfo=UTC)


@pytest.fixture
def clock() -> Clock:
    return Clock(START, rate=200.0)


def until(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


# -- LX200 -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "reply, degrees",
    [
        (b"12:30:00#", 187.5),
        (b"12:30.0#", 187.5),
        (b"00:00:01#", 15 / 3600),
        (b"23:59:59#", 359.99583333),
        (b"24:00:00#", 0.0),
        (b"06:15.5#", 93.875),
    ],
)
def test_lx200_right_ascension_in_both_precisions(reply, degrees):
    assert parse_ra(reply) == pytest.approx(degrees)


@pytest.mark.parametrize(
    "reply, degrees",
    [
        (b"+45*30:00#", 45.5),
        (b"-17\xdf51:36#", -17.86),
        (b"-00*30:00#", -0.5),
        (b"+89:59:59#", 89.99972222),
        (b"-25*17#", -25.28333333),
        ("+10°05:00#".encode(), 10.08333333),
        (b"+10*05'00#", 10.08333333),
        (b"45*00#", 45.0),
    ],
)
def test_lx200_declination_in_every_dialect(reply, degrees):
    assert parse_dec(reply) == pytest.approx(degrees)


@pytest.mark.parametrize("reply", [b"", b"12:30:00", b"ab:cd:ef#", b"25:00:00#", b"\x15?#"])
def test_lx200_garbled_right_ascension_is_rejected(reply):
    with pytest.raises(GarbledReply):
        parse_ra(reply)


@pytest.mark.parametrize("reply", [b"+95*00:00#", b"+45*30:00", b"north#"])
def test_lx200_garbled_declination_is_rejected(reply):
    with pytest.raises(GarbledReply):
        parse_dec(reply)


def test_lx200_formats_round_trip():
    for ra in (0.0, 12.5, 194.3, 359.99):
        assert parse_ra(format_ra(ra) + b"#") == pytest.approx(ra % 360, abs=1 / 240) or ra > 359.99
    for dec in (-89.99, -17.86, -0.5, 0.0, 45.123):
        assert parse_dec(format_dec(dec) + b"#") == pytest.approx(dec, abs=1 / 3600)


def test_lx200_driver_switches_to_high_precision_slews_and_parks(clock):
    simulator = Lx200Simulator(SimulatedMount(clock), high_precision=False, degree=b"\xdf")
    with PtyServer(simulator) as pty:
        mount = Lx200Mount(MountLink(driver="lx200", port=pty.path, timeout_s=0.3))
        mount.connect()
        assert simulator.high_precision, "the driver must toggle to high precision with :U#"
        assert b":U#" in simulator.received
        mount.unpark()
        mount.slew_to(194.3, -17.86)
        assert mount.slewing()
        until(lambda: not mount.slewing())
        ra, dec = mount.position()
        assert ra == pytest.approx(194.3, abs=1 / 240) and dec == pytest.approx(-17.86, abs=1 / 3600)
        assert simulator.mount.position() == pytest.approx((194.3, -17.86), abs=1 / 240)  # ICRS behind the wire
        wire_ra, wire_dec = icrs_to_mount(Equinox.JNOW, 194.3, -17.86, datetime.now(UTC))  # of date on it
        assert b":Sr" + format_ra(wire_ra) + b"#" in simulator.received
        assert b":Sd" + format_dec(wire_dec) + b"#" in simulator.received
        assert abs(wire_ra - 194.3) > 0.2, "in 2026 of date is some 20' from ICRS"
        mount.park()
        assert mount.parked()
        until(lambda: b":hP#" in simulator.received)
        with pytest.raises(CommandRefused, match="parked"):
            mount.slew_to(10.0, -20.0)
        mount.close()


def test_lx200_refusal_below_the_horizon_is_a_refusal_not_a_fault(clock):
    simulator = Lx200Simulator(SimulatedMount(clock), high_precision=True, below_horizon=lambda ra, dec: dec > 60)
    with PtyServer(simulator) as pty:
        mount = Lx200Mount(MountLink(driver="lx200", port=pty.path, timeout_s=0.3))
        mount.connect()
        mount.unpark()
        with pytest.raises(CommandRefused, match="Object Below Horizon"):
            mount.slew_to(10.0, 80.0)
        mount.slew_to(10.0, -30.0)  # the mount still works


def test_lx200_garbled_replies_are_retried_then_the_mount_fails(clock):
    simulator = Lx200Simulator(SimulatedMount(clock), high_precision=True)
    with PtyServer(simulator) as pty:
        mount = Lx200Mount(MountLink(driver="lx200", port=pty.path, timeout_s=0.2, retries=2))
        mount.connect()
        simulator.garble = 2
        assert mount.position()[1] == pytest.approx(-90.0, abs=1e-3)  # two garbled, the third attempt answers
        simulator.silent = True
        with pytest.raises(DeviceError, match=r"no valid reply to ':GR#' after 3 attempts, no reply \(timeout\)"):
            mount.position()


def test_lx200_on_a_port_that_does_not_exist_fails_clearly():
    mount = Lx200Mount(MountLink(driver="lx200", port="/dev/ttyTOROS-missing"))
    with pytest.raises(DeviceError, match="mount: cannot open /dev/ttyTOROS-missing"):
        mount.connect()


# -- serial dome -------------------------------------------------------------------------------------


def test_serial_dome_opens_rotates_and_parks(clock):
    dome = SimulatedDome(clock, rotation_deg_s=10.0, shutter_s=30.0, park_azimuth_deg=180.0)
    with PtyServer(DomeProtocolSimulator(dome)) as pty:
        driver = SerialDome(DomeLink(driver="serial", port=pty.path, timeout_s=0.3))
        driver.connect()
        assert driver.shutter() == "closed" and driver.azimuth() == pytest.approx(180.0)
        driver.open_shutter()
        assert driver.shutter() == "opening"
        until(lambda: driver.shutter() == "open")
        driver.slew_to(90.0)
        assert driver.slewing()
        until(lambda: not driver.slewing())
        assert driver.azimuth() == pytest.approx(90.0, abs=0.1)
        driver.park()
        until(lambda: not driver.slewing())
        assert driver.azimuth() == pytest.approx(180.0, abs=0.1)
        driver.close_shutter()
        until(lambda: driver.shutter() == "closed")


def test_serial_dome_errors_and_garbage(clock):
    dome = SimulatedDome(clock)
    simulator = DomeProtocolSimulator(dome)
    with PtyServer(simulator) as pty:
        driver = SerialDome(DomeLink(driver="serial", port=pty.path, timeout_s=0.2, retries=1))
        driver.connect()
        with pytest.raises(CommandRefused, match="dome refused GOTO"):
            driver._command("GOTO north")
        simulator.garble = 1
        assert driver.shutter() == "closed"  # one garbled status line, retried
        dome.jammed = True
        assert driver.shutter() == "error"
        simulator.silent = True
        with pytest.raises(DeviceError, match="dome: no valid reply to 'STATUS\\\\r' after 2 attempts"):
            driver.shutter()


# -- ASCOM Alpaca ------------------------------------------------------------------------------------


@pytest.fixture
def alpaca(clock):
    mount = SimulatedMount(clock)
    devices = {
        "telescope": mount,
        "dome": SimulatedDome(clock, shutter_s=20.0),
        "camera": SimulatedCamera(clock, Sensor(width=40, height=30, overscan=6), 2.0, lambda seconds: Light(200.0, 2)),
        "filterwheel": SimulatedFilterWheel(clock, ("clear", "g", "r"), change_s=2.0),
        "safetymonitor": SafetyState(),
        "covercalibrator": SimulatedFlatLamp(),
    }
    with AlpacaSimulator(devices) as simulator:
        yield simulator


def test_alpaca_mount_and_dome(alpaca):
    mount = AlpacaMount(MountLink(driver="alpaca", url=alpaca.url))
    mount.connect()
    assert mount.parked()
    with pytest.raises(
        CommandRefused,
        match=r"mount \(http://127.0.0.1:\d+\): SlewToCoordinatesAsync: Alpaca error 0x40B: the mount is parked",
    ):
        mount.slew_to(30.0, -40.0)
    mount.unpark()
    mount.slew_to(30.0, -40.0)
    until(lambda: not mount.slewing())
    assert mount.speaks is Equinox.JNOW, "the simulator says EquatorialSystem 1: topocentric, of date"
    assert mount.position() == pytest.approx((30.0, -40.0))
    assert alpaca.devices["telescope"].position() == pytest.approx((30.0, -40.0))
    wire = icrs_to_mount(Equinox.JNOW, 30.0, -40.0, datetime.now(UTC))
    assert (mount.client.RightAscension * 15.0, mount.client.Declination) == pytest.approx(wire, abs=1e-5)
    dome = AlpacaDome(DomeLink(driver="alpaca", url=alpaca.url))
    dome.connect()
    dome.open_shutter()
    until(lambda: dome.shutter() == "open")
    dome.slew_to(270.0)
    until(lambda: not dome.slewing())
    assert dome.azimuth() == pytest.approx(270.0)


@pytest.mark.parametrize(("system", "speaks"), [(1, Equinox.JNOW), (2, Equinox.J2000), (3, None)])
def test_an_alpaca_mount_says_which_coordinates_it_speaks(clock, system, speaks):
    with AlpacaSimulator({"telescope": SimulatedMount(clock)}, equatorial_system=system) as simulator:
        mount = AlpacaMount(MountLink(driver="alpaca", url=simulator.url))
        if speaks is None:  # J2050: refused at connection, naming it and what to do
            with pytest.raises(DeviceError, match=r"EquatorialSystem equJ2050: .* set telescope.mount.equinox"):
                mount.connect()
            return
        mount.connect()
        assert mount.speaks is speaks
        mount.unpark()
        mount.slew_to(120.0, 10.0)
        until(lambda: not mount.slewing())
        assert simulator.devices["telescope"].position() == pytest.approx((120.0, 10.0), abs=1e-6)
        assert mount.position() == pytest.approx((120.0, 10.0), abs=1e-6)


def test_the_config_says_which_coordinates_when_a_mount_reports_them_wrong(clock):
    with AlpacaSimulator({"telescope": SimulatedMount(clock)}, equatorial_system=1) as simulator:
        mount = AlpacaMount(MountLink(driver="alpaca", url=simulator.url, equinox="j2000"))
        mount.connect()
        assert mount.speaks is Equinox.J2000
        mount.unpark()
        mount.slew_to(120.0, 10.0)
        until(lambda: not mount.slewing())
        assert (mount.client.RightAscension * 15.0, mount.client.Declination) == pytest.approx((120.0, 10.0))


def test_of_date_is_the_apparent_place_astropy_computes():
    """The mount's coordinates of date against astropy's TETE frame (a separate path through GCRS), and back."""
    when = datetime(2026, 11, 23, 3, 0, tzinfo=UTC)
    for ra, dec in [(10.0, -30.0), (200.0, 45.0), (359.99, -89.0), (0.01, 10.0), (180.0, 89.5)]:
        wire = icrs_to_mount(Equinox.JNOW, ra, dec, when)
        apparent = SkyCoord(ra * u.deg, dec * u.deg).transform_to(TETE(obstime=Time(when)))
        assert SkyCoord(*wire, unit="deg").separation(SkyCoord(apparent.ra, apparent.dec)).arcsec < 0.01
        assert SkyCoord(*wire, unit="deg").separation(SkyCoord(ra, dec, unit="deg")).arcmin > 5.0
        back = mount_to_icrs(Equinox.JNOW, *wire, when)
        assert SkyCoord(*back, unit="deg").separation(SkyCoord(ra, dec, unit="deg")).arcsec < 1e-3
        assert icrs_to_mount(Equinox.J2000, ra, dec, when) == (ra, dec)


def test_alpaca_error_numbers_become_clear_messages(alpaca):
    dome = AlpacaDome(DomeLink(driver="alpaca", url=alpaca.url))
    alpaca.faults[("dome", "closeshutter")] = (0x500, "shutter motor overcurrent")
    with pytest.raises(
        DeviceError, match=r"dome \(http://127.0.0.1:\d+\): CloseShutter: Alpaca error 0x500: shutter motor overcurrent"
    ):
        dome.close_shutter()
    alpaca.faults[("dome", "slewtoazimuth")] = (0x40B, "the dome is slaved to the mount")
    with pytest.raises(CommandRefused, match="SlewToAzimuth: Alpaca error 0x40B: the dome is slaved"):
        dome.slew_to(10.0)
    alpaca.faults[("dome", "azimuth")] = (0x500, "encoder lost")
    with pytest.raises(DeviceError, match="Azimuth: Alpaca error 0x500: encoder lost"):
        dome.azimuth()


def test_alpaca_camera_image_bytes_and_json(alpaca):
    camera = AlpacaCamera(CameraLink(driver="alpaca", url=alpaca.url, overscan=6))
    camera.connect()
    camera.cool_to(-15.0)
    camera.start_exposure(5.0, True)
    assert camera.exposing()
    until(camera.image_ready)
    image = camera.read_image()
    assert image.shape == (30, 46) and image.dtype == np.uint16
    assert image[:, :40].mean() > image[:, 40:].mean() + 100  # lit pixels above the overscan
    assert camera.gain() == pytest.approx(1.5)
    until(lambda: camera.temperature() < 0)
    # The same image over JSON (a server that does not speak ImageBytes): alpyca's fallback.
    simulated = alpaca.devices["camera"]
    simulated.start_exposure(0.0, False)
    until(simulated.image_ready)
    nested = camera.client.ImageArray
    assert np.asarray(nested).T.shape == (30, 46)


def test_alpaca_filter_wheel_and_safety_monitor(alpaca):
    wheel = AlpacaFilterWheel(DeviceLink(driver="alpaca", url=alpaca.url))
    wheel.connect()
    assert wheel.names() == ["clear", "g", "r"]
    wheel.select("r")
    until(lambda: wheel.current() == "r")
    with pytest.raises(CommandRefused, match="no filter 'Halpha'"):
        wheel.select("Halpha")
    monitor = AlpacaSafetyMonitor(DeviceLink(driver="alpaca", url=alpaca.url))
    assert monitor.safe() == (True, "")
    alpaca.devices["safetymonitor"].safe = False
    assert monitor.safe()[0] is False


def test_alpaca_cover_calibrator_is_the_flat_lamp(alpaca):
    lamp = AlpacaFlatLamp(FlatLampLink(driver="alpaca", url=alpaca.url))
    lamp.connect()
    assert not lamp.lit() and lamp.describe().message == "off"
    lamp.switch_on()  # at the calibrator's MaxBrightness
    assert lamp.lit() and alpaca.devices["covercalibrator"].lit()
    lamp.switch_off()
    assert not lamp.lit()
    too_bright = AlpacaFlatLamp(FlatLampLink(driver="alpaca", url=alpaca.url, brightness=1000))
    with pytest.raises(CommandRefused, match="CalibratorOn: Alpaca error 0x401: Brightness 1000 is not in 0..255"):
        too_bright.switch_on()
    alpaca.faults[("covercalibrator", "calibratorstate")] = (0x500, "lamp burnt out")
    with pytest.raises(DeviceError, match="CalibratorState: Alpaca error 0x500: lamp burnt out"):
        lamp.lit()


def test_alpaca_server_that_is_gone_is_a_device_error():
    mount = AlpacaMount(MountLink(driver="alpaca", url="http://127.0.0.1:9"))
    with pytest.raises(DeviceError, match=r"mount \(http://127.0.0.1:9\): RightAscension: no answer: ConnectionError"):
        mount.position()


# -- simulators --------------------------------------------------------------------------------------


def test_simulated_devices_take_clock_time(clock):
    mount = SimulatedMount(clock, slew_rate_deg_s=2.0)
    mount.unpark()
    mount.slew_to(0.0, -80.0)  # 10 degrees: 5 clock seconds
    assert mount.slewing()
    time.sleep(5.0 / clock.rate + 0.05)
    assert not mount.slewing() and mount.position() == pytest.approx((0.0, -80.0))
    wheel = SimulatedFilterWheel(clock, ("clear", "r"), change_s=4.0)
    wheel.select("r")
    assert wheel.current() is None
    time.sleep(4.0 / clock.rate + 0.05)
    assert wheel.current() == "r"
    weather = SimulatedWeather(clock, ())
    assert weather.safe() == (True, "")


def test_simulated_camera_produces_bias_darks_and_lights(clock):
    sensor = Sensor(width=64, height=48, overscan=8)
    camera = SimulatedCamera(clock, sensor, 1.0, lambda seconds: Light(500.0, 10))
    levels = {}
    for name, seconds, light in (("bias", 0.0, False), ("dark", 60.0, False), ("light", 30.0, True)):
        camera.start_exposure(seconds, light)
        assert camera.exposing()
        until(camera.image_ready)
        image = camera.read_image().astype(float)
        assert image.shape == (48, 72)
        levels[name] = np.median(image[:, :64])
    assert levels["bias"] == pytest.approx(1000, abs=10)
    assert levels["dark"] - levels["bias"] < 10  # dark current is small apart from hot pixels
    assert levels["light"] - levels["bias"] == pytest.approx(500 * 30 / 1.5, rel=0.15)


def test_the_same_pointing_shows_the_same_stars(clock):
    sensor = Sensor(width=96, height=64, overscan=0, hot_pixel_fraction=0.0)
    sky = SimulatedSky()
    field = {"value": (10.0, -30.0)}

    def light(seconds: float) -> Light:
        wcs = tan_wcs(*field["value"], 96, 64, 10.0)
        return Light(1.0, scene=Scene(sky, wcs, 10.0, Conditions("r", 0.0, 1.0, 20.0, START)))

    camera = SimulatedCamera(clock, sensor, 0.0, light)

    def stars() -> np.ndarray:
        camera.start_exposure(30.0, True)
        until(camera.image_ready)
        image = camera.read_image().astype(float)
        return (image - np.median(image)).ravel()

    first, again = stars(), stars()
    field["value"] = (10.5, -30.0)
    elsewhere = stars()
    # The first frame's brightest pixels (its stars) are as bright again in the same pointing, whatever the
    # noise; in another field they are sky.
    brightest = np.argsort(first)[-20:]
    noise = 1.4826 * np.median(np.abs(first))
    assert np.median(again[brightest]) > 0.7 * np.median(first[brightest])
    assert np.median(elsewhere[brightest]) < 3 * noise


def test_every_driver_the_config_accepts_is_in_the_driver_table_and_no_other():
    from typing import get_args

    from toros.telescope.equipment import DRIVERS
    from toros.telescope.settings import TelescopeConfig

    for kind, drivers in DRIVERS.items():
        link = TelescopeConfig.model_fields[kind].annotation
        assert set(get_args(link.model_fields["driver"].annotation)) == set(drivers), kind
