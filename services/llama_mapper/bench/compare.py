"""The same Locust load against several endpoints in turn: a table of ratios and one latency plot."""

# The stack (the router) is the reference; each other endpoint (the transformers + PEFT baseline,
# the engine deployment directly) gets the identical load: same payloads, users, shape and
# duration, one after the other so they never share the CPU. Ratios are endpoint / router for
# throughput and latency, so "router rps / baseline rps" reads directly as the speed-up.

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path

from llama_mapper.bench import locust_stats as report
from llama_mapper.bench.locust_run import (
    PREFIX,
    BenchConfig,
    check_reachable,
    new_report_dir,
    run_locust,
)
from llama_mapper.bench.payloads import write_payloads
from llama_mapper.platform.terminal import format_table


@dataclass(frozen=True)
class Measured:
    label: str
    host: str
    aggregate: report.Row
    history: list[report.HistoryPoint]
    report_dir: Path


def ratio_rows(measured: list[Measured]) -> list[tuple[str, ...]]:
    """Per endpoint: its figures and reference/endpoint ratios (rps: reference over endpoint)."""
    reference = measured[0].aggregate

    def ratio(a: float, b: float) -> str:
        return "-" if not b or math.isnan(a) or math.isnan(b) else f"{a / b:.2f}x"

    return [
        (
            m.label,
            f"{m.aggregate.rps:.1f}",
            f"{m.aggregate.p50_ms:.0f}",
            f"{m.aggregate.p95_ms:.0f}",
            f"{m.aggregate.p99_ms:.0f}",
            f"{100 * m.aggregate.error_rate:.2f}",
            ratio(reference.rps, m.aggregate.rps),
            ratio(m.aggregate.p95_ms, reference.p95_ms),
        )
        for m in measured
    ]


COLUMNS = (
    "endpoint",
    "rps",
    "p50 ms",
    "p95 ms",
    "p99 ms",
    "err %",
    "router rps / this",
    "this p95 / router",
)


def compare(config: BenchConfig, endpoints: dict[str, str]) -> tuple[Path, list[Measured]]:
    """Runs `config`'s load against the router (`config.host`) then each endpoint in turn."""
    targets = {"router": config.host, **endpoints}
    for host in targets.values():
        check_reachable(host, None)
    root = new_report_dir(config.report_root)
    payloads = write_payloads(root / "payloads.jsonl")
    measured = []
    for label, host in targets.items():
        directory = root / label
        directory.mkdir()
        run_locust(replace(config, host=host, grpc_host=None), directory, payloads.path)
        rows = report.read_stats_csv(directory / f"{PREFIX}{report.STATS_SUFFIX}")
        history = report.read_history_csv(directory / f"{PREFIX}{report.HISTORY_SUFFIX}")
        measured.append(Measured(label, host, report.aggregate(rows), history, directory))
    report.plot_latency(
        {m.label: m.history for m in measured},
        root / "latency.png",
        title=f"same load ({config.shape}, {config.users} users, tasks {config.tasks})",
        target_p95_ms=None,
    )
    table = format_table(COLUMNS, ratio_rows(measured))
    (root / "compare.txt").write_text(table + "\n", encoding="utf-8")
    return root, measured
