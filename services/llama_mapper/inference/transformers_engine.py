"""A MapperModel on transformers `generate` + PEFT: the throughput baseline and the no-vLLM fallback."""

# Decoding is greedy and constrained to the label set: a token trie over the labels' token sequences
# restricts each step to tokens that continue some label, then to the end-of-turn token once a label
# is complete, so the answer can never leave the taxonomy. Confidence is exp(sum of the chosen label
# tokens' log-probabilities) under the constrained distribution: each step's log-softmax is taken
# over the tokens the trie allows. That is what vLLM reports under structured outputs (its grammar
# bitmask is applied to the logits before log-probabilities are computed), so a temperature fitted on
# either engine applies to the other. The engines can still pick different labels from an untrained
# model: the trie follows each label's canonical tokenization, vLLM's grammar accepts any
# tokenization of the label text; a trained adapter answers along the canonical path.

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from llama_mapper.domain.prompt import ANALYST_MAX_TOKENS, mapper_messages
from llama_mapper.domain.rubric import Query
from llama_mapper.domain.taxonomy import UNKNOWN, Taxonomy, default_taxonomy
from llama_mapper.inference.analyst import messages as analyst_prompt
from llama_mapper.inference.model import MapperQuery, Prediction

log = logging.getLogger(__name__)

END_OF_TURN = "<|im_end|>"


class LabelTrie:
    """Token sequences of the labels as a trie; `allowed(prefix)` is what may come next."""

    def __init__(self, sequences: Mapping[str, Sequence[int]], end_token: int) -> None:
        self.end_token = end_token
        self.root: dict[int, Any] = {}
        self.labels: dict[tuple[int, ...], str] = {}
        for label, ids in sequences.items():
            if not ids:
                raise ValueError(f"label {label!r} tokenizes to nothing")
            node = self.root
            for token in ids:
                node = node.setdefault(token, {})
            self.labels[tuple(ids)] = label

    def allowed(self, prefix: Sequence[int]) -> list[int]:
        node = self.root
        for token in prefix:
            if token not in node:
                return [self.end_token]  # finished (or off the trie): only the end may follow
            node = node[token]
        nxt = list(node)
        if tuple(prefix) in self.labels:
            nxt.append(self.end_token)
        return nxt or [self.end_token]

    def label_of(self, ids: Sequence[int]) -> str | None:
        return self.labels.get(tuple(ids))


