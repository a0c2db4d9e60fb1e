"""INDI drivers: mount, dome, camera, filter wheel, weather station and flat-field light panel on an indiserver.

INDI is how Linux observatories talk to their devices (KStars/Ekos, most robotic set-ups): an ``indiserver``
runs one driver per device and speaks XML over TCP (port 7624). The protocol is spoken by ``indipyclient``
(pure Python, asyncio); one client per server runs in a thread of its own, shared by every device on that
server, and reconnects by itself when the server comes back. This module maps INDI's standard properties
(EQUATORIAL_EOD_COORD, DOME_SHUTTER, CCD_EXPOSURE…) onto the device interfaces:

* a property in the Alert state, a device the server no longer has, or a server that is gone is a
  DeviceError naming server, device and property: the device goes to FAULT and safety acts;
* a value outside what the device allows (an exposure longer than its CCD_EXPOSURE maximum, a filter it does
  not hold) is a CommandRefused and the device stays in service;
* every wait has a timeout (``indi.timeout_s``): a command the server does not take, a device that never
  appears, an image (the camera's FITS BLOB) that never comes.

``connect`` (at start, and when an operator's close clears a fault) connects the INDI device (its CONNECTION
switch); a device used after its server came back (whose drivers start disconnected) is connected again first.
The faults stay until an operator's close, as for every driver.
"""

from __future__ import annotations

import asyncio
import io
import logging
import threading
import time
from collections.abc import Callable, Mapping
from math import cos, radians
from typing import Any, ClassVar
from xml.etree import ElementTree

import numpy as np
from astropy.io import fits
from indipyclient import IPyClient

from toros.telescope.devices import (
    Camera,
    CommandRefused,
    DeviceError,
    Dome,
    FilterWheel,
    FlatLamp,
    Mount,
    Shutter,
    WeatherStation,
)
from toros.telescope.devices.equinox import Equinox, spoken
from toros.telescope.dome_geometry import azimuth_error_deg
from toros.telescope.settings import CameraLink, DeviceLink, FlatLampLink, IndiLink, MountLink

log = logging.getLogger(__name__)
# indipyclient logs every reconnection attempt (each 5 s while a server is down); the faults say it once.
logging.getLogger("indipyclient").setLevel(logging.ERROR)

_POLL_S = 0.05
_ARRIVED_DEG = 1.0 / 60.0  # a mount this close to where it was sent has arrived (the simulator: exactly)
# What one indiserver may send (a hostile or broken one must not grow the telescope daemon without bound):
ELEMENT_BYTES = 1 << 20  # one top-level element (a property's definition or update); a camera raises it for its images
MAX_DEVICES = 64  # devices on one server
MAX_PROPERTIES = 1024  # properties of one device


def image_element_bytes(width: int, height: int) -> int:
    """The largest element a camera's image may arrive in: its frame as a FITS BLOB of up to 4 bytes a pixel,
    base64 (4/3) with line breaks, and room for the header and the vector around it."""
    return width * height * 4 * 4 // 3 * 78 // 76 + (1 << 20)


