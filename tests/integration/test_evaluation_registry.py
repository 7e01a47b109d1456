"""`mapperctl eval run|compare|gate` against a real registry server: a tiny random Llama + random
LoRA registered as versions, evaluated on the transformers engine, metrics and gates recorded."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pytest

from llama_mapper.core.errors import NotFound
from llama_mapper.evaluation import cli
from llama_mapper.registry.client import RegistryClient
from llama_mapper.registry.server import create_server
from llama_mapper.registry.settings import RegistrySettings

sys.path.insert(0, str(Path(__file__).parents[1] / "unit"))
from eval_cases import build_eval_set

pytestmark = pytest.mark.integration
TOKEN = "eval-test-token-" + "y" * 16


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from llama_mapper.core.basemodel import prepare_base_model, tiny_llama

    try:
        tokenizer_dir = prepare_base_model().path
    except NotFound as exc:
        pytest.skip(f"no base tokenizer: {exc}")
    root = tmp_path_factory.mktemp("tiny")
    base = tiny_llama(tokenizer_dir, root / "base")
    adapters = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        model = get_peft_model(
            AutoModelForCausalLM.from_pretrained(base),
            LoraConfig(
                r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False
            ),
        )
        model.save_pretrained(root / f"adapter-{seed}")
        adapters.append(root / f"adapter-{seed}")
    return prepare_base_model(str(base)), adapters


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    root = tmp_path_factory.mktemp("registry")
    settings = RegistrySettings(
        token=TOKEN,
        port=0,
        database_url=f"sqlite:///{root / 'registry.db'}",
        artifact_uri=str(root / "artifacts"),
    )
    server, port = create_server(settings)
    server.start()
    with RegistryClient(f"127.0.0.1:{port}", token=TOKEN, actor="eval-test") as client:
        yield client, port
    server.stop(None).wait()


def _mapperctl(argv, capsys):
    parser = argparse.ArgumentParser()
    cli.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    code = args.func(args)
    return code, capsys.readouterr().out


def test_run_compare_gate_through_the_registry(tiny, registry, tmp_path, monkeypatch, capsys):
    base, adapters = tiny
    client, port = registry
    monkeypatch.setenv("MAPPER_EVALUATION_REGISTRY_TOKEN", TOKEN)
    monkeypatch.setenv("MAPPER_EVALUATION_ADAPTERS_DIR", str(tmp_path / "adapters"))
    lineage = {"base_model_id": str(base.path), "base_model_sha256": base.sha256}
    for adapter in adapters:
        client.register_directory("mapper", adapter, lineage=lineage)
    client.set_alias("mapper", "champion", 1, expected_version=0, reason="first")
    client.set_targets(
        "mapper",
        "cpu-2core",
        min_schema_valid_rate=1.0,
        min_accuracy=0.0,
        max_ece=1.0,
        p95_latency_ms=60_000.0,
    )
    eval_dir = build_eval_set(tmp_path / "set", per_detector=2)
    common = ["eval", "--reports-dir", str(tmp_path / "runs"), "--registry", f"127.0.0.1:{port}"]

    for version in (1, 2):
        code, out = _mapperctl(
            [
                *common,
                "run",
                "--model",
                "mapper",
                "--version",
                str(version),
                "--hybrid",
                "--engine",
                "transformers",
                "--eval-set",
                str(eval_dir),
                "--json",
            ],
            capsys,
        )
        assert code == 0
        report = json.loads(out)
        assert report["recorded_in_registry"] and report["quality"]["schema_valid_rate"] == 1.0
        for p in report["robustness"]["perturbations"]:
            assert p["out_of_taxonomy_count"] == 0
        record = client.get_version("mapper", version).metrics[-1]
        assert record.eval_set_sha256 == report["eval_set_sha256"]
        assert record.values["exact_set_accuracy"] == pytest.approx(
            report["quality"]["exact_set_accuracy"]
        )
        assert record.HasField("temperature")

    code, out = _mapperctl([*common, "compare", "2", "--json"], capsys)
    assert code == 0
    comparison = json.loads(out)
    assert {d["metric"] for d in comparison["deltas"]} >= {
        "exact_set_accuracy",
        "macro_f1",
        "p95_ms",
    }

    code, out = _mapperctl([*common, "gate", "2", "--json"], capsys)
    outcome = json.loads(out)
    assert code == (0 if outcome["passed"] else 1)
    assert {c["name"] for c in outcome["criteria"]} >= {
        "min_schema_valid_rate",
        "max_p95_ms",
        "no_significant_regression",
    }
    gate = client.get_version("mapper", 2).gate_results[-1]
    assert gate.hardware_profile == "cpu-2core" and gate.passed == outcome["passed"]
