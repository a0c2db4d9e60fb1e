"""LVK alerts as Avro (``igwn.alerts.Alert``, the schema LVK publishes; SCiMMA's Hopskotch carries them in an
Avro object container): the same record as the JSON notice, through ``process_alert``, and containers of
another schema or broken bytes refused by name."""

from __future__ import annotations

import base64
import json
from typing import Any

import fastavro
import grpc
import pytest
from support import DATA, avro_notice, done, submit

from toros.alert.notices import BadNotice, parse_notice
from toros.generated import toros_pb2 as pb

MULTIORDER_MAP = (DATA / "MS181101ab-bayestar.multiorder.fits").read_bytes()


def sample(name: str = "MS181101ab-preliminary.json") -> dict[str, Any]:
    return json.loads((DATA / name).read_text())


@pytest.mark.parametrize("name", ["MS181101ab-preliminary.json", "MS181101ab-retraction.json"])
def test_an_avro_notice_is_the_json_notice(name):
    notice = sample(name)
    from_json = parse_notice(json.dumps(notice).encode())
    from_avro = parse_notice(avro_notice(notice))
    assert from_avro.source_format == "gwalert_avro" and from_json.source_format == "gwalert_json"
    for field in ("alert_id", "alert_type", "created", "event_time", "far_hz", "significant", "group", "pipeline",
                  "instruments", "classification", "properties", "skymap", "is_test"):  # fmt: skip
        assert getattr(from_avro, field) == getattr(from_json, field), field
    assert from_avro.notice_key == from_json.notice_key, "a notice seen in both formats is one notice"


def test_early_warning_is_one_type_in_both_spellings():
    notice = sample()
    notice["alert_type"] = "EARLYWARNING"  # the schema's spelling
    assert parse_notice(avro_notice(notice)).alert_type == "EARLY_WARNING"
    assert parse_notice(json.dumps(notice).encode()).alert_type == "EARLY_WARNING"
    notice["alert_type"] = "EARLY_WARNING"
    assert parse_notice(json.dumps(notice).encode()).alert_type == "EARLY_WARNING"


def test_a_raven_coincidence_in_avro_ranks_the_combined_map():
    notice = sample()
    notice["external_coinc"] = {
        "gcn_notice_id": 123, "ivorn": "ivo://nasa.gsfc.gcn/Fermi#1", "observatory": "Fermi", "search": "GRB",
        "time_difference": -1.5, "time_coincidence_far": 1e-6, "time_sky_position_coincidence_far": 1e-8,
        "combined_skymap": base64.b64encode(MULTIORDER_MAP).decode(),
    }  # fmt: skip
    notice["event"]["skymap"] = base64.b64encode(b"the GW map alone").decode()
    alert = parse_notice(avro_notice(notice))
    assert alert.skymap is not None and alert.skymap.data == MULTIORDER_MAP
    assert alert.skymap_source == "the combined GW and Fermi sky map (external_coinc.combined_skymap)"
    assert alert.external_coinc == {key: value for key, value in notice["external_coinc"].items()
                                    if key != "combined_skymap"}  # fmt: skip


OTHER_SCHEMA = fastavro.parse_schema(
    {"name": "Alert", "namespace": "ztf.alert", "type": "record", "fields": [{"name": "objectId", "type": "string"}]}
)


@pytest.mark.parametrize(
    "payload, reason",
    [
        (lambda: avro_notice({"objectId": "ZTF21aaa"}, OTHER_SCHEMA), "schema 'ztf.alert.Alert', not LVK's"),
        (lambda: avro_notice(sample())[:-40], "not a readable Avro container"),
        (lambda: b"Obj\x01" + bytes(100), "not a readable Avro container"),
        (lambda: avro_notice(sample(), records=2), "holds one igwn.alerts.Alert record, this one 2"),
        (lambda: avro_notice(sample(), records=0), "holds one igwn.alerts.Alert record, this one 0"),
        (lambda: avro_notice(sample() | {"superevent_id": "../../etc"}), "superevent_id"),
    ],
    ids=["another schema", "truncated", "a bad header", "two records", "no record", "a bad id"],
)
def test_bad_avro_notices_say_why(payload, reason):
    with pytest.raises(BadNotice, match=reason.replace("(", r"\(").replace(".", r"\.")):
        parse_notice(payload())


def test_process_alert_takes_an_avro_notice_and_refuses_a_broken_one(observatory):
    _, alert_daemon = observatory
    _, stub = alert_daemon()
    submit(stub, avro_notice(sample()), "avro")
    status = done(stub, "avro")
    assert status.state == pb.WORK_ORDER_STATE_DONE, status.message
    assert status.message.startswith("drill PRELIMINARY MS181101ab") and "targets accepted" in status.message
    with pytest.raises(grpc.RpcError) as refused:
        submit(stub, avro_notice(sample())[:-40], "broken")
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert refused.value.details().startswith("process_alert.payload: not a readable Avro container")
    # The same notice later as JSON (GCN's copy of what Hopskotch carried) is the same notice.
    submit(stub, "MS181101ab-preliminary.json", "json")
    assert "duplicate notice, already handled by avro" in done(stub, "json").message
