"""The training job end to end on a real local Ray cluster: 2 gloo workers, checkpoints, resume, a
killed worker, the gate refusing before any step. The real SmolLM2 base trains on two workers in
`make demo` (tests/integration/test_demo.py), through `ray job submit`."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ray = pytest.importorskip("ray")

from llama_mapper.inference.base_model import prepare_base_model, tiny_llama  # noqa: E402
from llama_mapper.training import job, train  # noqa: E402
from llama_mapper.training.config import load_config  # noqa: E402
from llama_mapper.training.job import run_job  # noqa: E402
from tests.support.training_data import write_dataset  # noqa: E402


@pytest.fixture(scope="module")
def ray_cluster():
    """A private local cluster (own temp dir, free ports, no dashboard), always shut down."""
    temp_dir = tempfile.mkdtemp(prefix="mmray-", dir="/tmp")  # short: Ray's socket paths
    ray.init(address="local", num_cpus=2, include_dashboard=False, _temp_dir=temp_dir)
    try:
        yield
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory) -> Path:
    return tiny_llama(prepare_base_model().path, tmp_path_factory.mktemp("tiny") / "model")


def _config(tmp_path: Path, base: str, dataset: Path, **training) -> dict:
    return load_config(
        {
            "name": "it-" + tmp_path.name.lower()[-20:].strip("_-").replace("_", "-"),
            "adapter": "mapper",
            "base_model": {"id": base},
            "taxonomy_version": "1.0.0",
            "dataset": {"path": str(dataset)},
            "lora": {"r": 8, "lora_alpha": 16, "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"]},
            "training": {
                "batch_size": 4, "learning_rate": 1e-3, "num_epochs": 1, "max_seq_length": 512,
                "max_steps": 6, "logging_steps": 1, "eval_steps": 3, "warmup_steps": 1, **training,
            },
            "scaling": {"num_workers": 2, "cpus_per_worker": 1, "max_failures": 1},
            "checkpoint": {"every_n_steps": 2, "num_to_keep": 2},
            "storage": {"path": str(tmp_path / "runs")},
        }
    )  # fmt: skip


def _final_state(summary: dict) -> dict:
    return json.loads((Path(summary["checkpoint"]) / "trainer_state.json").read_text())


def test_two_workers_train_checkpoint_and_resume(ray_cluster, tiny_base, tmp_path) -> None:
    dataset = write_dataset(tmp_path / "data", n_train=96, n_eval=16)
    config = _config(tmp_path, str(tiny_base), dataset)
    summary = run_job(config)

    run = Path(config["storage"]["path"]) / config["name"]
    assert summary["steps"] == 6 and summary["num_workers"] == 2
    assert sorted(p.name for p in run.glob("checkpoint-*")) == [
        "checkpoint-000004",
        "checkpoint-000006",
    ]
    adapter = run / "adapter"
    assert sorted(p.name for p in adapter.iterdir()) == [
        "adapter_config.json", "adapter_model.safetensors", "manifest.json",
    ]  # fmt: skip
    adapter_config = json.loads((adapter / "adapter_config.json").read_text())
    assert adapter_config["r"] == 8 and not adapter_config.get("modules_to_save")
    assert summary["serving_problems"] == []
    assert summary["tokens_per_s"] > 0 and summary["metrics"]["eval_loss"] is not None
    assert [step for step, _ in summary["losses"]] == [1, 2, 3, 4, 5, 6]
    assert list(run.glob("tensorboard/events.out.tfevents.*"))
    written = json.loads((run / "training-summary.json").read_text())
    assert written["dataset_manifest_digest"] == summary["dataset_manifest_digest"]
    assert written["base_model"]["sha256"] == prepare_base_model(str(tiny_base)).sha256

    # Re-submitting the same name resumes from the latest checkpoint instead of starting over.
    config["training"]["max_steps"] = 8
    resumed = run_job(config)
    assert resumed["steps"] == 8
    assert [step for step, _ in resumed["losses"]] == [1, 2, 3, 4, 5, 6, 7, 8]
    assert resumed["tokens"] > summary["tokens"]

    # A time budget the job has already spent (max_minutes counts resumed attempts too): one more
    # step, then the run stops on its own well before max_steps, with a final checkpoint.
    config["training"].update(max_steps=12, max_minutes=0.001)
    budgeted = run_job(config)
    assert budgeted["steps"] == 9
    assert (run / "checkpoint-000009").is_dir()


def test_killed_worker_is_replaced_and_training_resumes(
    ray_cluster, tiny_base, tmp_path, monkeypatch
) -> None:
    """Worker rank 1 dies at step 3; the group restarts from checkpoint-000002, finishes, and the
    run registers exactly one version (a retried driver gets the same one back)."""
    from llama_mapper.registry.client import RegistryClient
    from tests.support.registry import start_registry

    dataset = write_dataset(tmp_path / "data", n_train=96, n_eval=16)
    marker = tmp_path / "crashed"
    monkeypatch.setenv(
        "MAPPER_TEST_CRASH_AT_STEP", "3"
    )  # after checkpoint-000002, before checkpoint-000004
    monkeypatch.setenv("MAPPER_TEST_CRASH_MARKER", str(marker))
    server, address = start_registry(tmp_path / "registry")
    try:
        config = _config(tmp_path, str(tiny_base), dataset)
        config["storage"]["registry"] = address
        summary = run_job(config)

        assert marker.read_text().startswith("worker rank 1 exited at step 3")
        assert summary["steps"] == 6
        # The restarted group resumed from step 2: step 3 was logged once, by the second attempt.
        assert [step for step, _ in summary["losses"]] == [1, 2, 3, 4, 5, 6]
        assert _final_state(summary)["final"] is True
        assert summary["registration"]["created"] is True

        again = run_job(
            config
        )  # the same submission re-run: resumes at the end, registers nothing new
        assert again["registration"]["version"] == summary["registration"]["version"]
        assert again["registration"]["created"] is False
        with RegistryClient(address) as client:
            versions = client.list_versions("mapper")
            assert len(versions) == 1
            lineage = versions[0].lineage
            assert lineage.dataset_manifest_sha256 == summary["dataset_manifest_digest"]
            assert lineage.validation_report_sha256 == summary["validation_report_digest"]
            assert lineage.base_model_sha256 == summary["base_model"]["sha256"]
            assert lineage.ray_submission_id == summary["submission_id"]
    finally:
        server.stop(0)


@pytest.mark.parametrize("problem", ["invalid-config", "no-report", "tampered"])
def test_refused_before_any_training_step(
    tmp_path, tiny_base, problem, capsys, monkeypatch
) -> None:
    """The entry point refuses with the reason before Ray or any worker starts."""

    def never(*args, **kwargs):
        raise AssertionError("training started")

    monkeypatch.setattr(job, "build_trainer", never)
    monkeypatch.setattr(ray, "init", never)
    dataset = write_dataset(tmp_path / "data", n_train=16, n_eval=4, report=problem != "no-report")
    raw = {
        "name": "refused", "adapter": "mapper", "base_model": {"id": str(tiny_base)},
        "taxonomy_version": "1.0.0", "dataset": {"path": str(dataset)},
        "lora": {"r": 8, "lora_alpha": 16, "target_modules": ["q_proj"]},
        "training": {"batch_size": 2, "learning_rate": 1e-3, "num_epochs": 1, "max_seq_length": 512},
        "storage": {"path": str(tmp_path / "runs")},
    }  # fmt: skip
    if problem == "invalid-config":
        raw["lora"]["r"] = 0
    if problem == "tampered":
        with open(dataset / "mapper-train.jsonl", "a") as fh:
            fh.write("\n")
    path = tmp_path / "config.yaml"
    path.write_text(json.dumps(raw))  # JSON is YAML

    assert train.main(["--config", str(path)]) == 2
    err = capsys.readouterr().err
    expected = {
        "invalid-config": "$.lora.r",
        "no-report": "no validation-report.json",
        "tampered": "does not match its manifest sha256",
    }[problem]
    assert expected in err
    assert not (tmp_path / "runs").exists()
