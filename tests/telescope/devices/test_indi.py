"""INDI drivers against the INDI project's own simulators (Debian's indi-bin), served by a real indiserver on
a free loopback port: the drivers alone (slew, track, park; shutter and azimuth; a FITS BLOB; filters;
weather; the light panel; what a site gets wrong), then the telescope daemon on INDI devices (a short
robotic sequence, bad weather closing the dome through safety, indiserver killed mid-exposure and back).

The simulators run in real time: exposures are short and the mount is synced next to its targets."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from astropy.coordinates import EarthLocation, SkyCoord
from astropy.io import fits
from astropy.time import Time
from pydantic import ValidationError
from support import NIGHT_TIME, devices, images, run, step, wait_for

from toros.demo import free_port
from toros.generated import toros_pb2 as pb
from toros.runtime.states import FINAL_STATES
from toros.telescope.devices import CommandRefused, DeviceError, Shutter, indi
from toros.telescope.devices.equinox import Equinox, icrs_to_mount
from toros.telescope.settings import CameraLink, DeviceLink, FlatLampLink, MountLink

# .ci/run installs Debian's indi-bin and sets TOROS_REQUIRE_INDI: there, missing simulators are a failure.
REQUIRED = os.environ.get("TOROS_REQUIRE_INDI") == "1"
pytestmark = pytest.mark.skipif(
    shutil.which("indiserver") is None and not REQUIRED, reason="Debian's indi-bin (indiserver) is not installed"
)

SIMULATORS = {
    "mount": ("indi_simulator_telescope", "Telescope Simulator"),
    "dome": ("indi_simulator_dome", "Dome Simulator"),
    "camera": ("indi_simulator_ccd", "CCD Simulator"),
    "filter_wheel": ("indi_simulator_wheel", "Filter Simulator"),
    "weather": ("indi_simulator_weather", "Weather Simulator"),
    "flat_lamp": ("indi_simulator_lightpanel", "Light Panel Simulator"),
}


class Indiserver:
    """indiserver with the simulators, its own HOME (the drivers keep their configs and park data there)."""

    def __init__(self, home: Path) -> None:
        assert shutil.which("indiserver"), "indiserver is required (TOROS_REQUIRE_INDI=1) but not installed"
        self.home, self.port = home, free_port()
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        command = ["indiserver", "-p", str(self.port), "-u", f"/tmp/toros-indi-{self.port}"]
        command += [program for program, _ in SIMULATORS.values()]
        log = open(self.home / "indiserver.log", "ab")  # noqa: SIM115  (the server's, closed when it ends)
        self.process = subprocess.Popen(
            command, env=os.environ | {"HOME": str(self.home)}, stdout=log, stderr=log, start_new_session=True
        )
        log.close()

        def listening() -> bool:
            with socket.socket() as probe:
                return probe.connect_ex(("127.0.0.1", self.port)) == 0

        wait_for(listening, timeout=10)

    def kill(self) -> None:
        """kill -9 of the server and its drivers."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)

    def setprop(self, *settings: str) -> None:
        for setting in settings:
            subprocess.run(["indi_setprop", "-p", str(self.port), setting], check=True, timeout=10)

    def link(self, kind: str, **settings: object) -> dict[str, object]:
        return {"driver": "indi", "indi": {"port": self.port, "device": SIMULATORS[kind][1], "timeout_s": 8}} | settings


@pytest.fixture
def indiserver(tmp_path: Path) -> Iterator[Indiserver]:
    home = tmp_path / "indi-home"
    home.mkdir()
    server = Indiserver(home)
    server.start()
    yield server
    server.kill()


def connected(device):
    device.connect()
    return device


# -- the drivers ----------------------------------------------------------------------------------------------


