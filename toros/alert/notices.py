"""Alert notices into one typed record: GCN VOEvent XML (current and O2-era parameter names), GCN Kafka
``igwn.gwalert`` JSON (early warning, preliminary, initial, update, retraction with a null event, and
ext-update with ``external_coinc``) and the same alerts as Avro (LVK's ``igwn.alerts.Alert`` schema in an Avro
object container, as SCiMMA's Hopskotch carries them: the sky maps are bytes there, base64 in JSON).
"""

from __future__ import annotations

import base64
import binascii
import io
import itertools
import json
import math
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, cast

from lxml import etree

from toros.generated import toros_pb2 as pb

# GCN Classic notice types of LVK alerts; other types are archived and ignored.
LVK_PACKET_TYPES = {
    150: "PRELIMINARY",
    151: "INITIAL",
    152: "UPDATE",
    153: "TEST",
    154: "COUNTERPART",
    163: "EARLY_WARNING",
    164: "RETRACTION",
}
ALERT_TYPE_SPELLINGS = {  # the spellings of the notices' alert types (both schema versions) to one
    "PRELIMINARY": "PRELIMINARY",
    "INITIAL": "INITIAL",
    "UPDATE": "UPDATE",
    "RETRACTION": "RETRACTION",
    "EARLYWARNING": "EARLY_WARNING",
    "EARLY_WARNING": "EARLY_WARNING",
}


ALERT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
ALERT_TYPE = re.compile(r"[A-Z][A-Z_]{0,31}")
WHOLE_NUMBER = re.compile(r"[0-9]{1,9}")  # str.isdigit() also takes digits that int() refuses (e.g. "²")


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
    skymap_source: str = "the GW sky map"  # which map the notice's localisation comes from
    drill_key: str = ""  # set for a notice replayed on purpose as a drill: each replay is a notice of its own

    @property
    def retraction(self) -> bool:
        return self.alert_type == "RETRACTION"

    @property
    def notice_key(self) -> str:
        """Identifies one notice, so that a re-sent copy is recognised as a duplicate."""
        if self.drill_key:
            return self.drill_key
        created = self.created.isoformat() if self.created else ""
        return f"{self.alert_id}/{self.alert_type}/{self.serial}/{created}"


AVRO_MAGIC = b"Obj\x01"  # an Avro object container file begins so
AVRO_SCHEMA = "igwn.alerts.Alert"  # LVK's schema (the igwn-gwalert-schema package), every version


def detect_format(payload: bytes) -> int:
    if payload.startswith(AVRO_MAGIC):
        return pb.ALERT_FORMAT_GWALERT_AVRO
    head = payload.lstrip()[:1]
    if head == b"{":
        return pb.ALERT_FORMAT_GWALERT_JSON
    if head == b"<":
        return pb.ALERT_FORMAT_VOEVENT
    raise BadNotice("neither XML, JSON nor Avro (it starts with neither '<', '{' nor the Avro container's 'Obj')")


def parse_notice(payload: bytes, format_hint: int = pb.ALERT_FORMAT_UNSPECIFIED) -> Alert:
    """Parses raw notice bytes; raises BadNotice with the reason."""
    kind = format_hint or detect_format(payload)
    parse = parse_voevent
    if kind == pb.ALERT_FORMAT_GWALERT_JSON:
        parse = parse_gwalert_json
    elif kind == pb.ALERT_FORMAT_GWALERT_AVRO:
        parse = parse_gwalert_avro
    try:
        return parse(payload)
    except BadNotice:
        raise
    except (ValueError, TypeError, AttributeError, LookupError, RecursionError, etree.LxmlError) as exc:
        # The parsers name the field of every problem they know of; whatever else a notice does to them is
        # still a refused notice, never an error that stops intake.
        raise BadNotice(f"unreadable notice ({type(exc).__name__}: {exc})") from None


def _is_test(alert_id: str, role: str = "observation") -> bool:
    """Mock events (MS…, M…), test events (TS…) and role="test" notices are drills."""
    return role == "test" or alert_id.startswith(("M", "T"))


def parse_gwalert_json(payload: bytes) -> Alert:
    try:
        notice = json.loads(payload)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadNotice(f"not valid JSON: {exc}") from None
    except RecursionError:
        raise BadNotice("not valid JSON: nested too deeply") from None
    if not isinstance(notice, dict):
        raise BadNotice("JSON notice must be an object")
    return _gwalert(notice, "gwalert_json")


