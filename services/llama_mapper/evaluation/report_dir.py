"""The report directory of a run: report.json, cases.jsonl, summary.md and PNG plots."""

# Readable without the service: the JSON follows the EvaluationReport proto's field names, the
# Markdown summary holds the headline figures, the plots are rendered with matplotlib's Agg backend.

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

REPORT_JSON = "report.json"
CASES_JSONL = "cases.jsonl"
SUMMARY_MD = "summary.md"
PLOTS = ("reliability.png", "confusion.png", "per_label_f1.png")


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def load_report(report_dir: Path) -> dict[str, Any]:
    return json.loads((report_dir / REPORT_JSON).read_text(encoding="utf-8"))


def load_cases(report_dir: Path) -> list[dict[str, Any]]:
    with open(report_dir / CASES_JSONL, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def write_report(report_dir: Path, report: Mapping[str, Any], records: Sequence[Any]) -> None:
    report_dir.mkdir(parents=True, exist_ok=True)
    _atomic_write(
        report_dir / CASES_JSONL, "".join(json.dumps(r.as_json()) + "\n" for r in records)
    )
    plot_reliability(report.get("calibration") or {}, report_dir / PLOTS[0])
    plot_confusion(report["quality"]["confusion"], report_dir / PLOTS[1])
    plot_per_label_f1(report["quality"]["per_label"], report_dir / PLOTS[2])
    _atomic_write(report_dir / SUMMARY_MD, summary_markdown(report))
    # report.json last: its presence says the directory is complete.
    _atomic_write(report_dir / REPORT_JSON, json.dumps(report, indent=2, sort_keys=True) + "\n")


def _pct(x: float) -> str:
    return f"{100 * x:.1f} %"


def summary_markdown(report: Mapping[str, Any]) -> str:
    q = report["quality"]
    lat = report["latency"]
    lines = [
        f"# Evaluation: {report.get('subject', '?')} {report.get('model', {}).get('name', '')}".rstrip(),
        "",
        f"- eval set: `{report['eval_set_uri']}` (sha256 `{report['eval_set_sha256'][:16]}`), "
        f"taxonomy v{report['taxonomy_version']}"
        + (" — truncated run" if report.get("truncated") else ""),
        f"- started {report['started_at']}, finished {report.get('finished_at', '?')}",
        "",
        "| metric | value |",
        "|---|---|",
        f"| cases | {q['case_count']} |",
        f"| exact-set accuracy | {_pct(q['exact_set_accuracy'])} |",
        f"| macro-F1 | {q['macro_f1']:.3f} |",
        f"| schema-valid rate | {_pct(q['schema_valid_rate'])} |",
        f"| fallback rate | {_pct(q['fallback_rate'])} |",
        f"| latency p50 / p95 / p99 | {lat['p50_ms']:.2f} / {lat['p95_ms']:.2f} / {lat['p99_ms']:.2f} ms |",
        f"| throughput | {lat['cases_per_second']:.1f} cases/s ({lat['hardware_profile']}) |",
    ]
    cal = report.get("calibration") or {}
    if cal:
        lines.append(f"| ECE before | {cal['ece_before']:.4f} |")
        if "temperature" in cal:
            lines.append(
                f"| temperature | {cal['temperature']:.3f} (fitted on {cal['calibration_case_count']} cases) |"
            )
            floor = cal.get("ece_after_noise_floor")
            noise = (
                f" (a perfectly calibrated model with these confidences: {floor['median']:.3f}"
                f" median, {floor['p95']:.3f} at the 95th percentile, on {floor['answers']} answers)"
                if floor
                else ""
            )
            lines.append(f"| ECE after | {cal['ece_after']:.4f}{noise} |")
    if report.get("held_out"):
        lines += [
            "",
            "## Held-out slices",
            "",
            "| slice | cases | accuracy | macro-F1 | schema-valid |",
            "|---|---|---|---|---|",
        ]
        for s in report["held_out"]:
            m = s["metrics"]
            lines.append(
                f"| {s['name']} | {m['case_count']} | {_pct(m['exact_set_accuracy'])} | {m['macro_f1']:.3f} | {_pct(m['schema_valid_rate'])} |"
            )
    rob = report.get("robustness")
    if rob:
        lines += [
            "",
            "## Robustness",
            "",
            "| perturbation | outputs | accuracy | delta vs clean | schema-valid | out of taxonomy |",
            "|---|---|---|---|---|---|",
        ]
        for p in rob["perturbations"]:
            lines.append(
                f"| {p['name']} | {p['case_count']} | {_pct(p['exact_set_accuracy'])} | {100 * p['accuracy_delta']:+.1f} pt "
                f"| {_pct(p['schema_valid_rate'])} | {p['out_of_taxonomy_count']} |"
            )
        lines += [
            "",
            f"Bias: per-category macro-F1 spread {rob['category_f1_spread']:.3f}, "
            f"per-detector spread {rob['detector_f1_spread']:.3f}.",
        ]
    analyst = report.get("analyst")
    if analyst:
        lines += [
            "",
            "## Analyst",
            "",
            f"{analyst['case_count']} cases: schema-valid {_pct(analyst['schema_valid_rate'])}, "
            f"risk-level accuracy {_pct(analyst['risk_level_accuracy'])}, control precision "
            f"{analyst['control_precision']:.3f}, recall {analyst['control_recall']:.3f}, F1 "
            f"{analyst.get('control_f1', 0.0):.3f}; remediation by the model "
            f"{_pct(analyst.get('remediation_model_rate', 0.0))}.",
        ]
    worst = sorted((x for x in q["per_label"] if x["support"]), key=lambda x: x["f1"])[:5]
    if worst:
        lines += ["", "## Weakest labels", "", "| label | F1 | support |", "|---|---|---|"]
        lines += [f"| {x['label']} | {x['f1']:.3f} | {x['support']} |" for x in worst]
    lines += ["", "Plots: " + ", ".join(f"[{p}]({p})" for p in PLOTS), ""]
    return "\n".join(lines)


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_reliability(calibration: Mapping[str, Any], path: Path) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", label="perfect calibration")
    for key, name in (("bins_before", "before"), ("bins_after", "after T")):
        bins = [b for b in calibration.get(key) or () if b["count"]]
        if bins:
            ax.plot(
                [b["mean_confidence"] for b in bins],
                [b["accuracy"] for b in bins],
                marker="o",
                label=name,
            )
    title = f"ECE {calibration.get('ece_before', 0):.3f}"
    if "ece_after" in calibration:
        title += f" -> {calibration['ece_after']:.3f} (T={calibration['temperature']:.2f})"
    ax.set(xlabel="confidence", ylabel="accuracy", xlim=(0, 1), ylim=(0, 1), title=title)
    ax.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_confusion(
    confusion: Sequence[Mapping[str, Any]], path: Path, max_labels: int = 40
) -> None:
    """The labels involved in the most confusions (off-diagonal first), as a heat map."""
    plt = _pyplot()
    weight: dict[str, int] = {}
    for cell in confusion:
        off = cell["expected_label"] != cell["predicted_label"]
        for label in (cell["expected_label"] or "(none)", cell["predicted_label"] or "(none)"):
            weight[label] = weight.get(label, 0) + cell["count"] * (1000 if off else 1)
    labels = sorted(sorted(weight, key=lambda x: -weight[x])[:max_labels])
    index = {label: i for i, label in enumerate(labels)}
    grid = [[0] * len(labels) for _ in labels]
    for cell in confusion:
        e, p = cell["expected_label"] or "(none)", cell["predicted_label"] or "(none)"
        if e in index and p in index:
            grid[index[e]][index[p]] += cell["count"]
    size = max(4.0, 0.25 * len(labels) + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(grid or [[0]], cmap="Blues")
    ax.set_xticks(range(len(labels)), labels, rotation=90, fontsize=6)
    ax.set_yticks(range(len(labels)), labels, fontsize=6)
    ax.set(xlabel="predicted", ylabel="expected", title="confusion between labels")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_per_label_f1(per_label: Sequence[Mapping[str, Any]], path: Path) -> None:
    plt = _pyplot()
    rows = [x for x in per_label if x["support"]] or list(per_label)
    fig, ax = plt.subplots(figsize=(6, max(3.0, 0.18 * len(rows) + 1)))
    ax.barh([x["label"] for x in rows], [x["f1"] for x in rows], color="tab:blue")
    ax.invert_yaxis()
    ax.tick_params(axis="y", labelsize=6)
    ax.set(xlim=(0, 1), xlabel="F1", title="per-label F1")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
