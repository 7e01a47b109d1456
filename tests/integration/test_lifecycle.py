"""Day two on the real stack: three releases, a redeploy, a hung registry and a dead controller.

The local stack (`mapperctl stack up`: validation, registry, evaluation as processes, a Ray head)
on ports and a var dir of its own, the Serve app with the vLLM engine (`mapperctl serve deploy`),
small random-init adapters registered with `mapperctl registry register`, evaluated and gated
through the evaluation service, and canaried with `mapperctl canary start --follow` while a
thread sends traffic. After each step every model-bound answer must name the champion.
Figures (promotion to 100 %, latency with the registry paused, lease expiry) are written to
var/lifecycle-figures.json and printed.
"""

from __future__ import annotations

import json
import os
import random
import signal
import statistics
import subprocess
import threading
import time

import httpx
import pytest

from tests.support.eval_cases import build_eval_set
from tests.support.serving import make_lora_adapter
from tests.support.stack import MAPPERCTL, Stack

pytestmark = [pytest.mark.integration, pytest.mark.slow]

UNMAPPED = [{"entity_type": "ACME_CUSTOMER_NO", "start": 0, "end": 8, "score": 0.9}]
MAPPED = [{"entity_type": "EMAIL_ADDRESS", "start": 0, "end": 9, "score": 0.99}]
# One step at 100 %: every model-bound request tests the treatment, so a canary needs the least
# traffic (the controller's gates are the same at any weight).
CANARY = ["--interval", "2", "--min-requests", "6", "--steps", "100"]


class Traffic:
    """Model-bound requests from many tenants on a thread; remembers who answered each one."""

    def __init__(self, url: str, headers: dict[str, str]) -> None:
        self.url = url
        self.headers = headers
        self.answers: list[tuple[float, int, str | None]] = []
        self.stop = threading.Event()
        # Four callers: the engine batches what arrives together.
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(4)]

    def _run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=120, headers=self.headers) as client:
            while not self.stop.is_set():
                tenant = f"t{random.randrange(10_000)}"
                try:
                    r = client.post(
                        "/v1/map",
                        json={"detector": "presidio", "output": UNMAPPED},
                        headers={"x-tenant-id": tenant},
                    )
                except httpx.HTTPError:
                    continue
                if r.status_code == 200:
                    body = r.json()
                    self.answers.append(
                        (time.monotonic(), body["adapter_version"], body["router_arm"])
                    )

    def __enter__(self) -> Traffic:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(150)


def model_bound_versions(stack: Stack, n: int = 12) -> list[int]:
    versions = []
    with httpx.Client(base_url=stack.url, timeout=120, headers=stack.headers) as client:
        for i in range(n):
            r = client.post(
                "/v1/map",
                json={"detector": "presidio", "output": UNMAPPED},
                headers={"x-tenant-id": f"check-{i}-{random.randrange(10**6)}"},
            )
            assert r.status_code == 200, r.text
            body = r.json()
            assert body["result"]["findings"][0]["method"] in ("model", "fallback")
            versions.append(body["adapter_version"])
    return versions


@pytest.fixture(scope="module")
def stack(local_stack):
    from llama_mapper.inference.base_model import prepare_base_model

    stack = local_stack
    base = prepare_base_model()
    stack.adapters = {
        # Close to the base: each answers as well as the base does, so canaries pass on merit
        # and v3 fails only on the gate the test sets for it.
        seed: make_lora_adapter(base.path, stack.root / f"adapter-{seed}", seed=seed, std=0.001)
        for seed in (1, 2, 3, 4)
    }
    stack.eval_set = build_eval_set(stack.root / "eval-set", per_detector=1)
    stack.deploy()
    try:
        yield stack
    finally:
        stack.mapperctl("serve", "shutdown", "--address", stack.ray, check=False, timeout=120)
        figures = stack.var / "lifecycle-figures.json"
        figures.write_text(json.dumps(stack.figures, indent=2, sort_keys=True))
        print("lifecycle figures:", json.dumps(stack.figures, sort_keys=True))


def canary_to_promotion(stack: Stack, version: int) -> None:
    """Canaries `version` to promotion under traffic, then measures how long answers kept coming
    from another version after the controller had promoted it."""
    with Traffic(stack.url, stack.headers) as traffic:
        started = time.monotonic()
        stack.mapperctl(
            "canary", "start", "--treatment", str(version), "--follow", *CANARY, timeout=900
        )
        promoted = time.monotonic()
        time.sleep(6)  # traffic goes on after the promotion
    stale = [t for t, v, _ in traffic.answers if t > promoted and v != version]
    stack.figures[f"canary_v{version}_s"] = round(promoted - started, 1)
    stack.figures[f"promotion_to_all_answers_s_v{version}"] = (
        round(max(stale) - promoted, 2) if stale else 0.0
    )
    assert set(model_bound_versions(stack)) == {version}


def evaluate_and_gate(stack: Stack, version: int) -> None:
    started = time.monotonic()
    stack.mapperctl(
        "eval", "run", "--model", "mapper", "--version", str(version), "--hybrid",
        "--eval-set", str(stack.eval_set), "--no-robustness", timeout=900,
    )  # fmt: skip
    gate = stack.mapperctl("eval", "gate", str(version), "--json", check=False)
    assert gate.returncode == 0, gate.stdout + gate.stderr
    stack.figures[f"evaluate_and_gate_v{version}_s"] = round(time.monotonic() - started, 1)


