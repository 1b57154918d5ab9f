"""Which events taking-in traces: only those whose producer sampled its trace."""

from __future__ import annotations

import pytest

from parley_notification.intake import _sampled

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN = "00f067aa0ba902b7"


@pytest.mark.parametrize(
    ("traceparent", "sampled"),
    [
        (f"00-{TRACE}-{SPAN}-01", True),
        (f"00-{TRACE}-{SPAN}-03", True),
        (f"00-{TRACE}-{SPAN}-00", False),
        ("", False),
        (f"00-{TRACE}-{SPAN}-zz", False),
        (f"00-{TRACE}-{SPAN}-1", False),
    ],
)
def test_only_a_sampled_parent_gets_a_span(traceparent: str, sampled: bool) -> None:
    assert _sampled(traceparent) is sampled
