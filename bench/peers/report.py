"""Medians, the table (Markdown, so the README can quote it), ratios and the JSON report."""

from __future__ import annotations

import statistics
from typing import Any

from bench.peers.systems import Spec

BASELINE = "taskyard-sqlite-c50"
_CPU_PARTS = ("client", "broker", "workers", "redis", "postgres")


def medians(samples: list[dict[str, float]]) -> dict[str, dict[str, Any]]:
    return {
        key: {
            "median": statistics.median(s[key] for s in samples),
            "runs": [round(s[key], 3) for s in samples],
        }
        for key in samples[0]
    }


def _m(row: dict[str, dict[str, Any]], key: str) -> float:
    return float(row[key]["median"])


def _cpu(row: dict[str, dict[str, Any]]) -> str:
    parts = [
        f"{name} {_m(row, f'cpu_{name}_us'):.0f}"
        for name in _CPU_PARTS
        if _m(row, f"cpu_{name}_us") >= 0.5
    ]
    return f"{_m(row, 'cpu_total_us'):.0f} µs ({' · '.join(parts)})"


def table(
    specs: list[Spec], rows: dict[str, dict[str, dict[str, Any]]], durable: dict[str, str]
) -> str:
    lines = [
        "| system | durable | process/s | CPU per task, all processes | "
        "submit→start p50 / p99 | submit call p50 | end to end/s |",
        "|---|---|---|---|---|---|---|",
    ]
    for spec in specs:
        row = rows[spec.key]
        lines.append(
            f"| {spec.label} | {durable[spec.key]} | {_m(row, 'process_per_s'):,.0f} | "
            f"{_cpu(row)} | {_m(row, 'start_p50_ms'):.2f} / {_m(row, 'start_p99_ms'):.2f} ms | "
            f"{_m(row, 'submit_call_p50_ms'):.2f} ms | {_m(row, 'e2e_per_s'):,.0f} |"
        )
    return "\n".join(lines)


def ratios(specs: list[Spec], rows: dict[str, dict[str, dict[str, Any]]]) -> list[str]:
    """Each system against Taskyard on SQLite at concurrency 50 (2.00x = twice its figure)."""
    if BASELINE not in rows:
        return []
    base = rows[BASELINE]

    def ratio(row: dict[str, dict[str, Any]], key: str) -> str:
        return f"{_m(row, key) / _m(base, key):.2f}x"

    return [
        f"{spec.label}: process rate {ratio(rows[spec.key], 'process_per_s')}, "
        f"CPU per task {ratio(rows[spec.key], 'cpu_total_us')}, "
        f"submit→start p50 {ratio(rows[spec.key], 'start_p50_ms')}, "
        f"submit call p50 {ratio(rows[spec.key], 'submit_call_p50_ms')} "
        "of Taskyard's (SQLite, concurrency 50)"
        for spec in specs
        if spec.key != BASELINE
    ]
