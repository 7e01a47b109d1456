"""Registry pure logic: artifact names, staging verification, serving compatibility, auth, domain rules."""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from llama_mapper.domain.errors import InvalidArgument
from llama_mapper.inference.compat import (
    check_adapter_config,
    check_adapter_dir,
    check_safetensors_header,
    same_base,
)
from llama_mapper.platform.settings.registry import RegistrySettings
from llama_mapper.registry import domain as d
from llama_mapper.registry.artifacts import (
    FileEntry,
    StagedUpload,
    check_artifact_name,
    collect_upload_files,
    manifest_digest,
)
from llama_mapper.registry.db import make_engine, migrate
from llama_mapper.registry.schema import Base

BASE = "meta-llama/Llama-3-8b-instruct"


@pytest.mark.parametrize(
    "name",
    [
        "adapter_config.json",
        "adapter_model.safetensors",
        "tokenizer.json",
        "tokenizer.model",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "README.md",
        "notes.txt",
    ],
)
def test_allowed_artifact_names(name):
    check_artifact_name(name)


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("../x.json", "path traversal"),
        ("a/../../x.json", "path traversal"),
        ("/abs.json", "absolute"),
        ("C:x.json", "absolute"),
        ("a\\b.json", "backslash"),
        ("sub/x.json", "plain"),
        (".manifest.json", "plain"),
        ("adapter_model.bin", "adapters must be safetensors"),
        ("weights.PT", "adapters must be safetensors"),
        ("x.pkl", "adapters must be safetensors"),
        ("x.sh", "only adapter_config.json"),
        ("", "empty"),
    ],
)
def test_refused_artifact_names(name, message):
    with pytest.raises(InvalidArgument, match=message):
        check_artifact_name(name)


def test_staged_upload_verifies_size_and_sha(tmp_path):
    data = b"hello"
    staged = StagedUpload(tmp_path / "s", max_bytes=100)
    staged.directory.mkdir()
    staged.begin_file("a.txt", hashlib.sha256(data).hexdigest(), len(data))
    staged.write(data)
    staged.begin_file("b.txt", "0" * 64, 3)  # ends a.txt, which verifies
    staged.write(b"abc")
    with pytest.raises(InvalidArgument, match="sha256 mismatch"):
        staged.end_file()
    assert [f.name for f in staged.files] == ["a.txt"]
    staged.begin_file("c.txt", hashlib.sha256(b"").hexdigest(), 5)
    with pytest.raises(InvalidArgument, match="received 0 bytes"):
        staged.end_file()
    with pytest.raises(InvalidArgument, match="sent twice"):
        staged.begin_file("a.txt", hashlib.sha256(data).hexdigest(), 5)
    staged.discard()
    assert not staged.directory.exists()


def test_staged_upload_enforces_the_size_limit(tmp_path):
    staged = StagedUpload(tmp_path, max_bytes=4)
    staged.begin_file("a.txt", "0" * 64, 5)
    with pytest.raises(InvalidArgument, match="exceeds the limit"):
        staged.write(b"12345")
    staged.discard()


def test_manifest_digest_ignores_order():
    a, b = FileEntry("a.json", "1" * 64, 1), FileEntry("b.json", "2" * 64, 2)
    assert manifest_digest([a, b]) == manifest_digest([b, a]) != manifest_digest([a])


def test_collect_upload_files_refuses_symlinks_and_subdirectories(tmp_path):
    (tmp_path / "adapter_config.json").write_text("{}")
    assert [n for n, _ in collect_upload_files(tmp_path)] == ["adapter_config.json"]
    (tmp_path / "link.json").symlink_to(tmp_path / "adapter_config.json")
    with pytest.raises(InvalidArgument, match="symlink"):
        collect_upload_files(tmp_path)
    (tmp_path / "link.json").unlink()
    (tmp_path / "sub").mkdir()
    with pytest.raises(InvalidArgument, match="subdirectories"):
        collect_upload_files(tmp_path)


def _config(**overrides) -> bytes:
    config = {
        "peft_type": "LORA",
        "r": 16,
        "target_modules": ["q_proj", "v_proj"],
        "base_model_name_or_path": BASE,
    }
    config.update(overrides)
    return json.dumps(config).encode()


