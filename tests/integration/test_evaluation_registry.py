"""`mapperctl eval run|compare|gate` against a real registry server: a tiny random Llama + random
LoRA registered as versions, evaluated on the transformers engine in-process and through the
evaluation service (port 0), metrics and gates recorded, registry errors mapped back to the CLI."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from llama_mapper.cli import evaluation as cli
from llama_mapper.domain.errors import FailedPrecondition, NotFound
from llama_mapper.evaluation.server import create_server as create_evaluation_server
from llama_mapper.platform.settings.evaluation import EvaluationSettings
from llama_mapper.registry.client import RegistryClient
from tests.support.eval_cases import build_eval_set
from tests.support.registry import lineage, make_adapter, running_registry

pytestmark = pytest.mark.integration
TOKEN = "eval-test-token-" + "y" * 16


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from llama_mapper.inference.base_model import prepare_base_model, tiny_llama

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
    with (
        running_registry(tmp_path_factory.mktemp("registry"), token=TOKEN) as address,
        RegistryClient(address, token=TOKEN, actor="eval-test") as client,
    ):
        yield client, int(address.rsplit(":", 1)[1])


def _mapperctl(argv, capsys):
    parser = argparse.ArgumentParser()
    cli.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    code = args.func(args)
    return code, capsys.readouterr().out


@pytest.fixture
def evaluation_service(registry, tmp_path, monkeypatch):
    """The evaluation service on port 0, on the test registry and the CLI's report directory.
    With no evaluation token of its own it checks callers against its registry token, which
    mapperctl sends from MAPPER_REGISTRY_TOKEN: the `make up` arrangement."""
    _, port = registry
    monkeypatch.delenv("MAPPER_EVALUATION_TOKEN", raising=False)
    monkeypatch.setenv("MAPPER_REGISTRY_TOKEN", TOKEN)
    settings = EvaluationSettings(
        port=0,
        reports_dir=tmp_path / "runs",
        adapters_dir=tmp_path / "adapters",
        registry_address=f"127.0.0.1:{port}",
        registry_token=TOKEN,
        engine="transformers",
        stream_interval_s=0.1,
    )
    server, evaluation_port = create_evaluation_server(settings)
    server.start()
    yield f"127.0.0.1:{evaluation_port}"
    server.stop(0)


def test_run_compare_gate_through_the_registry(
    tiny, registry, evaluation_service, tmp_path, monkeypatch, capsys
):
    base, adapters = tiny
    client, port = registry
    monkeypatch.setenv("MAPPER_EVALUATION_REGISTRY_TOKEN", TOKEN)
    monkeypatch.setenv("MAPPER_EVALUATION_ADAPTERS_DIR", str(tmp_path / "adapters"))
    monkeypatch.delenv("MAPPER_EVALUATION_ADDRESS", raising=False)
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
    # --reports-dir / --registry / --engine: in-process; --address: the evaluation service.
    in_process = ["--reports-dir", str(tmp_path / "runs"), "--registry", f"127.0.0.1:{port}"]
    through_service = {"--address": evaluation_service}

    for version, where in ((1, in_process), (2, through_service)):
        run_argv = [
            *("run", "--model", "mapper", "--version", str(version), "--hybrid"),
            *("--eval-set", str(eval_dir), "--json"),
        ]
        if where is in_process:
            argv = ["eval", *in_process, *run_argv, "--engine", "transformers"]
        else:
            argv = ["eval", *run_argv, "--address", evaluation_service]
        code, out = _mapperctl(argv, capsys)
        assert code == 0
        report = json.loads(out)
        assert Path(report["report_dir"]).parent == tmp_path / "runs"
        assert report["recorded_in_registry"] and report["quality"]["schema_valid_rate"] == 1.0
        for p in report["robustness"]["perturbations"]:
            assert p["out_of_taxonomy_count"] == 0
        record = client.get_version("mapper", version).metrics[-1]
        assert record.eval_set_sha256 == report["eval_set_sha256"]
        assert record.values["exact_set_accuracy"] == pytest.approx(
            report["quality"]["exact_set_accuracy"]
        )
        assert record.HasField("temperature")

    code, out = _mapperctl(["eval", *in_process, "compare", "2", "--json"], capsys)
    assert code == 0
    comparison = json.loads(out)
    assert {d["metric"] for d in comparison["deltas"]} >= {
        "exact_set_accuracy",
        "macro_f1",
        "p95_ms",
    }
    code, out = _mapperctl(
        ["eval", "compare", "2", "--json", "--address", evaluation_service], capsys
    )
    assert code == 0 and json.loads(out) == comparison

    code, out = _mapperctl(["eval", "gate", "2", "--json", "--address", evaluation_service], capsys)
    outcome = json.loads(out)
    assert code == (0 if outcome["passed"] else 1)
    assert {c["name"] for c in outcome["criteria"]} >= {
        "min_schema_valid_rate",
        "max_p95_ms",
        "no_significant_regression",
    }
    gate = client.get_version("mapper", 2).gate_results[-1]
    assert gate.hardware_profile == "cpu-2core" and gate.passed == outcome["passed"]


def test_registry_errors_reach_the_cli_through_the_service(
    registry, evaluation_service, tmp_path, capsys
):
    """No model is loaded: an unknown version, a profile without targets, a version never run."""
    client, _ = registry
    model = "mapper-errors"  # its own model: the test above numbers the "mapper" versions
    client.register_directory(model, make_adapter(tmp_path / "adapter"), lineage=lineage())
    client.set_targets(model, "cpu-2core", min_accuracy=0.5)
    gate = ["eval", "gate", "--model", model, "--address", evaluation_service]
    with pytest.raises(NotFound, match="7"):
        _mapperctl([*gate, "7"], capsys)
    with pytest.raises(FailedPrecondition, match=f"no targets stored for {model}"):
        _mapperctl([*gate, "1", "--profile", "h100"], capsys)
    with pytest.raises(NotFound, match=f"no succeeded evaluation run of {model} v1"):
        _mapperctl([*gate, "1"], capsys)
    with pytest.raises(NotFound, match=f"{model} has no champion to compare with"):
        _mapperctl(
            ["eval", "compare", "1", "--model", model, "--address", evaluation_service], capsys
        )