class _Client(IPyClient):  # type: ignore[misc]
    """indipyclient's client (untyped), counting connections and keeping the BLOBs that arrive; its reader is
    bounded (``_run_rx``)."""

    def __init__(self, host: str, port: int) -> None:
        super().__init__(host, port)
        self.enableBLOBdefault = "Also"  # the camera's images come as BLOBs
        self.connections = 0  # how many times the server was reached (a new one: its drivers may be new too)
        self.blobs: dict[tuple[str, str], tuple[int, bytes, str]] = {}  # (device, vector) → (count, data, format)
        self.element_bytes = ELEMENT_BYTES
        self.dropped: str | None = None  # why the connection was last dropped for a bound (until a device connects)

    def allow(self, element_bytes: int) -> None:
        """A device on this server needs elements this large (a camera: its images)."""
        self.element_bytes = max(self.element_bytes, element_bytes)

    async def _drop(self, reason: str) -> None:
        """Ends the connection for what the server sent; the devices on it fail naming the server and the bound
        (indipyclient reconnects by itself, and a device connects again at an operator's close)."""
        self.dropped = reason
        log.error("INDI %s:%s: connection dropped: %s", self.indihost, self.indiport, reason)
        await self._clear_connection()

    async def _run_rx(self) -> None:
        """indipyclient's reader (0.9.4, which accumulates whatever the server sends: an unclosed element followed by
        1.5 GiB of text grew the daemon to 1.6 GB), bounded: the bytes of one element, the devices of the server
        and the properties of a device; past a bound the connection is dropped, naming it. INDI's top-level
        elements follow one another without a document root, so the stream is parsed inside a synthetic one and
        each element is handed to indipyclient's own handler once complete."""
        parser: Any = ElementTree.XMLPullParser(events=("start", "end"))
        parser.feed(b"<root>")
        root: Any = None
        depth = 0
        for _, element in parser.read_events():
            depth, root = depth + 1, element
        pending = 0  # bytes since the last complete element: the element being received
        while self.connected and not self._stop:
            await asyncio.sleep(0)
            try:
                data = await self._reader.read(65536)
            except ConnectionError:
                raise
            except Exception:  # the connection is being cleared meanwhile
                await asyncio.sleep(0.1)
                continue
            if not data:
                await asyncio.sleep(0.01)
                continue
            if not self.connected or self._stop:
                return
            self.tx_timer, self.idle_timer = None, time.time()
            pending += len(data)
            if pending > self.element_bytes:
                await self._drop(f"an element of more than {self.element_bytes} bytes (the bound for this server)")
                return
            try:
                parser.feed(data)
                events = list(parser.read_events())
            except ElementTree.ParseError as exc:
                await self._drop(f"malformed XML: {exc}")
                return
            for event, element in events:
                if event == "start":
                    depth += 1
                    continue
                depth -= 1
                if depth != 1:
                    continue
                pending = 0
                await self._rxhandler(element)
                root.remove(element)
                if reason := self._beyond_bounds(element.get("device")):
                    await self._drop(reason)
                    return

    def _beyond_bounds(self, device_name: str | None) -> str | None:
        if len(self.data) > MAX_DEVICES:
            return f"more than {MAX_DEVICES} devices defined (the bound for one server)"
        device = self.data.get(device_name) if device_name else None
        if device is not None and len(device.data) > MAX_PROPERTIES:
            return f"more than {MAX_PROPERTIES} properties defined for {device_name} (the bound for one device)"
        return None

    async def hardware(self) -> None:
        """Watches for the server's end of the connection. indipyclient (0.9.4) reads on after end-of-file and
        would notice a dead server only when a later send fails or after 20 s of silence; closing the
        connection here makes it reconnect (every 5 s) and the devices fail at once."""
        while not self._stop:
            reader = self._reader
            if reader is not None and reader.at_eof():
                await self._clear_connection()
            await asyncio.sleep(0.1)

    async def rxevent(self, event: Any) -> None:
        if event.eventtype == "ConnectionMade":
            self.connections += 1
        elif event.eventtype == "SetBLOB":
            for member, data in event.items():
                key = (event.devicename, event.vectorname)
                count = self.blobs.get(key, (0, b"", ""))[0] + 1
                self.blobs[key] = (count, data, event.sizeformat[member][1])


class IndiServer:
    """One indiserver, reached by one client in a thread of its own and shared by the devices on it."""

    _servers: ClassVar[dict[tuple[str, int], IndiServer]] = {}
    _registry_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, host: str, port: int) -> None:
        self.address = f"{host}:{port}"
        self.client = _Client(host, port)
        self.users = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_until_complete,
            args=(self.client.asyncrun(),),
            name=f"indi-{self.address}",
            daemon=True,
        )
        self._thread.start()

    @classmethod
    def shared(cls, host: str, port: int) -> IndiServer:
        """The client of this server, started on first use."""
        with cls._registry_lock:
            server = cls._servers.get((host, port))
            if server is None:
                server = cls._servers[(host, port)] = IndiServer(host, port)
            server.users += 1
            return server

    def release(self) -> None:
        """One device less; the last one stops the client."""
        with self._registry_lock:
            self.users -= 1
            if self.users > 0:
                return
            self._servers.pop((self.client.indihost, self.client.indiport), None)
        self._loop.call_soon_threadsafe(self.client.shutdown)
        self._thread.join(timeout=5)

    def send(self, device: str, vector: str, members: Mapping[str, str], timeout_s: float) -> None:
        """Sends new values of a property (the server answers by setting it, Busy then Ok or Alert)."""
        future = asyncio.run_coroutine_threadsafe(
            self.client.send_newVector(device, vector, members=dict(members)), self._loop
        )
        try:
            future.result(timeout=timeout_s)
        except TimeoutError:
            future.cancel()
            raise DeviceError(f"INDI {self.address}: {device}.{vector}: not sent within {timeout_s:.0f} s") from None


