"""The devices of one telescope, built from its config: the simulators by default, real drivers by name."""

from __future__ import annotations

from dataclasses import dataclass

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


def build_equipment(config: TelescopeConfig, clock: Clock) -> Equipment:
    """The devices the config names. A simulated camera sees the simulated sky above whatever dome, mount,
    filter wheel and lamp drive it."""
    from toros.telescope.devices import alpaca, indi

    mount: Mount
    dome: Dome
    camera: Camera
    wheel: FilterWheel
    weather: WeatherStation
    if config.mount.driver == "lx200":
        from toros.telescope.devices.lx200 import Lx200Mount

        mount = Lx200Mount(config.mount)
    elif config.mount.driver == "alpaca":
        mount = alpaca.AlpacaMount(config.mount)
    elif config.mount.driver == "indi":
        mount = indi.IndiMount(config.mount)
    else:
        mount = SimulatedMount(clock, config.mount.slew_rate_deg_s)
    if config.dome.driver == "serial":
        from toros.telescope.devices.serial_dome import SerialDome

        dome = SerialDome(config.dome)
    elif config.dome.driver == "alpaca":
        dome = alpaca.AlpacaDome(config.dome)
    elif config.dome.driver == "indi":
        dome = indi.IndiDome(config.dome)
    else:
        dome = SimulatedDome(clock, config.dome.rotation_deg_s, config.dome.shutter_s, config.dome.park_azimuth_deg)
    if config.filter_wheel.driver == "alpaca":
        wheel = alpaca.AlpacaFilterWheel(config.filter_wheel)
    elif config.filter_wheel.driver == "indi":
        wheel = indi.IndiFilterWheel(config.filter_wheel)
    else:
        wheel = SimulatedFilterWheel(clock, config.filter_wheel.filters, config.filter_wheel.change_s)
    if config.weather.driver == "alpaca":
        weather = alpaca.AlpacaSafetyMonitor(config.weather)
    elif config.weather.driver == "indi":
        weather = indi.IndiWeather(config.weather)
    else:
        weather = SimulatedWeather(clock, config.weather.bad_weather)
    lamp: FlatLamp | None = None
    if config.flat_lamp.driver == "alpaca":
        lamp = alpaca.AlpacaFlatLamp(config.flat_lamp)
    elif config.flat_lamp.driver == "indi":
        lamp = indi.IndiFlatLamp(config.flat_lamp)
    elif config.flat_lamp.driver == "simulator":
        lamp = SimulatedFlatLamp()
    if config.camera.driver == "alpaca":
        camera = alpaca.AlpacaCamera(config.camera)
    elif config.camera.driver == "indi":
        camera = indi.IndiCamera(config.camera)
    else:
        sky = Sky(clock, config.site, (dome, mount, wheel, lamp), config.camera, config.sky, config.dome)
        link = config.camera
        sensor = Sensor(width=link.width, height=link.height, overscan=link.overscan, read_noise=link.read_noise_e)
        camera = SimulatedCamera(clock, sensor, link.readout_s, sky.light)
    return Equipment(mount, dome, camera, wheel, weather, lamp)