def parse_gwalert_avro(payload: bytes) -> Alert:
    """One ``igwn.alerts.Alert`` record from an Avro object container (its writer's schema inside it): a
    container of another schema, of no record or of several, is refused by name."""
    import fastavro

    try:
        reader = fastavro.reader(io.BytesIO(payload))
        schema = reader.writer_schema
        name = schema.get("name", "") if isinstance(schema, dict) else ""
        if name != AVRO_SCHEMA:
            raise BadNotice(f"Avro notice of schema {name or 'without a name'!r}, not LVK's {AVRO_SCHEMA}")
        records = list(itertools.islice(reader, 2))
    except BadNotice:
        raise
    except (ValueError, TypeError, KeyError, EOFError, IndexError, OverflowError, MemoryError) as exc:
        raise BadNotice(f"not a readable Avro container ({type(exc).__name__}: {exc})") from None
    if len(records) != 1 or not isinstance(records[0], dict):
        raise BadNotice(f"an Avro notice holds one {AVRO_SCHEMA} record, this one {len(records)} or more")
    return _gwalert(records[0], "gwalert_avro")


def _gwalert(notice: dict[str, Any], source_format: str) -> Alert:
    """An ``igwn.gwalert`` notice, read from JSON or Avro (the same fields; the sky maps base64 or bytes)."""
    top = _JsonFields(notice, "")
    alert_id = _alert_id("superevent_id", top.text("superevent_id", required=True))
    alert_type = _alert_type("alert_type", top.text("alert_type", required=True).upper())
    event = top.object("event") or _JsonFields({}, "event")
    skymap = event.skymap("skymap")
    external = top.object("external_coinc")
    skymap_source = "the GW sky map"
    # A coincidence with an external trigger (RAVEN) carries the GW map combined with the external one: it is
    # the better localisation, as GOTO's alert system takes it too; the GW map otherwise.
    if external is not None and (combined := external.skymap("combined_skymap")):
        skymap = combined
        observatory = external.text("observatory") or "an external trigger"
        skymap_source = f"the combined GW and {observatory} sky map (external_coinc.combined_skymap)"
    return Alert(
        alert_id=alert_id,
        alert_type=alert_type,
        serial=top.integer("serial"),
        created=top.time("time_created"),
        event_time=event.time("time"),
        far_hz=event.number("far"),
        significant=event.boolean("significant"),
        group=event.text("group"),
        pipeline=event.text("pipeline"),
        search=event.text("search"),
        instruments=event.texts("instruments"),
        classification=event.numbers("classification"),
        properties=event.numbers("properties"),
        skymap=skymap,
        is_test=_is_test(alert_id),
        source_format=source_format,
        # Its facts; the combined map is the alert's sky map already.
        external_coinc={k: v for k, v in external.value.items() if k != "combined_skymap"} if external else None,
        skymap_source=skymap_source,
    )