def test_mount_unparks_slews_to_what_it_reports_tracks_and_parks(indiserver):
    mount = connected(indi.IndiMount(MountLink(**indiserver.link("mount"))))
    try:
        mount.unpark()
        assert not mount.parked()
        ra, _ = mount.position()
        mount.slew_to(ra + 5.0, 87.0)
        assert mount.slewing()
        wait_for(lambda: not mount.slewing(), timeout=30)
        reported_ra, reported_dec = mount.position()
        assert abs((reported_ra - (ra + 5.0) + 180) % 360 - 180) < 0.2 and reported_dec == pytest.approx(87.0, abs=0.05)
        # EQUATORIAL_EOD_COORD is of date: what the simulator holds is the target's apparent place, not ICRS
        wire = SkyCoord(*icrs_to_mount(Equinox.JNOW, ra + 5.0, 87.0, datetime.now(UTC)), unit="deg")
        raw = SkyCoord(
            mount.number("EQUATORIAL_EOD_COORD", "RA") * 15.0, mount.number("EQUATORIAL_EOD_COORD", "DEC"), unit="deg"
        )
        assert raw.separation(wire).deg < 0.02 and raw.separation(SkyCoord(ra + 5.0, 87.0, unit="deg")).deg > 0.1
        assert mount.switched_on("TELESCOPE_TRACK_STATE") == "TRACK_ON"
        indiserver.setprop("Telescope Simulator.TELESCOPE_PARK_OPTION.PARK_CURRENT=On")  # the park position: here
        wait_for(lambda: mount.number("TELESCOPE_PARK_POSITION", "PARK_DEC") == pytest.approx(wire.dec.deg, abs=0.05))
        mount.slew_to(ra + 5.0, 85.0)
        wait_for(lambda: not mount.slewing(), timeout=30)
        mount.park()
        assert not mount.parked()  # on its way
        wait_for(mount.parked, timeout=30)
        # The simulator sends its coordinates at its own polling rate: the last ones may follow the park state.
        wait_for(lambda: mount.position()[1] == pytest.approx(87.0, abs=0.05), timeout=10)
        assert mount.describe().parked
        assert mount.switched_on("TELESCOPE_TRACK_STATE") == "TRACK_OFF"
    finally:
        mount.close()


def test_dome_opens_rotates_and_closes(indiserver):
    dome = connected(indi.IndiDome(DeviceLink(**indiserver.link("dome"))))
    try:
        dome.open_shutter()
        assert dome.shutter() is Shutter.OPENING
        wait_for(lambda: dome.shutter() is Shutter.OPEN, timeout=20)
        dome.slew_to(15.0)
        wait_for(lambda: not dome.slewing(), timeout=30)
        assert dome.azimuth() == pytest.approx(15.0, abs=0.5)
        dome.close_shutter()
        wait_for(lambda: dome.shutter() is Shutter.CLOSED, timeout=20)
        assert dome.describe().parked
    finally:
        dome.close()


def test_camera_exposes_cools_bins_and_sends_fits(indiserver):
    camera = connected(indi.IndiCamera(CameraLink(**indiserver.link("camera", overscan=0, binning=2, gain_e_adu=1.5))))
    try:
        camera.cool_to(-10.0)
        camera.start_exposure(0.2, light=True)
        wait_for(camera.image_ready, timeout=15)
        image = camera.read_image()
        assert image.shape == (512, 640) and image.dtype.name == "uint16" and image.max() > 0
        cards = {card.keyword: card.value for card in camera.header_cards()}
        assert cards["INSTRUME"] == "CCD Simulator" and cards["XBINNING"] == 2 and cards["FRAME"] == "Light"
        assert "NAXIS1" not in cards and camera.gain() == 1.5
        camera.start_exposure(0.0, light=False)  # a bias: the camera's shortest exposure, the shutter closed
        wait_for(camera.image_ready, timeout=15)
        camera.read_image()
        assert {card.keyword: card.value for card in camera.header_cards()}["FRAME"] == "Bias"
        wait_for(lambda: camera.temperature() < 0.0, timeout=30)
        with pytest.raises(CommandRefused, match=r"CCD Simulator\.CCD_EXPOSURE: 7200 s is outside .* to 3600 s"):
            camera.start_exposure(7200.0, light=True)
        camera.start_exposure(30.0, light=True)
        assert camera.exposing()
        camera.abort()
        assert not camera.exposing()
    finally:
        camera.close()


