"""The devices of one telescope, built from its config: the simulators by default, real drivers by name."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from toros.runtime.clock import Clock
from toros.simulation.ccd import Sensor
from toros.telescope.devices import Camera, Device, Dome, FilterWheel, FlatLamp, Mount, WeatherStation
from toros.telescope.devices.simulated import (
    SimulatedCamera,
    SimulatedDome,
    SimulatedFilterWheel,
    SimulatedFlatLamp,
    SimulatedMount,
    SimulatedWeather,
    Sky,
)
from toros.telescope.settings import TelescopeConfig


@dataclass(frozen=True)
class Equipment:
    mount: Mount
    dome: Dome
    camera: Camera
    wheel: FilterWheel
    weather: WeatherStation
    lamp: FlatLamp | None  # None: the site has no flat-field lamp (no dome flats)

    @property
    def devices(self) -> list[Device]:
        """Every device, in the order the status lists them."""
        devices: list[Device] = [self.mount, self.dome, self.camera, self.wheel, self.weather]
        return devices + ([self.lamp] if self.lamp is not None else [])


# A simulator is made from the config and the clock (the camera's also sees what the devices before it do); a
# real driver from its device's link section alone, loaded by name (only the drivers in use are imported).
Simulator = Callable[[TelescopeConfig, Clock, dict[str, Any]], Any]
DRIVERS: dict[str, dict[str, Simulator | str]] = {
    "mount": {
        "simulator": lambda c, clock, built: SimulatedMount(clock, c.mount.slew_rate_deg_s),
        "lx200": "toros.telescope.devices.lx200:Lx200Mount",
        "alpaca": "toros.telescope.devices.alpaca:AlpacaMount",
        "indi": "toros.telescope.devices.indi:IndiMount",
    },
    "dome": {
        "simulator": lambda c, clock, built: SimulatedDome(
            clock, c.dome.rotation_deg_s, c.dome.shutter_s, c.dome.park_azimuth_deg
        ),
        "serial": "toros.telescope.devices.serial_dome:SerialDome",
        "alpaca": "toros.telescope.devices.alpaca:AlpacaDome",
        "indi": "toros.telescope.devices.indi:IndiDome",
    },
    "filter_wheel": {
        "simulator": lambda c, clock, built: SimulatedFilterWheel(
            clock, c.filter_wheel.filters, c.filter_wheel.change_s
        ),
        "alpaca": "toros.telescope.devices.alpaca:AlpacaFilterWheel",
        "indi": "toros.telescope.devices.indi:IndiFilterWheel",
    },
    "weather": {
        "simulator": lambda c, clock, built: SimulatedWeather(clock, c.weather.bad_weather),
        "alpaca": "toros.telescope.devices.alpaca:AlpacaSafetyMonitor",
        "indi": "toros.telescope.devices.indi:IndiWeather",
    },
    "flat_lamp": {
        "simulator": lambda c, clock, built: SimulatedFlatLamp(),
        "none": lambda c, clock, built: None,
        "alpaca": "toros.telescope.devices.alpaca:AlpacaFlatLamp",
        "indi": "toros.telescope.devices.indi:IndiFlatLamp",
    },
    "camera": {
        "simulator": lambda c, clock, built: _simulated_camera(c, clock, built),
        "alpaca": "toros.telescope.devices.alpaca:AlpacaCamera",
        "indi": "toros.telescope.devices.indi:IndiCamera",
    },
}


def _simulated_camera(config: TelescopeConfig, clock: Clock, built: dict[str, Any]) -> SimulatedCamera:
    """A simulated camera sees the simulated sky above whatever dome, mount, filter wheel and lamp drive it."""
    devices = (built["dome"], built["mount"], built["filter_wheel"], built["flat_lamp"])
    sky = Sky(clock, config.site, devices, config.camera, config.sky, config.dome)
    link = config.camera
    sensor = Sensor(width=link.width, height=link.height, overscan=link.overscan, read_noise=link.read_noise_e)
    return SimulatedCamera(clock, sensor, link.readout_s, sky.light)


def build_equipment(config: TelescopeConfig, clock: Clock) -> Equipment:
    """The devices the config names (``telescope.<device>.driver``), each from the driver table."""
    built: dict[str, Any] = {}
    for kind, drivers in DRIVERS.items():  # in order: the simulated camera needs the others
        link = getattr(config, kind)
        maker = drivers[link.driver]
        if isinstance(maker, str):
            module, _, name = maker.partition(":")
            built[kind] = getattr(importlib.import_module(module), name)(link)
        else:
            built[kind] = maker(config, clock, built)
    return Equipment(
        built["mount"], built["dome"], built["camera"], built["filter_wheel"], built["weather"], built["flat_lamp"]
    )
