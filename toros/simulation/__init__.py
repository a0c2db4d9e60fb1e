"""Simulations shared by the whole project (the camera simulator, tests, benchmarks, the demo)."""
