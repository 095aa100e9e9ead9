"""Broker telemetry: OpenTelemetry metrics and dispatch spans (see docs/observability.md).

`setup` builds the exporters the settings ask for; `metrics.BrokerMetrics`
implements the engine's `MetricsSink` (broker/engine/metrics.py), through
which the committer, the reaper's ops and the schedule ops report; `tracing`
observes the dispatcher's deliveries. The engine never imports this package:
it is handed a sink at construction, `NoMetrics` when telemetry is off.
"""
