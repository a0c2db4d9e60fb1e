"""The names under which the modules keep small durable facts in the journal's key-value store.

One place, so that a key is spelled once and the facts a node keeps can be read at a glance. The spellings
are stored in databases: changing one forgets what was kept under it.
"""

from __future__ import annotations

# -- telescope ------------------------------------------------------------------------------------------


def image_number() -> str:
    """The last number given to a stored image (file names never collide)."""
    return "image_number"


def frames_taken(work_order_id: str) -> str:
    """Calibration frames a take_calibrations work order has taken (resumed after a restart)."""
    return f"frames:{work_order_id}"


def frames_observed(target_key: str) -> str:
    """Frames taken of one target of the book."""
    return f"observed:{target_key}"


def night_observations(night: str) -> str:
    """What the telescope observed in one night, as a JSON list of observations (the plan picture's past)."""
    return f"observations:{night}"


def operator_hold() -> str:
    """The operator's hold (JSON: by, since, reason, work order), empty when there is none."""
    return "operator_hold"


# -- alert ----------------------------------------------------------------------------------------------


def notice_handled(notice_key: str) -> str:
    """The work order that handled one notice (a re-sent copy is a duplicate)."""
    return f"alert:notice:{notice_key}"


def event_retracted(alert_id: str) -> str:
    """The work order that handled an event's retraction."""
    return f"alert:{alert_id}:retracted"


def event_orders(alert_id: str) -> str:
    """The observe_targets work orders relayed for an event, as [[telescope address, id], …]."""
    return f"alert:{alert_id}:orders"


# -- preprocessor ---------------------------------------------------------------------------------------


def event_withdrawn(alert_id: str) -> str:
    """The event's target lists cancelled already (by a later notice's new plan)."""
    return f"event:{alert_id}:withdrawn"


def follow_position(telescope: str) -> str:
    """The last event of a followed telescope's stream that was handled."""
    return f"follow:{telescope}:after"


def follow_pending(telescope: str) -> str:
    """Calibration frames announced by a followed telescope, waiting for its next light frame."""
    return f"follow:{telescope}:pending"


def waiting_for_masters() -> str:
    """Raw science frames waiting for masters of their setup, as {setup: [paths]}."""
    return "preprocessor:waiting-for-masters"


def campaign_position(site: str, daemon: str) -> str:
    """The last event of a site's daemon (telescope or preprocessor) the campaigns were updated from."""
    return f"campaign:{site}:{daemon}:after"
