"""A serial line shared by one driver: one exchange at a time, replies checked, retries, then FAULT.

Opened with pyserial's ``serial_for_url``, so a device may sit on a local port (``/dev/ttyUSB0``), behind a
serial-to-Ethernet adapter (``socket://host:port``, ``rfc2217://host:port``) or on a pty (tests, simulators).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TypeVar

import serial

from toros.telescope.devices import DeviceError

log = logging.getLogger(__name__)
T = TypeVar("T")


class GarbledReply(ValueError):
    """A reply that does not have the shape the command expects."""


class SerialLink:
    def __init__(self, name: str, port: str, *, baudrate: int = 9600, timeout_s: float = 2.0, retries: int = 3) -> None:
        self.name = name
        self.port = port
        self.retries = retries
        self._lock = threading.Lock()
        try:
            self._serial = serial.serial_for_url(
                port, baudrate=baudrate, timeout=timeout_s, write_timeout=timeout_s, do_not_open=True
            )
        except (ValueError, serial.SerialException) as exc:
            raise DeviceError(f"{name}: cannot use serial port {port}: {exc}") from None

    def open(self) -> None:
        """Opens the port (closing it first on a reconnect)."""
        if self._serial.is_open:
            self._serial.close()
        try:
            self._serial.open()
        except serial.SerialException as exc:
            raise DeviceError(f"{self.name}: cannot open {self.port}: {exc}") from None

    def close(self) -> None:
        self._serial.close()

    def exchange(
        self, command: bytes, read: Callable[[serial.SerialBase], bytes] | None, parse: Callable[[bytes], T]
    ) -> T:
        """Sends ``command``, reads the reply with ``read`` and returns ``parse(reply)``.

        A timeout (empty or short reply) or a reply ``parse`` rejects with GarbledReply is retried; after
        ``retries`` more attempts the device is declared failed (DeviceError naming the command and reply)."""
        last = b""
        for attempt in range(self.retries + 1):
            with self._lock:
                try:
                    self._serial.reset_input_buffer()  # a late reply to an earlier command must not answer this one
                    self._serial.write(command)
                    self._serial.flush()
                    last = read(self._serial) if read else b""
                except serial.SerialException as exc:
                    raise DeviceError(f"{self.name}: {self.port}: {exc}") from None
            try:
                return parse(last)
            except GarbledReply as exc:
                log.warning(
                    "%s: attempt %d: %s to %r: %s",
                    self.name,
                    attempt + 1,
                    "no valid reply" if last else "no reply",
                    command,
                    exc,
                )
        what = f"last reply {last!r}" if last else "no reply (timeout)"
        raise DeviceError(
            f"{self.name}: no valid reply to {command.decode(errors='replace')!r} after {self.retries + 1} attempts, {what}"
        )

    def send(self, command: bytes) -> None:
        """A command without a reply."""
        self.exchange(command, None, lambda reply: None)


def read_until(terminator: bytes) -> Callable[[serial.SerialBase], bytes]:
    return lambda port: port.read_until(terminator)


def read_count(count: int) -> Callable[[serial.SerialBase], bytes]:
    return lambda port: port.read(count)
