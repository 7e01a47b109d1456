"""Completion-only loss: the prompt (from the chat template) is masked, the completion and EOS are not."""

from __future__ import annotations

import pytest

from llama_mapper.core.basemodel import tokenizer_for
from llama_mapper.core.errors import InvalidArgument
from llama_mapper.core.prompt import ANALYST_SYSTEM, MAPPER_SYSTEM, mapper_messages
from llama_mapper.training.data import (
    IGNORE_INDEX,
    Example,
    collate,
    encode_all,
    encode_example,
    row_to_example,
)


@pytest.fixture(scope="module")
def tokenizer():
    return tokenizer_for()


def test_prompt_is_masked_and_completion_is_supervised(tokenizer) -> None:
    example = row_to_example(
        {
            "detector": "presidio",
            "finding": {"label": "EMAIL_ADDRESS"},
            "label": "pii.email_address",
        },
        "mapper",
    )
    ids, labels = encode_example(tokenizer, example)
    prompt = tokenizer.apply_chat_template(example.messages, add_generation_prompt=True)
    prompt_ids = list(prompt["input_ids"] if hasattr(prompt, "keys") else prompt)
    assert ids[: len(prompt_ids)] == prompt_ids, "the prompt is exactly what serving sends"
    assert labels[: len(prompt_ids)] == [IGNORE_INDEX] * len(prompt_ids)
    supervised = labels[len(prompt_ids) :]
    assert IGNORE_INDEX not in supervised
    assert supervised == ids[len(prompt_ids) :]
    assert supervised[-1] == tokenizer.eos_token_id
    assert tokenizer.decode(supervised[:-1]) == "pii.email_address"


def test_row_shapes_all_use_the_shared_prompt_format() -> None:
    finding = {"label": "EMAIL_ADDRESS", "score": 0.9}
    structured = row_to_example(
        {"detector": "presidio", "finding": finding, "label": "pii.x"}, "mapper"
    )
    assert structured.messages == mapper_messages("presidio", finding)
    seed_shape = row_to_example({"input": "Detector output: {}", "output": "pii.x"}, "mapper")
    assert seed_shape.messages[0] == {"role": "system", "content": MAPPER_SYSTEM}
    assert seed_shape.messages[1] == {"role": "user", "content": "Detector output: {}"}
    analyst = row_to_example({"input": "Context: {}", "output": {"risk_level": "low"}}, "analyst")
    assert analyst.messages[0]["content"] == ANALYST_SYSTEM
    assert analyst.completion == '{"risk_level":"low"}'
    chat = row_to_example(
        {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]},
        "mapper",
    )
    assert chat.messages == [{"role": "user", "content": "q"}] and chat.completion == "a"
    with pytest.raises(InvalidArgument, match="row 7"):
        row_to_example({"id": 7, "text": "?"}, "mapper")


def test_collate_pads_right_and_masks_padding(tokenizer) -> None:
    rows = encode_all(
        tokenizer,
        [Example("a", [{"role": "user", "content": "hi"}], "x"),
         Example("b", [{"role": "user", "content": "a much longer question here"}], "y")],
        512,
    )  # fmt: skip
    batch = collate(rows, tokenizer.pad_token_id)
    short = len(rows[0][0])
    assert batch["input_ids"].shape == (2, len(rows[1][0]))
    assert batch["attention_mask"][0, short:].sum() == 0
    assert (batch["labels"][0, short:] == IGNORE_INDEX).all()
    assert batch["attention_mask"][1].all()


def test_rows_longer_than_max_seq_length_are_dropped(tokenizer) -> None:
    rows = [Example("a", [{"role": "user", "content": "word " * 200}], "x")]
    assert encode_all(tokenizer, rows, 64) == []


def test_completion_loss_equals_the_full_causal_lm_loss(tokenizer, tmp_path) -> None:
    """Projecting only the supervised positions changes the cost, not the loss or its gradient."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from llama_mapper.core.basemodel import prepare_base_model, tiny_llama
    from llama_mapper.training.recipe import CompletionLoss

    tiny = tiny_llama(prepare_base_model().path, tmp_path / "tiny")
    torch.manual_seed(0)
    model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(tiny),
        LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], lora_dropout=0.0),
    )
    rows = encode_all(
        tokenizer,
        [row_to_example({"detector": "d", "finding": {"label": f"L{i}"}, "label": "pii.email_address"}, "mapper")
         for i in range(3)],
        512,
    )  # fmt: skip
    batch = collate(rows, tokenizer.pad_token_id)
    expected = model(**batch).loss
    actual = CompletionLoss(model)(**batch)
    torch.testing.assert_close(actual, expected)


def test_data_builder_rows_are_read_as_built() -> None:
    """schemas/mapper-example.json: `input` holds the chat messages, `output` the label."""
    messages = mapper_messages("presidio", {"label": "PERSON"})
    row = {
        "id": "m-0123456789abcdef",
        "task": "mapper",
        "input": messages,
        "output": "pii.person_name",
    }
    example = row_to_example(row, "mapper")
    assert example.messages == messages and example.completion == "pii.person_name"
