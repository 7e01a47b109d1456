"""The LoRA fine-tuning recipe that every Ray Train worker runs: setup / train / save_checkpoint / cleanup."""

# One process per worker; Ray Train's TorchTrainer starts them, joins them in a process group (gloo on
# CPU, NCCL on GPU) and restarts them from the latest reported checkpoint when one dies. Data-parallel:
# each worker reads its shard through a DistributedSampler, the model is wrapped in DDP, and gradient
# accumulation skips the all-reduce on all but the last micro-batch of an optimizer step.

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import shutil
import tempfile
import time
from collections import deque
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import ray.train
import ray.train.torch
import torch
import torch.distributed as dist
from ray.train import Checkpoint
from torch.utils.data import DataLoader
from torch.utils.data.distributed import DistributedSampler

from llama_mapper.platform.settings.training import TrainingFaults
from llama_mapper.training.tokenize import IGNORE_INDEX, collate, encode_all, load_examples

log = logging.getLogger(__name__)

STATE_FILE = "training_state.pt"
TRAINER_STATE_FILE = "trainer_state.json"
# Fault-injection for the recovery test: worker rank 1 exits hard at this optimizer step, once
# (the marker file records that it happened, so the restarted attempt trains through).


class CompletionLoss(torch.nn.Module):
    """Causal-LM loss that runs the LM head only where a token is supervised, and runs the prompt
    prefix that every row of a batch shares once instead of once per row.

    The mapper's prompt is ~107 tokens, 66 of them the same system prompt and chat-template opening
    in every row, and its answer ~6 tokens. Projecting every position onto the 49k vocabulary (what
    `model(labels=...)` does) costs a fifth of the FLOPs for nothing; so does running the shared
    prefix through the model eight times for a batch of eight. With `share_prefix`, the prefix runs
    once (batch 1, its keys and values cached with their autograd history), the cache is repeated
    across the batch and the rows' own tokens run on top of it: the same loss and gradients (the
    LoRA weights act on the prefix's keys and values through the cache), about half the work. DDP
    wraps this module, so gradient sync is unchanged.
    """

    # Below this many shared tokens the second forward call costs more than it saves.
    MIN_SHARED_PREFIX = 16

    def __init__(self, peft_model: torch.nn.Module, *, share_prefix: bool = False) -> None:
        super().__init__()
        self.peft_model = peft_model
        self.share_prefix = share_prefix

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor,
        reduction: str = "mean",
    ) -> torch.Tensor:  # fmt: skip
        causal_lm = self.peft_model.get_base_model()  # LoRA layers are injected in place
        prefix = shared_prefix_length(input_ids, labels) if self.share_prefix else 0
        if prefix >= self.MIN_SHARED_PREFIX and input_ids.shape[0] > 1:
            shared = causal_lm.model(input_ids=input_ids[:1, :prefix], use_cache=True)
            cache = shared.past_key_values
            cache.batch_repeat_interleave(input_ids.shape[0])
            hidden = causal_lm.model(
                input_ids=input_ids[:, prefix:],
                attention_mask=attention_mask,
                past_key_values=cache,
                use_cache=True,
            )[0]
        else:
            prefix = 0
            hidden = causal_lm.model(input_ids=input_ids, attention_mask=attention_mask)[0]
        # hidden[:, i] is position prefix + i, which predicts the token at prefix + i + 1.
        targets = labels[:, prefix + 1 :]
        supervised = targets != IGNORE_INDEX
        logits = causal_lm.lm_head(hidden[:, :-1][supervised]).float()
        return torch.nn.functional.cross_entropy(logits, targets[supervised], reduction=reduction)


def shared_prefix_length(input_ids: torch.Tensor, labels: torch.Tensor) -> int:
    """Leading tokens identical in every row, stopping before the first supervised position's
    predecessor (its hidden state must come from the per-row pass, where the loss is taken)."""
    same = (input_ids == input_ids[:1]).all(dim=0)
    differs = torch.nonzero(~same)
    common = int(differs[0]) if len(differs) else input_ids.shape[1]
    supervised = torch.nonzero((labels != IGNORE_INDEX).any(dim=0))
    first_target = int(supervised[0]) if len(supervised) else input_ids.shape[1]
    return max(0, min(common, first_target - 1))


# Steps a run takes before its seconds per step are trusted to plan the rest of a time budget, and
# the window of recent steps that pace is measured over (a shared host's speed changes mid-run).
MIN_STEPS_TO_PLAN = 3
PACE_WINDOW_STEPS = 20


