"""What the campaign tells the community, rewritten with it after each change (never sent from here): the GW
Treasure Map's pointing report, and a GCN circular draft.

The Treasure Map takes pointings as its API's ``POST /api/v0/pointings`` body: the event (``graceid``) and per
pointing ``ra``, ``dec``, ``instrumentid`` (the site's id on the Treasure Map), ``time``, ``status`` (planned,
completed, cancelled), ``depth`` with ``depth_unit`` (AB magnitude, 5 sigma) and ``band``. Planned pointings
are reported when relayed, completed ones with their measured depth.
"""

from __future__ import annotations

import statistics
import textwrap
from typing import Any

from toros.alert.settings import Observatory

TREASUREMAP_FILE = "treasuremap-pointings.json"
CIRCULAR_FILE = "gcn-circular-draft.txt"
STATUS = {"planned": "planned", "observed": "completed", "cancelled": "cancelled"}  # a failed one is not reported


def treasuremap_pointings(campaign: dict[str, Any], sites: dict[str, Observatory]) -> dict[str, Any]:
    """The campaign's pointings as the Treasure Map's API takes them."""
    pointings = []
    for p in campaign["pointings"]:
        status = STATUS.get(p["state"])
        if status is None:
            continue
        site = sites.get(p["site"])
        entry = {
            "ra": p["ra_deg"],
            "dec": p["dec_deg"],
            "instrumentid": site.treasuremap_instrument_id if site else None,
            "time": p["start"].removesuffix("Z"),
            "status": status,
            "band": p["filter"],
            "pos_angle": 0.0,  # fields are aligned with RA and Dec
        }
        if status == "completed" and p["limmag"] is not None:
            entry |= {"depth": p["limmag"], "depth_unit": "ab_mag"}
        pointings.append(entry)
    return {"graceid": campaign["event"], "pointings": pointings}


def circular_draft(campaign: dict[str, Any]) -> str:
    """A GCN circular draft for the campaign so far: sites, coverage and depth, candidates, pointings."""
    event = campaign["event"]
    observed = [p for p in campaign["pointings"] if p["state"] == "observed"]
    sites = sorted({p["site"] for p in observed})
    lines = [
        f"SUBJECT: LIGO/Virgo/KAGRA {event}: TOROS optical follow-up" + (" (DRILL, do not send)" if campaign["drill"] else ""),
        "",
    ]  # fmt: skip
    if campaign["retracted"]:
        lines += [f"{event} was retracted by LVK; the TOROS follow-up stopped.", ""]
    if not observed:
        lines += ["TOROS has not observed yet: " + _site_states(campaign), ""]
        return "\n".join(lines)
    merger = campaign["timeline"].get("merger")
    first = min(p["start"] for p in observed)
    filters = sorted({p["filter"] for p in observed})
    galaxies = sum(len(p["galaxies"]) for p in observed)
    text = (
        f"The TOROS collaboration observed {len(observed)} fields holding {galaxies} of the ranked host-galaxy "
        f"candidates of {event} from {', '.join(sites)}, starting {first}"
        + (f" (merger {merger})" if merger else "")
        + f", in {', '.join(filters)}."
    )
    coverage = campaign["coverage"]
    if coverage:
        text += (
            f" The fields hold {100 * coverage['probability_2d']:.1f}% of the sky map's probability and "
            f"{100 * coverage['probability_3d_observed']:.1f}% of the galaxy-weighted probability, "
            f"{100 * coverage['probability_3d']:.1f}% deep enough for an AT2017gfo-like kilonova"
        )
        efficiency = coverage.get("kilonova_efficiency")
        text += (
            f"; such a kilonova would have been detected with a probability of {100 * efficiency:.1f}%."
            if efficiency is not None
            else "."
        )
    lines += textwrap.wrap(text, 100) + [""]
    for site in sites:
        depths = [p["limmag"] for p in observed if p["site"] == site and p["limmag"] is not None]
        if depths:
            lines.append(
                f"{site}: median 5-sigma limit {statistics.median(depths):.2f} AB "
                f"({len(depths)} field{'s' if len(depths) != 1 else ''} measured)"
            )
    lines.append("")
    candidates = campaign["candidates"]
    if candidates:
        lines.append("Candidates (ranked):")
        lines.append(f"{'name':22} {'RA':>10} {'Dec':>10} {'mag':>13} {'host':24} distance")
        for c in candidates:
            last = c["detections"][-1] if c["detections"] else None
            mag = f"{last['filter']} {last['mag']:.2f}±{last['mag_err']:.2f}" if last else "-"
            verdict = {True: "consistent", False: "inconsistent", None: "unknown"}[c["host_distance_consistent"]]
            lines.append(
                f"{c['name']:22} {c['ra_deg']:10.5f} {c['dec_deg']:+10.5f} {mag:>13} {(c['host'] or '-')[:24]:24} "
                f"{verdict}"
            )
    else:
        lines.append("No candidate passed the vetting so far.")
    lines += ["", "Fields observed:", f"{'site':10} {'RA':>9} {'Dec':>9} {'start (UTC)':22} {'filter':6} limit (AB)"]
    for p in observed:
        limit = f"{p['limmag']:.2f}" if p["limmag"] is not None else "-"
        lines.append(
            f"{p['site']:10} {p['ra_deg']:9.4f} {p['dec_deg']:+9.4f} {p['start'][:22]:22} {p['filter']:6} {limit}"
        )
    return "\n".join(lines) + "\n"


def _site_states(campaign: dict[str, Any]) -> str:
    return "; ".join(
        f"{s['name']} {s['state']}" + (f" ({s['note']})" if s.get("note") else "") for s in campaign["sites"]
    )