class _IndiDevice:
    """What every INDI device does: find its server and device, connect it, read and set its properties."""

    kind: str
    driver = "indi"
    #: The properties the driver needs: a device without one of them is refused when it connects.
    essential: ClassVar[tuple[str, ...]]

    def _setup(self, link: DeviceLink) -> None:
        indi: IndiLink | None = link.indi
        assert indi is not None  # the config requires it with driver: indi
        self.indi = indi
        self.name = indi.device
        self.timeout_s = indi.timeout_s
        self._server: IndiServer | None = None
        self._connected_on = -1  # the client connection on which the device was last connected

    #: The largest element this device's properties arrive in (a camera's images are larger).
    element_bytes = ELEMENT_BYTES

    @property
    def server(self) -> IndiServer:
        if self._server is None:
            self._server = IndiServer.shared(self.indi.host, self.indi.port)
            self._server.client.allow(self.element_bytes)
        return self._server

    def _where(self, vector: str = "") -> str:
        return f"INDI {self.server.address}: {self.name}" + (f".{vector}" if vector else "")

    def _device(self) -> Any:
        client = self.server.client
        if client.dropped is not None:
            raise DeviceError(f"{self._where()}: the connection to {self.server.address} was dropped: {client.dropped}")
        if not client.connected:
            raise DeviceError(f"{self._where()}: no indiserver answers at {self.server.address}")
        device = client.get(self.name)
        if device is None or not device.enable:
            known = list(client.data.items())  # a copy: the client's thread adds and removes devices
            present = ", ".join(sorted(name for name, d in known if d.enable)) or "none"
            raise DeviceError(f"{self._where()}: no such device on the server (it has: {present})")
        return device

    def vector(self, name: str) -> Any:
        """A property of the device; DeviceError when it has no such property or the property is in Alert."""
        device = self._device()
        vector = device.get(name)
        if vector is None or not vector.enable:
            raise DeviceError(f"{self._where(name)}: the device has no such property")
        if vector.state == "Alert":
            message = f": {vector.message}" if vector.message else ""
            raise DeviceError(f"{self._where(name)}: the property is in Alert{message}")
        return vector

    def has(self, name: str) -> bool:
        vector = self._device().get(name)
        return vector is not None and bool(vector.enable)

    def number(self, vector: str, member: str) -> float:
        try:
            return float(self.vector(vector).getfloatvalue(member))
        except KeyError:
            raise DeviceError(f"{self._where(vector)}: no member {member}") from None

    def switched_on(self, vector: str) -> str | None:
        """The member of a switch property that is On."""
        return next((name for name, value in self.vector(vector).items() if value == "On"), None)

    def busy(self, vector: str) -> bool:
        return bool(self.vector(vector).state == "Busy")

    def set(self, vector: str, members: Mapping[str, str | float]) -> None:
        self.vector(vector)  # the property exists and is not in Alert
        log.debug("INDI %s.%s <- %s", self.name, vector, members)
        self.server.send(self.name, vector, {k: str(v) for k, v in members.items()}, self.timeout_s)

    def _eventually(self, done: Callable[[], bool]) -> bool:
        """Polls ``done()`` for up to ``indi.timeout_s`` (real time: INDI devices run in real time)."""
        deadline = time.monotonic() + self.timeout_s
        while not done():
            if time.monotonic() > deadline:
                return False
            time.sleep(_POLL_S)
        return True

    def wait_until(self, what: str, done: Callable[[], bool]) -> None:
        """Waits for ``done()``; DeviceError after the timeout."""
        if not self._eventually(done):
            raise DeviceError(f"{self._where()}: {what} did not happen within {self.timeout_s:.0f} s")

    def connect(self) -> None:
        """Reaches the server, waits for the device to appear and switches its CONNECTION on."""
        client = self.server.client
        client.dropped = None  # tried again (at start, or at an operator's close): a server that breaks a bound again is dropped again
        if not self._eventually(lambda: client.connected and "CONNECTION" in (client.get(self.name) or {})):
            self._device()  # raises, naming what is missing
            raise DeviceError(f"{self._where('CONNECTION')}: the device does not define its connection")
        if self.switched_on("CONNECTION") != "CONNECT" or self.vector("CONNECTION").state != "Ok":
            self.set("CONNECTION", {"CONNECT": "On", "DISCONNECT": "Off"})
            self.wait_until(
                "connecting",
                lambda: self.switched_on("CONNECTION") == "CONNECT" and self.vector("CONNECTION").state == "Ok",
            )
        self._eventually(lambda: all(self.has(name) for name in self.essential))  # defined after connecting
        if missing := [name for name in self.essential if not self.has(name)]:
            raise DeviceError(f"{self._where(missing[0])}: the device has no such property")
        self._connected_on = client.connections
        self.configure()

    def configure(self) -> None:  # noqa: B027  (a hook: most devices need nothing after connecting)
        """Device settings applied after each connection."""

    def close(self) -> None:
        if self._server is not None:
            self._server.release()
            self._server = None

    def _live(self) -> bool:
        """The device is reachable and connected: after the server or the device's driver restarted (a driver
        starts disconnected) the device is connected again first, and True says so."""
        self._device()
        if self._connected_on != self.server.client.connections or self.switched_on("CONNECTION") != "CONNECT":
            log.warning("%s: the device's driver or server restarted; connecting the device again", self._where())
            self.connect()
            return True
        return False


