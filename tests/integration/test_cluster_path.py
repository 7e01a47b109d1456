"""The cluster path, proven on the local stack: each RayService manifest's serveConfigV2 deployed
with Serve's own `serve deploy`, and the RayJob's entrypoint run as a `ray job submit`.

The configs are the manifests' own; what a 2-core machine without a GPU cannot give is changed
and said: actor CPUs scaled down, no GPU (the GPU variant runs with its engine disabled: the
CUDA build of vLLM is not installable here), the HTTP port a free one, and the ConfigMap's
training config pointed at a tiny local dataset and base instead of S3.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import httpx
import pytest
import yaml

from tests.support.serving import free_port
from tests.support.training_data import write_dataset

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
MAPPED = [{"entity_type": "EMAIL_ADDRESS", "start": 0, "end": 9, "score": 0.99}]


def serve_config(variant: str, port: int) -> dict:
    manifest = yaml.safe_load((REPO / "deploy" / "k8s" / variant / "rayservice.yaml").read_text())
    config = yaml.safe_load(manifest["spec"]["serveConfigV2"])
    config["http_options"]["port"] = port
    config["proxy_location"] = "HeadOnly"
    for app in config["applications"]:
        env = app.setdefault("runtime_env", {}).setdefault("env_vars", {})
        env["MAPPER_SERVING_HTTP_PORT"] = str(port)
        env["MAPPER_SERVING_GRPC_PORT"] = "0"
        env["MAPPER_SERVING_ENGINE__KV_CACHE_SPACE_GIB"] = "1"
        if variant == "gpu":
            # No engine here, so no engine deployment for the config to override either: Serve
            # refuses a config that names a deployment the application does not build.
            env["MAPPER_SERVING_ENGINE_ENABLED"] = "false"
            app["deployments"] = [
                d for d in app.get("deployments", []) if not d["name"].startswith("MapperEngine")
            ]
        for deployment in app.get("deployments", []):
            options = deployment.setdefault("ray_actor_options", {})
            options["num_cpus"] = 1
            options.pop("num_gpus", None)
            deployment.pop("autoscaling_config", None)
            deployment["num_replicas"] = 1
    return config


@pytest.mark.parametrize("variant", ["cpu", "gpu"])
def test_serve_deploy_of_each_rayservice_config_answers(local_stack, variant, tmp_path):
    port = free_port()
    config_path = tmp_path / f"serve-{variant}.yaml"
    config_path.write_text(yaml.safe_dump(serve_config(variant, port)))
    dashboard = f"http://127.0.0.1:{local_stack.ports['MAPPER_RAY_DASHBOARD_PORT']}"
    ray = str(Path(MAPPERCTL_DIR()) / "serve")
    env = {**local_stack.env, "RAY_AUTH_MODE": "token"}
    deployed = subprocess.run(
        [ray, "deploy", str(config_path), "--address", dashboard],
        env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 600
        answer = None
        checked = time.monotonic()
        while time.monotonic() < deadline:
            if time.monotonic() - checked > 15:  # a failed deploy fails now, not in 10 minutes
                checked = time.monotonic()
                status = subprocess.run(
                    [ray, "status", "--address", dashboard],
                    env=env, capture_output=True, text=True, timeout=120, check=False,
                )  # fmt: skip
                assert "DEPLOY_FAILED" not in status.stdout, status.stdout[-4000:]
            try:
                answer = httpx.post(
                    f"{url}/v1/map",
                    json={"detector": "presidio", "output": MAPPED},
                    headers=local_stack.headers,
                    timeout=30,
                )
                if answer.status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(2)
        assert answer is not None and answer.status_code == 200, answer and answer.text
        assert answer.json()["result"]["taxonomy"] == ["pii.email_address"]
        # The registry the manifest names through MAPPER_REGISTRY_ADDRESS is the one it reads.
        health = httpx.get(f"{url}/healthz", timeout=30).json()
        assert health["registry"]["state"] in ("fresh", "never", "stale")
        assert health["engine"] is (variant == "cpu")
    finally:
        subprocess.run(
            [ray, "shutdown", "--yes", "--address", dashboard],
            env=env, capture_output=True, text=True, timeout=300, check=False,
        )  # fmt: skip


def MAPPERCTL_DIR() -> str:
    import sys

    return str(Path(sys.executable).parent)


def test_the_rayjob_entrypoint_runs_as_a_ray_job_submit(local_stack, tmp_path, monkeypatch):
    from llama_mapper.inference.base_model import prepare_base_model, tiny_llama

    # The dataset's report is signed with the stack's key: the one its Ray head's jobs check.
    key = (local_stack.var / "validation-signing-key").read_text().strip()
    monkeypatch.setenv("MAPPER_VALIDATION_SIGNING_KEY", key)

    manifest = yaml.safe_load((REPO / "deploy" / "k8s" / "cpu" / "rayjob-train.yaml").read_text())
    entrypoint = manifest["spec"]["entrypoint"].split()
    configmap = yaml.safe_load(
        (REPO / "deploy" / "k8s" / "cpu" / "training-config.yaml").read_text()
    )
    config = yaml.safe_load(configmap["data"]["mapper.yaml"])
    base = tiny_llama(prepare_base_model().path, tmp_path / "tiny")
    config["base_model"] = {"id": str(base)}
    config["dataset"]["path"] = str(write_dataset(tmp_path / "data", n_train=32, n_eval=8))
    config["storage"] = {"path": str(tmp_path / "runs"), "registry": ""}
    config["training"].update(max_steps=2, batch_size=4, logging_steps=1, eval_steps=2)
    config["scaling"].update(num_workers=1, cpus_per_worker=1)
    config_path = tmp_path / "mapper.yaml"
    config_path.write_text(yaml.safe_dump(config))
    at = entrypoint.index("--config")
    entrypoint[at + 1] = str(config_path)
    dashboard = f"http://127.0.0.1:{local_stack.ports['MAPPER_RAY_DASHBOARD_PORT']}"
    runtime_env = {"env_vars": {"MAPPER_REGISTRY_ADDRESS": ""}}  # this run registers nothing
    submitted = subprocess.run(
        [str(Path(MAPPERCTL_DIR()) / "ray"), "job", "submit", "--address", dashboard,
         "--runtime-env-json", json.dumps(runtime_env), "--", *entrypoint],
        env={**local_stack.env, "RAY_AUTH_MODE": "token"}, cwd=REPO,
        capture_output=True, text=True, timeout=900, check=False,
    )  # fmt: skip
    out = submitted.stdout + submitted.stderr
    assert submitted.returncode == 0, out[-4000:]
    assert "succeeded" in out.lower()
