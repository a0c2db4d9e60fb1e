"""Who asked for a work order: the software itself (the robotic night, the alert relays, the followers, the
demo) or a person. ``WorkOrder.requester`` says which; the token authenticates the client, the requester
names who is behind it (the console sets ``web:<user>`` for its operators, the CLI ``toros-cli``).

An operator's close puts the telescope on hold and only an operator may override the daylight limit, so the
software's own requesters are spelled here, once."""

from __future__ import annotations

ROBOTIC_NIGHT = "robotic night"  # the telescope's own night steps
ALERT_RELAY = "alert:"  # + the process_alert work order that relayed the targets
LISTENER = "listener:"  # + the notice stream (kafka, voevent)
FOLLOWER = "follower:"  # + the followed telescope
DEMO = "demo:"  # + what the demo asks for
PREPROCESSOR = "preprocessor: frames that waited for their masters"
SOFTWARE_PREFIXES = (ALERT_RELAY, LISTENER, FOLLOWER, DEMO, PREPROCESSOR)


def is_software(requester: str) -> bool:
    """The work order comes from TOROS itself, not from a person."""
    return requester == ROBOTIC_NIGHT or requester.startswith(SOFTWARE_PREFIXES)


def is_operator(requester: str) -> bool:
    """A person asked: anyone but the software's own requesters (an anonymous client with the token
    included: it is not the robot)."""
    return not is_software(requester)
