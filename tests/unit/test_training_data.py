"""Completion-only loss: the prompt (from the chat template) is masked, the completion and EOS are not."""

from __future__ import annotations

import pytest

from llama_mapper.domain.errors import InvalidArgument
from llama_mapper.domain.prompt import ANALYST_SYSTEM, MAPPER_SYSTEM, mapper_messages
from llama_mapper.inference.base_model import tokenizer_for
from llama_mapper.training.tokenize import (
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

    from llama_mapper.inference.base_model import prepare_base_model, tiny_llama
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


def test_shared_prefix_gives_the_same_loss_and_gradients(tokenizer, tmp_path) -> None:
    """Running the batch's common prompt prefix once (cached keys/values repeated across rows) is
    an optimisation only: loss and every LoRA gradient match the row-by-row forward."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from llama_mapper.inference.base_model import prepare_base_model, tiny_llama
    from llama_mapper.training.recipe import CompletionLoss, shared_prefix_length

    tiny = tiny_llama(prepare_base_model().path, tmp_path / "tiny")
    torch.manual_seed(0)
    model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(tiny, dtype=torch.float64),
        LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
                   lora_dropout=0.0),
    )  # fmt: skip
    with torch.no_grad():  # B = 0 at init would make every LoRA gradient but B's vanish
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0.0, 0.05)
    findings = [{"label": "EMAIL"}, {"label": "a much longer label", "score": 0.5}, {"x": 1}]
    rows = encode_all(
        tokenizer,
        [row_to_example({"detector": "presidio", "finding": f, "label": label}, "mapper")
         for f, label in zip(findings, ["pii.email_address", "other.unknown", "pii.other"], strict=True)],
        512,
    )  # fmt: skip
    batch = collate(rows, tokenizer.pad_token_id)
    prefix = shared_prefix_length(batch["input_ids"], batch["labels"])
    assert prefix >= CompletionLoss.MIN_SHARED_PREFIX

    def loss_and_grads(share: bool):
        model.zero_grad()
        loss = CompletionLoss(model, share_prefix=share)(**batch)
        loss.backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
        return loss.detach(), grads

    expected_loss, expected_grads = loss_and_grads(False)
    actual_loss, actual_grads = loss_and_grads(True)
    torch.testing.assert_close(actual_loss, expected_loss)
    assert expected_grads.keys() == actual_grads.keys()
    for name, grad in expected_grads.items():
        assert grad.abs().sum() > 0, name  # the prefix's LoRA contribution is not dropped
        torch.testing.assert_close(actual_grads[name], grad, msg=name)


def test_shared_prefix_stops_before_the_first_supervised_position() -> None:
    import torch

    from llama_mapper.training.recipe import shared_prefix_length

    ids = torch.tensor([[1, 2, 3, 4, 5, 6], [1, 2, 3, 4, 9, 9]])
    labels = torch.full_like(ids, IGNORE_INDEX)
    assert shared_prefix_length(ids, labels) == 4
    labels[0, 3] = 4  # position 2's hidden state predicts it: the prefix must end before 2
    assert shared_prefix_length(ids, labels) == 2
    same = torch.tensor([[1, 2, 3], [1, 2, 3]])
    assert shared_prefix_length(same, torch.full_like(same, IGNORE_INDEX)) == 2


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
