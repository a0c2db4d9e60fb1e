"""Meade LX200 mounts (and the many that speak its dialect: Autostar, OnStep, 10Micron…) over a serial line.

Commands used: ``:GR#``/``:GD#`` get RA/Dec, ``:Sr…#``/``:Sd…#`` set the target (reply ``1`` or ``0``, no
terminator), ``:MS#`` slew (reply ``0``, or ``1``/``2`` followed by a reason and ``#``), ``:D#`` distance bars
(a non-empty bar string while slewing), ``:Q#`` stop, ``:hP#`` park, ``:U#`` toggle precision.

Dialect pitfalls handled here:
* Low precision (``HH:MM.T`` / ``sDD*MM``) is the power-on default of many mounts: the driver switches to
  high precision (``:U#``) and accepts both forms in replies anyway.
* The degree separator in ``:GD#`` may be ``*``, ``ß`` (0xDF, the Meade handset's degree glyph), ``°``,
  ``:`` or ``'``; the seconds separator ``:`` or ``'``.
* Set-commands answer a bare ``1``/``0``; some firmware appends ``#``. The input buffer is flushed before
  every command so a stray ``#`` never answers the next one.
* ``-00*30`` has a sign but a zero degree part: the sign is parsed on its own.
* LX200 has no park status query: parking is remembered by the driver (``:hP#``) and cleared on unpark.
"""

from __future__ import annotations

import re

import serial

from toros.telescope.devices import CommandRefused, DeviceError, Mount
from toros.telescope.devices.equinox import Equinox, spoken
from toros.telescope.devices.serial_link import (
    GarbledReply,
    SerialLink,
    read_count,
    read_until,
)
from toros.telescope.settings import MountLink

_RA = re.compile(rb"^(\d{1,2}):(\d{2})(?::(\d{2}(?:\.\d+)?)|\.(\d))#$")
_DEC = re.compile(rb"^([+-])?(\d{1,2})[*\xdf:'\xb0](\d{2})(?:[:'](\d{2}(?:\.\d+)?))?#$")


def parse_ra(reply: bytes) -> float:
    """``HH:MM:SS#`` or ``HH:MM.T#`` → degrees."""
    match = _RA.match(reply.replace("°".encode(), b"*"))
    if not match:
        raise GarbledReply(f"not an LX200 right ascension: {reply!r}")
    hours, minutes, seconds, tenths = match.groups()
    value = int(hours) + int(minutes) / 60.0
    value += float(seconds) / 3600.0 if seconds is not None else int(tenths) / 600.0
    if not 0 <= value <= 24:
        raise GarbledReply(f"right ascension out of range: {reply!r}")
    return value * 15.0 % 360.0


def parse_dec(reply: bytes) -> float:
    """``sDD*MM:SS#`` or ``sDD*MM#`` (any of the degree glyphs) → degrees."""
    match = _DEC.match(reply.replace("°".encode(), b"*"))
    if not match:
        raise GarbledReply(f"not an LX200 declination: {reply!r}")
    sign, degrees, minutes, seconds = match.groups()
    value = int(degrees) + int(minutes) / 60.0 + (float(seconds) / 3600.0 if seconds else 0.0)
    if value > 90:
        raise GarbledReply(f"declination out of range: {reply!r}")
    return -value if sign == b"-" else value


def format_ra(ra_deg: float) -> bytes:
    total = round((ra_deg % 360.0) / 15.0 * 3600.0) % 86400
    return b"%02d:%02d:%02d" % (total // 3600, total // 60 % 60, total % 60)


def format_dec(dec_deg: float) -> bytes:
    total = round(abs(dec_deg) * 3600.0)
    sign = b"-" if dec_deg < 0 else b"+"
    return sign + b"%02d*%02d:%02d" % (total // 3600, total // 60 % 60, total % 60)


def _accepted(reply: bytes) -> bool:
    if reply[:1] not in (b"0", b"1"):
        raise GarbledReply(f"expected 1 or 0, got {reply!r}")
    return reply[:1] == b"1"


def _read_slew_reply(port: serial.SerialBase) -> bytes:
    first = port.read(1)
    return bytes(first if first in (b"", b"0") else first + port.read_until(b"#"))


def _slew_result(reply: bytes) -> str | None:
    if reply == b"0":
        return None
    if reply[:1] in (b"1", b"2") and reply.endswith(b"#"):
        return reply[1:-1].decode(errors="replace").strip() or "refused"
    raise GarbledReply(f"not an LX200 slew reply: {reply!r}")


def _bars(reply: bytes) -> bool:
    if not reply.endswith(b"#"):
        raise GarbledReply(f"no terminator in {reply!r}")
    return len(reply) > 1


class Lx200Mount(Mount):
    driver = "lx200"

    def __init__(self, link: MountLink) -> None:
        assert link.port is not None
        self.link = SerialLink(
            "mount", link.port, baudrate=link.baudrate, timeout_s=link.timeout_s, retries=link.retries
        )
        self._parked = False
        self.speaks = spoken(link.equinox, Equinox.JNOW)  # the protocol's coordinates

    def connect(self) -> None:
        self.link.open()
        reply = self.link.exchange(b":GR#", read_until(b"#"), lambda r: (parse_ra(r), r)[1])
        if b"." in reply:  # low precision: toggle, then confirm
            self.link.send(b":U#")
            reply = self.link.exchange(b":GR#", read_until(b"#"), lambda r: (parse_ra(r), r)[1])
            if b"." in reply:
                raise DeviceError("mount: stays in low precision after :U# (check the handset settings)")

    def close(self) -> None:
        self.link.close()

    def position(self) -> tuple[float, float]:
        ra = self.link.exchange(b":GR#", read_until(b"#"), parse_ra)
        dec = self.link.exchange(b":GD#", read_until(b"#"), parse_dec)
        return self.from_wire(ra, dec)

    def slew_to(self, ra_deg: float, dec_deg: float) -> None:
        if self._parked:
            raise CommandRefused("the mount is parked: unpark it first")
        ra_deg, dec_deg = self.to_wire(ra_deg, dec_deg)
        if not self.link.exchange(b":Sr" + format_ra(ra_deg) + b"#", read_count(1), _accepted):
            raise CommandRefused(f"the mount rejected RA {format_ra(ra_deg).decode()}")
        if not self.link.exchange(b":Sd" + format_dec(dec_deg) + b"#", read_count(1), _accepted):
            raise CommandRefused(f"the mount rejected Dec {format_dec(dec_deg).decode()}")
        refusal = self.link.exchange(b":MS#", _read_slew_reply, _slew_result)
        if refusal:
            raise CommandRefused(f"the mount refused the slew: {refusal}")

    def slewing(self) -> bool:
        return self.link.exchange(b":D#", read_until(b"#"), _bars)

    def abort(self) -> None:
        self.link.send(b":Q#")

    def park(self) -> None:
        self.link.send(b":hP#")
        self._parked = True

    def unpark(self) -> None:
        self._parked = False

    def parked(self) -> bool:
        return self._parked
