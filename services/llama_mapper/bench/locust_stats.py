"""Locust's output read back: the stats CSV, per-arm percentiles from its histograms, table and plot."""

# Locust writes one stats row per (type, name); the locustfile puts the router arm in the name
# (`map [treatment]`). Percentiles cannot be averaged across rows, so the per-arm figures merge
# the rows' response-time histograms from Locust's `--json-file` output and take the percentile
# the way Locust does (`StatsEntry.get_response_time_percentile`): the table's arm rows and
# Locust's own rows agree to its rounding.

from __future__ import annotations

import csv
import json
import math
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

from llama_mapper.bench.traffic import split_arm
from llama_mapper.platform.terminal import format_table

AGGREGATED = "Aggregated"
STATS_SUFFIX = "_stats.csv"
HISTORY_SUFFIX = "_stats_history.csv"


@dataclass(frozen=True)
class Row:
    """One line of the result table: a Locust stats row, an arm, or the aggregate."""

    type: str
    name: str
    arm: str | None
    requests: int
    failures: int
    rps: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float

    @property
    def error_rate(self) -> float:
        return self.failures / self.requests if self.requests else 0.0


def _number(text: str) -> float:
    """Locust writes "N/A" for a percentile of no requests."""
    try:
        return float(text)
    except ValueError:
        return math.nan


def read_stats_csv(path: Path) -> list[Row]:
    """The rows of `<prefix>_stats.csv`, the aggregate last (Locust's order)."""
    rows = []
    with open(path, newline="", encoding="utf-8") as fh:
        for record in csv.DictReader(fh):
            name = record["Name"]
            rows.append(
                Row(
                    type=record["Type"],
                    name=name,
                    arm=None if name == AGGREGATED else split_arm(name)[1],
                    requests=int(record["Request Count"]),
                    failures=int(record["Failure Count"]),
                    rps=_number(record["Requests/s"]),
                    p50_ms=_number(record["50%"]),
                    p95_ms=_number(record["95%"]),
                    p99_ms=_number(record["99%"]),
                    max_ms=_number(record["Max Response Time"]),
                )
            )
    if not rows or rows[-1].name != AGGREGATED:
        raise ValueError(f"{path} has no {AGGREGATED} row: did the Locust run finish?")
    return rows


def aggregate(rows: Iterable[Row]) -> Row:
    return next(r for r in rows if r.name == AGGREGATED)


def percentile(histogram: Mapping[float, int], percent: float) -> float:
    """Locust's percentile of a {rounded ms: count} histogram (nan when it is empty)."""
    total = sum(histogram.values())
    if not total:
        return math.nan
    wanted = int(total * percent)
    processed = 0
    for value in sorted(histogram, reverse=True):
        processed += histogram[value]
        if total - processed <= wanted:
            return float(value)
    return float(min(histogram))


def arm_rows(stats_json: Path, csv_rows: list[Row]) -> list[Row]:
    """One row per arm over every call it answered: counts and rps summed from the CSV rows (as
    Locust's own table), percentiles from the merged histograms."""
    return _grouped_rows(stats_json, csv_rows, "arm", lambda name: split_arm(name)[1])


def route_rows(stats_json: Path, csv_rows: list[Row]) -> list[Row]:
    """One row per route (`map`, `batch`, `analyze` over HTTP; `Map`, `MapBatch` over gRPC) over
    every arm that answered it, merged the way arm_rows merges arms."""
    return _grouped_rows(
        stats_json,
        csv_rows,
        "route",
        lambda name: None if name == AGGREGATED else split_arm(name)[0],
    )


def _grouped_rows(
    stats_json: Path, csv_rows: list[Row], kind: str, group_of: Callable[[str], str | None]
) -> list[Row]:
    """Rows of `kind`, one per group the stats names fall in (a name in no group: None)."""
    entries = json.loads(stats_json.read_text(encoding="utf-8"))
    histograms: dict[str, Counter[float]] = {}
    counts: Counter[str] = Counter()
    failures: Counter[str] = Counter()
    maxima: dict[str, float] = {}
    for entry in entries:
        group = group_of(entry["name"])
        if group is None:
            continue
        histogram = histograms.setdefault(group, Counter())
        for value, count in entry["response_times"].items():
            histogram[float(value)] += count
        maxima[group] = max(maxima.get(group, 0.0), entry["max_response_time"] or 0.0)
    rps: Counter[str] = Counter()
    for row in csv_rows:
        group = group_of(row.name)
        if group is not None:
            counts[group] += row.requests
            failures[group] += row.failures
            rps[group] += 0.0 if math.isnan(row.rps) else row.rps
    return [
        Row(
            type=kind,
            name=group,
            arm=group if kind == "arm" else None,
            requests=counts[group],
            failures=failures[group],
            rps=rps[group],
            p50_ms=percentile(histograms[group], 0.50),
            p95_ms=percentile(histograms[group], 0.95),
            p99_ms=percentile(histograms[group], 0.99),
            max_ms=maxima[group],
        )
        for group in sorted(histograms)
    ]


