"""Dataset rows -> chat messages + completion -> token ids with the prompt masked out of the loss."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llama_mapper.domain.errors import InvalidArgument
from llama_mapper.domain.prompt import (
    ANALYST_SYSTEM,
    MAPPER_SYSTEM,
    analyst_completion,
    analyst_messages,
    mapper_completion,
    mapper_messages,
)

log = logging.getLogger(__name__)

IGNORE_INDEX = -100
SYSTEM_PROMPTS = {"mapper": MAPPER_SYSTEM, "analyst": ANALYST_SYSTEM}


@dataclass(frozen=True)
class Example:
    """One supervised example: `messages` end with the user turn; `completion` is the answer."""

    id: str
    messages: list[dict[str, str]]
    completion: str


def row_to_example(row: Mapping[str, Any], adapter: str, index: int = 0) -> Example:
    """Accepts every row shape the data builder may write, all through the shared prompt format.

    - `detector` + `finding` + `label` (mapper) / `framework` + `finding` + `assessment` (analyst);
    - the data builder's `input` (system + user messages) + `output` (schemas/mapper-example.json);
    - `messages` (system/user, optionally a final assistant turn) + `output`;
    - the seed's `input` (user prompt text) + `output`, with the adapter's system prompt.
    """
    row_id = str(row.get("id", index))
    if "finding" in row and "detector" in row and "label" in row:
        return Example(
            row_id,
            mapper_messages(row["detector"], row["finding"]),
            mapper_completion(row["label"]),
        )
    if "finding" in row and "framework" in row and "assessment" in row:
        return Example(
            row_id,
            analyst_messages(row["framework"], row["finding"]),
            analyst_completion(row["assessment"]),
        )
    output = row.get("output")
    if not isinstance(output, str) and output is not None:
        output = analyst_completion(output) if isinstance(output, Mapping) else None
    if "messages" in row:
        messages = [dict(m) for m in row["messages"]]
        if messages and messages[-1].get("role") == "assistant":
            last = messages.pop()
            output = output if output is not None else last.get("content")
        if output is not None and messages:
            return Example(row_id, messages, output)
    if isinstance(row.get("input"), list) and output is not None:
        # The data builder's rows (schemas/mapper-example.json, analyst-example.json): `input` is
        # the chat messages exactly as serving builds them.
        return Example(row_id, [dict(m) for m in row["input"]], output)
    if isinstance(row.get("input"), str) and output is not None:
        messages = [
            {"role": "system", "content": SYSTEM_PROMPTS[adapter]},
            {"role": "user", "content": row["input"]},
        ]
        return Example(row_id, messages, output)
    raise InvalidArgument(
        f"row {row_id}: expected detector/finding/label, framework/finding/assessment, "
        "messages + output, or input + output"
    )


def read_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    with open(path, encoding="utf-8") as fh:
        for line_no, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                yield json.loads(line)
            except json.JSONDecodeError as exc:
                raise InvalidArgument(f"{path.name}:{line_no}: not JSON ({exc.msg})") from exc


def load_examples(path: Path, adapter: str, limit: int | None = None) -> list[Example]:
    examples = []
    for index, row in enumerate(read_jsonl(path)):
        if limit is not None and index >= limit:
            break
        examples.append(row_to_example(row, adapter, index))
    return examples


def _ids(encoded: Any) -> list[int]:
    # apply_chat_template returns a BatchEncoding in transformers 5, a plain list in 4.x.
    if isinstance(encoded, Mapping) or hasattr(encoded, "keys"):
        encoded = encoded["input_ids"]
    return list(encoded)


def encode_example(tokenizer: Any, example: Example) -> tuple[list[int], list[int]]:
    """(input_ids, labels): prompt from the chat template with the generation prompt (exactly what
    serving sends), then the completion and EOS. Prompt positions are IGNORE_INDEX in `labels`."""
    prompt = _ids(
        tokenizer.apply_chat_template(example.messages, add_generation_prompt=True, tokenize=True)
    )
    completion = _ids(tokenizer(example.completion, add_special_tokens=False))
    completion.append(tokenizer.eos_token_id)
    return prompt + completion, [IGNORE_INDEX] * len(prompt) + completion


def encode_all(
    tokenizer: Any, examples: Iterable[Example], max_seq_length: int
) -> list[tuple[list[int], list[int]]]:
    """Encode and drop rows longer than max_seq_length (validation refuses datasets with them)."""
    encoded, dropped = [], 0
    for example in examples:
        ids, labels = encode_example(tokenizer, example)
        if len(ids) > max_seq_length:
            dropped += 1
            continue
        encoded.append((ids, labels))
    if dropped:
        log.warning("dropped %d rows longer than max_seq_length=%d", dropped, max_seq_length)
    return encoded


def collate(batch: Sequence[tuple[list[int], list[int]]], pad_token_id: int) -> dict[str, Any]:
    """Right-pad to the longest row of the batch; padding is masked in attention and loss."""
    import torch

    width = max(len(ids) for ids, _ in batch)
    input_ids = torch.full((len(batch), width), pad_token_id, dtype=torch.long)
    labels = torch.full((len(batch), width), IGNORE_INDEX, dtype=torch.long)
    attention = torch.zeros((len(batch), width), dtype=torch.long)
    for row, (ids, labs) in enumerate(batch):
        input_ids[row, : len(ids)] = torch.tensor(ids)
        labels[row, : len(labs)] = torch.tensor(labs)
        attention[row, : len(ids)] = 1
    return {"input_ids": input_ids, "labels": labels, "attention_mask": attention}