class IndiMount(_IndiDevice, Mount):
    essential = ("EQUATORIAL_EOD_COORD", "ON_COORD_SET", "TELESCOPE_PARK", "TELESCOPE_ABORT_MOTION")

    def __init__(self, link: MountLink) -> None:
        self._setup(link)
        self.speaks = spoken(link.equinox, Equinox.JNOW)  # EQUATORIAL_EOD_COORD: of date by definition

    def position(self) -> tuple[float, float]:
        self._live()
        return self.from_wire(
            self.number("EQUATORIAL_EOD_COORD", "RA") * 15.0, self.number("EQUATORIAL_EOD_COORD", "DEC")
        )

    def slew_to(self, ra_deg: float, dec_deg: float) -> None:
        self._live()
        if self.parked():
            self.unpark()
        ra, dec = self.to_wire(ra_deg, dec_deg)
        self.set("ON_COORD_SET", {"TRACK": "On", "SLEW": "Off", "SYNC": "Off"})
        self.set("EQUATORIAL_EOD_COORD", {"RA": ra / 15.0, "DEC": dec})
        # A property set is only sent: until the server answers, the vector still says Ok from before, and a
        # caller polling slewing() would take the mount for arrived. The answer is Busy, or Ok at the target.
        self.wait_until("the slew starting", lambda: self.busy("EQUATORIAL_EOD_COORD") or self._on_wire_at(ra, dec))

    def _on_wire_at(self, ra: float, dec: float) -> bool:
        on_ra, on_dec = self.number("EQUATORIAL_EOD_COORD", "RA") * 15.0, self.number("EQUATORIAL_EOD_COORD", "DEC")
        return abs(on_dec - dec) < _ARRIVED_DEG and azimuth_error_deg(on_ra, ra) * cos(radians(dec)) < _ARRIVED_DEG

    def slewing(self) -> bool:
        self._live()
        return self.busy("EQUATORIAL_EOD_COORD") or self.busy("TELESCOPE_PARK")

    def abort(self) -> None:
        self._live()
        self.set("TELESCOPE_ABORT_MOTION", {"ABORT": "On"})

    def park(self) -> None:
        self._live()
        self.set("TELESCOPE_PARK", {"PARK": "On", "UNPARK": "Off"})
        self.wait_until("parking starting", lambda: self.busy("TELESCOPE_PARK") or self.parked())

    def unpark(self) -> None:
        self._live()
        self.set("TELESCOPE_PARK", {"PARK": "Off", "UNPARK": "On"})
        self.wait_until(
            "unparking", lambda: self.switched_on("TELESCOPE_PARK") == "UNPARK" and not self.busy("TELESCOPE_PARK")
        )

    def parked(self) -> bool:
        self._live()
        return self.switched_on("TELESCOPE_PARK") == "PARK" and not self.busy("TELESCOPE_PARK")


