"""Request ids in log lines and on events (novalog.request_ids, novalog.publish)."""

from __future__ import annotations

import io
import logging
import re
from pathlib import Path

from novalog import request_ids
from novalog.publish import Publisher
from novalog.request_ids import RequestIds
from tests.fakes import InMemorySink, publisher

GLOBAL = "req-0b0e2c9c-5a4f-4f3b-9c61-1d2f3e4a5b6c"


def _line(ids: RequestIds | None) -> str:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(logging.Formatter(request_ids.LOG_FORMAT, request_ids.DATE_FORMAT))
    handler.addFilter(request_ids.RequestIdFilter())
    logger = logging.getLogger("consumers.compute.manager")
    logger.addHandler(handler)
    try:
        with request_ids.bound(ids):
            logger.warning("Claim successful on node cmp1")
    finally:
        logger.removeHandler(handler)
    return out.getvalue().strip()


def test_a_line_reads_time_level_module_request_ids_message_then_source() -> None:
    line = _line(RequestIds("req-local", GLOBAL))
    assert re.fullmatch(
        r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} \d+ WARNING consumers\.compute\.manager "
        rf"\[{GLOBAL} req-local\] Claim successful on node cmp1 \(test_request_ids\.py:\d+\)",
        line), line
    assert "[- -] Claim" in _line(None)  # outside any request: oslo's placeholders
    assert "[- req-local] Claim" in _line(RequestIds("req-local"))


def test_only_a_well_formed_caller_id_is_honoured() -> None:
    assert request_ids.valid_request_id(GLOBAL) == GLOBAL
    for bad in (None, "", "req-1", "0b0e2c9c-5a4f-4f3b-9c61-1d2f3e4a5b6c", GLOBAL + "x",
                "req-zzzzzzzz-5a4f-4f3b-9c61-1d2f3e4a5b6c", GLOBAL + "\nforged line"):
        assert request_ids.valid_request_id(bad) is None, bad
    assert re.fullmatch(request_ids.REQUEST_ID, request_ids.new_request_id())


def test_events_carry_the_callers_global_id_from_cause_to_effect() -> None:
    sink = InMemorySink()
    api: Publisher = publisher(sink, "api")
    with request_ids.bound(RequestIds("req-local", GLOBAL)):
        asked = api.emit("t", "InstanceRebootRequested", "i", {"type": "SOFT"},
                         correlation_id=request_ids.request_id())
    assert (asked.correlation_id, asked.global_request_id) == ("req-local", GLOBAL)
    effect = publisher(sink, "compute").emit("t", "InstanceRebooted", "i", {
        "host": "cmp1", "hard": False, "power_state": 1}, cause=asked)
    assert (effect.correlation_id, effect.global_request_id) == ("req-local", GLOBAL)
    alone = api.emit("t", "InstanceRebootRequested", "i", {"type": "SOFT"},
                     correlation_id=request_ids.request_id())
    assert alone.global_request_id is None and alone.correlation_id != "req-local"


def test_one_request_is_found_in_every_roles_log_in_time_order(tmp_path: Path) -> None:
    (tmp_path / "api.log").write_text(
        "2026-12-04 10:00:00.100 1 INFO novalog.api.requestlog [- req-a] POST\n"
        "2026-12-04 10:00:00.200 1 INFO novalog.api.requestlog [- req-b] GET\n")
    (tmp_path / "compute-cmp1.log").write_text(
        "2026-12-04 10:00:00.150 2 INFO consumers.compute.manager [- req-a] Claim\n")
    (tmp_path / "notes.txt").write_text("req-a, not a log\n")
    assert request_ids.lines_of(tmp_path, "req-a") == [
        ("api", "2026-12-04 10:00:00.100 1 INFO novalog.api.requestlog [- req-a] POST"),
        ("compute-cmp1",
         "2026-12-04 10:00:00.150 2 INFO consumers.compute.manager [- req-a] Claim")]
