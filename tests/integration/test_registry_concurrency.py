"""8 processes x 200 operations mixing registrations and alias moves, against two server processes
sharing one database (SQLite and PostgreSQL). About 30 s per backend on 2 cores;
REGISTRY_CONCURRENCY_OPS=50 makes a quicker run.
"""

from __future__ import annotations

import itertools
import multiprocessing
import os
import random
from collections import Counter
from contextlib import ExitStack

import pytest

from llama_mapper._proto.registry.v1 import registry_pb2 as pb
from llama_mapper.domain.errors import Aborted, NotFound
from llama_mapper.registry.client import RegistryClient
from tests.support.registry import TOKEN, lineage, make_adapter, postgres_database, server_process

pytestmark = pytest.mark.integration

WORKERS = 8
OPS = int(os.environ.get("REGISTRY_CONCURRENCY_OPS", "80"))  # 8 x 80 ops on two servers
ALIASES = ("champion", "challenger")
MODEL = "mapper"


def worker(index: int, addresses: list[str], adapter: str, ops: int) -> dict:
    """One client process: a seeded mix of registrations (some retried) and CAS alias moves."""
    rng = random.Random(index)
    registered: dict[str, int] = {}
    moves: list[tuple[str, int, int]] = []
    conflicts = 0
    known = [1]
    with RegistryClient(
        addresses[index % len(addresses)], token=TOKEN, actor=f"worker-{index}"
    ) as client:
        for op in range(ops):
            if rng.random() < 0.3:
                key = f"w{index}-op{op}"
                version = client.register_directory(
                    MODEL, adapter, lineage=lineage(), idempotency_key=key
                ).version
                if (
                    rng.random() < 0.3
                ):  # a retry after a "lost" response must return the same version
                    again = client.register_directory(
                        MODEL, adapter, lineage=lineage(), idempotency_key=key
                    )
                    assert not again.created and again.version.version == version.version
                registered[key] = version.version
                known.append(version.version)
                continue
            alias = rng.choice(ALIASES)
            try:
                current = client.resolve_alias(MODEL, alias).version
            except NotFound:
                current = 0
            target = rng.choice(known)
            try:
                client.set_alias(
                    MODEL, alias, target, expected_version=current, reason=f"w{index} op{op}"
                )
                moves.append((alias, current, target))
            except Aborted:
                conflicts += 1
    return {"registered": registered, "moves": moves, "conflicts": conflicts}


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request, tmp_path):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/registry.db"
        return
    with postgres_database() as url:
        yield url


def test_concurrent_registrations_and_alias_moves(database_url, tmp_path):
    env = {
        "MAPPER_REGISTRY_DATABASE_URL": database_url,
        "MAPPER_REGISTRY_ARTIFACT_URI": str(tmp_path / "artifacts"),
    }
    adapter = make_adapter(tmp_path / "adapter")
    with ExitStack() as stack:
        # Two server processes on one database: the locking is the database's, not one process's.
        ports = [stack.enter_context(server_process(env))[1] for _ in range(2)]
        addresses = [f"127.0.0.1:{port}" for port in ports]
        with RegistryClient(addresses[0], token=TOKEN) as client:
            client.register_directory(MODEL, adapter, lineage=lineage(), idempotency_key="seed")
        context = multiprocessing.get_context("spawn")
        with context.Pool(WORKERS) as pool:
            results = pool.starmap(
                worker, [(i, addresses, str(adapter), OPS) for i in range(WORKERS)]
            )

        with RegistryClient(addresses[1], token=TOKEN) as client:
            versions = client.list_versions(MODEL)
            history = client.history(MODEL)
            finals = {}
            for alias in ALIASES:
                try:
                    finals[alias] = client.resolve_alias(MODEL, alias).version
                except NotFound:
                    finals[alias] = 0

    # Versions: one per idempotency key, numbered 1..N without gaps or duplicates.
    registered = {k: v for r in results for k, v in r["registered"].items()}
    numbers = [v.version for v in versions]
    assert numbers == list(range(1, len(registered) + 2))
    assert sorted(registered.values()) == numbers[1:]
    assert {
        v.idempotency_key: v.version for v in versions if v.idempotency_key != "seed"
    } == registered

    # History: strictly ordered, every registration and every successful move, nothing else.
    ids = [e.id for e in history]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    times = [e.time.ToDatetime() for e in history]
    assert times == sorted(times)
    registrations = [
        int(e.to_value) for e in history if e.action == pb.HISTORY_ACTION_VERSION_REGISTERED
    ]
    assert registrations == numbers
    reported = Counter(m for r in results for m in r["moves"])
    for alias in ALIASES:
        entries = [e for e in history if e.subject == alias]
        chain = [(alias, int(e.from_value or 0), int(e.to_value)) for e in entries]
        assert Counter(chain) == Counter({m: c for m, c in reported.items() if m[0] == alias})
        # No lost update: each move started from where the previous one left the alias.
        for before, after in itertools.pairwise(chain):
            assert after[1] == before[2]
        assert finals[alias] == (chain[-1][2] if chain else 0)
    total_ops = WORKERS * OPS
    conflicts = sum(r["conflicts"] for r in results)
    assert len(registered) + sum(reported.values()) + conflicts == total_ops
    print(
        f"{total_ops} ops: {len(registered)} registrations, {sum(reported.values())} moves, {conflicts} CAS conflicts"
    )