class IndiDome(_IndiDevice, Dome):
    essential = ("DOME_SHUTTER", "ABS_DOME_POSITION", "DOME_PARK", "DOME_ABORT_MOTION")

    def __init__(self, link: DeviceLink) -> None:
        self._setup(link)
        self._commanded: str | None = None  # the shutter's last command, while the dome carries it out

    def open_shutter(self) -> None:
        self._live()
        self.set("DOME_SHUTTER", {"SHUTTER_OPEN": "On", "SHUTTER_CLOSE": "Off"})
        self._commanded = "SHUTTER_OPEN"

    def close_shutter(self) -> None:
        self._live()
        self.set("DOME_SHUTTER", {"SHUTTER_OPEN": "Off", "SHUTTER_CLOSE": "On"})
        self._commanded = "SHUTTER_CLOSE"

    def shutter(self) -> Shutter:
        """Busy is a moving shutter; which way is the command's until the server has answered it."""
        self._live()
        if self.busy("DOME_SHUTTER"):
            moving = self._commanded or self.switched_on("DOME_SHUTTER")
            return Shutter.OPENING if moving == "SHUTTER_OPEN" else Shutter.CLOSING
        self._commanded = None
        return Shutter.OPEN if self.switched_on("DOME_SHUTTER") == "SHUTTER_OPEN" else Shutter.CLOSED

    def slew_to(self, azimuth_deg: float) -> None:
        self._live()
        if self.switched_on("DOME_PARK") == "PARK":
            self.set("DOME_PARK", {"PARK": "Off", "UNPARK": "On"})  # an INDI dome refuses to move while parked
            self.wait_until(
                "unparking", lambda: self.switched_on("DOME_PARK") == "UNPARK" and not self.busy("DOME_PARK")
            )
        target = azimuth_deg % 360.0
        self.set("ABS_DOME_POSITION", {"DOME_ABSOLUTE_POSITION": target})
        self.wait_until(  # answered: Busy, or Ok at the target (see IndiMount.slew_to)
            "the dome's rotation starting",
            lambda: (
                self.busy("ABS_DOME_POSITION")
                or azimuth_error_deg(self.number("ABS_DOME_POSITION", "DOME_ABSOLUTE_POSITION"), target) < 0.5
            ),
        )

    def azimuth(self) -> float:
        self._live()
        return self.number("ABS_DOME_POSITION", "DOME_ABSOLUTE_POSITION")

    def slewing(self) -> bool:
        self._live()
        return self.busy("ABS_DOME_POSITION") or self.busy("DOME_PARK")

    def park(self) -> None:
        self._live()
        self.set("DOME_PARK", {"PARK": "On", "UNPARK": "Off"})

    def abort(self) -> None:
        self._live()
        self.set("DOME_ABORT_MOTION", {"ABORT": "On"})


_FRAME_TYPES = {"light": "FRAME_LIGHT", "bias": "FRAME_BIAS", "dark": "FRAME_DARK"}
#: Keywords of the camera's own FITS header that describe the file, not the observation: never copied.
_STRUCTURAL = {"SIMPLE", "BITPIX", "NAXIS", "NAXIS1", "NAXIS2", "EXTEND", "BZERO", "BSCALE", "END", "", "COMMENT"}


