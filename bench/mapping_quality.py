"""Mapping quality as served, several recipes in one run: the rules, and for each adapter the hybrid
with and without retrieved candidate labels, through the evaluation's own runner.

    .venv/bin/python bench/mapping_quality.py --adapter v1=DIR [--adapter v2=DIR ...] \
        --data data/ [--robustness] [--out var/bench/mapping_quality.json]

Every subject is the HybridSubject the evaluation service runs (HybridMapper.plan_findings, the
model under the fitted calibration and the review threshold, fallback), on one vLLM engine that
holds every adapter, so the rows differ only in the recipe. The golden set is the packaged one;
`--data` names a built dataset for the held-out split (mapper-heldout.jsonl) and the calibration
split (mapper-calibration.jsonl, else mapper-eval.jsonl). Prints a Markdown table; writes each
subject's figures to `--out`.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import time
from pathlib import Path
from typing import Any


def _figures(report: dict[str, Any]) -> dict[str, Any]:
    quality = report["quality"]
    calibration = report.get("calibration") or {}
    held = {h["name"]: h["metrics"]["exact_set_accuracy"] for h in report.get("held_out", [])}
    robustness = {
        p["name"]: p["exact_set_accuracy"]
        for p in (report.get("robustness") or {}).get("perturbations", [])
    }
    return {
        "accuracy": quality["exact_set_accuracy"],
        "macro_f1": quality["macro_f1"],
        "schema_valid": quality["schema_valid_rate"],
        "fallback": quality["fallback_rate"],
        "ece_before": calibration.get("ece_before"),
        "ece_after": calibration.get("ece_after"),
        "brier_after": calibration.get("brier_after"),
        "calibrator": (calibration.get("calibrator") or {}).get("kind"),
        "threshold": calibration.get("threshold"),
        "calibration_cases": calibration.get("calibration_case_count"),
        "model_answers": calibration.get("scored_case_count"),
        "held_out": held,
        "robustness": robustness,
        "cases_per_second": report["latency"]["cases_per_second"],
    }


def _fmt(value: Any, pct: bool = True) -> str:
    if value is None:
        return "-"
    return f"{100 * value:.1f} %" if pct else f"{value:.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--adapter", action="append", default=[], help="NAME=DIR (repeatable)")
    parser.add_argument("--data", type=Path, required=True, help="a built dataset directory")
    parser.add_argument("--robustness", action="store_true", help="run the robustness suite too")
    parser.add_argument("--no-rules", action="store_true", help="skip the rules-only row")
    parser.add_argument(
        "--recipe", action="append", default=[], help="only these recipes (repeatable)"
    )
    parser.add_argument(
        "--lexical",
        type=float,
        action="append",
        default=[],
        help="also the recipe answering lexical singles at this coverage (repeatable)",
    )
    parser.add_argument("--out", type=Path, default=Path("var/bench/mapping_quality.json"))
    parser.add_argument(
        "--cases", type=Path, help="also write each subject's golden cases (DIR/<subject>.jsonl)"
    )
    args = parser.parse_args()

    from llama_mapper.domain.rules import RulesMapper
    from llama_mapper.domain.taxonomy import default_taxonomy
    from llama_mapper.evaluation.evalset import default_eval_set_uri, load_eval_set
    from llama_mapper.evaluation.run import EvaluationRunner, RunInputs, RunOptions
    from llama_mapper.evaluation.subjects import HybridSubject
    from llama_mapper.inference.base_model import prepare_base_model
    from llama_mapper.inference.hybrid import HybridMapper, ModelArm

    taxonomy = default_taxonomy()
    golden = load_eval_set(default_eval_set_uri())
    held_out = load_eval_set(str(args.data / "mapper-heldout.jsonl"))
    calibration_file = args.data / "mapper-calibration.jsonl"
    if not calibration_file.exists():
        calibration_file = args.data / "mapper-eval.jsonl"
    calibration = load_eval_set(str(calibration_file))
    options = RunOptions(robustness=args.robustness, show_progress=False)
    runner = EvaluationRunner(taxonomy)
    rows: list[tuple[str, dict[str, Any]]] = []
    started = time.perf_counter()

    def run(name: str, subject: Any, model: Any) -> None:
        t0 = time.perf_counter()
        inputs = RunInputs(
            subject=subject,
            eval_set=golden,
            held_out_set=held_out,
            calibration_set=calibration if model is not None else None,
            calibration_model=model,
        )
        result = runner.run(inputs, options)
        figures = _figures(result.report)
        if args.cases:
            args.cases.mkdir(parents=True, exist_ok=True)
            slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
            (args.cases / f"{slug}.jsonl").write_text(
                "".join(json.dumps(r.as_json()) + "\n" for r in result.records), encoding="utf-8"
            )
        figures["seconds"] = round(time.perf_counter() - t0, 1)
        rows.append((name, figures))
        print(f"{name}: {json.dumps(figures)}", flush=True)

    if not args.no_rules:
        run("rules", HybridSubject(HybridMapper(RulesMapper(taxonomy))), None)
    if args.adapter:
        from llama_mapper.inference.vllm_engine import AdapterRef, VllmEngine
        from llama_mapper.platform.settings.serving import served_engine_config

        base = prepare_base_model()
        engine = VllmEngine(served_engine_config(str(base.path)))
        try:
            for spec in args.adapter:
                name, _, directory = spec.partition("=")
                engine.add_adapter(AdapterRef(name, Path(directory), None), key=name)
                model = engine.model(name)
                recipes = {
                    "all labels": {"retrieval": False},
                    "retrieved candidates": {"retrieval": True, "lexical_coverage": None},
                    "retrieved candidates, no unknown": {
                        "retrieval": True,
                        "offer_unknown": False,
                        "lexical_coverage": None,
                    },
                    # The served default: candidates, and lexical singles at LEXICAL_COVERAGE.
                    "served default (candidates + lexical singles)": {},
                    **{
                        f"retrieved candidates, lexical singles @{c:g}": {
                            "retrieval": True,
                            "lexical_coverage": c,
                        }
                        for c in args.lexical
                    },
                }
                for recipe, kwargs in recipes.items():
                    if args.recipe and recipe not in args.recipe:
                        continue
                    hybrid = HybridMapper(RulesMapper(taxonomy), **kwargs)
                    subject = HybridSubject(hybrid, model, arm=ModelArm(adapter=name))
                    run(f"{name} hybrid, {recipe}", subject, model)
        finally:
            engine.shutdown()

    print()
    print(f"wall {time.perf_counter() - started:.0f} s, load average {os.getloadavg()[0]:.1f}")
    print()
    print(
        "| subject | golden acc. | macro-F1 | fallback | ECE before | ECE after (calibrator) "
        "| threshold | held-out detector | held-out pair | label typos | empty label |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, f in rows:
        held, rob = f["held_out"], f["robustness"]
        print(
            f"| {name} | {_fmt(f['accuracy'])} | {_fmt(f['macro_f1'], False)} "
            f"| {_fmt(f['fallback'])} | {_fmt(f['ece_before'], False)} "
            f"| {_fmt(f['ece_after'], False)} ({f['calibrator'] or '-'}) "
            f"| {_fmt(f['threshold'], False)} | {_fmt(held.get('heldout_detector'))} "
            f"| {_fmt(held.get('heldout_pair'))} | {_fmt(rob.get('label_typos'))} "
            f"| {_fmt(rob.get('empty_output'))} |"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(dict(rows), indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
