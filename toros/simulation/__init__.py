"""Synthetic data shared by the whole project: realistic raw frames (``ccd``) and the galaxy catalog of the
demo (``galaxies``), used by the camera simulator, the tests, the benchmarks and the demo."""