class IndiCamera(_IndiDevice, Camera):
    """A CCD: the image comes as a FITS BLOB (CCD1) once the exposure ends; its header's keywords are kept."""

    essential = ("CCD_EXPOSURE", "CCD_ABORT_EXPOSURE", "CCD_TEMPERATURE", "CCD1")

    def __init__(self, link: CameraLink) -> None:
        self._setup(link)
        self.element_bytes = image_element_bytes(link.width + link.overscan, link.height)
        self.overscan = link.overscan
        self.binning = link.binning
        self._gain = link.gain_e_adu
        self._read_noise = link.read_noise_e
        self._blobs_seen = 0
        self._ends_at: float | None = None  # when the image must have come (real time); None: no exposure
        self._cards: list[fits.Card] = []

    def configure(self) -> None:
        """Images to this client, as FITS, binned as configured."""
        if self.has("UPLOAD_MODE"):
            self.set("UPLOAD_MODE", {"UPLOAD_CLIENT": "On", "UPLOAD_LOCAL": "Off", "UPLOAD_BOTH": "Off"})
        if self.has("CCD_TRANSFER_FORMAT"):
            self.set("CCD_TRANSFER_FORMAT", {"FORMAT_FITS": "On", "FORMAT_NATIVE": "Off"})
        if self.has("CCD_BINNING"):
            self.set("CCD_BINNING", {"HOR_BIN": self.binning, "VER_BIN": self.binning})
            self.wait_until("binning", lambda: not self.busy("CCD_BINNING"))
        elif self.binning != 1:
            raise DeviceError(f"{self._where('CCD_BINNING')}: the camera cannot bin {self.binning}x{self.binning}")

    def _blob(self) -> tuple[int, bytes, str]:
        return self.server.client.blobs.get((self.name, "CCD1"), (0, b"", ""))

    def start_exposure(self, seconds: float, light: bool) -> None:
        self._live()
        member = self.vector("CCD_EXPOSURE").member("CCD_EXPOSURE_VALUE")
        low, high = float(member.getfloat(member.min)), float(member.getfloat(member.max))
        if high > low and not (low <= seconds <= high or seconds == 0):  # a bias: the shortest exposure
            raise CommandRefused(
                f"{self._where('CCD_EXPOSURE')}: {seconds:g} s is outside what the camera allows ({low:g} to {high:g} s)"
            )
        if self.has("CCD_FRAME_TYPE"):
            frame = _FRAME_TYPES["light" if light else "bias" if seconds == 0 else "dark"]
            self.set("CCD_FRAME_TYPE", {name: "On" if name == frame else "Off" for name in _FRAME_TYPES.values()})
        self._blobs_seen = self._blob()[0]
        self._cards = []
        self.set("CCD_EXPOSURE", {"CCD_EXPOSURE_VALUE": max(seconds, low)})
        self._ends_at = time.monotonic() + seconds + self.timeout_s

    def image_ready(self) -> bool:
        try:
            restarted = self._live()
        except DeviceError as exc:  # the driver or the server is gone (indiserver restarts a driver in a moment)
            if self._ends_at is None:
                raise
            self._ends_at = None
            raise DeviceError(f"{exc}: the driver or server stopped during the exposure; its image is lost") from exc
        if restarted and self._ends_at is not None:
            self._ends_at = None
            raise DeviceError(f"{self._where()}: the driver or server restarted during the exposure; its image is lost")
        if self._blob()[0] > self._blobs_seen:
            return True
        self.vector("CCD_EXPOSURE")  # an exposure the camera failed is in Alert: a DeviceError
        if self._ends_at is not None and time.monotonic() > self._ends_at:
            self._ends_at = None
            raise DeviceError(
                f"{self._where('CCD1')}: no image came within {self.timeout_s:.0f} s of the exposure's end"
            )
        return False

    def exposing(self) -> bool:
        return self._ends_at is not None and not self.image_ready()

    def read_image(self) -> np.ndarray:
        count, data, form = self._blob()
        if count <= self._blobs_seen:
            raise DeviceError(f"{self._where('CCD1')}: no image to read")
        self._blobs_seen, self._ends_at = count, None
        if not form.startswith(".fits"):
            raise DeviceError(f"{self._where('CCD1')}: the image came as {form!r}, not FITS")
        try:
            with fits.open(io.BytesIO(data)) as hdus:
                pixels = np.asarray(hdus[0].data)
                header = hdus[0].header
        except (OSError, ValueError, TypeError) as exc:
            raise DeviceError(f"{self._where('CCD1')}: the image is not readable FITS: {exc}") from None
        if pixels.ndim != 2:
            raise DeviceError(f"{self._where('CCD1')}: a {pixels.ndim}-dimensional image, not a monochrome frame")
        self._cards = [card for card in header.cards if card.keyword not in _STRUCTURAL]
        return np.asarray(np.clip(pixels, 0, 65535), dtype=np.uint16)

    def header_cards(self) -> list[fits.Card]:
        return list(self._cards)

    def abort(self) -> None:
        self._ends_at = None
        self._live()
        self.set("CCD_ABORT_EXPOSURE", {"ABORT": "On"})

    def temperature(self) -> float:
        self._live()
        return self.number("CCD_TEMPERATURE", "CCD_TEMPERATURE_VALUE")

    def cool_to(self, celsius: float) -> None:
        self._live()
        if self.has("CCD_COOLER"):
            self.set("CCD_COOLER", {"COOLER_ON": "On", "COOLER_OFF": "Off"})
        self.set("CCD_TEMPERATURE", {"CCD_TEMPERATURE_VALUE": celsius})

    def gain(self) -> float:
        return self._gain

    def read_noise(self) -> float:
        return self._read_noise