def test_filter_wheel_weather_and_light_panel(indiserver):
    wheel = connected(indi.IndiFilterWheel(DeviceLink(**indiserver.link("filter_wheel"))))
    weather = connected(indi.IndiWeather(DeviceLink(**indiserver.link("weather"))))
    lamp = connected(indi.IndiFlatLamp(FlatLampLink(**indiserver.link("flat_lamp"), brightness=128)))
    try:
        assert wheel.names()[:3] == ["Red", "Green", "Blue"]
        wheel.select("Blue")
        wait_for(lambda: wheel.current() == "Blue", timeout=10)
        with pytest.raises(CommandRefused, match=r"Filter Simulator\.FILTER_NAME: no filter 'V' \(it holds Red, "):
            wheel.select("V")
        wait_for(lambda: weather.safe()[0], timeout=10)
        indiserver.setprop(
            "Weather Simulator.WEATHER_CONTROL.Precip=10", "Weather Simulator.WEATHER_REFRESH.REFRESH=On"
        )
        safe, reason = wait_for(lambda: (s := weather.safe()) and not s[0] and s, timeout=10)
        assert reason == "Weather Simulator reports rain hour"
        lamp.switch_on()
        wait_for(lamp.lit, timeout=10)
        assert lamp.number("FLAT_LIGHT_INTENSITY", "FLAT_LIGHT_INTENSITY_VALUE") == 128
        lamp.switch_off()
        assert not lamp.lit()
    finally:
        for device in (wheel, weather, lamp):
            device.close()


def test_what_a_site_gets_wrong_is_one_clear_message_never_a_hang(indiserver):
    def quick(kind: str, device: str) -> DeviceLink:
        return DeviceLink(driver="indi", indi={"port": indiserver.port, "device": device, "timeout_s": 1})

    started = time.monotonic()
    with pytest.raises(DeviceError, match=r"Nope: no such device on the server \(it has: CCD Simulator, Dome"):
        connected(indi.IndiDome(quick("dome", "Nope")))
    with pytest.raises(DeviceError, match=r"Light Panel Simulator\.DOME_SHUTTER: the device has no such property"):
        connected(indi.IndiDome(quick("dome", "Light Panel Simulator")))
    nobody = MountLink(driver="indi", indi={"port": free_port(), "device": "Telescope Simulator", "timeout_s": 1})
    with pytest.raises(DeviceError, match=r"Telescope Simulator: no indiserver answers at 127\.0\.0\.1:\d+"):
        connected(indi.IndiMount(nobody))
    assert time.monotonic() - started < 10
    with pytest.raises(ValidationError, match=r"the indi driver needs indi: \{host, port, device\}"):
        DeviceLink(driver="indi")
    with pytest.raises(ValidationError, match="only the indi camera driver bins"):
        CameraLink(binning=2)


def test_a_property_in_alert_is_a_fault_naming_it(indiserver):
    dome = connected(indi.IndiDome(DeviceLink(**indiserver.link("dome"))))
    try:
        indiserver.setprop("Dome Simulator.DOME_PARK_OPTION.PARK_CURRENT=On")  # parks where it is
        dome.park()
        wait_for(lambda: dome.switched_on("DOME_PARK") == "PARK" and not dome.slewing(), timeout=30)
        # A parked INDI dome refuses to move: ABS_DOME_POSITION goes to Alert, which is what a jammed dome says.
        dome.set("ABS_DOME_POSITION", {"DOME_ABSOLUTE_POSITION": 45.0})
        with pytest.raises(DeviceError, match=r"Dome Simulator\.ABS_DOME_POSITION: the property is in Alert"):
            wait_for(lambda: dome.azimuth() is None, timeout=10)
    finally:
        dome.close()


