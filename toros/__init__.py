"""TOROS pipeline manager: robotic follow-up of gravitational-wave alerts."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("toros")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

MODULES = ("alert", "telescope", "preprocessor")
