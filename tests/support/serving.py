"""Real (random-init) LoRA adapters on the real base, for serving tests: PEFT writes them as training does."""

from __future__ import annotations

from pathlib import Path


def make_lora_adapter(
    base_dir: Path, out_dir: Path, *, seed: int, rank: int = 8, std: float = 0.02
) -> Path:
    """A rank-`rank` q/k/v/o adapter whose B matrices are random (not zero), so two seeds differ;
    a small `std` keeps it close to the base (answers as well as the base, weights its own)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    if (out_dir / "adapter_model.safetensors").is_file():
        return out_dir
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    config = LoraConfig(
        r=rank,
        lora_alpha=2 * rank,
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
        lora_dropout=0.0,
        task_type="CAUSAL_LM",
    )
    peft_model = get_peft_model(model, config)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.normal_(0.0, std)
    peft_model.save_pretrained(out_dir, safe_serialization=True)
    return out_dir


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def register_adapter(client, model: str, directory: Path, base) -> int:
    response = client.register_directory(
        model,
        directory,
        lineage={"base_model_id": base.model_id, "base_model_sha256": base.sha256},
        idempotency_key=f"{model}-{directory.name}",
    )
    return int(response.version.version)
