"""Every service's Prometheus endpoint, scraped after a conversation: duration histograms carry bucket boundaries
that fit their unit, and every metric the shipped Grafana dashboard queries is one a service exports."""

from __future__ import annotations

import asyncio
import json
import re
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from support.conversation import Endpoints, converse

from parley_launcher import Stack, balanced_target
from parley_runtime.telemetry import REDIS_SECONDS_BUCKETS, RPC_MILLISECONDS_BUCKETS

ROOT = Path(__file__).resolve().parents[3]
DASHBOARD = ROOT / "k8s" / "components" / "dashboards" / "parley-overview.json"
SERVICES = ("identity", "keydir", "moderation", "notification", "relay-1")
# Families a plain conversation does not produce (no webhook registered, no limit met): the instrument the
# dashboard means must then be declared in a service's code under its OpenTelemetry name.
EVENT_DRIVEN = {
    "keydir_one_time_prekeys_withheld": "keydir.one_time_prekeys.withheld",
    "keydir_fetches_refused": "keydir.fetches.refused",
    "relay_stanzas_refused": "relay.stanzas.refused",
    "notification_queue_depth": "notification.queue.depth",
    "notification_delivery_latency_milliseconds": "notification.delivery.latency",
    "notification_delivered": "notification.delivered",
    "notification_retries": "notification.retries",
    "notification_dead_letters": "notification.dead_letters",
}
_SAMPLE_SUFFIXES = ("_bucket", "_count", "_sum", "_total")


def _scrape(port: int) -> dict[str, list[tuple[str, dict[str, str], float]]]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    return {
        family.name: [(sample.name, sample.labels, sample.value) for sample in family.samples]
        for family in text_string_to_metric_families(text)
    }


def _boundaries(samples: list[tuple[str, dict[str, str], float]]) -> list[float]:
    """The bucket boundaries of a histogram family's first series."""
    first_series = None
    bounds: list[float] = []
    for name, labels, _ in samples:
        if not name.endswith("_bucket"):
            continue
        series = tuple(sorted((key, value) for key, value in labels.items() if key != "le"))
        first_series = first_series or series
        if series == first_series:
            bounds.append(float(labels["le"]))
    return bounds


def _family(metric: str) -> str:
    for suffix in _SAMPLE_SUFFIXES:
        if metric.endswith(suffix):
            return metric.removesuffix(suffix)
    return metric


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_every_service_exports_fitting_histograms_and_what_the_dashboard_queries(tmp_path: Path) -> None:
    stack = Stack(tmp_path)
    try:
        processes = {process.name: process for process in stack.up(relays=1, free_ports=True)}
        endpoints = Endpoints(processes["identity"].target, processes["keydir"].target, stack.admin_token)
        relays = balanced_target(list(processes.values()))
        tally = asyncio.run(converse(endpoints, ana_relay=relays, ben_relay=relays, messages=5))
        assert tally.ben.read == tally.sent_to_ben
        assert tally.ana.read == tally.sent_to_ana
        scraped = {name: _scrape(processes[name].metrics_port) for name in SERVICES}
    finally:
        stack.down()

    for name, families in scraped.items():
        # Regression: Redis commands were recorded in seconds into the SDK's default buckets (0, 5, 10, ... 10000),
        # so every command fell into one bucket and no percentile could be read.
        redis = families["db_client_operation_duration_seconds"]
        assert _boundaries(redis) == [*REDIS_SECONDS_BUCKETS, float("inf")], name
        assert sum(value for sample, _, value in redis if sample.endswith("_count")) > 0, name
        assert _boundaries(families["rpc_server_duration_milliseconds"]) == [*RPC_MILLISECONDS_BUCKETS, float("inf")]
    assert sum(v for n, _, v in scraped["relay-1"]["relay_stanzas_accepted"] if n.endswith("_total")) >= 10

    exported = {family for families in scraped.values() for family in families}
    dashboard = json.loads(DASHBOARD.read_text())
    queries = [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]
    queried = {_family(metric) for query in queries for metric in re.findall(r"([a-z_]+)\{", query)}
    assert len(queried) >= 15
    sources = "\n".join(path.read_text() for path in (ROOT / "services").rglob("*.py"))
    missing = []
    for family in sorted(queried - exported):
        instrument = EVENT_DRIVEN.get(family)
        if instrument is None or f'"{instrument}"' not in sources:
            missing.append(family)
    assert missing == [], f"the dashboard queries metrics no service exports: {missing}"
