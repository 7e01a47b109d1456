"""Checks what schemas of the outer objects cannot see: what KubeRay objects and ConfigMaps embed.

Run by scripts/lint_deploy.sh after check-jsonschema has checked each object's own shape:
- every pod template inside a RayCluster / RayJob / RayService, wrapped as a core PodTemplate and
  validated in full with kubernetes-validate (strict: unknown fields fail);
- the Ray container comes first in each Ray pod template and all Ray pods of one object run one image
  (KubeRay reads container 0; a head and workers on different Ray versions do not form a cluster);
- each RayService's serveConfigV2, and each Serve config file, against Ray Serve's ServeDeploySchema;
- each ConfigMap labelled llama-mapper.io/training-config, and each training config file, against
  schemas/training-config.json.
Usage: python deploy/check_embedded.py --k8s-version 1.35.0 --repo ROOT FILE... ; exit 1 on any problem.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import yaml

RAY_KINDS = {"RayCluster", "RayJob", "RayService"}
TRAINING_CONFIG_LABEL = "llama-mapper.io/training-config"


def pod_templates(obj: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any], bool]]:
    """(path, pod template, is a Ray node) for every pod template a KubeRay object embeds."""
    spec = obj.get("spec") or {}
    if obj["kind"] == "RayCluster":
        cluster, prefix = spec, "spec"
    elif obj["kind"] == "RayJob":
        cluster, prefix = spec.get("rayClusterSpec") or {}, "spec.rayClusterSpec"
        if "submitterPodTemplate" in spec:
            yield "spec.submitterPodTemplate", spec["submitterPodTemplate"], False
    else:
        cluster, prefix = spec.get("rayClusterConfig") or {}, "spec.rayClusterConfig"
    if "headGroupSpec" in cluster:
        yield f"{prefix}.headGroupSpec.template", cluster["headGroupSpec"].get("template", {}), True
    for i, group in enumerate(cluster.get("workerGroupSpecs") or []):
        yield f"{prefix}.workerGroupSpecs[{i}].template", group.get("template", {}), True


def check_ray_object(obj: dict[str, Any], k8s_version: str) -> list[str]:
    problems: list[str] = []
    images: set[str] = set()
    for path, template, is_ray_node in pod_templates(obj):
        wrapped = {
            "apiVersion": "v1",
            "kind": "PodTemplate",
            "metadata": {"name": "embedded"},
            "template": template,
        }
        try:
            kubernetes_validate.validate(wrapped, k8s_version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            problems.append(f"{path}: {exc.message} (at {'.'.join(map(str, exc.path))})")
        containers = (template.get("spec") or {}).get("containers") or []
        if is_ray_node and containers:
            if not str(containers[0].get("name", "")).startswith("ray-"):
                problems.append(
                    f"{path}: the Ray container must come first (KubeRay reads index 0)"
                )
            images.add(containers[0].get("image", ""))
    if len(images) > 1:
        problems.append(f"head and workers run different images: {sorted(images)}")
    if obj["kind"] == "RayService":
        problems += check_serve_config(obj["spec"].get("serveConfigV2", ""), "spec.serveConfigV2")
    return problems


def check_serve_config(text: str, where: str) -> list[str]:
    from ray.serve.schema import ServeDeploySchema  # heavy import: only when a Serve config is seen

    try:
        config = yaml.safe_load(text)
        ServeDeploySchema.model_validate(config)
    except (yaml.YAMLError, ValueError) as exc:  # pydantic's ValidationError is a ValueError
        return [f"{where}: not a valid Ray Serve config: {exc}"]
    return []


def check_training_config(config: Any, where: str, schema: dict[str, Any]) -> list[str]:
    validator = jsonschema.Draft202012Validator(schema)
    return [
        f"{where}: {'.'.join(map(str, error.absolute_path)) or '<root>'}: {error.message}"
        for error in validator.iter_errors(config)
    ]


def check_file(path: Path, k8s_version: str, training_schema: dict[str, Any]) -> list[str]:
    try:
        documents = [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d]
    except yaml.YAMLError as exc:
        return [f"{path}: not YAML: {exc}"]
    problems: list[str] = []
    for doc in documents:
        kind = doc.get("kind") if isinstance(doc, dict) else None
        if kind in RAY_KINDS:
            problems += [f"{path}: {kind}: {p}" for p in check_ray_object(doc, k8s_version)]
        elif kind == "ConfigMap":
            labels = (doc.get("metadata") or {}).get("labels") or {}
            if labels.get(TRAINING_CONFIG_LABEL) == "true":
                for key, text in (doc.get("data") or {}).items():
                    problems += check_training_config(
                        yaml.safe_load(text), f"{path}: data.{key}", training_schema
                    )
        elif isinstance(doc, dict) and "applications" in doc:
            problems += check_serve_config(yaml.safe_dump(doc), str(path))
        elif isinstance(doc, dict) and "adapter" in doc and "base_model" in doc:
            problems += check_training_config(doc, str(path), training_schema)
        else:
            problems.append(f"{path}: nothing to check here (kind {kind!r})")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--k8s-version", required=True, help="Kubernetes version, e.g. 1.35.0")
    parser.add_argument("--repo", type=Path, required=True, help="repository root (for schemas/)")
    parser.add_argument("files", nargs="+", type=Path)
    args = parser.parse_args(argv)
    schema = json.loads(
        (args.repo / "schemas" / "training-config.json").read_text(encoding="utf-8")
    )
    problems = [p for f in args.files for p in check_file(f, args.k8s_version, schema)]
    for problem in problems:
        print(problem, file=sys.stderr)
    print(f"{len(args.files)} files, {len(problems)} problems")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
