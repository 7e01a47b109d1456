"""Evaluation throughput: cases/s through vLLM (offline, tuned CPU config) against transformers
`generate` (label-trie constrained, batches of 16) on the same golden cases, in the same run.

    .venv/bin/python bench/evaluation_throughput.py --cases 64 [--adapter DIR] [--out var/bench/evaluation_throughput.json]

Both engines answer the same MapperQuery list with greedy decoding constrained to the 67 labels;
the script reports wall time, cases/s, agreement between the engines' labels and the machine load
(other processes on a shared machine slow both sides).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path


def _cases(n: int) -> list:
    from llama_mapper.evaluation.evalset import default_eval_set_uri, load_eval_set
    from llama_mapper.inference.model import MapperQuery

    cases = load_eval_set(default_eval_set_uri()).measured[:n]
    return [MapperQuery(c.detector, c.finding) for c in cases]


def _time(predict, queries, batch_size: int) -> tuple[float, list]:
    out: list = []
    started = time.perf_counter()
    for i in range(0, len(queries), batch_size):
        out.extend(predict(queries[i : i + batch_size]))
    return time.perf_counter() - started, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=64)
    parser.add_argument(
        "--adapter", default=None, help="LoRA adapter directory (default: bare base)"
    )
    parser.add_argument("--hf-batch", type=int, default=16)
    parser.add_argument("--vllm-batch", type=int, default=64)
    parser.add_argument("--skip-vllm", action="store_true")
    parser.add_argument("--out", type=Path, default=Path("var/bench/evaluation_throughput.json"))
    args = parser.parse_args()

    from llama_mapper.inference.base_model import prepare_base_model
    from llama_mapper.inference.transformers_engine import HFMapperModel

    queries = _cases(args.cases)
    base = prepare_base_model()
    adapter = Path(args.adapter) if args.adapter else None
    results: dict = {
        "cases": len(queries),
        "base_model": base.model_id,
        "adapter": str(adapter) if adapter else None,
    }
    results["load_before"] = os.getloadavg()

    hf = HFMapperModel(base.path, adapter)
    hf.predict(queries[:2])  # warm-up
    wall, hf_out = _time(hf.predict, queries, args.hf_batch)
    results["transformers"] = {
        "wall_s": wall,
        "cases_per_s": len(queries) / wall,
        "batch": args.hf_batch,
    }
    print(
        f"transformers generate: {len(queries)} cases in {wall:.1f} s = {len(queries) / wall:.2f} cases/s"
    )
    del hf

    if not args.skip_vllm:
        from llama_mapper.inference.vllm_engine import AdapterRef, VllmEngine
        from llama_mapper.platform.settings.serving import served_engine_config

        started = time.perf_counter()
        adapters = [AdapterRef("bench", adapter)] if adapter else []
        engine = VllmEngine(served_engine_config(str(base.path)), adapters)
        model = engine.model("bench" if adapter else None)
        model.predict(queries[:2])  # warm-up: grammar compilation
        startup = time.perf_counter() - started
        wall, vllm_out = _time(model.predict, queries, args.vllm_batch)
        engine.shutdown()
        pairs = [(a.label, b.label) for a, b in zip(hf_out, vllm_out, strict=True)]
        agree = sum(a == b for a, b in pairs) / len(queries)
        results["labels"] = pairs
        results["vllm"] = {
            "wall_s": wall,
            "cases_per_s": len(queries) / wall,
            "batch": args.vllm_batch,
            "startup_and_warmup_s": startup,
            "environment": engine.environment,
            "valid_rate": sum(p.valid for p in vllm_out) / len(queries),
        }
        results["label_agreement"] = agree
        results["speedup"] = results["vllm"]["cases_per_s"] / results["transformers"]["cases_per_s"]
        print(
            f"vLLM: {len(queries)} cases in {wall:.1f} s = {len(queries) / wall:.2f} cases/s "
            f"(start-up + warm-up {startup:.0f} s); speed-up {results['speedup']:.2f}x; "
            f"labels agree on {100 * agree:.0f} %"
        )
    results["load_after"] = os.getloadavg()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(
        f"written to {args.out}; load average {results['load_before']} -> {results['load_after']}"
    )


if __name__ == "__main__":
    main()