class IndiFilterWheel(_IndiDevice, FilterWheel):
    essential = ("FILTER_SLOT", "FILTER_NAME")

    def __init__(self, link: DeviceLink) -> None:
        self._setup(link)

    def names(self) -> list[str]:
        self._live()
        labels = self.vector("FILTER_NAME")
        slots = sorted(labels, key=lambda member: int(member.rsplit("_", 1)[1]))
        return [str(labels[slot]) for slot in slots]

    def current(self) -> str | None:
        self._live()
        if self.busy("FILTER_SLOT"):
            return None
        slot = round(self.number("FILTER_SLOT", "FILTER_SLOT_VALUE"))
        names = self.names()
        return names[slot - 1] if 1 <= slot <= len(names) else None

    def select(self, name: str) -> None:
        names = self.names()
        if name not in names:
            raise CommandRefused(f"{self._where('FILTER_NAME')}: no filter {name!r} (it holds {', '.join(names)})")
        self.set("FILTER_SLOT", {"FILTER_SLOT_VALUE": names.index(name) + 1})


class IndiWeather(_IndiDevice, WeatherStation):
    """INDI weather: WEATHER_STATUS's lights, Alert on any parameter out of its limits, make it unsafe."""

    essential = ("WEATHER_STATUS",)

    def __init__(self, link: DeviceLink) -> None:
        self._setup(link)

    def safe(self) -> tuple[bool, str]:
        self._live()
        status = self._device().get("WEATHER_STATUS")  # not self.vector: its Alert is bad weather, not a fault
        if status is None or not status.enable:
            raise DeviceError(f"{self._where('WEATHER_STATUS')}: the device has no such property")
        alerts = sorted(name for name, light in status.items() if light == "Alert")
        if alerts or status.state == "Alert":
            named = ", ".join(name.removeprefix("WEATHER_").lower().replace("_", " ") for name in alerts)
            return False, f"{self.name} reports {named or 'an alert'}"
        if status.state == "Idle":
            return False, f"{self.name} has reported no weather yet"
        return True, ""


class IndiFlatLamp(_IndiDevice, FlatLamp):
    """A flat-field light panel (INDI's light box interface)."""

    essential = ("FLAT_LIGHT_CONTROL",)

    def __init__(self, link: FlatLampLink) -> None:
        self._setup(link)
        self.brightness = link.brightness

    def switch_on(self) -> None:
        self._live()
        if self.brightness is not None and self.has("FLAT_LIGHT_INTENSITY"):
            self.set("FLAT_LIGHT_INTENSITY", {"FLAT_LIGHT_INTENSITY_VALUE": self.brightness})
        self.set("FLAT_LIGHT_CONTROL", {"FLAT_LIGHT_ON": "On", "FLAT_LIGHT_OFF": "Off"})

    def switch_off(self) -> None:
        self._live()
        self.set("FLAT_LIGHT_CONTROL", {"FLAT_LIGHT_ON": "Off", "FLAT_LIGHT_OFF": "On"})

    def lit(self) -> bool:
        self._live()
        return self.switched_on("FLAT_LIGHT_CONTROL") == "FLAT_LIGHT_ON" and not self.busy("FLAT_LIGHT_CONTROL")
