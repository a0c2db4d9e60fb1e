"""An ASCOM Alpaca server backed by the device simulators: the far end of the Alpaca drivers.

Implements the members the drivers use (and the management API), in JSON and, for ``imagearray``, the
ImageBytes binary format. ``faults[(device type, member)] = (error number, message)`` makes a member fail
with an Alpaca error, as a real device would (e.g. 0x500 when a shutter motor fails); a member in ``stalled``
does not answer until ``release`` is set (a hung driver).
"""

from __future__ import annotations

import json
import struct
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import numpy as np

from toros.telescope.devices import Camera, CommandRefused, Dome, FilterWheel, FlatLamp, Mount, Shutter
from toros.telescope.devices.equinox import Equinox, icrs_to_mount, mount_to_icrs

NOT_IMPLEMENTED, INVALID_VALUE, INVALID_OPERATION = 0x400, 0x401, 0x40B
_SHUTTER_CODES = {Shutter.OPEN: 0, Shutter.CLOSED: 1, Shutter.OPENING: 2, Shutter.CLOSING: 3, Shutter.ERROR: 4}
IMAGE_ELEMENT_INT32, TRANSMISSION_UINT16 = 2, 8
TOPOCENTRIC = 1
COVER_NOT_PRESENT, CALIBRATOR_OFF, CALIBRATOR_READY, MAX_BRIGHTNESS = 0, 1, 3, 255


class AlpacaError(Exception):
    def __init__(self, number: int, message: str) -> None:
        super().__init__(message)
        self.number, self.message = number, message


Getter = Callable[[], Any]
Putter = Callable[[dict[str, str]], Any]


def _number(params: dict[str, str], name: str) -> float:
    try:
        return float(params[name.lower()])
    except (KeyError, ValueError):
        raise AlpacaError(INVALID_VALUE, f"{name} is missing or not a number") from None


def _flag(params: dict[str, str], name: str) -> bool:
    value = params.get(name.lower(), "").lower()
    if value not in ("true", "false"):
        raise AlpacaError(INVALID_VALUE, f"{name} must be True or False")
    return value == "true"


class SafetyState:
    """The simulated safety monitor's verdict, set by a drill or a test."""

    def __init__(self) -> None:
        self.safe = True


