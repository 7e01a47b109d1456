"""Kill the server in the middle of an upload: after restart no partial version exists and a retry succeeds."""

from __future__ import annotations

import hashlib
import os
import signal
import threading
import time
from pathlib import Path

import grpc
import pytest

from llama_mapper._proto.registry.v1 import registry_pb2 as pb
from llama_mapper._proto.registry.v1 import registry_pb2_grpc as pb_grpc
from llama_mapper.domain.errors import NotFound
from llama_mapper.registry.client import RegistryClient
from tests.support.registry import TOKEN, lineage, make_adapter, server_process

pytestmark = pytest.mark.integration


def test_server_killed_mid_upload_leaves_no_version_and_retry_succeeds(tmp_path):
    artifacts = tmp_path / "artifacts"
    env = {
        "MAPPER_REGISTRY_DATABASE_URL": f"sqlite:///{tmp_path}/registry.db",
        "MAPPER_REGISTRY_ARTIFACT_URI": str(artifacts),
        "MAPPER_REGISTRY_STAGING_SWEEP_AGE_S": "0",
    }
    adapter = make_adapter(
        tmp_path / "adapter", extra_files={"notes.txt": os.urandom(4 * 1024 * 1024)}
    )
    half_sent, release = threading.Event(), threading.Event()
    outcome: list[grpc.StatusCode] = []

    def requests():
        meta = pb.VersionMetadata(
            model="mapper", idempotency_key="raysubmit_crash", lineage=pb.Lineage(**lineage())
        )
        yield pb.RegisterVersionRequest(metadata=meta)
        for path in sorted(adapter.iterdir()):
            data = path.read_bytes()
            digest = hashlib.sha256(data).hexdigest()
            yield pb.RegisterVersionRequest(
                file=pb.FileHeader(name=path.name, sha256=digest, size_bytes=len(data))
            )
            if path.name == "notes.txt":
                yield pb.RegisterVersionRequest(chunk=data[: len(data) // 2])
                half_sent.set()
                release.wait(30)  # the server dies here, half-way through this file
            yield pb.RegisterVersionRequest(chunk=data)

    with server_process(env) as (proc, port):

        def upload() -> None:
            with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
                stub = pb_grpc.RegistryServiceStub(channel)
                try:
                    stub.RegisterVersion(
                        requests(), metadata=[("authorization", f"Bearer {TOKEN}")], timeout=60
                    )
                except grpc.RpcError as exc:
                    outcome.append(exc.code())

        thread = threading.Thread(target=upload)
        thread.start()
        assert half_sent.wait(30)
        staging = artifacts / ".staging"
        deadline = time.monotonic() + 10
        while (
            not any(p.stat().st_size for p in staging.glob("*/notes.txt"))
            and time.monotonic() < deadline
        ):
            time.sleep(0.05)
        assert any(staging.glob("*/notes.txt")), "the server should be receiving the upload"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        release.set()
        thread.join(30)
    assert outcome == [grpc.StatusCode.UNAVAILABLE]
    assert any(staging.iterdir())  # the half-received upload is still on disk...

    with (
        server_process(env) as (_, port),
        RegistryClient(f"127.0.0.1:{port}", token=TOKEN) as client,
    ):
        assert not any(staging.iterdir())  # ...until the restarted server sweeps it
        with pytest.raises(NotFound):
            client.list_versions("mapper")
        assert not (artifacts / "mapper").exists()
        first = client.register_directory(
            "mapper", adapter, lineage=lineage(), idempotency_key="raysubmit_crash"
        )
        retry = client.register_directory(
            "mapper", adapter, lineage=lineage(), idempotency_key="raysubmit_crash"
        )
        assert first.created and not retry.created
        assert first.version.version == retry.version.version == 1
        assert [v.version for v in client.list_versions("mapper")] == [1]
        downloaded = client.download("mapper", 1, tmp_path / "out")
        assert (downloaded / "notes.txt").read_bytes() == (adapter / "notes.txt").read_bytes()
    assert len(list(Path(artifacts / "mapper").iterdir())) == 1