@pytest.mark.timeout(3600)
def test_three_releases_a_redeploy_a_hung_registry_and_a_dead_controller(stack):
    # -- register v1, v2, v3 as adapters trained elsewhere ------------------------------------------
    for seed in (1, 2, 3):
        out = json.loads(
            stack.mapperctl(
                "registry", "register", "mapper", str(stack.adapters[seed]), "--json"
            ).stdout
        )
        assert out["created"] and int(out["version"]["version"]) == seed
    again = json.loads(
        stack.mapperctl("registry", "register", "mapper", str(stack.adapters[1]), "--json").stdout
    )
    assert not again["created"] and int(again["version"]["version"]) == 1  # the same files: v1
    stack.mapperctl(
        "registry", "targets", "mapper", "--profile", "cpu-2core",
        "--set", "p95_latency_ms=600000", "--set", "max_error_rate=0.05",
    )  # fmt: skip

    # -- v1 is refused a canary until it is evaluated -----------------------------------------------
    refused = stack.mapperctl("canary", "start", "--treatment", "1", check=False)
    assert refused.returncode == 2 and "cannot take traffic" in refused.stderr
    evaluate_and_gate(stack, 1)

    # -- canary v1 over the rules -> promoted --------------------------------------------------------
    canary_to_promotion(stack, 1)

    # -- canary v2 over v1 -> promoted ----------------------------------------------------------------
    evaluate_and_gate(stack, 2)
    canary_to_promotion(stack, 2)
    history = stack.mapperctl("registry", "history", "mapper", "--subject", "champion").stdout
    assert "rollout complete" in history

    # -- canary v3 fails a gate (p95 over a 1 ms target) -> rolled back ------------------------------
    evaluate_and_gate(stack, 3)
    stack.mapperctl(
        "registry", "targets", "mapper", "--profile", "cpu-2core", "--set", "p95_latency_ms=1",
        "--reason", "make v3 fail its canary",
    )  # fmt: skip
    with Traffic(stack.url, stack.headers):
        failed = stack.mapperctl(
            "canary", "start", "--treatment", "3", "--follow", *CANARY, check=False, timeout=900
        )
    assert failed.returncode == 1 and "p95" in failed.stdout, failed.stdout + failed.stderr
    assert set(model_bound_versions(stack)) == {2}
    stack.mapperctl(
        "registry", "targets", "mapper", "--profile", "cpu-2core", "--set", "p95_latency_ms=600000",
    )  # fmt: skip

    # -- redeploy the app: still the champion ----------------------------------------------------------
    stack.deploy()
    assert set(model_bound_versions(stack)) == {2}

    # -- pause the registry for 30 s under load: rules answers are unaffected -------------------------
    body = {"detector": "presidio", "output": MAPPED}

    def rules_latencies(seconds: float) -> list[float]:
        out = []
        with httpx.Client(base_url=stack.url, timeout=30, headers=stack.headers) as client:
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                started = time.perf_counter()
                r = client.post("/v1/map", json=body)
                out.append((time.perf_counter() - started) * 1000)
                assert (
                    r.status_code == 200 and r.json()["result"]["findings"][0]["method"] == "rule"
                )
        return out

    healthy = rules_latencies(5)
    registry = stack.pid("registry")
    os.kill(registry, signal.SIGSTOP)
    try:
        paused = rules_latencies(30)
        health = httpx.get(f"{stack.url}/healthz", timeout=10).json()["registry"]
        assert health["state"] == "stale" and health["stale_since"]
    finally:
        os.kill(registry, signal.SIGCONT)

    def quantiles(values: list[float]) -> dict[str, float]:
        cuts = statistics.quantiles(values, n=100)
        return {"n": len(values), "p50_ms": round(cuts[49], 1), "p99_ms": round(cuts[98], 1)}

    stack.figures["rules_latency_registry_healthy"] = quantiles(healthy)
    stack.figures["rules_latency_registry_paused"] = quantiles(paused)
    assert max(paused) < 2000, stack.figures["rules_latency_registry_paused"]

    # -- kill the controller mid-canary: the lease expires to control ------------------------------------
    stack.mapperctl("registry", "register", "mapper", str(stack.adapters[4]))
    evaluate_and_gate(stack, 4)
    with Traffic(stack.url, stack.headers) as traffic:
        controller = subprocess.Popen(
            [MAPPERCTL, "canary", "start", "--treatment", "4", "--follow", "--lease", "8",
             "--interval", "2", "--min-requests", "100000", "--steps", "50,100"],
            env=stack.env, cwd=stack.root, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if any(version == 4 for _, version, _ in traffic.answers[-20:]):
                break
            time.sleep(0.5)
        else:
            raise AssertionError("the treatment never answered")
        controller.kill()  # the controller dies mid-canary
        killed = time.monotonic()
        controller.wait(30)
        while time.monotonic() - killed < 120:
            # Not before the 8 s lease can have run out and the router refreshed (the answers of
            # the last 2 s were once all v2 by chance while it still held and v4 kept its tenants).
            recent = [v for t, v, _ in traffic.answers if t > time.monotonic() - 2]
            expired = time.monotonic() - killed >= 8 + 4
            if expired and recent and set(recent) == {2}:
                break
            time.sleep(0.5)
        stack.figures["lease_expiry_to_control_s"] = round(time.monotonic() - killed, 2)
    assert set(model_bound_versions(stack)) == {2}
    status = stack.mapperctl("canary", "status", check=False).stdout
    deadline = time.monotonic() + 30
    while "aborted" not in status and time.monotonic() < deadline:
        time.sleep(1)
        status = stack.mapperctl("canary", "status", check=False).stdout
    assert "aborted" in status, status
    rollout_history = stack.mapperctl(
        "registry", "history", "mapper", "--subject", "rollout"
    ).stdout
    assert "lease ended" in rollout_history
