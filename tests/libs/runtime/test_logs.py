"""JSON logs: one object per line, carrying the trace and span ids of the span that was current."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from parley_runtime.logs import JsonFormatter
from parley_runtime.telemetry import Telemetry


@pytest.fixture
def captured() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    """A logger writing through the JSON formatter into a buffer."""
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.setFormatter(JsonFormatter("identity"))
    logger = logging.getLogger("parley.tests.logs")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    yield logger, buffer
    logger.removeHandler(handler)


def _lines(buffer: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in buffer.getvalue().splitlines()]


def test_one_json_object_per_line_with_trace_ids(
    captured: tuple[logging.Logger, io.StringIO], telemetry: Telemetry
) -> None:
    logger, buffer = captured
    with telemetry.tracer("tests").start_as_current_span("work") as span:
        logger.info("first line\nsecond line", extra={"user": "username:ann@birdy", "devices": 2})
        try:
            raise ValueError("boom")
        except ValueError:
            logger.exception("failed")
    logger.warning("outside")

    inside, failed, outside = _lines(buffer)
    context = span.get_span_context()
    assert inside["trace_id"] == format(context.trace_id, "032x")
    assert inside["span_id"] == format(context.span_id, "016x")
    assert failed["trace_id"] == inside["trace_id"]
    assert (inside["msg"], inside["level"], inside["service"], inside["logger"]) == (
        "first line\nsecond line",
        "INFO",
        "identity",
        "parley.tests.logs",
    )
    assert (inside["user"], inside["devices"]) == ("username:ann@birdy", 2)
    assert "ValueError: boom" in str(failed["exc"])
    assert str(inside["ts"]).endswith("Z")
    assert "trace_id" not in outside
    assert "span_id" not in outside
    assert outside["level"] == "WARNING"


def test_values_json_cannot_encode_are_written_as_text(captured: tuple[logging.Logger, io.StringIO]) -> None:
    logger, buffer = captured
    logger.info("odd", extra={"payload": b"\x00\xff", "when": object()})
    (line,) = _lines(buffer)
    assert line["payload"] == str(b"\x00\xff")
    assert str(line["when"]).startswith("<object object")
