"""Training configs: every shipped config validates; a bad one is refused with the JSON path to fix."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from llama_mapper.domain.errors import InvalidArgument
from llama_mapper.training.config import load_config

CONFIGS = sorted((Path(__file__).parents[2] / "configs").glob("*.yaml"))

MINIMAL = {
    "name": "unit",
    "adapter": "mapper",
    "base_model": {"id": "smollm2-135m-instruct"},
    "taxonomy_version": "1.0.0",
    "dataset": {"path": "/tmp/does-not-matter"},
    "lora": {"r": 8, "lora_alpha": 16, "target_modules": ["q_proj"]},
    "training": {"batch_size": 2, "learning_rate": 1e-4, "num_epochs": 1, "max_seq_length": 256},
}


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_shipped_configs_validate_and_open_with_their_command(path: Path) -> None:
    config = load_config(path)
    assert config["lora"]["r"] <= 16, "vLLM serves ranks up to 16"
    first = path.read_text().splitlines()[0]
    assert first.startswith("#") and "--config configs/" + path.name in first


def test_defaults_are_filled_from_the_schema(tmp_path: Path) -> None:
    config = load_config(MINIMAL)
    assert config["training"]["gradient_accumulation_steps"] == 1
    assert config["training"]["lr_scheduler"] == "cosine"
    assert config["lora"]["lora_dropout"] == 0.1
    assert config["scaling"] == {
        "num_workers": 1,
        "use_gpu": False,
        "cpus_per_worker": 1,
        "max_failures": 2,
    }
    assert config["checkpoint"]["every_n_steps"] == 50
    assert Path(config["storage"]["path"]).is_absolute()
    assert config["storage"]["registry"] == ""
    assert config["training"]["max_minutes"] is None


@pytest.mark.parametrize(
    ("patch", "path"),
    [
        ({"lora": {"r": 0, "lora_alpha": 16, "target_modules": ["q_proj"]}}, "$.lora.r"),
        (
            {"training": {**MINIMAL["training"], "learning_rate": "fast"}},
            "$.training.learning_rate",
        ),
        ({"training": {**MINIMAL["training"], "lr_scheduler": "step"}}, "$.training.lr_scheduler"),
        ({"scaling": {"num_workers": 0}}, "$.scaling.num_workers"),
        ({"scaling": {"gpus": 2}}, "$.scaling"),
        ({"name": "Has Spaces"}, "$.name"),
        ({"training": {**MINIMAL["training"], "max_minutes": 0}}, "$.training.max_minutes"),
        ({"lora": {"r": 8, "lora_alpha": 16, "target_modules": []}}, "$.lora.target_modules"),
    ],
)
def test_invalid_config_names_the_json_path(patch: dict, path: str) -> None:
    with pytest.raises(InvalidArgument) as err:
        load_config({**MINIMAL, **patch})
    assert f": {path}:" in err.value.message


def test_missing_section_and_bad_yaml_are_refused(tmp_path: Path) -> None:
    config = {k: v for k, v in MINIMAL.items() if k != "lora"}
    with pytest.raises(InvalidArgument, match="'lora' is a required property"):
        load_config(config)
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(InvalidArgument, match="not valid YAML"):
        load_config(bad)
    with pytest.raises(InvalidArgument, match="does not exist"):
        load_config(tmp_path / "missing.yaml")


def test_yaml_file_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({**MINIMAL, "dataset": {"path": "rel/data"}}))
    config = load_config(path)
    assert Path(config["dataset"]["path"]).is_absolute()
