"""`mapperctl export`: bundles verify, launch arguments name the bundle, merged weights equal PEFT."""

from __future__ import annotations

import json

import pytest

from llama_mapper.domain.errors import AlreadyExists, FailedPrecondition
from tests.support.serving import make_lora_adapter

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def adapter(tmp_path_factory):
    from llama_mapper.inference.base_model import prepare_base_model

    base = prepare_base_model()
    return base, make_lora_adapter(base.path, tmp_path_factory.mktemp("a") / "a", seed=5)


def test_tgi_bundle_holds_merged_weights_equal_to_base_plus_adapter(adapter, tmp_path):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from llama_mapper.serving.export import export_bundle, verify_bundle

    base, adapter_dir = adapter
    bundle = tmp_path / "tgi"
    manifest = export_bundle("tgi", adapter_dir, bundle, name="mapper-v5")
    assert manifest["merged"] and verify_bundle(bundle) == manifest
    launch = json.loads((bundle / "launch.json").read_text())
    assert launch["command"][:3] == [
        "text-generation-launcher",
        "--model-id",
        str(bundle / "merged"),
    ]
    assert len(json.loads((bundle / "labels.json").read_text())) == 67

    tokenizer = AutoTokenizer.from_pretrained(bundle / "merged")
    ids = tokenizer("Detector output: EMAIL_ADDRESS", return_tensors="pt").input_ids
    merged = AutoModelForCausalLM.from_pretrained(bundle / "merged", dtype=torch.float32)
    peft = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(base.path, dtype=torch.float32), adapter_dir
    )
    with torch.no_grad():
        assert torch.allclose(merged(ids).logits, peft(ids).logits, atol=1e-4)


def test_vllm_bundle_launch_args_and_tampering(adapter, tmp_path):
    from llama_mapper.serving.export import export_bundle, verify_bundle

    base, adapter_dir = adapter
    bundle = tmp_path / "vllm"
    export_bundle("vllm", adapter_dir, bundle, name="mapper-v5")
    launch = json.loads((bundle / "launch.json").read_text())
    command = launch["command"]
    # The decisive prefixes a client passes as `stop`: each names one label, every label has one.
    stops = json.loads((bundle / launch["stop"]["strings"]).read_text())
    labels = json.loads((bundle / "labels.json").read_text())
    assert sorted(stops.values()) == sorted(labels) and launch["stop"]["include_stop_str_in_output"]
    assert all(label.startswith(stop) for stop, label in stops.items())
    assert command[:3] == ["vllm", "serve", str(base.path)]
    assert f"mapper-v5={bundle / 'adapter'}" in command and "--enable-lora" in command
    assert (bundle / "launch.sh").stat().st_mode & 0o111
    with pytest.raises(AlreadyExists):
        export_bundle("vllm", adapter_dir, bundle, name="again")
    (bundle / "adapter" / "adapter_config.json").write_text("{}")
    with pytest.raises(FailedPrecondition):
        verify_bundle(bundle)
    with pytest.raises(FailedPrecondition):
        export_bundle(
            "vllm",
            adapter_dir,
            tmp_path / "other",
            name="x",
            provenance={"base_model_sha256": "f" * 64},
        )