def _members(kind: str, device: Any, equatorial_system: int) -> tuple[dict[str, Getter], dict[str, Putter]]:
    """The GET and PUT members of one simulated device, as Alpaca names them (lower case)."""
    if kind == "telescope":
        mount: Mount = device  # ICRS, as the simulated sky
        wire = Equinox.JNOW if equatorial_system == TOPOCENTRIC else Equinox.J2000

        def reported() -> tuple[float, float]:
            return icrs_to_mount(wire, *mount.position(), datetime.now(UTC))

        def slew(p: dict[str, str]) -> None:
            ra, dec = _number(p, "RightAscension") * 15.0, _number(p, "Declination")
            mount.slew_to(*mount_to_icrs(wire, ra, dec, datetime.now(UTC)))

        return {
            "rightascension": lambda: reported()[0] / 15.0,
            "declination": lambda: reported()[1],
            "equatorialsystem": lambda: equatorial_system,
            "slewing": mount.slewing,
            "atpark": mount.parked,
            "tracking": lambda: not mount.parked(),
        }, {
            "slewtocoordinatesasync": slew,
            "abortslew": lambda p: mount.abort(),
            "park": lambda p: mount.park(),
            "unpark": lambda p: mount.unpark(),
            "tracking": lambda p: _flag(p, "Tracking"),
        }
    if kind == "dome":
        dome: Dome = device
        return {
            "shutterstatus": lambda: _SHUTTER_CODES[dome.shutter()],
            "azimuth": dome.azimuth,
            "slewing": dome.slewing,
        }, {
            "openshutter": lambda p: dome.open_shutter(),
            "closeshutter": lambda p: dome.close_shutter(),
            "slewtoazimuth": lambda p: dome.slew_to(_number(p, "Azimuth")),
            "park": lambda p: dome.park(),
            "abortslew": lambda p: dome.abort(),
        }
    if kind == "camera":
        camera: Camera = device
        cooler = {"target": 10.0}

        def set_temperature(p: dict[str, str]) -> None:
            cooler["target"] = _number(p, "SetCCDTemperature")
            camera.cool_to(cooler["target"])

        return {
            "imageready": camera.image_ready,
            "ccdtemperature": camera.temperature,
            "electronsperadu": camera.gain,
            "setccdtemperature": lambda: cooler["target"],
            "cooleron": lambda: True,
            "canabortexposure": lambda: True,
            "canstopexposure": lambda: True,
            "lastexposureduration": camera.last_exposure_s,
        }, {
            "startexposure": lambda p: camera.start_exposure(_number(p, "Duration"), _flag(p, "Light")),
            "abortexposure": lambda p: camera.abort(),
            "stopexposure": lambda p: camera.stop_exposure(),
            "setccdtemperature": set_temperature,
            "cooleron": lambda p: _flag(p, "CoolerOn"),
        }
    if kind == "filterwheel":
        wheel: FilterWheel = device

        def position() -> int:
            current = wheel.current()
            return -1 if current is None else wheel.names().index(current)

        def move(p: dict[str, str]) -> None:
            index = int(_number(p, "Position"))
            if not 0 <= index < len(wheel.names()):
                raise AlpacaError(INVALID_VALUE, f"position {index} is not in 0..{len(wheel.names()) - 1}")
            wheel.select(wheel.names()[index])

        return {"names": wheel.names, "position": position}, {"position": move}
    if kind == "covercalibrator":
        lamp: FlatLamp = device

        def switch_on(p: dict[str, str]) -> None:
            brightness = _number(p, "Brightness")
            if not 0 <= brightness <= MAX_BRIGHTNESS:
                raise AlpacaError(INVALID_VALUE, f"Brightness {brightness:g} is not in 0..{MAX_BRIGHTNESS}")
            lamp.switch_on()

        return {
            "calibratorstate": lambda: CALIBRATOR_READY if lamp.lit() else CALIBRATOR_OFF,
            "maxbrightness": lambda: MAX_BRIGHTNESS,
            "coverstate": lambda: COVER_NOT_PRESENT,
        }, {
            "calibratoron": switch_on,
            "calibratoroff": lambda p: lamp.switch_off(),
        }
    if kind == "safetymonitor":
        state: SafetyState = device
        return {"issafe": lambda: state.safe}, {}
    raise ValueError(f"no Alpaca simulator for {kind}")


class AlpacaSimulator:
    """Serves simulated devices on ``http://127.0.0.1:<port>``; ``devices`` maps Alpaca type → device."""

    def __init__(
        self, devices: dict[str, Any], host: str = "127.0.0.1", port: int = 0, equatorial_system: int = TOPOCENTRIC
    ) -> None:
        """``equatorial_system``: what the mount speaks, as ASCOM numbers it (1 topocentric, of date, as most
        mount drivers; 2 J2000)."""
        self.members = {kind: _members(kind, device, equatorial_system) for kind, device in devices.items()}
        self.devices = devices
        self.faults: dict[tuple[str, str], tuple[int, str]] = {}
        self.stalled: set[tuple[str, str]] = set()
        self.commands: list[str] = []  # every PUT served, as "kind.member": what the driver asked, in order
        self.release = threading.Event()
        self._transaction = 0
        self._lock = threading.Lock()
        self.server = _AlpacaServer((host, port), self)
        self.url = f"http://{host}:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, name="alpaca-simulator", daemon=True)

    def __enter__(self) -> AlpacaSimulator:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _next_transaction(self) -> int:
        with self._lock:
            self._transaction += 1
            return self._transaction


class _AlpacaServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], simulator: AlpacaSimulator) -> None:
        super().__init__(address, _AlpacaRequests)
        self.simulator = simulator