def _ms(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.0f}"


def format_rows(rows: Iterable[Row]) -> str:
    return format_table(
        ("type", "name", "requests", "errors", "err %", "rps", "p50 ms", "p95 ms", "p99 ms"),
        [
            (
                r.type,
                r.name,
                r.requests,
                r.failures,
                f"{100 * r.error_rate:.2f}",
                f"{r.rps:.1f}",
                _ms(r.p50_ms),
                _ms(r.p95_ms),
                _ms(r.p99_ms),
            )
            for r in rows
        ],
    )


def row_dict(row: Row) -> dict[str, object]:
    data = asdict(row)
    data["error_rate"] = row.error_rate
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in data.items()}


# --- latency over time ---------------------------------------------------------------------------


@dataclass(frozen=True)
class HistoryPoint:
    t_s: float
    name: str
    users: int
    rps: float
    p50_ms: float
    p95_ms: float
    p99_ms: float


def read_history_csv(path: Path) -> list[HistoryPoint]:
    """`<prefix>_stats_history.csv` rows with requests so far, time relative to the first row."""
    points = []
    start = None
    with open(path, newline="", encoding="utf-8") as fh:
        for record in csv.DictReader(fh):
            stamp = float(record["Timestamp"])
            start = stamp if start is None else start
            if int(record["Total Request Count"]) == 0:
                continue
            points.append(
                HistoryPoint(
                    t_s=stamp - start,
                    name=record["Name"],
                    users=int(record["User Count"]),
                    rps=_number(record["Requests/s"]),
                    p50_ms=_number(record["50%"]),
                    p95_ms=_number(record["95%"]),
                    p99_ms=_number(record["99%"]),
                )
            )
    return points


def plot_latency(
    series: Mapping[str, list[HistoryPoint]], path: Path, *, title: str, target_p95_ms: float | None
) -> Path:
    """Latency (Locust's rolling p50/p95/p99, aggregate) over time per run, users and rps below."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 7), sharex=True, height_ratios=(2, 1))
    for index, (label, points) in enumerate(series.items()):
        agg = [p for p in points if p.name == AGGREGATED]
        color = f"C{index}"
        t = [p.t_s for p in agg]
        prefix = f"{label} " if len(series) > 1 else ""
        top.plot(t, [p.p95_ms for p in agg], color=color, label=f"{prefix}p95")
        top.plot(t, [p.p50_ms for p in agg], color=color, linestyle=":", label=f"{prefix}p50")
        if len(series) == 1:
            top.plot(t, [p.p99_ms for p in agg], color="C3", alpha=0.5, label="p99")
            by_name: dict[str, list[HistoryPoint]] = {}
            for p in points:
                if p.name != AGGREGATED and split_arm(p.name)[0] in ("map", "Map"):
                    by_name.setdefault(p.name, []).append(p)
            for name, named in sorted(by_name.items()):
                top.plot(
                    [p.t_s for p in named],
                    [p.p95_ms for p in named],
                    linestyle="--",
                    linewidth=0.8,
                    label=f"{name} p95",
                )
        bottom.plot(t, [p.rps for p in agg], color=color, label=f"{prefix}requests/s")
        if index == 0:
            users = bottom.twinx()
            users.step(t, [p.users for p in agg], color="grey", where="post", label="users")
            users.set_ylabel("users")
    if target_p95_ms is not None:
        top.axhline(
            target_p95_ms, color="red", linewidth=1, label=f"p95 target {target_p95_ms:g} ms"
        )
    top.set_ylabel("latency (ms, rolling window)")
    top.set_title(title)
    top.legend(fontsize="small", ncol=2)
    top.grid(alpha=0.3)
    bottom.set_ylabel("requests/s")
    bottom.set_xlabel("seconds since start")
    bottom.legend(fontsize="small", loc="upper left")
    bottom.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
