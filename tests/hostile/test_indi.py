"""A hostile (or broken) indiserver cannot grow the telescope daemon: what one server may send is bounded (one
element's bytes, the devices of a server, the properties of a device; a camera's images as large as its frames),
and past a bound the connection is dropped and the devices on it fail naming the server and the bound. The
servers here are scripted sockets that speak INDI's XML: the drivers' real client code reads them."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from support import wait_for

from toros.telescope.devices import DeviceError
from toros.telescope.devices.indi import ELEMENT_BYTES, MAX_DEVICES, IndiCamera, IndiMount, image_element_bytes
from toros.telescope.settings import CameraLink, MountLink

DEFINE_CONNECTION = (
    '<defSwitchVector device="{device}" name="CONNECTION" label="Connection" group="Main" state="Idle" perm="rw" '
    'rule="OneOfMany" timeout="60"><defSwitch name="CONNECT" label="Connect">Off</defSwitch>'
    '<defSwitch name="DISCONNECT" label="Disconnect">On</defSwitch></defSwitchVector>\n'
)


class HostileServer:
    """A TCP server that answers every client with what ``script`` yields (bytes), as fast as it is read."""

    def __init__(self, script: Callable[[], Iterator[bytes]]) -> None:
        self.script = script
        self.sent = 0
        self._socket = socket.create_server(("127.0.0.1", 0))
        self.port = self._socket.getsockname()[1]
        self._stop = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        self._socket.settimeout(0.2)
        while not self._stop.is_set():
            try:
                connection, _ = self._socket.accept()
            except TimeoutError:
                continue
            except OSError:
                return  # closed
            threading.Thread(target=self._answer, args=(connection,), daemon=True).start()

    def _answer(self, connection: socket.socket) -> None:
        with connection:
            try:
                for chunk in self.script():
                    if self._stop.is_set():
                        return
                    connection.sendall(chunk)
                    self.sent += len(chunk)
            except OSError:
                return  # the client dropped us

    def close(self) -> None:
        self._stop.set()
        self._socket.close()


@pytest.fixture
def hostile() -> Iterator[Callable[[Callable[[], Iterator[bytes]]], HostileServer]]:
    servers: list[HostileServer] = []

    def start(script: Callable[[], Iterator[bytes]]) -> HostileServer:
        servers.append(HostileServer(script))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def mount_on(port: int) -> IndiMount:
    return IndiMount(
        MountLink(driver="indi", indi={"host": "127.0.0.1", "port": port, "device": "Mount", "timeout_s": 5})
    )


def dropped_reason(device: IndiMount | IndiCamera) -> str:
    def failing() -> str | None:
        try:
            device.describe()  # what the observatory asks each device at every poll
        except DeviceError as exc:
            return str(exc) if "was dropped" in str(exc) else None
        return None

    return wait_for(failing, timeout=30)


def test_an_unclosed_element_followed_by_endless_text_is_cut_at_the_bound(hostile):
    def endless() -> Iterator[bytes]:
        yield DEFINE_CONNECTION.format(device="Mount").encode()
        yield b'<defTextVector device="Mount" name="JUNK" state="Idle" perm="ro"><defText name="X">'
        text = b"A" * (1 << 20)
        for _ in range(1536):  # 1.5 GiB, never closed
            yield text

    before = rss_mb()
    server = hostile(endless)
    mount = mount_on(server.port)
    try:
        reason = dropped_reason(mount)
        assert f"INDI 127.0.0.1:{server.port}: Mount: the connection to 127.0.0.1:{server.port} was dropped" in reason
        assert f"an element of more than {ELEMENT_BYTES} bytes (the bound for this server)" in reason
        assert server.sent < 64 << 20, "the server could not push its gigabytes"
        assert rss_mb() - before < 100
    finally:
        mount.close()


def test_endless_new_devices_are_cut_at_the_bound(hostile):
    def devices() -> Iterator[bytes]:
        number = 0
        while True:  # 106 MiB of definitions made 658,906 devices
            yield "".join(DEFINE_CONNECTION.format(device=f"ghost {number + i}") for i in range(100)).encode()
            number += 100

    server = hostile(devices)
    mount = mount_on(server.port)
    try:
        assert f"more than {MAX_DEVICES} devices defined (the bound for one server)" in dropped_reason(mount)
        assert len(mount.server.client.data) <= MAX_DEVICES + 1
    finally:
        mount.close()


def test_endless_properties_of_one_device_are_cut_at_the_bound(hostile):
    def properties() -> Iterator[bytes]:
        yield DEFINE_CONNECTION.format(device="Mount").encode()
        number = 0
        while True:
            yield (
                f'<defNumberVector device="Mount" name="P{number}" state="Idle" perm="ro">'
                f'<defNumber name="V" format="%g" min="0" max="1" step="0">0</defNumber></defNumberVector>'
            ).encode()
            number += 1

    server = hostile(properties)
    mount = mount_on(server.port)
    try:
        assert "more than 1024 properties defined for Mount (the bound for one device)" in dropped_reason(mount)
    finally:
        mount.close()


def test_a_camera_may_send_images_as_large_as_its_frames_and_no_larger(hostile):
    link = CameraLink(driver="indi", width=200, height=100, overscan=8,
                      indi={"host": "127.0.0.1", "port": 1, "device": "CCD", "timeout_s": 5})  # fmt: skip
    bound = image_element_bytes(208, 100)
    assert 208 * 100 * 4 * 4 // 3 < bound < 208 * 100 * 4 * 4 // 3 + (2 << 20)

    def image(size: int) -> Callable[[], Iterator[bytes]]:
        def script() -> Iterator[bytes]:
            yield DEFINE_CONNECTION.format(device="CCD").encode()
            yield b'<setBLOBVector device="CCD" name="CCD1" state="Ok"><oneBLOB name="CCD1" size="1" format=".fits">'
            yield b"QUFB" * (size // 4)
            yield b"</oneBLOB></setBLOBVector>\n"
            yield DEFINE_CONNECTION.format(device="CCD2").encode()

        return script

    fitting = hostile(image(bound - (1 << 20)))
    camera = IndiCamera(link.model_copy(update={"indi": link.indi.model_copy(update={"port": fitting.port})}))
    try:
        wait_for(lambda: camera.server.client.get("CCD2") is not None, timeout=30)  # read past the image
        assert camera.server.client.dropped is None
    finally:
        camera.close()
    too_large = hostile(image(bound + (1 << 20)))
    camera = IndiCamera(link.model_copy(update={"indi": link.indi.model_copy(update={"port": too_large.port})}))
    try:
        assert f"an element of more than {bound} bytes" in dropped_reason(camera)
    finally:
        camera.close()
