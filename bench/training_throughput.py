"""Training tokens/s: Ray Train (1 and 2 workers) against a single-process PyTorch loop, same run.

    .venv/bin/python bench/training_throughput.py --steps 10 --global-batch 16

Every variant trains the same LoRA (r 16, q/k/v/o) on SmolLM2-135M-Instruct (float32) over the same
mapper rows with the same global batch and step count; tokens/s counts non-padding tokens over the
training loop (model loading and Ray start-up excluded, reported apart). A matmul probe before and
after shows how much of the 2 cores the run had: other processes on the machine change everything.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.support


def matmul_gflops(threads: int = 2) -> float:
    import torch

    torch.set_num_threads(threads)
    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    a @ b
    started = time.perf_counter()
    for _ in range(5):
        a @ b
    return 5 * 2 * 2048**3 / (time.perf_counter() - started) / 1e9


def plain_loop(
    config: dict, base_path: str, *, full_logits: bool = False, share_prefix: bool = True
) -> dict:
    """The baseline: one process, 2 threads, no Ray, no DDP; the recipe's data and loss code."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from llama_mapper.training.recipe import CompletionLoss
    from llama_mapper.training.tokenize import collate, encode_all, load_examples

    torch.set_num_threads(2)
    torch.manual_seed(0)
    training, lora = config["training"], config["lora"]
    tokenizer = AutoTokenizer.from_pretrained(base_path)
    dataset = Path(config["dataset"]["path"])
    rows = encode_all(
        tokenizer,
        load_examples(dataset / "mapper-train.jsonl", "mapper"),
        training["max_seq_length"],
    )
    model = AutoModelForCausalLM.from_pretrained(base_path, dtype=torch.float32)
    model = get_peft_model(
        model,
        LoraConfig(r=lora["r"], lora_alpha=lora["lora_alpha"], lora_dropout=0.1,
                   target_modules=lora["target_modules"], task_type="CAUSAL_LM"),
    )  # fmt: skip
    loss_module = CompletionLoss(model, share_prefix=share_prefix)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    batch_size, steps = training["batch_size"], training["max_steps"]
    order = torch.randperm(len(rows)).tolist()
    tokens, started = 0, time.perf_counter()
    for step in range(steps):
        batch = collate([rows[i] for i in order[step * batch_size : (step + 1) * batch_size]],
                        tokenizer.pad_token_id)  # fmt: skip
        tokens += int(batch["attention_mask"].sum())
        loss = model(**batch).loss if full_logits else loss_module(**batch)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    seconds = time.perf_counter() - started
    return {"tokens": tokens, "train_time_s": seconds, "tokens_per_s": tokens / seconds,
            "steps_per_s": steps / seconds, "final_loss": float(loss)}  # fmt: skip


def ray_run(config: dict, workers: int) -> dict:
    import ray

    from llama_mapper.training.job import run_job

    config = json.loads(json.dumps(config))
    config["name"] = f"bench-ray-{workers}w-{int(time.time())}"
    config["scaling"].update(num_workers=workers, cpus_per_worker=2 // workers)
    config["training"]["batch_size"] = config["training"]["batch_size"] // workers
    temp_dir = tempfile.mkdtemp(prefix="mmbench-", dir="/tmp")
    started = time.perf_counter()
    ray.init(address="local", num_cpus=2, include_dashboard=False, _temp_dir=temp_dir,
             log_to_driver=False)  # fmt: skip
    try:
        summary = run_job(config)
    finally:
        ray.shutdown()
    return {
        "tokens": summary["tokens"], "train_time_s": summary["train_time_s"],
        "tokens_per_s": summary["tokens_per_s"], "steps_per_s": summary["steps_per_s"],
        "final_loss": summary["metrics"]["final_loss"],
        "job_wall_time_s": time.perf_counter() - started,
    }  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--global-batch", type=int, default=16)
    parser.add_argument("--rows", type=int, default=1024)
    parser.add_argument("--variants", default="plain,ray2,ray1")
    parser.add_argument(
        "--rounds", type=int, default=2, help="interleaved rounds; medians reported"
    )
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    args = parser.parse_args()

    from llama_mapper.inference.base_model import prepare_base_model
    from llama_mapper.training.config import load_config
    from tests.support.training_data import write_dataset

    prep_started = time.perf_counter()
    base = prepare_base_model()
    prep_s = time.perf_counter() - prep_started
    work = Path(tempfile.mkdtemp(prefix="mm-bench-train-"))
    dataset = write_dataset(work / "data", n_train=args.rows, n_eval=8)
    config = load_config(
        {
            "name": "bench", "adapter": "mapper",
            "base_model": {"id": "smollm2-135m-instruct", "dtype": "float32"},
            "taxonomy_version": "1.0.0",
            "dataset": {"path": str(dataset), "eval_file": "none.jsonl"},
            "lora": {"r": 16, "lora_alpha": 32, "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"]},
            "training": {"batch_size": args.global_batch, "learning_rate": 1e-3, "num_epochs": 1,
                         "max_steps": args.steps, "max_seq_length": 512, "logging_steps": args.steps},
            "checkpoint": {"every_n_steps": 10_000},
            "storage": {"path": str(work / "runs")},
        }
    )  # fmt: skip
    results: dict = {"command": " ".join(["python", *sys.argv]), "base_model_prepare_s": prep_s,
                     "matmul_gflops_before": matmul_gflops(), "cpu_count": os.cpu_count(),
                     "load_before": os.getloadavg()[0]}  # fmt: skip
    runs: dict[str, list[dict]] = {}
    for round_no in range(args.rounds):
        for variant in args.variants.split(","):
            if variant == "plain":
                figures = plain_loop(config, str(base.path))
            elif variant == "plain-unshared":  # the prompt prefix run once per row, as before
                figures = plain_loop(config, str(base.path), share_prefix=False)
            elif variant == "plain-full-logits":
                figures = plain_loop(config, str(base.path), full_logits=True)
            else:
                figures = ray_run(config, int(variant.removeprefix("ray")))
            figures["matmul_gflops_after"] = matmul_gflops()
            runs.setdefault(variant, []).append(figures)
            print(round_no, variant, json.dumps(figures), flush=True)
    for variant, figures in runs.items():
        results[variant] = {
            "runs": figures,
            "median_tokens_per_s": statistics.median(f["tokens_per_s"] for f in figures),
            "median_steps_per_s": statistics.median(f["steps_per_s"] for f in figures),
        }
    results["matmul_gflops_after"] = matmul_gflops()
    results["load_after"] = os.getloadavg()[0]
    if "plain" in results:
        for variant in ("ray1", "ray2", "plain-unshared"):
            if variant in results:
                results[variant]["vs_plain"] = (
                    results[variant]["median_tokens_per_s"]
                    / results["plain"]["median_tokens_per_s"]
                )
    print(json.dumps(results, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
