"""The web console's figures: how soon a browser sees an event, and how fast a frame becomes a thumbnail.

    .venv/bin/python benchmarks/web.py [--clients 20] [--orders 100] [--wide 10560]

* Events: ``--clients`` browsers hold /api/events open (HTTP, SSE, each read in a thread); ``--orders`` work
  orders are submitted through the console (POST /api/work-orders/telescope, a dome slew to where the dome
  already is) one after another; the time from the POST to each browser reading the work order's first event
  is measured. Reference in the same run: a gRPC ``Watch`` on the daemon itself, the fastest a client can know.
  Then 50 browsers: the console still holds one ``Watch`` per daemon.
* Thumbnails: ``/api/preview`` (512 px on a side, the median of three, none from the console's cache) of a
  1024² and a ``--wide``² uint16 frame stored by the telescope daemon (fetched with FetchFile, read decimated
  through a memory map, ZScaled, PNG). Reference in the same run: the same picture made the plain way
  (astropy reads the whole frame, ZScale on all of it, then decimation).

Targets (issue "Stage 3"): event p99 ≤ 150 ms with 20 clients; a 10560² preview ≤ 2 s, 1024² ≤ 150 ms.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import grpc
import httpx
import numpy as np
import yaml
from astropy.io import fits
from PIL import Image

from toros.config import load_config
from toros.daemons import build_daemon
from toros.demo import free_port
from toros.floor.pictures import zscaled
from toros.generated import toros_pb2 as pb
from toros.web.accounts import hash_password
from toros.web.server import WebServer


class Browser:
    """An EventSource: the arrival time of each work order's first event."""

    def __init__(self, url: str, cookies: httpx.Cookies) -> None:
        self.client = httpx.Client(base_url=url, cookies=cookies, timeout=None)
        self.first_seen: dict[str, float] = {}
        self.response = self.client.send(self.client.build_request("GET", "/api/events"), stream=True)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        try:
            for line in self.response.iter_lines():
                if line.startswith("data: "):
                    order = line[6:].split('"work_order_id": "', 1)[-1].split('"', 1)[0]
                    self.first_seen.setdefault(order, time.perf_counter())
        except httpx.HTTPError:
            pass

    def close(self) -> None:
        self.response.close()
        self.client.close()


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.array(values) * 1000.0, q))


def events(url: str, cookies: httpx.Cookies, csrf: str, stub, clients: int, orders: int, hub) -> None:
    browsers = [Browser(url, cookies) for _ in range(clients)]
    time.sleep(1.0)
    direct: dict[str, float] = {}

    def watch() -> None:
        request = pb.WatchRequest(after_sequence=stub.GetStatus(pb.GetStatusRequest()).last_sequence)
        try:
            for event in stub.Watch(request):
                direct.setdefault(event.work_order_id, time.perf_counter())
        except grpc.RpcError:  # the channel closes at the end
            pass

    threading.Thread(target=watch, daemon=True).start()
    time.sleep(0.5)
    poster = httpx.Client(base_url=url, cookies=cookies, timeout=30)
    submitted: dict[str, float] = {}
    for number in range(orders):
        order_id = f"bench-{number}"
        body = {"id": order_id, "dome_control": {"action": "DOME_ACTION_SLEW", "azimuth_deg": 180.0}}
        submitted[order_id] = time.perf_counter()
        answer = poster.post("/api/work-orders/telescope", json=body, headers={"X-CSRF-Token": csrf})
        answer.raise_for_status()
        deadline = time.perf_counter() + 10
        while order_id not in direct or any(order_id not in b.first_seen for b in browsers):
            if time.perf_counter() > deadline:
                sys.exit(f"{order_id}: not seen by every browser within 10 s")
            time.sleep(0.001)
    browser_latency = [b.first_seen[o] - t for o, t in submitted.items() for b in browsers]
    direct_latency = [direct[o] - t for o, t in submitted.items()]
    p50, p99 = percentile(browser_latency, 50), percentile(browser_latency, 99)
    d50, d99 = percentile(direct_latency, 50), percentile(direct_latency, 99)
    print(f"events, {clients} browsers x {orders} orders: POST -> browser p50 {p50:.1f} ms, p99 {p99:.1f} ms")
    print(
        f"  reference, a gRPC Watch on the daemon: p50 {d50:.1f} ms, p99 {d99:.1f} ms (console/direct p99 {p99 / d99:.2f}x)"
    )
    print(f"  target p99 <= 150 ms: {'met' if p99 <= 150 else 'NOT met'}")
    more = [Browser(url, cookies) for _ in range(50 - clients)]
    time.sleep(1.0)
    print(
        f"  {len(browsers) + len(more)} browsers open: Watch calls on the telescope daemon so far: {hub.watches['telescope']}"
    )
    for browser in browsers + more:
        browser.close()