def resolve_device(device: str) -> str:
    """'auto': the first CUDA device when torch sees one, else the CPU; 'cpu' / 'cuda[:N]' as
    given (a CUDA device torch cannot see is refused here, not at the first request)."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {device!r}: torch sees no CUDA device on this machine")
    if device != "cpu" and not device.startswith("cuda"):
        raise ValueError(f"device {device!r}: expected auto, cpu or cuda[:N]")
    return device


class HFMapperModel:
    """Base model (+ LoRA adapter, merged for speed) with label-constrained greedy decoding."""

    def __init__(
        self,
        base_dir: str | Path,
        adapter_dir: str | Path | None = None,
        *,
        taxonomy: Taxonomy | None = None,
        labels: Sequence[str] | None = None,
        description: Mapping[str, Any] | None = None,
        dtype: str = "float32",
        device: str = "cpu",
    ) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self._torch = torch
        self.device = resolve_device(device)
        self.taxonomy = taxonomy or default_taxonomy()
        self.tokenizer = AutoTokenizer.from_pretrained(str(base_dir))
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        model = AutoModelForCausalLM.from_pretrained(str(base_dir), dtype=getattr(torch, dtype))
        if adapter_dir is not None:
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, str(adapter_dir)).merge_and_unload()
        self.model = model.to(self.device).eval()
        end = self.tokenizer.convert_tokens_to_ids(END_OF_TURN)
        self.end_token = (
            end
            if isinstance(end, int) and end != self.tokenizer.unk_token_id
            else self.tokenizer.eos_token_id
        )
        names = list(labels) if labels is not None else self.taxonomy.names
        self.label_ids = {n: self.tokenizer(n, add_special_tokens=False).input_ids for n in names}
        self.trie = LabelTrie(self.label_ids, self.end_token)
        self._tries: dict[tuple[str, ...], LabelTrie] = {}
        self.max_label_tokens = max(len(ids) for ids in self.trie.labels)
        self._description = {
            "engine": "transformers",
            "device": self.device,
            "base_model": str(base_dir),
            **(description or {}),
        }
        if adapter_dir is not None:
            self._description.setdefault("adapter", str(adapter_dir))

    @property
    def description(self) -> Mapping[str, Any]:
        return dict(self._description)

    def _prompts(self, queries: Sequence[MapperQuery]) -> list[str]:
        return [
            self.tokenizer.apply_chat_template(
                mapper_messages(q.detector, q.finding), add_generation_prompt=True, tokenize=False
            )
            for q in queries
        ]

    def _trie(self, candidates: Sequence[str]) -> LabelTrie:
        """The trie of a query's candidate labels (the whole label set when it has none)."""
        known = tuple(c for c in candidates if c in self.label_ids)
        if not known:
            return self.trie
        if known not in self._tries:
            self._tries[known] = LabelTrie({c: self.label_ids[c] for c in known}, self.end_token)
        return self._tries[known]

    def predict(self, queries: Sequence[MapperQuery]) -> list[Prediction]:
        if not queries:
            return []
        torch = self._torch
        started = time.perf_counter()
        batch = self.tokenizer(
            self._prompts(queries), return_tensors="pt", padding=True, add_special_tokens=False
        ).to(self.device)
        prompt_len = batch.input_ids.shape[1]
        tries = [self._trie(q.candidates) for q in queries]

        def allowed(row: int, ids: Any) -> list[int]:
            return tries[row].allowed(ids[prompt_len:].tolist())

        with torch.inference_mode():
            out = self.model.generate(
                **batch,
                max_new_tokens=self.max_label_tokens + 1,
                do_sample=False,
                prefix_allowed_tokens_fn=allowed,
                eos_token_id=self.end_token,
                pad_token_id=self.tokenizer.pad_token_id,
                output_scores=True,
                return_dict_in_generate=True,
            )
        elapsed = time.perf_counter() - started
        generated = out.sequences[:, prompt_len:]
        # out.scores are the logits after the trie's mask (-inf elsewhere): renormalized over labels.
        logprobs = torch.stack(
            [torch.log_softmax(step.float(), dim=-1) for step in out.scores], dim=1
        )
        predictions = []
        for row in range(len(queries)):
            ids: list[int] = []
            total = 0.0
            for step, token in enumerate(generated[row].tolist()):
                if token == self.end_token:
                    break
                ids.append(token)
                total += float(logprobs[row, step, token])
            label = tries[row].label_of(ids)
            if label is None or label not in self.taxonomy:
                # Ran out of tokens mid-label: never fail open.
                predictions.append(Prediction(UNKNOWN, 0.0, float("-inf"), elapsed, valid=False))
                continue
            predictions.append(Prediction(label, float(torch.tensor(total).exp()), total, elapsed))
        return predictions


class HFAnalystModel:
    """The analyst adapter on transformers `generate`: greedy JSON completions (validated later)."""

    def __init__(
        self,
        base_dir: str | Path,
        adapter_dir: str | Path | None = None,
        max_new_tokens: int = ANALYST_MAX_TOKENS,
    ) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self._torch = torch
        self.tokenizer = AutoTokenizer.from_pretrained(str(base_dir))
        self.tokenizer.padding_side = "left"
        model = AutoModelForCausalLM.from_pretrained(str(base_dir), dtype=torch.float32)
        if adapter_dir is not None:
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, str(adapter_dir)).merge_and_unload()
        self.model = model.eval()
        self.max_new_tokens = max_new_tokens

    def analyze(self, queries: Sequence[Query]) -> list[str]:
        prompts = [
            self.tokenizer.apply_chat_template(
                analyst_prompt(q), add_generation_prompt=True, tokenize=False
            )
            for q in queries
        ]
        batch = self.tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
        with self._torch.inference_mode():
            out = self.model.generate(
                **batch,
                max_new_tokens=self.max_new_tokens,
                do_sample=False,
                pad_token_id=self.tokenizer.pad_token_id,
            )
        texts = self.tokenizer.batch_decode(
            out[:, batch.input_ids.shape[1] :], skip_special_tokens=True
        )
        return [t.strip() for t in texts]