def test_compatible_adapter_config():
    info = check_adapter_config(_config(), base_model_id=BASE, max_rank=16)
    assert info.rank == 16 and info.target_modules == ("q_proj", "v_proj")
    # Local copies of the base and fully qualified module names are fine.
    check_adapter_config(
        _config(
            base_model_name_or_path="/cache/Llama-3-8b-instruct/",
            target_modules=["model.layers.0.mlp.down_proj"],
        ),
        base_model_id=BASE,
        max_rank=16,
    )
    phi = "microsoft/Phi-3-mini-4k-instruct"
    check_adapter_config(
        _config(target_modules=["qkv_proj"], base_model_name_or_path=phi),
        base_model_id=phi,
        max_rank=16,
    )


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"r": 17}, "exceeds the serving limit 16"),
        ({"r": 0}, "positive integer"),
        ({"use_dora": True}, "DoRA"),
        ({"modules_to_save": ["lm_head"]}, "modules_to_save"),
        ({"target_modules": "q_proj|v_proj"}, "not the pattern"),
        ({"target_modules": ["lm_head"]}, "not supported"),
        ({"target_modules": []}, "non-empty"),
        ({"peft_type": "IA3"}, "not LORA"),
        ({"base_model_name_or_path": "Qwen/Qwen2-7B"}, "does not match"),
    ],
)
def test_incompatible_adapter_configs(overrides, message):
    with pytest.raises(InvalidArgument, match=message):
        check_adapter_config(_config(**overrides), base_model_id=BASE, max_rank=16)


def test_extra_target_modules_and_invalid_json():
    check_adapter_config(
        _config(target_modules=["lm_head"]),
        base_model_id=BASE,
        max_rank=16,
        extra_target_modules=["lm_head"],
    )
    with pytest.raises(InvalidArgument, match="is not JSON"):
        check_adapter_config(b"{", base_model_id=BASE, max_rank=16)
    assert same_base("", BASE)


def test_safetensors_header(tmp_path):
    header = json.dumps({"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}).encode()
    good = tmp_path / "good.safetensors"
    good.write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * 4)
    assert check_safetensors_header(good) == 1
    pickle = tmp_path / "pickle.safetensors"
    pickle.write_bytes(b"\x80\x04\x95" + b"\0" * 64)  # a pickle renamed to .safetensors
    with pytest.raises(InvalidArgument, match="no valid safetensors header"):
        check_safetensors_header(pickle)


def test_one_compatibility_decision_for_registry_engines_and_export(tmp_path):
    """The engines and `mapperctl export` check a directory with the registry's own rules, and
    refuse the same adapters with the same status (INVALID_ARGUMENT)."""
    header = json.dumps({"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}).encode()
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_model.safetensors").write_bytes(
        struct.pack("<Q", len(header)) + header + b"\0" * 4
    )
    (adapter / "adapter_config.json").write_bytes(_config())
    assert check_adapter_dir(adapter, max_rank=16).rank == 16
    for overrides, message in (({"use_dora": True}, "DoRA"), ({"r": 32}, "exceeds")):
        (adapter / "adapter_config.json").write_bytes(_config(**overrides))
        with pytest.raises(InvalidArgument, match=message) as dir_refusal:
            check_adapter_dir(adapter, max_rank=16)
        with pytest.raises(InvalidArgument) as registry_refusal:
            check_adapter_config(_config(**overrides), base_model_id=BASE, max_rank=16)
        assert dir_refusal.value.code == registry_refusal.value.code == "INVALID_ARGUMENT"
    (adapter / "adapter_model.safetensors").unlink()
    with pytest.raises(InvalidArgument, match="not a LoRA adapter"):
        check_adapter_dir(adapter, max_rank=16)


def test_targets_and_rollout_validation():
    d.PerformanceTargets("cpu-2core", p95_latency_ms=250, min_accuracy=0.9).validate()
    for bad in ({"min_accuracy": 1.5}, {"max_ece": -0.1}, {"p95_latency_ms": 0}, {}):
        with pytest.raises(InvalidArgument):
            d.PerformanceTargets("cpu-2core", **bad).validate()
    with pytest.raises(InvalidArgument, match="hardware profile"):
        d.PerformanceTargets("CPU 2", min_accuracy=0.5).validate()
    d.RolloutSpec(1, 2, 0.05, d.RolloutStage.CANARY).validate()
    for spec in (
        d.RolloutSpec(1, 1, 0.5, d.RolloutStage.CANARY),
        d.RolloutSpec(1, 2, 1.5, d.RolloutStage.CANARY),
        d.RolloutSpec(1, 2, 0.5, d.RolloutStage.ROLLED_BACK),
        d.RolloutSpec(1, 2, 0.5, d.RolloutStage.SHADOW),
    ):
        with pytest.raises(InvalidArgument):
            spec.validate()
    for name in ("Champion", "9x", "a b"):
        with pytest.raises(InvalidArgument):
            d.check_alias_name(name)


def test_migrations_match_the_orm_schema(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path}/r.db")
    migrate(engine)
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == []


def test_tls_settings_come_in_pairs(tmp_path):
    with pytest.raises(ValueError, match="TLS_KEY_FILE"):
        RegistrySettings(tls_cert_file=Path(tmp_path / "c.pem"))
