"""The verdict record the collector writes and the alarm handler reads (toolkit.verdictrecord)."""

from __future__ import annotations

import json

import pytest

from toolkit.verdictrecord import HISTORY, VerdictRecord, record_key, sparkline


def _record(**kw: object) -> VerdictRecord:
    base: dict[str, object] = dict(
        environment="prod", cluster="c1", service="emails", verdict="degraded", at=1000.0,
        interval=60.0, reasons=("worker w1 hung",), stuck_tasks=("arn:aws:ecs:r:1:task/c1/a",),
        backlog=(1, 2, 3),
    )
    base.update(kw)
    return VerdictRecord(**base)  # type: ignore[arg-type]


def test_item_round_trips_and_expires_after_the_retention() -> None:
    rec = _record()
    item = rec.to_item()
    assert item["pk"] == {"S": "verdict#c1/emails"} == {"S": record_key("c1", "emails")}
    assert int(item["expires_at"]["N"]) == 1000 + 3600
    assert VerdictRecord.from_item(item) == rec


def test_backlog_history_keeps_the_newest_fifteen() -> None:
    rec = _record().with_backlog(list(range(20)), 99)
    assert len(rec.backlog) == HISTORY
    assert rec.backlog[-1] == 99 and rec.backlog[0] == 6
    assert _record().with_backlog([4, 5], None).backlog == (4, 5)


def test_stale_after_three_cycles_either_way() -> None:
    rec = _record()
    assert not rec.stale(1000.0 + 180.0)
    assert rec.stale(1000.0 + 181.0)
    assert rec.stale(1000.0 - 181.0)


@pytest.mark.parametrize(
    "data",
    [
        None,
        [],
        {"version": 1},
        {**_record().to_dict(), "version": 2},
        {**_record().to_dict(), "verdict": ""},
        {**_record().to_dict(), "stuck_tasks": "arn"},
        {**_record().to_dict(), "stuck_tasks": [1]},
        {**_record().to_dict(), "backlog": [-1]},
        {**_record().to_dict(), "backlog": [True]},
        {**_record().to_dict(), "at": "1000"},
        {**_record().to_dict(), "at": float("nan")},
    ],
)
def test_malformed_records_raise_value_error(data: object) -> None:
    with pytest.raises(ValueError, match="verdict record"):
        VerdictRecord.from_item({"pk": {"S": "verdict#c1/emails"},
                                 "data": {"S": json.dumps(data)}})


def test_missing_or_non_json_data_raises_value_error() -> None:
    with pytest.raises(ValueError, match="no data"):
        VerdictRecord.from_item({"pk": {"S": "x"}})
    with pytest.raises(ValueError, match="not JSON"):
        VerdictRecord.from_item({"data": {"S": "{"}})


def test_sparkline_scales_between_the_lowest_and_highest() -> None:
    assert sparkline([]) == ""
    assert sparkline([3, 3]) == "▁▁"
    assert sparkline([0, 7]) == "▁█"
    assert sparkline([0, 1, 2, 3, 4, 5, 6, 7]) == "▁▂▃▄▅▆▇█"