def lr_factor(step: int, *, total_steps: int, warmup_steps: int, schedule: str) -> float:
    """The learning-rate multiplier at `step`: linear warmup, then cosine, linear or constant.

    The same curves as transformers' `get_scheduler`, but over a `total_steps` that a time budget
    may re-plan while the run goes (the scheduler reads it at every step).
    """
    warmup = min(warmup_steps, total_steps)
    if step < warmup:
        return step / max(1, warmup)
    if schedule == "constant":
        return 1.0
    if schedule == "linear":
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))
    # Past the end (a plan shortened under a step already taken) the cosine stays at 0.
    progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
    return max(0.0, 0.5 * (1.0 + math.cos(math.pi * progress)))


def planned_total_steps(
    *,
    step: int,
    pace_steps: int,
    pace_elapsed_s: float,
    elapsed_s: float,
    budget_s: float,
    max_steps: int,
) -> int:
    """How many steps a run under a wall-clock budget can finish with, seen from `step`.

    `elapsed_s` counts the whole job (resumed attempts included) against `budget_s`; the pace is
    `pace_elapsed_s` over `pace_steps`, the attempt's most recent steps. The plan never exceeds
    `max_steps`, and returns `step` (stop now) when the next step would not fit.
    """
    if elapsed_s >= budget_s:
        return step
    if pace_steps < MIN_STEPS_TO_PLAN:
        return max_steps
    per_step = pace_elapsed_s / pace_steps
    return min(max_steps, step + int((budget_s - elapsed_s) // per_step))


class LoRARecipe:
    """Fine-tune a LoRA adapter on one worker of a data-parallel group."""

    def __init__(self, loop_config: dict[str, Any]) -> None:
        self.cfg = loop_config["config"]
        self.base_path: str = loop_config["base_model_path"]
        self.tensorboard_dir: str | None = loop_config.get("tensorboard_dir")
        self.writer: Any = None
        self.wandb_run: Any = None

    # ------------------------------------------------------------------ setup
    def setup(self) -> None:
        context = ray.train.get_context()
        self.rank, self.world = context.get_world_rank(), context.get_world_size()
        scaling, training = self.cfg["scaling"], self.cfg["training"]
        if not scaling["use_gpu"]:
            # Ray sets OMP_NUM_THREADS from the worker's CPUs; torch needs telling as well.
            torch.set_num_threads(max(1, int(scaling["cpus_per_worker"])))
        self.device = ray.train.torch.get_device()
        self.dtype = self._model_dtype()
        self.autocast = training["bf16"] and (
            self.device.type == "cpu" or torch.cuda.is_bf16_supported()
        )
        torch.manual_seed(training["seed"])

        self._setup_tokenizer_and_data()
        self._setup_model()
        self._setup_optimizer()
        self.global_step, self.history = 0, {"loss": [], "eval_loss": [], "lr": []}
        self.tokens_seen, self.elapsed_before = 0, 0.0
        checkpoint = ray.train.get_checkpoint()
        if checkpoint is not None:
            self._load_checkpoint(checkpoint)
        if self.rank == 0:
            self._setup_loggers()

    def _model_dtype(self) -> torch.dtype:
        name = self.cfg["base_model"]["dtype"]
        if name == "auto":
            # float32 trains faster than bf16 on CPUs without AMX (311 vs 164 GFLOP/s here, docs/TRAINING.md).
            use_bf16 = self.device.type == "cuda" and torch.cuda.is_bf16_supported()
            return torch.bfloat16 if use_bf16 else torch.float32
        return getattr(torch, name)

    def _setup_tokenizer_and_data(self) -> None:
        from transformers import AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(self.base_path)
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        dataset, training = self.cfg["dataset"], self.cfg["training"]
        root, adapter = Path(dataset["path"]), self.cfg["adapter"]
        max_len = training["max_seq_length"]
        train = load_examples(root / dataset["train_file"], adapter, dataset.get("max_examples"))
        self.train_rows = encode_all(self.tokenizer, train, max_len)
        eval_path = root / dataset["eval_file"]
        self.eval_rows = (
            encode_all(
                self.tokenizer,
                load_examples(eval_path, adapter, dataset.get("max_eval_examples")),
                max_len,
            )
            if eval_path.is_file()
            else []
        )

        def _collate(batch: Any) -> dict[str, torch.Tensor]:
            return collate(batch, self.tokenizer.pad_token_id)

        self.sampler = DistributedSampler(
            self.train_rows,
            num_replicas=self.world,
            rank=self.rank,
            shuffle=True,
            seed=training["seed"],
            drop_last=True,
        )
        self.loader = DataLoader(
            self.train_rows, batch_size=training["batch_size"], sampler=self.sampler,
            collate_fn=_collate, drop_last=True,
        )  # fmt: skip
        self.eval_loader = None
        if self.eval_rows:
            eval_sampler = DistributedSampler(
                self.eval_rows, num_replicas=self.world, rank=self.rank, shuffle=False
            )
            self.eval_loader = DataLoader(
                self.eval_rows, batch_size=training["batch_size"], sampler=eval_sampler,
                collate_fn=_collate,
            )  # fmt: skip

        self.batches_per_epoch = len(self.loader)
        if self.batches_per_epoch == 0:
            raise ValueError(
                f"{len(self.train_rows)} training rows cannot fill one batch of "
                f"{training['batch_size']} on each of {self.world} workers"
            )
        accumulation = training["gradient_accumulation_steps"]
        self.steps_per_epoch = max(1, self.batches_per_epoch // accumulation)
        self.total_steps = training.get("max_steps") or math.ceil(
            training["num_epochs"] * self.steps_per_epoch
        )
        self.max_steps = self.total_steps
        minutes = training.get("max_minutes")
        self.budget_s: float | None = float(minutes) * 60.0 if minutes else None

    def _setup_model(self) -> None:
        from peft import LoraConfig, get_peft_model
        from transformers import AutoModelForCausalLM

        training, lora = self.cfg["training"], self.cfg["lora"]
        model = AutoModelForCausalLM.from_pretrained(self.base_path, dtype=self.dtype)
        model.config.use_cache = False
        if training["gradient_checkpointing"]:
            model.gradient_checkpointing_enable(
                gradient_checkpointing_kwargs={"use_reentrant": False}
            )
            model.enable_input_require_grads()
        peft_config = LoraConfig(
            r=lora["r"],
            lora_alpha=lora["lora_alpha"],
            target_modules=list(lora["target_modules"]),
            lora_dropout=lora["lora_dropout"],
            bias=lora["bias"],
            task_type=lora["task_type"],
        )
        self.peft_model = get_peft_model(model, peft_config)
        # The per-row pass after a cached prefix cannot run under gradient checkpointing, which
        # turns the cache off.
        self.loss_module = CompletionLoss(
            self.peft_model,
            share_prefix=training["share_prefix"] and not training["gradient_checkpointing"],
        )
        self.model = ray.train.torch.prepare_model(self.loss_module)
        self.ddp = isinstance(self.model, torch.nn.parallel.DistributedDataParallel)

    def _setup_optimizer(self) -> None:
        training = self.cfg["training"]
        params = [p for p in self.peft_model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(
            params, lr=training["learning_rate"], weight_decay=training["weight_decay"]
        )
        # A lambda (not a bound method) so the scheduler's state_dict stays plain data.
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer,
            lambda step: lr_factor(
                step,
                total_steps=self.total_steps,
                warmup_steps=training["warmup_steps"],
                schedule=training["lr_scheduler"],
            ),
        )

    def _setup_loggers(self) -> None:
        if self.cfg["logging"]["tensorboard"] and self.tensorboard_dir:
            from tensorboardX import SummaryWriter

            self.writer = SummaryWriter(self.tensorboard_dir)
        if self.cfg["logging"]["wandb"]:
            if find_spec("wandb") is None:
                log.info("wandb logging is enabled but wandb is not installed: skipping it")
            else:
                import wandb

                self.wandb_run = wandb.init(
                    project=self.cfg["logging"]["wandb_project"],
                    name=self.cfg["name"],
                    config=self.cfg,
                    resume="allow",
                    id=self.cfg["name"],
                    dir=self.tensorboard_dir,
                )

    # ------------------------------------------------------------------ train
    def train(self) -> None:
        training = self.cfg["training"]
        accumulation = training["gradient_accumulation_steps"]
        every = self.cfg["checkpoint"]["every_n_steps"]
        log_every, eval_every = training["logging_steps"], training.get("eval_steps")
        autocast = torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.autocast)

        done_batches = self.global_step * accumulation
        epoch, skip = divmod(done_batches, self.batches_per_epoch)
        window_loss, window_tokens, window_start = [], 0, time.monotonic()
        self.train_start = time.monotonic()
        self.pace_marks = deque([(self.global_step, 0.0)], maxlen=PACE_WINDOW_STEPS + 1)
        self.model.train()
        micro = 0
        while self.global_step < self.total_steps:
            self.sampler.set_epoch(epoch)
            for index, batch in enumerate(self.loader):
                if index < skip:
                    continue
                batch = {k: v.to(self.device) for k, v in batch.items()}
                micro += 1
                sync = micro % accumulation == 0
                no_sync = (
                    self.model.no_sync() if self.ddp and not sync else contextlib.nullcontext()
                )
                with no_sync, autocast:
                    loss = self.model(**batch)
                    (loss / accumulation).backward()
                window_loss.append(loss.item())
                window_tokens += int(batch["attention_mask"].sum())
                if not sync:
                    continue
                torch.nn.utils.clip_grad_norm_(self.peft_model.parameters(), 1.0)
                self.optimizer.step()
                self.scheduler.step()
                self.optimizer.zero_grad(set_to_none=True)
                self.global_step += 1

                step = self.global_step
                if self.budget_s is not None:
                    self._plan_to_budget(step, announce=step % log_every == 0)
                last = step >= self.total_steps
                checkpoint_now = step % every == 0 or last
                if (
                    step % log_every == 0
                    or checkpoint_now
                    or last
                    or (eval_every and step % eval_every == 0)
                ):
                    metrics = self._window_metrics(window_loss, window_tokens, window_start)
                    if (eval_every and step % eval_every == 0) or last:
                        metrics["eval_loss"] = self.evaluate()
                    self._log(metrics)
                    if checkpoint_now:
                        self.save_checkpoint(metrics, final=last)
                    else:
                        ray.train.report(metrics)
                    window_loss, window_tokens, window_start = [], 0, time.monotonic()
                self._maybe_crash_for_test(step)
                if last:
                    break
            epoch, skip = epoch + 1, 0

    def _plan_to_budget(self, step: int, *, announce: bool) -> None:
        """Fit the run into `training.max_minutes`: every rank agrees on the slowest clock, and
        the learning-rate schedule anneals over the steps that fit rather than being cut off."""
        assert self.budget_s is not None
        run_elapsed = time.monotonic() - self.train_start
        clocks = torch.tensor([run_elapsed], dtype=torch.float64)
        if self.world > 1:
            dist.all_reduce(clocks, op=dist.ReduceOp.MAX)
        run_elapsed = float(clocks[0])
        self.pace_marks.append((step, run_elapsed))
        first_step, first_elapsed = self.pace_marks[0]
        planned = planned_total_steps(
            step=step,
            pace_steps=step - first_step,
            pace_elapsed_s=run_elapsed - first_elapsed,
            elapsed_s=self.elapsed_before + run_elapsed,
            budget_s=self.budget_s,
            max_steps=self.max_steps,
        )
        if planned != self.total_steps and self.rank == 0 and (announce or planned <= step):
            log.info(
                "time budget %.0f min: %d of %d steps fit (%.1f s a step over the last %d)",
                self.budget_s / 60, planned, self.max_steps,
                (run_elapsed - first_elapsed) / (step - first_step), step - first_step,
            )  # fmt: skip
        self.total_steps = planned

    def _window_metrics(self, losses: list[float], tokens: int, start: float) -> dict[str, Any]:
        stats = torch.tensor([sum(losses), len(losses), tokens], dtype=torch.float64)
        if self.world > 1:
            dist.all_reduce(stats)
        self.tokens_seen += int(stats[2])
        seconds = max(time.monotonic() - start, 1e-9)
        metrics = {
            "step": self.global_step,
            "epoch": round(self.global_step / self.steps_per_epoch, 4),
            "loss": float(stats[0] / max(stats[1], 1)),
            "lr": self.scheduler.get_last_lr()[0],
            "tokens_per_s": float(stats[2]) / seconds,
            "tokens": self.tokens_seen,
            "elapsed_s": self.elapsed_before + time.monotonic() - self.train_start,
        }
        self.history["loss"].append([self.global_step, metrics["loss"]])
        self.history["lr"].append([self.global_step, metrics["lr"]])
        return metrics

    @torch.no_grad()
    def evaluate(self) -> float | None:
        """Mean per-token loss on the held-out split, summed over every worker's shard."""
        if self.eval_loader is None:
            return None
        self.peft_model.eval()
        totals = torch.zeros(2, dtype=torch.float64)
        autocast = torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.autocast)
        for batch in self.eval_loader:
            batch = {k: v.to(self.device) for k, v in batch.items()}
            with autocast:
                loss = self.loss_module(**batch, reduction="sum")
            labels = batch["labels"][:, 1:]
            totals += torch.tensor([loss.item(), int((labels != IGNORE_INDEX).sum())])
        if self.world > 1:
            dist.all_reduce(totals)
        self.peft_model.train()
        value = float(totals[0] / max(totals[1], 1))
        self.history["eval_loss"].append([self.global_step, value])
        return value

    def _log(self, metrics: dict[str, Any]) -> None:
        if self.rank != 0:
            return
        log.info(
            "step %d/%d loss %.4f lr %.2e %.0f tokens/s%s",
            metrics["step"], self.total_steps, metrics["loss"], metrics["lr"],
            metrics["tokens_per_s"],
            f" eval_loss {metrics['eval_loss']:.4f}" if metrics.get("eval_loss") is not None else "",
        )  # fmt: skip
        scalars = {k: v for k, v in metrics.items() if isinstance(v, int | float) and k != "step"}
        if self.writer is not None:
            for key, value in scalars.items():
                self.writer.add_scalar(f"train/{key}", value, metrics["step"])
            self.writer.flush()
        if self.wandb_run is not None:
            self.wandb_run.log(scalars, step=metrics["step"])

    def _maybe_crash_for_test(self, step: int) -> None:
        faults = TrainingFaults()
        crash_at, marker = faults.crash_at_step, faults.crash_marker
        if not (crash_at is not None and marker and self.rank == 1 and step == crash_at):
            return
        if not marker.exists():
            marker.write_text(f"worker rank 1 exited at step {step}\n")
            log.warning("test fault injection: worker rank 1 exits at step %d", step)
            os._exit(1)

    # ------------------------------------------------------------------ checkpoints
    def save_checkpoint(self, metrics: dict[str, Any], *, final: bool = False) -> None:
        """Rank 0 writes adapter + optimizer/scheduler state; every rank reports (a barrier)."""
        name = f"checkpoint-{self.global_step:06d}"
        if self.rank != 0:
            ray.train.report(metrics, checkpoint=None, checkpoint_dir_name=name)
            return
        tmp = Path(tempfile.mkdtemp(prefix="mapper-ckpt-"))
        try:
            self.peft_model.save_pretrained(tmp, safe_serialization=True)
            torch.save(
                {
                    "optimizer": self.optimizer.state_dict(),
                    "scheduler": self.scheduler.state_dict(),
                    "step": self.global_step,
                    "rng": torch.get_rng_state(),
                },
                tmp / STATE_FILE,
            )
            state = {
                "step": self.global_step,
                "total_steps": self.total_steps,
                "final": final,
                "world_size": self.world,
                "tokens": self.tokens_seen,
                "train_rows": len(self.train_rows),
                "eval_rows": len(self.eval_rows),
                "elapsed_s": metrics["elapsed_s"],
                "history": self.history,
                "metrics": metrics,
            }
            (tmp / TRAINER_STATE_FILE).write_text(json.dumps(state, indent=1))
            ray.train.report(
                metrics, checkpoint=Checkpoint.from_directory(tmp), checkpoint_dir_name=name
            )
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def _load_checkpoint(self, checkpoint: Checkpoint) -> None:
        from peft import set_peft_model_state_dict
        from safetensors.torch import load_file

        with checkpoint.as_directory() as directory:
            directory = Path(directory)
            weights = load_file(directory / "adapter_model.safetensors")
            set_peft_model_state_dict(self.peft_model, weights)
            # Tensors and plain data only: a checkpoint from storage must not run code (no pickle).
            state = torch.load(directory / STATE_FILE, weights_only=True)
            trainer_state = json.loads((directory / TRAINER_STATE_FILE).read_text())
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng"])
        self.global_step = state["step"]
        self.history = trainer_state["history"]
        self.tokens_seen = trainer_state["tokens"]
        self.elapsed_before = trainer_state["elapsed_s"]
        if self.rank == 0:
            log.info("resumed from %s at step %d", directory.name, self.global_step)

    def cleanup(self) -> None:
        if self.writer is not None:
            self.writer.close()
        if self.wandb_run is not None:
            self.wandb_run.finish()


def _quiet_report_log() -> None:
    """Ray Train logs every `ray.train.report` of every rank at INFO ("Reporting training result
    N: TrainingReport(...)"), two lines per logged step beside our own progress line; its logger is
    named by the module's file path. Warnings still show."""
    try:
        from ray.train.v2._internal.execution import context
    except ImportError:  # another Ray Train layout: its lines stay
        return
    logging.getLogger(context.__file__).setLevel(logging.WARNING)


def train_loop_per_worker(loop_config: dict[str, Any]) -> None:
    """What TorchTrainer runs in every worker."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    _quiet_report_log()
    os.environ.update(loop_config.get("env", {}))
    recipe = LoRARecipe(loop_config)
    recipe.setup()
    try:
        recipe.train()
    finally:
        recipe.cleanup()
