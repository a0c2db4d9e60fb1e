"""Runs gwemopt (PyPI 0.4.2) on one sky map for Macón and Bosque Alegre, offline, and prints its schedule as
JSON lines: ``{"site", "ra", "dec", "mjd"}``. Run by ``benchmarks/campaign.py --gwemopt PYTHON`` with a Python
that has gwemopt (its dependencies pin versions of their own: a venv of its own), never imported by toros.

Usage: PYTHON benchmarks/gwemopt_driver.py MAP GPSTIME WORKDIR
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

SITES = (("macon", -24.62, -67.32, 4650), ("eaba", -31.598, -64.546, 1350))
FIELD_DEG = 1.38


def main() -> None:
    skymap, gpstime, work = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
    import gwemopt.params

    config = work / "config"
    config.mkdir(parents=True, exist_ok=True)
    gwemopt.params.CONFIG_DIR = config  # the sites' telescope files, not gwemopt's own
    for name, latitude, longitude, elevation in SITES:
        (config / f"{name}.config").write_text(
            f"filt r\nmagnitude 20.0\nexposuretime 180.0\nlatitude {latitude}\nlongitude {longitude}\n"
            f"elevation {elevation}\nFOV_coverage {FIELD_DEG}\nFOV {FIELD_DEG}\nFOV_coverage_type square\n"
            "FOV_type square\nslew_rate 1\nreadout 5\nhorizon 30\noverhead_per_exposure 60.0\nfilt_change_time 0\n"
            f"tesselationFile {work / f'{name}.tess'}\n"  # its sky tiling, made by gwemopt on first use
        )
    from gwemopt.run import run

    out = work / "out"
    run(["-t", ",".join(s[0] for s in SITES), "-o", str(out), "-e", str(skymap), "--doTiles", "--tilesType", "moc",
         "--doSchedule", "--scheduleType", "greedy", "--filters", "r", "--exposuretimes", "180", "--doSingleExposure",
         "--gpstime", gpstime, "--Tobs", "0.0,1.0", "--nside", "256", "--plots", ""])  # fmt: skip
    for name, *_ in SITES:
        schedule = out / f"schedule_{name}.dat"
        for line in schedule.read_text().splitlines() if schedule.exists() else []:
            parts = line.split()
            print(json.dumps({"site": name, "ra": float(parts[1]), "dec": float(parts[2]), "mjd": float(parts[3])}))


if __name__ == "__main__":
    main()
