"""Prometheus metrics: service states read from the supervisor at every scrape."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

from daemon.supervisor import ServiceState

UP_STATES = ("ready", "degraded")


class ServiceCollector(Collector):
    def __init__(self, states: Callable[[], Mapping[str, ServiceState]]) -> None:
        self._states = states

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily(
            "rapport_service_up", "1 when the service serves", labels=["service"]
        )
        state = GaugeMetricFamily(
            "rapport_service_state", "The service's current state", labels=["service", "state"]
        )
        restarts = CounterMetricFamily(
            "rapport_service_restarts", "Restarts after a failure", labels=["service"]
        )
        for name, s in sorted(self._states().items()):
            up.add_metric([name], 1.0 if s.state in UP_STATES else 0.0)
            state.add_metric([name, s.state], 1.0)
            restarts.add_metric([name], float(s.restarts))
        yield up
        yield state
        yield restarts


class Metrics:
    """The daemon's own registry (never the global one, so tests can make several)."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self, states: Callable[[], Mapping[str, ServiceState]]) -> None:
        self.registry = CollectorRegistry()
        self.registry.register(ServiceCollector(states))

    def render(self) -> bytes:
        return generate_latest(self.registry)
