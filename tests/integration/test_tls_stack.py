"""The local stack with TLS on: every gRPC service serves TLS only (a certificate of the stack's
own CA), and the demo's registry, validation and evaluation calls work over it with mapperctl,
which finds the CA the way it finds the stack's tokens."""

from __future__ import annotations

import json
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.support.eval_cases import build_eval_set
from tests.support.registry import make_adapter
from tests.support.stack import Stack

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def tls_stack(tmp_path_factory):
    stack = Stack(tmp_path_factory.mktemp("tls-stack"))
    out = stack.mapperctl("stack", "up", "--tls", "--no-ray", timeout=300).stdout
    assert "TLS: every service" in out
    try:
        yield stack
    finally:
        stack.mapperctl("stack", "down", check=False, timeout=120)


def test_every_service_refuses_plaintext_and_answers_over_tls(tls_stack):
    ca = (tls_stack.var / "tls" / "ca.pem").read_bytes()
    for name in ("VALIDATION", "REGISTRY", "EVALUATION"):
        address = f"127.0.0.1:{tls_stack.ports[f'MAPPER_{name}_PORT']}"
        with grpc.insecure_channel(address) as plain, pytest.raises(grpc.RpcError):
            health_pb2_grpc.HealthStub(plain).Check(health_pb2.HealthCheckRequest(), timeout=5)
        credentials = grpc.ssl_channel_credentials(root_certificates=ca)
        with grpc.secure_channel(address, credentials) as secure:
            reply = health_pb2_grpc.HealthStub(secure).Check(
                health_pb2.HealthCheckRequest(), timeout=10
            )
            assert reply.status == health_pb2.HealthCheckResponse.SERVING


def test_the_demos_registry_validation_and_evaluation_calls_over_tls(tls_stack, tmp_path):
    adapter = make_adapter(tmp_path / "adapter")
    lineage = tmp_path / "lineage.json"
    lineage.write_text(
        json.dumps(
            {"base_model_id": "meta-llama/Llama-3-8b-instruct", "base_model_sha256": "a" * 64}
        )
    )
    registered = json.loads(
        tls_stack.mapperctl(
            "registry", "register", "mapper", str(adapter), "--lineage", str(lineage), "--json"
        ).stdout
    )
    assert registered["created"]
    listed = tls_stack.mapperctl("registry", "list", "mapper").stdout
    assert "1" in listed
    shown = tls_stack.mapperctl("registry", "show", "mapper", "1").stdout
    assert "mapper v1" in shown
    # The evaluation service over TLS, reaching the registry over TLS itself.
    eval_set = build_eval_set(tmp_path / "set", per_detector=1)
    run = tls_stack.mapperctl("eval", "run", "--rules-only", "--eval-set", str(eval_set), "--json")
    assert json.loads(run.stdout)["quality"]["case_count"] > 0
    # The rules answer locally whatever the stack speaks.
    mapped = tls_stack.mapperctl(
        "map",
        "--rules-only",
        input_text='{"detector":"presidio","output":[{"entity_type":"EMAIL_ADDRESS","start":0,"end":9,"score":1.0}]}\n',
    )
    assert json.loads(mapped.stdout)["taxonomy"] == ["pii.email_address"]


def test_a_client_without_the_ca_cannot_talk_to_it(tls_stack):
    env = {k: v for k, v in tls_stack.env.items() if not k.endswith("_CA_FILE")}
    env["MAPPER_VAR_DIR"] = str(Path(tls_stack.root) / "elsewhere")  # no stack CA to find
    env["MAPPER_REGISTRY_TOKEN"] = (tls_stack.var / "registry-token").read_text().strip()
    failed = tls_stack.mapperctl("registry", "list", env=env, check=False, timeout=120)
    assert failed.returncode != 0
    assert "UNAVAILABLE" in failed.stderr