def test_a_driver_that_dies_or_an_image_that_never_comes_is_a_fault_then_the_camera_comes_back(indiserver):
    link = indiserver.link("camera", overscan=0) | {
        "indi": {"port": indiserver.port, "device": "CCD Simulator", "timeout_s": 2}
    }
    camera = connected(indi.IndiCamera(CameraLink(**link)))
    try:
        # The image is kept on the server's disk instead of sent: none comes, and the wait has an end.
        indiserver.setprop("CCD Simulator.UPLOAD_MODE.UPLOAD_LOCAL=On")
        camera.start_exposure(0.1, light=True)
        with pytest.raises(DeviceError, match=r"CCD Simulator\.CCD1: no image came within 2 s of the exposure's end"):
            wait_for(camera.image_ready, timeout=10)
        # The driver dies in the middle of an exposure (indiserver restarts it, disconnected).
        camera.connect()  # images to this client again
        camera.start_exposure(5.0, light=True)
        subprocess.run(["pkill", "-9", "-P", str(indiserver.process.pid), "-f", "indi_simulator_ccd"], check=True)
        # (stopped: indiserver has not restarted it yet when the camera is asked; restarted: it has)
        lost = r"CCD Simulator.*: the driver or server (stopped|restarted) during the exposure; its image is lost"
        with pytest.raises(DeviceError, match=lost):
            wait_for(camera.image_ready, timeout=10)
        # Restarted by indiserver: the next exposure connects the device again and works.
        deadline = time.monotonic() + 15
        while True:
            try:
                camera.start_exposure(0.1, light=True)
                break
            except DeviceError:
                assert time.monotonic() < deadline, "the restarted camera driver never came back"
                time.sleep(0.2)
        wait_for(camera.image_ready, timeout=15)
        assert camera.read_image().shape == (1024, 1280)
    finally:
        camera.close()


# -- the telescope daemon on INDI devices ---------------------------------------------------------------------

MACON = EarthLocation(lon=-67.32, lat=-24.62, height=4650)


def meridian_ra(at: str) -> float:
    """The right ascension on the meridian at ``at`` at the test site (targets there are high all test long)."""
    return float(Time(at).sidereal_time("apparent", longitude=MACON.lon).deg)


def indi_telescope(telescope, indiserver: Indiserver, **settings: object):
    """The telescope daemon on the INDI simulators, its clock in real time (as the simulators' is)."""
    links = {kind: indiserver.link(kind) for kind in SIMULATORS}
    links["camera"] |= {"overscan": 0, "instrument": "CCD Simulator", "pixel_scale_arcsec": 1.19}
    links["dome"] |= {"sync": {"enabled": False}}
    # The targets are north, where the simulated dome starts and parks (the full Moon is near: no matter).
    safety = {"poll_s": 1.0, "watchdog_s": 600.0}
    stub = telescope(rate=1.0, safety=safety, constraints={"min_moon_separation_deg": 0.0}, **links, **settings)
    wait_for(lambda: devices(stub)["mount"].message.startswith("tracking"), timeout=20)  # connected
    ra = meridian_ra(NIGHT_TIME)
    # The simulated mount starts at the pole and would take half a minute to come down: synced next to the
    # targets instead, and parked there.
    indiserver.setprop(
        "Telescope Simulator.ON_COORD_SET.SYNC=On",
        f"Telescope Simulator.EQUATORIAL_EOD_COORD.RA;DEC={ra / 15.0};8",
        "Telescope Simulator.TELESCOPE_PARK_OPTION.PARK_CURRENT=On",
        "Dome Simulator.DOME_PARK_POSITION.PARK_AZ=0",
    )
    return stub


def test_a_robotic_sequence_runs_on_indi_devices(telescope, indiserver):
    stub = indi_telescope(telescope, indiserver)
    assert {d.name: d.driver for d in stub.GetStatus(pb.GetStatusRequest()).devices}["camera"] == "indi"
    opened = run(stub, pb.WorkOrder(night_operation=step(pb.NIGHT_STEP_OPEN)), timeout=60)
    assert opened.state == pb.WORK_ORDER_STATE_DONE, opened.message
    ra = meridian_ra(NIGHT_TIME)
    targets = [
        pb.Target(
            name=name, ra_deg=ra + offset, dec_deg=10.0, exposure_time={"seconds": 1}, exposure_count=2, filter="Green"
        )
        for name, offset in (("first", 0.0), ("second", 4.0))
    ]
    status = run(stub, pb.WorkOrder(id="sequence", observe_targets=pb.ObserveTargets(targets=targets)), timeout=120)
    assert status.state == pb.WORK_ORDER_STATE_DONE, status.message
    ready = [event.image_ready for event in images(stub, "sequence")]
    assert [r.object for r in ready] == ["first", "first", "second", "second"]
    data = b"".join(chunk.data for chunk in stub.FetchFile(pb.FetchFileRequest(path=ready[2].path)))
    header = fits.Header.fromstring(data[: data.index(b"END" + b" " * 77) + 80].decode("ascii"))
    # The contract (ours wins) and the camera's own keywords, neither lost.
    assert header["IMAGETYP"] == "LIGHT" and header["OBJECT"] == "second" and header["FILTER"] == "Green"
    assert header["WORKORD"] == "sequence" and header["EXPTIME"] == 1.0 and header["TELESCOP"]
    assert header["RA"] == pytest.approx(ra + 4.0, abs=1e-4) and header["CRVAL2"] == pytest.approx(10.0, abs=0.1)
    assert (
        header["HIERARCH CAMERA IMAGETYP"] == "Light Frame"
        and header["HIERARCH CAMERA TELESCOP"] == "Telescope Simulator"
    )
    assert header["PIXSIZE1"] == pytest.approx(5.2) and header["FRAME"] == "Light"
    assert header["NAXIS1"] == 1280 and header["NAXIS2"] == 1024
    closed = run(stub, pb.WorkOrder(night_operation=step(pb.NIGHT_STEP_CLOSE)), timeout=90)
    assert closed.state == pb.WORK_ORDER_STATE_DONE, closed.message
    assert devices(stub)["mount"].state == pb.DEVICE_STATE_PARKED