class _JsonFields:
    """Typed reading of one JSON object's (or Avro record's) members: a member of the wrong type is a BadNotice
    naming its path.

    Absent and null members read as "not given"."""

    def __init__(self, value: dict[str, Any], path: str) -> None:
        self.value = value
        self.path = path

    def _name(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def _get(self, key: str, expected: str, *types: type) -> Any:
        value = self.value.get(key)
        if value is None or (isinstance(value, types) and not (isinstance(value, bool) and bool not in types)):
            return value
        raise BadNotice(f"{self._name(key)}: must be {expected}, got {_shown(value)}")

    def text(self, key: str, *, required: bool = False) -> str:
        value = self._get(key, "a string", str)
        if required and not value:
            raise BadNotice(f"{self._name(key)} is missing")
        return value or ""

    def number(self, key: str) -> float | None:
        return _finite(self._name(key), self._get(key, "a number", int, float))

    def integer(self, key: str) -> int:
        value = self._get(key, "an integer", int)
        if value is not None and not 0 <= value < 2**31:
            raise BadNotice(f"{self._name(key)}: must be between 0 and {2**31 - 1}, got {value}")
        return value or 0

    def boolean(self, key: str) -> bool | None:
        return cast("bool | None", self._get(key, "true or false", bool))

    def texts(self, key: str) -> tuple[str, ...]:
        values = self._get(key, "a list of strings", list) or []
        if not all(isinstance(v, str) for v in values):
            raise BadNotice(f"{self._name(key)}: must be a list of strings, got {_shown(values)}")
        return tuple(values)

    def numbers(self, key: str) -> dict[str, float]:
        """An object of numbers (null members are left out)."""
        members = self.object(key)
        if members is None:
            return {}
        return {name: value for name in members.value if (value := members.number(name)) is not None}

    def skymap(self, key: str) -> SkymapReference | None:
        """An embedded sky map: base64 text (JSON) or bytes (Avro); None when absent or empty."""
        value = self.value.get(key)
        if isinstance(value, bytes):
            return SkymapReference(data=value) if value else None
        encoded = self.text(key)
        if not encoded:
            return None
        try:
            return SkymapReference(data=base64.b64decode(encoded, validate=True))
        except (binascii.Error, ValueError) as exc:
            raise BadNotice(f"{self._name(key)}: not valid base64: {exc}") from None

    def object(self, key: str) -> _JsonFields | None:
        value = self._get(key, "an object or null", dict)
        return _JsonFields(value, self._name(key)) if value is not None else None

    def time(self, key: str) -> datetime | None:
        return _time(self._name(key), self.text(key))


def _shown(value: Any) -> str:
    """A value as an error message shows it: its JSON type, and the value itself when it is short."""
    kind = {
        dict: "an object",
        list: "a list",
        str: "a string",
        bool: "a boolean",
        int: "a number",
        float: "a number",
    }.get(type(value), type(value).__name__)
    text = repr(value)
    return f"{kind} {text}" if len(text) <= 40 else kind


def _finite(name: str, value: float | None) -> float | None:
    if value is None:
        return None
    try:
        number = float(value)
    except OverflowError:
        raise BadNotice(f"{name}: {value} is too large") from None
    if not math.isfinite(number):
        raise BadNotice(f"{name}: must be a finite number, got {value}")
    return number


def _time(name: str, text: str) -> datetime | None:
    if not text:
        return None
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise BadNotice(f"{name}: not an ISO 8601 time: {text[:40]!r}") from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _alert_id(name: str, text: str) -> str:
    """Alert ids name folders and relayed work orders: only the characters LVK and GCN ids use."""
    if not ALERT_ID.fullmatch(text):
        raise BadNotice(
            f"{name}: must be 1-64 characters of A-Z a-z 0-9 _ . - starting with a letter or digit, got {text[:40]!r}"
        )
    return text


def _alert_type(name: str, text: str) -> str:
    if not ALERT_TYPE.fullmatch(text):
        raise BadNotice(f"{name}: must be a word of A-Z and _ (e.g. PRELIMINARY), got {text[:40]!r}")
    return ALERT_TYPE_SPELLINGS.get(text, text)  # EARLYWARNING (the schema's spelling) is EARLY_WARNING


def parse_voevent(payload: bytes) -> Alert:
    try:
        root = etree.fromstring(
            payload, parser=etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=False)
        )
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
    packet = int(params["Packet_Type"]) if WHOLE_NUMBER.fullmatch(params.get("Packet_Type", "")) else None
    if not params.get("GraceID"):
        raise BadNotice(f"no GraceID parameter (packet type {packet}): not an LVK notice")
    alert_id = _alert_id("GraceID", params["GraceID"])
    declared = params.get("AlertType", "").replace(" ", "").upper()
    alert_type = _alert_type(
        "AlertType", ALERT_TYPE_SPELLINGS.get(declared) or LVK_PACKET_TYPES.get(packet or 0, declared or "UNKNOWN")
    )
    skymap_url = (
        groups.get("GW_SKYMAP", {}).get("skymap_fits")
        or params.get("skymap_fits")
        or params.get("skymap_fits_basic")
        or params.get("skymap_fits_lalinference")
        or ""
    )
    classification = {k: float(v) for k, v in groups.get("Classification", {}).items() if _number(v)}
    properties = {k: float(v) for k, v in groups.get("Properties", {}).items() if _number(v)}
    for o2_name, name in (("ProbHasNS", "HasNS"), ("ProbHasRemnant", "HasRemnant")):
        if o2_name in params and _number(params[o2_name]):
            properties.setdefault(name, float(params[o2_name]))
    serial = params.get("Pkt_Ser_Num", "").strip() or "0"
    if not WHOLE_NUMBER.fullmatch(serial):
        raise BadNotice(f"Pkt_Ser_Num: must be a whole number, got {serial[:40]!r}")
    return Alert(
        alert_id=alert_id,
        alert_type=alert_type,
        serial=int(serial),
        created=_time("Who/Date", root.findtext("Who/Date") or ""),
        event_time=_time("WhereWhen ISOTime", root.findtext(".//WhereWhen//ISOTime") or ""),
        far_hz=float(params["FAR"]) if _number(params.get("FAR", "")) else None,
        significant=params["Significant"] == "1" if "Significant" in params else None,
        group=params.get("Group", ""),
        pipeline=params.get("Pipeline", ""),
        search=params.get("Search", ""),
        instruments=tuple(i for i in params.get("Instruments", "").split(",") if i),
        classification=classification,
        properties=properties,
        skymap=SkymapReference(url=skymap_url.rsplit(",", 1)[0] if skymap_url.endswith(",0") else skymap_url)
        if skymap_url
        else None,
        is_test=_is_test(alert_id, root.get("role", "observation")),
        source_format="voevent",
        packet_type=packet,
    )


def _number(text: str) -> bool:
    """A finite number, as VOEvent parameters carry them (text)."""
    try:
        return math.isfinite(float(text))
    except (TypeError, ValueError):
        return False
