"""What we ship is secure by default: TLS and a token for every service, checked on the manifests.

compose.yaml and the Kubernetes manifests must give each gRPC service (registry, validation,
evaluation) a TLS certificate and key and its token (validation also its report signing key), never probe it in plaintext, give every container that
talks to the registry the CA to check it with, and give the serving endpoint a bearer token.
Usage: python deploy/check_secure.py DEPLOY_DIR ; exit 1 naming each gap with its file.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

SERVICES = {"registry": "REGISTRY", "validation": "VALIDATION", "evaluation": "EVALUATION"}
# Beyond TLS: what each service must be given to authenticate callers and sign what it vouches for.
SECRETS = {
    "registry": ("MAPPER_REGISTRY_TOKEN",),
    "validation": ("MAPPER_VALIDATION_TOKEN", "MAPPER_VALIDATION_SIGNING_KEY"),
    "evaluation": ("MAPPER_REGISTRY_TOKEN",),
}


def _k8s_env(env: list[dict[str, Any]] | None) -> set[str]:
    return {item["name"] for item in env or []}


def _containers(document: Any) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every container in a Deployment, a RayCluster/RayService/RayJob's pod templates."""
    if isinstance(document, dict):
        for container in document.get("containers", []) or []:
            if isinstance(container, dict) and "image" in container:
                yield container.get("name", "?"), container
        for value in document.values():
            yield from _containers(value)
    elif isinstance(document, list):
        for value in document:
            yield from _containers(value)


def check_compose(path: Path) -> list[str]:
    problems = []
    services = yaml.safe_load(path.read_text())["services"]
    for name, prefix in SERVICES.items():
        env = services[name].get("environment") or {}
        for key in (f"MAPPER_{prefix}_TLS_CERT_FILE", f"MAPPER_{prefix}_TLS_KEY_FILE"):
            if key not in env:
                problems.append(f"{path}: service {name} sets no {key}")
        for key in SECRETS[name]:
            if key not in env:
                problems.append(f"{path}: service {name} is given no {key}")
        probe = " ".join(services[name].get("healthcheck", {}).get("test", []))
        if "health_probe" in probe and "--ca-file" not in probe:
            problems.append(f"{path}: service {name} is probed without TLS")
    for name, service in services.items():
        env = service.get("environment") or {}
        if "MAPPER_REGISTRY_ADDRESS" in env and "MAPPER_REGISTRY_CA_FILE" not in env:
            problems.append(f"{path}: service {name} reaches the registry without its CA")
    if "MAPPER_SERVING_AUTH_TOKEN" not in (services["serving"].get("environment") or {}):
        problems.append(f"{path}: serving runs without MAPPER_SERVING_AUTH_TOKEN")
    return problems


def check_k8s(path: Path) -> list[str]:
    problems = []
    for document in yaml.safe_load_all(path.read_text()):
        if not isinstance(document, dict):
            continue
        kind = document.get("kind", "")
        for name, container in _containers(document.get("spec", {})):
            env = _k8s_env(container.get("env"))
            if path.parent.name == "core" and name in SERVICES:
                prefix = SERVICES[name]
                for key in (f"MAPPER_{prefix}_TLS_CERT_FILE", f"MAPPER_{prefix}_TLS_KEY_FILE"):
                    if key not in env:
                        problems.append(f"{path}: container {name} sets no {key}")
                for key in SECRETS[name]:
                    if key not in env:
                        problems.append(f"{path}: container {name} is given no {key}")
                for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                    if "grpc" in (container.get(probe) or {}):
                        problems.append(f"{path}: {name}'s {probe} is a plaintext gRPC probe")
            if "MAPPER_REGISTRY_ADDRESS" in env and "MAPPER_REGISTRY_CA_FILE" not in env:
                problems.append(
                    f"{path}: {kind} container {name} reaches the registry without its CA"
                )
            if kind == "RayService" and "MAPPER_SERVING_AUTH_TOKEN" not in env:
                problems.append(f"{path}: RayService container {name} serves without a token")
    return problems


def main(argv: list[str]) -> int:
    deploy = Path(argv[0]) if argv else Path(__file__).parent
    problems = check_compose(deploy / "compose.yaml")
    for path in sorted((deploy / "k8s").glob("*/*.yaml")):
        problems += check_k8s(path)
    for problem in problems:
        print(problem)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
