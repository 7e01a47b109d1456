"""scripts/lint_deploy.sh passes on deploy/ and fails, naming each check, on a broken copy of it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "lint_deploy.sh"
TOOLS = ("hadolint", "check-jsonschema", "kubernetes-validate")


def run_lint(root: Path) -> subprocess.CompletedProcess[str]:
    # The tools live next to this interpreter (the project's .venv), whichever root is linted.
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    return subprocess.run(
        ["bash", str(root / "scripts" / "lint_deploy.sh"), str(root)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )


pytestmark = pytest.mark.skipif(
    any(shutil.which(t, path=str(Path(sys.executable).parent)) is None for t in TOOLS),
    reason="deploy lint tools are not installed (make setup)",
)


def test_deploy_directory_passes() -> None:
    result = run_lint(REPO)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "deploy lint: all checks passed" in result.stdout
    assert "FAIL" not in result.stdout


def _replace(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


def test_broken_copy_fails_on_every_layer(tmp_path: Path) -> None:
    shutil.copytree(REPO / "deploy", tmp_path / "deploy")
    shutil.copytree(REPO / "schemas", tmp_path / "schemas")
    (tmp_path / "scripts").mkdir()
    shutil.copy2(SCRIPT, tmp_path / "scripts" / "lint_deploy.sh")
    deploy = tmp_path / "deploy"

    # A Dockerfile that ends as root (hadolint DL3002).
    with (deploy / "docker" / "registry.Dockerfile").open("a", encoding="utf-8") as f:
        f.write("USER root\n")
    # A compose service with a key the Compose Spec does not know.
    _replace(deploy / "compose.yaml", "  postgres:\n", "  postgres:\n    replica: 2\n")
    # A Deployment with a misspelt field (strict kubernetes-validate).
    _replace(
        deploy / "k8s" / "core" / "registry.yaml", "revisionHistoryLimit", "revisionHistoryLimt"
    )
    # A RayJob worker group without its name (required by the KubeRay CRD).
    _replace(deploy / "k8s" / "cpu" / "rayjob-train.yaml", "groupName: cpu", "group: cpu")
    # A training config the recipe would refuse.
    _replace(deploy / "k8s" / "gpu" / "training-config.yaml", "adapter: mapper", "adapter: mapr")
    # A variable no settings class reads (the GPU base model once went unread this way).
    _replace(
        deploy / "k8s" / "gpu" / "rayservice.yaml",
        "MAPPER_SERVING_ENGINE__BASE_MODEL:",
        "MAPPER_SERVING_BASE_MODEL:",
    )

    result = run_lint(tmp_path)
    out = result.stdout
    assert result.returncode == 1, out + result.stderr
    assert "FAIL  hadolint deploy/docker/registry.Dockerfile" in out
    assert "DL3002" in out
    assert "ok    hadolint deploy/docker/validation.Dockerfile" in out
    assert "FAIL  compose-spec deploy/compose.yaml" in out
    assert "FAIL  kubernetes-validate" in out
    assert "revisionHistoryLimt" in out
    assert "FAIL  check-jsonschema rayjob" in out
    assert "ok    check-jsonschema rayservice" in out
    assert "FAIL  embedded pod templates, Serve and training configs" in out
    assert "'mapr' is not one of" in out
    assert "FAIL  MAPPER_* variables set in deploy/ are read by the code" in out
    assert "MAPPER_SERVING_BASE_MODEL is read by nothing" in out
    assert "deploy lint: 6 check(s) failed" in out


def test_secure_check_names_each_gap_in_a_weakened_copy(tmp_path: Path) -> None:
    """TLS and tokens are checked, not assumed: drop them from a copy and each gap is named."""
    copy = tmp_path / "deploy"
    shutil.copytree(REPO / "deploy", copy)
    compose = copy / "compose.yaml"
    compose.write_text(
        compose.read_text()
        .replace("      MAPPER_EVALUATION_TLS_KEY_FILE:", "      # dropped:")
        .replace("      MAPPER_SERVING_AUTH_TOKEN:", "      # dropped:")
    )
    validation = copy / "k8s" / "core" / "validation.yaml"
    validation.write_text(
        validation.read_text().replace("- name: MAPPER_VALIDATION_SIGNING_KEY", "- name: X")
    )
    registry = copy / "k8s" / "core" / "registry.yaml"
    registry.write_text(
        registry.read_text().replace(
            "exec: {command: [python, -m, llama_mapper.platform.rpc.health_probe, "
            '"localhost:50052", --ca-file, /etc/llama-mapper/tls/ca.pem]}',
            "grpc: {port: 50052}",
        )
    )
    service = copy / "k8s" / "cpu" / "rayservice.yaml"
    service.write_text(service.read_text().replace("- name: MAPPER_REGISTRY_CA_FILE", "- name: X"))
    result = subprocess.run(
        [sys.executable, str(copy / "check_secure.py"), str(copy)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 1
    out = result.stdout
    assert "service evaluation sets no MAPPER_EVALUATION_TLS_KEY_FILE" in out
    assert "serving runs without MAPPER_SERVING_AUTH_TOKEN" in out
    assert "container validation is given no MAPPER_VALIDATION_SIGNING_KEY" in out
    assert "registry's readinessProbe is a plaintext gRPC probe" in out
    assert "RayService container" in out and "without its CA" in out
    shipped = subprocess.run(
        [sys.executable, str(REPO / "deploy" / "check_secure.py"), str(REPO / "deploy")],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert shipped.returncode == 0, shipped.stdout
