"""Real backends for the registry tests: a throwaway PostgreSQL database, moto's S3 server, adapters."""

from __future__ import annotations

import hashlib
import json
import os
import re
import struct
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
from sqlalchemy.engine import make_url

PG_ADMIN = os.environ.get("MAPPER_TEST_PG_ADMIN", "postgresql://postgres@127.0.0.1:5432/postgres")
LLAMA_BASE = "meta-llama/Llama-3-8b-instruct"
LLAMA_SHA = hashlib.sha256(b"llama-3-8b-instruct weights").hexdigest()
PHI3_BASE = "microsoft/Phi-3-mini-4k-instruct"
PHI3_SHA = hashlib.sha256(b"phi-3-mini weights").hexdigest()
TOKEN = "test-token-" + "x" * 20
BUCKET = "registry-test"


@contextmanager
def postgres_database() -> Iterator[str]:
    """A uniquely named database for this test session, dropped afterwards; yields its URL."""
    name = f"registry_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = make_url(PG_ADMIN).set(drivername="postgresql+psycopg", database=name)
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def moto_s3() -> Iterator[str]:
    """moto's standalone S3 server on a free port, with the test bucket; yields its endpoint URL."""
    import boto3
    from moto.server import ThreadedMotoServer

    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket=BUCKET)
    try:
        yield endpoint
    finally:
        server.stop()


def safetensors_bytes(rank: int = 8, hidden: int = 16) -> bytes:
    """A small but well-formed safetensors file holding one LoRA pair."""
    n = rank * hidden * 4
    header = {
        "base_model.model.layers.0.self_attn.q_proj.lora_A.weight": {
            "dtype": "F32",
            "shape": [rank, hidden],
            "data_offsets": [0, n],
        },
        "base_model.model.layers.0.self_attn.q_proj.lora_B.weight": {
            "dtype": "F32",
            "shape": [hidden, rank],
            "data_offsets": [n, 2 * n],
        },
    }
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw + os.urandom(2 * n)


def make_adapter(
    directory: Path,
    *,
    rank: int = 8,
    target_modules: list[str] | None = None,
    base: str = LLAMA_BASE,
    extra_config: dict | None = None,
    extra_files: dict[str, bytes] | None = None,
) -> Path:
    """Write an adapter directory the serving engine would load (unless told otherwise)."""
    directory.mkdir(parents=True, exist_ok=True)
    config = {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM",
        "r": rank,
        "lora_alpha": 2 * rank,
        "lora_dropout": 0.1,
        "bias": "none",
        "target_modules": target_modules or ["q_proj", "k_proj", "v_proj", "o_proj"],
        "base_model_name_or_path": base,
        "modules_to_save": None,
        "use_dora": False,
        **(extra_config or {}),
    }
    (directory / "adapter_config.json").write_text(json.dumps(config))
    (directory / "adapter_model.safetensors").write_bytes(safetensors_bytes(rank))
    (directory / "README.md").write_text("test adapter\n")
    for name, data in (extra_files or {}).items():
        (directory / name).write_bytes(data)
    return directory


def lineage(base: str = LLAMA_BASE, sha: str = LLAMA_SHA, **extra: str) -> dict[str, str]:
    return {"base_model_id": base, "base_model_sha256": sha, **extra}


@contextmanager
def server_process(
    env: dict[str, str], *, timeout_s: float = 60.0
) -> Iterator[tuple[subprocess.Popen, int]]:
    """`python -m llama_mapper.registry.server` on a free port; yields (process, port)."""
    full_env = {**os.environ, "MAPPER_REGISTRY_PORT": "0", "MAPPER_REGISTRY_TOKEN": TOKEN, **env}
    proc = subprocess.Popen(
        [sys.executable, "-m", "llama_mapper.registry.server"],
        env=full_env,
        stderr=subprocess.PIPE,
        text=True,
    )
    port_found: list[int] = []
    ready = threading.Event()

    def watch() -> None:
        for line in proc.stderr:
            match = re.search(r"registry listening on [^ ]+:(\d+)", line)
            if match and not port_found:
                port_found.append(int(match.group(1)))
                ready.set()
        ready.set()

    threading.Thread(target=watch, daemon=True).start()
    try:
        if not ready.wait(timeout_s) or not port_found:
            raise RuntimeError(f"registry server did not start (exit code {proc.poll()})")
        yield proc, port_found[0]
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def evaluated(client, model: str, *versions: int, profile: str = "cpu-2core") -> None:
    """What an evaluation run and its gate record, so the versions may take traffic: a fitted
    temperature and a passing gate for `profile`."""
    for version in versions:
        client.record_metrics(model, version, {"exact_set_accuracy": 0.95}, temperature=1.0)
        client.record_gate_result(model, version, profile, passed=True, summary="test gate")


def start_registry(root: Path, *, token: str | None = None, **settings):
    """An in-process registry server on a free port over SQLite and local files under `root`,
    started; returns (server, address). `token=None`: local development (every call accepted)."""
    from llama_mapper.platform.settings.registry import RegistrySettings
    from llama_mapper.registry.server import create_server

    root.mkdir(parents=True, exist_ok=True)
    config = RegistrySettings(
        port=0,
        database_url=f"sqlite:///{root / 'registry.db'}",
        artifact_uri=str(root / "artifacts"),
        **({"token": token} if token else {"allow_insecure_writes": True}),
        **settings,
    )
    server, port = create_server(config)
    server.start()
    return server, f"127.0.0.1:{port}"


@contextmanager
def running_registry(root: Path, *, token: str | None = TOKEN, **settings) -> Iterator[str]:
    """start_registry for the length of a `with` block (with the test token by default)."""
    server, address = start_registry(root, token=token, **settings)
    try:
        yield address
    finally:
        server.stop(None).wait()
