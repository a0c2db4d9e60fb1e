"""LX200 and dome protocol simulators, served on a pseudo-terminal that pyserial opens like any port."""

from __future__ import annotations

import os
import select
import threading
import tty
from collections.abc import Callable
from datetime import UTC, datetime

from toros.telescope.devices import CommandRefused, Dome, Mount
from toros.telescope.devices.equinox import Equinox, icrs_to_mount, mount_to_icrs
from toros.telescope.devices.lx200 import format_dec, format_ra, parse_dec, parse_ra
from toros.telescope.devices.serial_link import GarbledReply


class ProtocolSimulator:
    """Turns bytes received into bytes to send back. Faults for drills: ``garble`` the next n replies,
    ``silent`` (no reply at all)."""

    terminator = b"#"

    def __init__(self) -> None:
        self.garble = 0
        self.silent = False
        self.received: list[bytes] = []
        self._buffer = b""

    def feed(self, data: bytes) -> bytes:
        self._buffer += data
        out = b""
        while True:
            command, separator, rest = self._buffer.partition(self.terminator)
            if not separator:
                return out
            self._buffer = rest
            self.received.append(command + separator)
            reply = self.answer(command + separator)
            if self.silent:
                continue
            if self.garble and reply:
                self.garble -= 1
                reply = b"\x15?" + reply[::-1][:3]
            out += reply

    def answer(self, command: bytes) -> bytes:
        raise NotImplementedError


class Lx200Simulator(ProtocolSimulator):
    """An LX200 mount: starts in low precision, answers with the handset's 0xDF degree glyph, and speaks
    coordinates of date (the simulated mount behind it, as the simulated sky, is ICRS)."""

    def __init__(
        self,
        mount: Mount,
        *,
        high_precision: bool = False,
        degree: bytes = b"\xdf",
        below_horizon: Callable[[float, float], bool] | None = None,
    ) -> None:
        super().__init__()
        self.mount = mount
        self.high_precision = high_precision
        self.degree = degree
        self.below_horizon = below_horizon or (lambda ra, dec: False)
        self._target: list[float | None] = [None, None]

    def answer(self, command: bytes) -> bytes:
        if not command.startswith(b":"):
            return b""
        body = command[1:-1]
        ra, dec = icrs_to_mount(Equinox.JNOW, *self.mount.position(), datetime.now(UTC))
        if body == b"GR":
            if self.high_precision:
                return format_ra(ra) + b"#"
            tenths = round(ra / 15.0 * 600) % 14400
            return b"%02d:%02d.%d#" % (tenths // 600, tenths // 10 % 60, tenths % 10)
        if body == b"GD":
            text = format_dec(dec).replace(b"*", self.degree)
            return (text if self.high_precision else text[:-3]) + b"#"
        if body == b"U":
            self.high_precision = not self.high_precision
            return b""
        for index, (prefix, parse) in enumerate(((b"Sr", parse_ra), (b"Sd", parse_dec))):
            if body.startswith(prefix):  # set the target's RA or Dec: "1" accepted, "0" refused
                try:
                    self._target[index] = parse(body[2:].strip() + b"#")
                except GarbledReply:
                    return b"0"
                return b"1"
        if body == b"MS":
            target_ra, target_dec = self._target
            if target_ra is None or target_dec is None:
                return b"2No target#"
            if self.below_horizon(target_ra, target_dec):
                return b"1Object Below Horizon#"
            self.mount.unpark()
            self.mount.slew_to(*mount_to_icrs(Equinox.JNOW, target_ra, target_dec, datetime.now(UTC)))
            return b"0"
        if body == b"D":
            return b"\x7f#" if self.mount.slewing() else b"#"
        if body == b"Q":
            self.mount.abort()
            return b""
        if body == b"hP":
            self.mount.park()
            return b""
        return b""


class DomeProtocolSimulator(ProtocolSimulator):
    """A dome controller speaking the protocol documented in ``toros.telescope.devices.serial_dome``."""

    terminator = b"\r"

    def __init__(self, dome: Dome) -> None:
        super().__init__()
        self.dome = dome

    def answer(self, command: bytes) -> bytes:
        words = command.decode("ascii", errors="replace").split()
        if not words:
            return b""
        word = words[0]
        try:
            if word == "STATUS":
                shutter = self.dome.shutter().name
                return f"STATUS {shutter} {self.dome.azimuth():.1f} {int(self.dome.slewing())}\r".encode()
            if word == "OPEN":
                self.dome.open_shutter()
            elif word == "CLOSE":
                self.dome.close_shutter()
            elif word == "GOTO" and len(words) == 2:
                self.dome.slew_to(float(words[1]))
            elif word == "PARK":
                self.dome.park()
            elif word == "ABORT":
                self.dome.abort()
            else:
                return f"ERR unknown command {command.decode(errors='replace').strip()}\r".encode()
        except (ValueError, CommandRefused) as exc:
            return f"ERR {exc}\r".encode()
        return f"{word} OK\r".encode()


class PtyServer:
    """Serves a protocol simulator on a pty; ``path`` is the port a driver opens."""

    def __init__(self, simulator: ProtocolSimulator) -> None:
        self.simulator = simulator
        self._master, slave = os.openpty()
        tty.setraw(slave)
        self.path = os.ttyname(slave)
        self._slave = slave
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="pty-simulator", daemon=True)

    def __enter__(self) -> PtyServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        os.close(self._master)
        os.close(self._slave)

    def _serve(self) -> None:
        while not self._stop.is_set():
            ready, _, _ = select.select([self._master], [], [], 0.05)
            if not ready:
                continue
            try:
                data = os.read(self._master, 1024)
            except OSError:
                return
            reply = self.simulator.feed(data)
            if reply:
                os.write(self._master, reply)