def frame(path: Path, side: int) -> None:
    """A stored raw-like frame: sky, noise and a few thousand stars, uint16 (BZERO 32768), written in bands."""
    rng = np.random.default_rng(side)
    header = fits.Header()
    header["IMAGETYP"] = "LIGHT"
    shape = (side, side)
    hdu = fits.PrimaryHDU(data=np.zeros((16, 16), dtype=np.uint16), header=header)
    hdu.header["NAXIS1"], hdu.header["NAXIS2"] = shape
    hdu.header["BSCALE"], hdu.header["BZERO"] = 1, 32768
    hdu.header.tofile(path, overwrite=True)
    band = 512
    with open(path, "ab") as out:
        for start in range(0, side, band):
            rows = min(band, side - start)
            pixels = rng.normal(1000, 12, (rows, side))
            stars = rng.integers(0, side, (max(1, rows * side // 40_000), 2))
            pixels[stars[:, 0] % rows, stars[:, 1]] += rng.uniform(500, 30000, len(stars))
            (np.clip(pixels, 0, 65535).astype(np.int32) - 32768).astype(">i2").tofile(out)  # BZERO 32768
        out.write(b"\0" * (-out.tell() % 2880))


def plain_preview(path: Path, size: int) -> bytes:
    data = fits.getdata(path).astype(np.float64)
    picture = zscaled(data)
    step = max(1, -(-max(data.shape) // size))
    buffer = io.BytesIO()
    Image.fromarray(picture[::step, ::step], mode="L").save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def previews(url: str, cookies: httpx.Cookies, root: Path, wide: int) -> None:
    client = httpx.Client(base_url=url, cookies=cookies, timeout=120)
    for side, target in ((1024, 0.150), (wide, 2.0)):
        path = root / f"preview-{side}.fits"
        frame(path, side)
        client.get("/api/preview/telescope", params={"path": str(path), "size": 64}).raise_for_status()  # warm
        times = []
        for size in (512, 511, 510):  # a new size each time: nothing comes from the console's cache
            started = time.perf_counter()
            client.get("/api/preview/telescope", params={"path": str(path), "size": size}).raise_for_status()
            times.append(time.perf_counter() - started)
        console = float(np.median(times))
        started = time.perf_counter()
        plain_preview(path, 512)
        plain = time.perf_counter() - started
        verdict = "met" if console <= target else "NOT met"
        print(
            f"preview of a {side}x{side} frame ({path.stat().st_size / 1e6:.0f} MB): console {console * 1000:.0f} ms "
            f"(target {target * 1000:.0f} ms: {verdict}); plain astropy read + ZScale {plain * 1000:.0f} ms "
            f"({plain / console:.1f}x slower)"
        )
        path.unlink()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--orders", type=int, default=100)
    parser.add_argument("--wide", type=int, default=10560)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="toros-bench-web-"))
    root = folder / "data"
    root.mkdir()
    port = free_port()
    sections = {
        "storage": {"root": str(root)},
        "database": {"url": f"sqlite:///{folder / 'toros.db'}"},
        "logging": {"level": "WARNING"},
        "clock": {"start": "2026-11-23T03:00:00Z", "rate": 1.0},
        "telescope": {"port": port, "mode": "manual", "camera": {"width": 64, "height": 48, "overscan": 8}},
        "alert": {"port": free_port()},
        "preprocessor": {"port": free_port()},
        "web": {"port": 0, "users": [{"name": "bench", "role": "operator", "password_hash": hash_password("bench")}]},
    }
    (folder / "toros.conf.yaml").write_text(yaml.safe_dump(sections))
    config = load_config(folder / "toros.conf.yaml")
    daemon = build_daemon("telescope", config)
    daemon.start()
    server = WebServer(config)
    server.start()
    try:
        login = httpx.post(f"{server.url}/login", data={"username": "bench", "password": "bench"})
        cookies = login.cookies
        csrf = httpx.get(f"{server.url}/api/session", cookies=cookies).json()["csrf_token"]
        hub = server.app.state.console.hub
        print(f"machine: {len(os.sched_getaffinity(0))} cores; the telescope daemon and the console in one process")
        events(server.url, cookies, csrf, hub.stub("telescope"), args.clients, args.orders, hub)
        previews(server.url, cookies, root, args.wide)
    finally:
        server.stop()
        daemon.stop(grace=1.0)


if __name__ == "__main__":
    main()