class _AlpacaRequests(BaseHTTPRequestHandler):
    """One Alpaca request: the management API, a device member, or ``imagearray``."""

    server: _AlpacaServer

    @property
    def simulator(self) -> AlpacaSimulator:
        return self.server.simulator

    def log_message(self, format: str, *args: Any) -> None:  # quiet: tests and drills read the daemon's log
        pass

    def do_GET(self) -> None:
        self._serve("GET")

    def do_PUT(self) -> None:
        self._serve("PUT")

    def _serve(self, method: str) -> None:
        parts = urlsplit(self.path)
        params = {k.lower(): v for k, v in parse_qsl(parts.query)}
        if method == "PUT":
            length = int(self.headers.get("Content-Length") or 0)
            params.update({k.lower(): v for k, v in parse_qsl(self.rfile.read(length).decode())})
        path = parts.path.strip("/").lower().split("/")
        if path[:2] == ["management", "apiversions"]:
            return self._json(200, {"Value": [1]}, params)
        if path[:3] == ["management", "v1", "configureddevices"]:
            devices = [
                {
                    "DeviceName": f"TOROS simulated {k}",
                    "DeviceType": k,
                    "DeviceNumber": 0,
                    "UniqueID": f"toros-{k}",
                }
                for k in self.simulator.devices
            ]
            return self._json(200, {"Value": devices}, params)
        if len(path) != 5 or path[:2] != ["api", "v1"] or path[2] not in self.simulator.members or path[3] != "0":
            return self._text(400, f"no such device or member: {parts.path}")
        kind, member = path[2], path[4]
        if (kind, member) in self.simulator.stalled:
            self.simulator.release.wait(60)
        if member == "connected":
            return self._json(200, {"Value": True}, params)
        getters, putters = self.simulator.members[kind]
        if member == "imagearray" and method == "GET" and kind == "camera":
            return self._image(params)
        if member not in (putters if method == "PUT" else getters):
            return self._json(
                200, {"ErrorNumber": NOT_IMPLEMENTED, "ErrorMessage": f"{member} is not implemented"}, params
            )
        if method == "PUT":
            self.simulator.commands.append(f"{kind}.{member}")
        try:
            if (kind, member) in self.simulator.faults:
                raise AlpacaError(*self.simulator.faults[(kind, member)])
            value = putters[member](params) if method == "PUT" else getters[member]()
        except AlpacaError as exc:
            return self._json(200, {"ErrorNumber": exc.number, "ErrorMessage": exc.message}, params)
        except CommandRefused as exc:
            return self._json(200, {"ErrorNumber": INVALID_OPERATION, "ErrorMessage": str(exc)}, params)
        return self._json(200, {} if method == "PUT" else {"Value": value}, params)

    def _envelope(self, params: dict[str, str]) -> dict[str, Any]:
        client = int(params.get("clienttransactionid", "0") or 0)
        return {
            "ClientTransactionID": client,
            "ServerTransactionID": self.simulator._next_transaction(),
            "ErrorNumber": 0,
            "ErrorMessage": "",
        }

    def _json(self, status: int, body: dict[str, Any], params: dict[str, str]) -> None:
        data = json.dumps(self._envelope(params) | body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _text(self, status: int, text: str) -> None:
        data = text.encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _image(self, params: dict[str, str]) -> None:
        camera: Camera = self.simulator.devices["camera"]
        if not camera.image_ready():
            return self._json(200, {"ErrorNumber": INVALID_OPERATION, "ErrorMessage": "no image is ready"}, params)
        image = camera.read_image()  # rows × columns; Alpaca sends [x][y]
        if "application/imagebytes" not in (self.headers.get("Accept") or ""):
            return self._json(200, {"Type": 2, "Rank": 2, "Value": image.T.tolist()}, params)
        envelope = self._envelope(params)
        height, width = image.shape
        header = struct.pack(
            "<11i",
            1,
            0,
            envelope["ClientTransactionID"],
            envelope["ServerTransactionID"],
            44,
            IMAGE_ELEMENT_INT32,
            TRANSMISSION_UINT16,
            2,
            width,
            height,
            0,
        )
        data = header + np.ascontiguousarray(image.T, dtype="<u2").tobytes()
        self.send_response(200)
        self.send_header("Content-Type", "application/imagebytes")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