def test_bad_weather_closes_and_a_lost_indiserver_is_a_fault_that_heals(telescope, indiserver):
    stub = indi_telescope(telescope, indiserver)
    assert run(stub, pb.WorkOrder(night_operation=step(pb.NIGHT_STEP_OPEN))).state == pb.WORK_ORDER_STATE_DONE
    indiserver.setprop("Weather Simulator.WEATHER_CONTROL.Precip=10", "Weather Simulator.WEATHER_REFRESH.REFRESH=On")
    wait_for(lambda: devices(stub)["dome"].state == pb.DEVICE_STATE_PARKED, timeout=30)
    assert "safety: weather: Weather Simulator reports rain hour" in stub.GetStatus(pb.GetStatusRequest()).message
    indiserver.setprop("Weather Simulator.WEATHER_CONTROL.Precip=0", "Weather Simulator.WEATHER_REFRESH.REFRESH=On")
    wait_for(lambda: "safety:" not in stub.GetStatus(pb.GetStatusRequest()).message, timeout=30)

    # indiserver killed in the middle of an exposure: the camera is a FAULT, safety does what it can, the
    # daemon keeps serving.
    take = pb.TakeCalibrations(image_type=pb.IMAGE_TYPE_DARK, count=1, exposure_time={"seconds": 20})
    stub.Submit(pb.WorkOrder(id="dark", take_calibrations=take))
    wait_for(lambda: devices(stub)["camera"].state == pb.DEVICE_STATE_BUSY, timeout=30)
    indiserver.kill()
    status = wait_for(
        lambda: (s := stub.GetWorkOrder(pb.GetWorkOrderRequest(id="dark"))).state in FINAL_STATES and s, timeout=30
    )
    assert status.state == pb.WORK_ORDER_STATE_FAILED and "no indiserver answers" in status.message
    faults = {name: d.message for name, d in devices(stub).items() if d.state == pb.DEVICE_STATE_FAULT}
    assert "camera" in faults and "CCD Simulator" in faults["camera"]
    message = stub.GetStatus(pb.GetStatusRequest()).message  # safety closed, for whichever device failed last
    assert "; safety: " in message and "no indiserver answers at 127.0.0.1" in message

    # Back: an operator's close connects the devices again, and the night goes on.
    indiserver.start()
    wait_for(
        lambda: (
            run(stub, pb.WorkOrder(night_operation=step(pb.NIGHT_STEP_CLOSE)), timeout=90).state
            == pb.WORK_ORDER_STATE_DONE
        ),
        timeout=120,
        interval=2.0,
    )
    assert not [d for d in devices(stub).values() if d.state == pb.DEVICE_STATE_FAULT]
    bias = run(
        stub, pb.WorkOrder(id="bias", take_calibrations=pb.TakeCalibrations(image_type=pb.IMAGE_TYPE_BIAS, count=1))
    )
    assert bias.state == pb.WORK_ORDER_STATE_DONE, bias.message
    assert len(images(stub, "bias")) == 1
