"""A dome controller on a serial line, speaking the TOROS dome protocol.

The protocol (ASCII, 9600 8N1 by default). Every command is one line ending in CR; every reply is one
line ending in CR that starts with the command word, so a reply can never be mistaken for the answer to
another command:

=================  ==========================================  =============================================
command            reply                                       meaning
=================  ==========================================  =============================================
``STATUS``         ``STATUS <shutter> <azimuth> <moving>``     shutter OPEN|CLOSED|OPENING|CLOSING|ERROR,
                                                               azimuth in degrees (0-360, one decimal),
                                                               moving 1 while rotating, else 0
``OPEN``           ``OPEN OK``                                 start opening the shutter
``CLOSE``          ``CLOSE OK``                                start closing the shutter
``GOTO <az>``      ``GOTO OK``                                 start rotating to azimuth ``az`` (degrees)
``PARK``           ``PARK OK``                                 start rotating to the park azimuth
``ABORT``          ``ABORT OK``                                stop rotating
any                ``ERR <reason>``                            the controller refused or failed
=================  ==========================================  =============================================
"""

from __future__ import annotations

from collections.abc import Callable

from toros.telescope.devices import CommandRefused, DeviceError, Dome, Shutter
from toros.telescope.devices.serial_link import GarbledReply, SerialLink, read_until
from toros.telescope.settings import DomeLink

_SHUTTER = {state.name: state for state in Shutter}


def _ok(word: str) -> Callable[[bytes], str | None]:
    def parse(reply: bytes) -> str | None:
        text = reply.decode("ascii", errors="replace").strip()
        if text.startswith("ERR "):
            return text[4:]
        if text != f"{word} OK":
            raise GarbledReply(f"expected '{word} OK', got {reply!r}")
        return None

    return parse


def parse_status(reply: bytes) -> tuple[Shutter, float, bool]:
    parts = reply.decode("ascii", errors="replace").split()
    if len(parts) != 4 or parts[0] != "STATUS" or parts[1] not in _SHUTTER or parts[3] not in ("0", "1"):
        raise GarbledReply(f"not a dome status line: {reply!r}")
    try:
        azimuth = float(parts[2])
    except ValueError:
        raise GarbledReply(f"azimuth is not a number: {reply!r}") from None
    if not 0 <= azimuth <= 360:
        raise GarbledReply(f"azimuth out of range: {reply!r}")
    return _SHUTTER[parts[1]], azimuth % 360.0, parts[3] == "1"


class SerialDome(Dome):
    driver = "serial"

    def __init__(self, link: DomeLink) -> None:
        assert link.port is not None
        self.link = SerialLink(
            "dome", link.port, baudrate=link.baudrate, timeout_s=link.timeout_s, retries=link.retries
        )

    def connect(self) -> None:
        self.link.open()
        self._status()

    def close(self) -> None:
        self.link.close()

    def _status(self) -> tuple[Shutter, float, bool]:
        return self.link.exchange(b"STATUS\r", read_until(b"\r"), parse_status)

    def _command(self, text: str) -> None:
        word = text.split()[0]
        error = self.link.exchange(text.encode() + b"\r", read_until(b"\r"), _ok(word))
        if error is not None:
            if word in ("OPEN", "CLOSE"):
                raise DeviceError(f"dome: {word.lower()} failed: {error}")
            raise CommandRefused(f"dome refused {text}: {error}")

    def open_shutter(self) -> None:
        self._command("OPEN")

    def close_shutter(self) -> None:
        self._command("CLOSE")

    def shutter(self) -> Shutter:
        return self._status()[0]

    def slew_to(self, azimuth_deg: float) -> None:
        self._command(f"GOTO {azimuth_deg % 360.0:.1f}")

    def azimuth(self) -> float:
        return self._status()[1]

    def slewing(self) -> bool:
        return self._status()[2]

    def park(self) -> None:
        self._command("PARK")

    def abort(self) -> None:
        self._command("ABORT")
