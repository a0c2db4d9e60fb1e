"""Alert notices into one typed record: GCN VOEvent XML (current and O2-era parameter names) and GCN Kafka
``igwn.gwalert`` JSON (early warning, preliminary, initial, update, retraction with a null event, and
ext-update with ``external_coinc``).
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from lxml import etree

from toros.generated import toros_pb2 as pb

# GCN Classic notice types of LVK alerts; other types are archived and ignored.
LVK_PACKET_TYPES = {
    150: "PRELIMINARY", 151: "INITIAL", 152: "UPDATE", 153: "TEST", 154: "COUNTERPART", 163: "EARLY_WARNING",
    164: "RETRACTION",
}
VOEVENT_ALERT_TYPES = {
    "PRELIMINARY": "PRELIMINARY", "INITIAL": "INITIAL", "UPDATE": "UPDATE", "RETRACTION": "RETRACTION",
    "EARLYWARNING": "EARLY_WARNING", "EARLY_WARNING": "EARLY_WARNING",
}


class BadNotice(ValueError):
    """Bytes that are not a usable alert notice; the message says why."""


@dataclass(frozen=True)
class SkymapReference:
    """Where the sky map is: embedded bytes (Kafka JSON) or a URL (VOEvent)."""

    url: str = ""
    data: bytes = b""


@dataclass(frozen=True)
class Alert:
    alert_id: str
    alert_type: str
    serial: int
    created: datetime | None
    event_time: datetime | None
    far_hz: float | None
    significant: bool | None
    group: str
    pipeline: str
    search: str
    instruments: tuple[str, ...]
    classification: dict[str, float] = field(default_factory=dict)
    properties: dict[str, float] = field(default_factory=dict)
    skymap: SkymapReference | None = None
    is_test: bool = False
    source_format: str = ""
    packet_type: int | None = None
    external_coinc: dict[str, Any] | None = None

    @property
    def retraction(self) -> bool:
        return self.alert_type == "RETRACTION"

    @property
    def notice_key(self) -> str:
        """Identifies one notice, so that a re-sent copy is recognised as a duplicate."""
        created = self.created.isoformat() if self.created else ""
        return f"{self.alert_id}/{self.alert_type}/{self.serial}/{created}"


def detect_format(payload: bytes) -> int:
    head = payload.lstrip()[:1]
    if head == b"{":
        return pb.ALERT_FORMAT_GWALERT_JSON
    if head == b"<":
        return pb.ALERT_FORMAT_VOEVENT
    raise BadNotice("neither XML nor JSON (the first character is neither '<' nor '{')")


def parse_notice(payload: bytes, format_hint: int = pb.ALERT_FORMAT_UNSPECIFIED) -> Alert:
    """Parses raw notice bytes; raises BadNotice with the reason."""
    kind = format_hint or detect_format(payload)
    return parse_gwalert_json(payload) if kind == pb.ALERT_FORMAT_GWALERT_JSON else parse_voevent(payload)


def _time(text: Any) -> datetime | None:
    if not text:
        return None
    try:
        value = datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    except ValueError:
        raise BadNotice(f"not an ISO 8601 time: {text!r}") from None
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


def _is_test(alert_id: str, role: str = "observation") -> bool:
    """Mock events (MS…, M…), test events (TS…) and role="test" notices are drills."""
    return role == "test" or alert_id.startswith(("M", "T"))


def parse_gwalert_json(payload: bytes) -> Alert:
    try:
        notice = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadNotice(f"not valid JSON: {exc}") from None
    if not isinstance(notice, dict):
        raise BadNotice("JSON notice must be an object")
    alert_id = notice.get("superevent_id")
    alert_type = str(notice.get("alert_type", "")).upper()
    if not alert_id or not isinstance(alert_id, str):
        raise BadNotice("superevent_id is missing")
    if not alert_type:
        raise BadNotice("alert_type is missing")
    event = notice.get("event") or {}
    if not isinstance(event, dict):
        raise BadNotice("event must be an object or null")
    skymap = None
    if event.get("skymap"):
        try:
            skymap = SkymapReference(data=base64.b64decode(event["skymap"], validate=True))
        except (binascii.Error, TypeError) as exc:
            raise BadNotice(f"event.skymap is not valid base64: {exc}") from None
    far = event.get("far")
    return Alert(
        alert_id=alert_id, alert_type=alert_type, serial=int(notice.get("serial", 0) or 0),
        created=_time(notice.get("time_created")), event_time=_time(event.get("time")),
        far_hz=float(far) if far is not None else None,
        significant=event.get("significant") if "significant" in event else None,
        group=str(event.get("group") or ""), pipeline=str(event.get("pipeline") or ""), search=str(event.get("search") or ""),
        instruments=tuple(event.get("instruments") or ()),
        classification={k: float(v) for k, v in (event.get("classification") or {}).items() if v is not None},
        properties={k: float(v) for k, v in (event.get("properties") or {}).items() if v is not None},
        skymap=skymap, is_test=_is_test(alert_id), source_format="gwalert_json",
        external_coinc=notice.get("external_coinc"),
    )


def parse_voevent(payload: bytes) -> Alert:
    try:
        root = etree.fromstring(payload, parser=etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=False))
    except etree.XMLSyntaxError as exc:
        raise BadNotice(f"malformed XML: {exc}") from None
    if etree.QName(root).localname != "VOEvent":
        raise BadNotice(f"not a VOEvent (root element {etree.QName(root).localname})")
    params: dict[str, str] = {}
    groups: dict[str, dict[str, str]] = {}
    what = root.find("What")
    if what is not None:
        for param in what.iter("Param"):
            parent = param.getparent()
            name, value = param.get("name", ""), param.get("value", "")
            if parent is not None and parent.tag == "Group":
                groups.setdefault(parent.get("name") or parent.get("type") or "", {})[name] = value
            params[name] = value
    packet = int(params["Packet_Type"]) if params.get("Packet_Type", "").isdigit() else None
    alert_id = params.get("GraceID")
    if not alert_id:
        raise BadNotice(f"no GraceID parameter (packet type {packet}): not an LVK notice")
    declared = params.get("AlertType", "").replace(" ", "").upper()
    alert_type = VOEVENT_ALERT_TYPES.get(declared) or LVK_PACKET_TYPES.get(packet or 0, declared or "UNKNOWN")
    skymap_url = (
        groups.get("GW_SKYMAP", {}).get("skymap_fits") or params.get("skymap_fits")
        or params.get("skymap_fits_basic") or params.get("skymap_fits_lalinference") or ""
    )
    classification = {k: float(v) for k, v in groups.get("Classification", {}).items() if _number(v)}
    properties = {k: float(v) for k, v in groups.get("Properties", {}).items() if _number(v)}
    for o2_name, name in (("ProbHasNS", "HasNS"), ("ProbHasRemnant", "HasRemnant")):
        if o2_name in params and _number(params[o2_name]):
            properties.setdefault(name, float(params[o2_name]))
    who_date = root.findtext("Who/Date")
    event_time = root.findtext(".//WhereWhen//ISOTime")
    return Alert(
        alert_id=alert_id, alert_type=alert_type, serial=int(params.get("Pkt_Ser_Num", "0") or 0),
        created=_time(who_date), event_time=_time(event_time),
        far_hz=float(params["FAR"]) if _number(params.get("FAR", "")) else None,
        significant=params["Significant"] == "1" if "Significant" in params else None,
        group=params.get("Group", ""), pipeline=params.get("Pipeline", ""), search=params.get("Search", ""),
        instruments=tuple(i for i in params.get("Instruments", "").split(",") if i),
        classification=classification, properties=properties,
        skymap=SkymapReference(url=skymap_url.rsplit(",", 1)[0] if skymap_url.endswith(",0") else skymap_url) if skymap_url else None,
        is_test=_is_test(alert_id, root.get("role", "observation")), source_format="voevent", packet_type=packet,
    )


def _number(text: str) -> bool:
    try:
        float(text)
    except (TypeError, ValueError):
        return False
    return True
