"""Locust load for the mapper's router: HTTP and gRPC users, a Zipf tenant mix, per-arm request names."""

# Run it through `mapperctl bench run` (which writes the payload file, sets the variables below and
# judges the result against the registry's targets). By hand, against the local stack:
#
#     python -m llama_mapper.bench.payloads var/bench/payloads.jsonl   # once
#     MAPPER_BENCH_PAYLOADS=var/bench/payloads.jsonl locust -f services/llama_mapper/bench/locustfile.py --headless         -u 20 -r 5 -t 60s --host http://127.0.0.1:8000 MapperHttpUser
#
# Imports stay light on purpose: Locust patches the process with gevent, and torch, vLLM or the
# golden set's loaders have no business here. gRPC works under gevent only after
# `grpc.experimental.gevent.init_gevent()`, called before any channel exists.
#
# Task weights (HTTP user; MAPPER_BENCH_TASKS overrides, e.g. `map=1` for the baseline comparison):
# - map = 8: detectors call the mapper inline, one output per scanned message; most traffic.
# - batch = 1: backfills and log scans send up to 100 outputs at once (MAPPER_BENCH_BATCH_SIZE,
#   default 10); rarer but each one is heavy.
# - analyze = 1: an analyst opens a finding and asks for the framework assessment, with the
#   finding's context (volume, location, environment, region, co-labels). /v1/analyze answers
#   with or without an analyst adapter (the rubric's catalogue then remediates), so it is always
#   in the mix; it has no arm (`analyze [none]`), and the summary reports it per route.
# User classes: MapperHttpUser (weight 3) and MapperGrpcUser (weight 1, when the runner names it),
# as most detector integrations speak HTTP and the high-volume ones gRPC.
#
# Each request is named by the router arm that answered (`map [control]`, `Map [treatment]`), read
# from the answer's `router_arm` (an `x-router-arm` header wins when the router sets one); `[none]` when no rollout
# is active. Locust's CSV then carries one row per (call, arm), which the runner groups per arm.

from __future__ import annotations

import itertools
import json
import random
import time
import uuid

from locust import HttpUser, LoadTestShape, User, between

import grpc  # after locust: its gevent patch must come first  # isort: skip
import grpc.experimental.gevent  # isort: skip

grpc.experimental.gevent.init_gevent()

from llama_mapper._proto.mapper.v1 import mapper_pb2, mapper_pb2_grpc  # noqa: E402
from llama_mapper.bench.shapes import plan_stages, stage_at  # noqa: E402
from llama_mapper.bench.traffic import TenantMix, arm_name, parse_weights  # noqa: E402
from llama_mapper.platform.settings.bench import LocustSettings  # noqa: E402

# Every variable the locustfile reads is a field of LocustSettings (the runner writes them).
SETTINGS = LocustSettings()
PAYLOADS = str(SETTINGS.payloads)
SHAPE = SETTINGS.shape
TASKS = SETTINGS.tasks
BATCH_SIZE = SETTINGS.batch_size
TENANTS = SETTINGS.tenants
ZIPF_EXPONENT = SETTINGS.zipf
TENANT_HEADER = SETTINGS.tenant_header
GRPC_HOST = SETTINGS.grpc_host
TOKEN = SETTINGS.token
WAIT_MIN_S, WAIT_MAX_S = SETTINGS.wait_range()
TIMEOUT_S = SETTINGS.timeout_s
ARM_HEADER = "x-router-arm"


def _load_payloads(path: str) -> tuple[list[dict], list[dict]]:
    maps, analyses = [], []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            record = json.loads(line)
            kind = record.pop("kind")
            (maps if kind == "map" else analyses).append(record)
    if not maps:
        raise RuntimeError(f"{path} holds no map payloads: run `mapperctl bench run` to write it")
    return maps, analyses


MAPS, ANALYSES = _load_payloads(PAYLOADS)
MIX = TenantMix(TENANTS, ZIPF_EXPONENT)
WEIGHTS = parse_weights(TASKS)


def _arm_of(answer: dict) -> str | None:
    """`router_arm` of a /v1/map answer (or of a batch's first result), else the provenance's."""
    if not isinstance(answer, dict):
        return None
    if answer.get("router_arm"):
        return answer["router_arm"]
    provenance = (answer.get("result") or answer).get("provenance")
    return provenance.get("router_arm") if isinstance(provenance, dict) else None


class _Traffic:
    """Per-user draws: each user has its own seeded stream, so runs are comparable."""

    def __init__(self) -> None:
        self.rng = random.Random(uuid.uuid4().int)  # noqa: S311 - load mix, not cryptography
        self._order = itertools.cycle(self.rng.sample(range(len(MAPS)), len(MAPS)))

    def tenant(self) -> str:
        return MIX.draw(self.rng)

    def map_payload(self) -> dict:
        return MAPS[next(self._order)]


class MapperHttpUser(HttpUser):
    """POST /v1/map, /v1/map/batch, /v1/analyze with the tenant in a header."""

    weight = 3
    wait_time = between(WAIT_MIN_S, WAIT_MAX_S)

    def on_start(self) -> None:
        self.traffic = _Traffic()
        if TOKEN:
            self.client.headers["authorization"] = f"Bearer {TOKEN}"

    def _post(self, path: str, base: str, body: dict) -> None:
        headers = {TENANT_HEADER: self.traffic.tenant()}
        with self.client.post(
            path, json=body, headers=headers, name=base, catch_response=True, timeout=TIMEOUT_S
        ) as response:
            arm = response.headers.get(ARM_HEADER)
            if response.status_code != 200:
                response.failure(f"HTTP {response.status_code}")
            else:
                try:
                    data = response.json()
                except ValueError:
                    response.failure("response is not JSON")
                    data = {}
                if arm is None:
                    results = data.get("results") if isinstance(data, dict) else None
                    arm = _arm_of(results[0] if results else data)
            # The arm is known only now: rename before the context manager reports the request.
            response.request_meta["name"] = arm_name(base, arm)

    def map_one(self) -> None:
        payload = self.traffic.map_payload()
        self._post("/v1/map", "map", {**payload, "request_id": uuid.uuid4().hex})

    def map_batch(self) -> None:
        items = [self.traffic.map_payload() for _ in range(BATCH_SIZE)]
        self._post("/v1/map/batch", "batch", {"items": items})

    def analyze(self) -> None:
        if not ANALYSES:
            return self.map_one()
        self._post("/v1/analyze", "analyze", self.traffic.rng.choice(ANALYSES))
        return None

    tasks = {
        fn: WEIGHTS[name]
        for name, fn in (("map", map_one), ("batch", map_batch), ("analyze", analyze))
        if name in WEIGHTS
    }


class MapperGrpcUser(User):
    """MapperService.Map and MapBatch over a gevent-friendly channel, reported as Locust requests."""

    weight = 1
    wait_time = between(WAIT_MIN_S, WAIT_MAX_S)

    def on_start(self) -> None:
        if not GRPC_HOST:
            raise RuntimeError(
                "MAPPER_BENCH_GRPC_HOST is not set: run the gRPC user via --grpc-host"
            )
        self.traffic = _Traffic()
        self.channel = grpc.insecure_channel(GRPC_HOST)
        self.stub = mapper_pb2_grpc.MapperServiceStub(self.channel)
        self.metadata = (("authorization", f"Bearer {TOKEN}"),) if TOKEN else ()

    def on_stop(self) -> None:
        self.channel.close()

    def _call(self, base: str, method, request) -> None:
        start = time.perf_counter()
        arm, length, exception = None, 0, None
        try:
            response = method(request, timeout=TIMEOUT_S, metadata=self.metadata)
            length = response.ByteSize()
            first = response.result if base == "Map" else (response.results or [None])[0]
            arm = first.router_arm if first is not None else None
        except grpc.RpcError as error:
            exception = error
        self.environment.events.request.fire(
            request_type="gRPC",
            name=arm_name(base, arm),
            response_time=(time.perf_counter() - start) * 1000.0,
            response_length=length,
            exception=exception,
            context={},
        )

    def _item(self) -> mapper_pb2.MapBatchItem:
        payload = self.traffic.map_payload()
        return mapper_pb2.MapBatchItem(
            detector=payload["detector"],
            output_json=json.dumps(payload["output"]),
            request_id=uuid.uuid4().hex,
        )

    def map_one(self) -> None:
        item = self._item()
        request = mapper_pb2.MapRequest(
            detector=item.detector,
            output_json=item.output_json,
            request_id=item.request_id,
            tenant=self.traffic.tenant(),
        )
        self._call("Map", self.stub.Map, request)

    def map_batch(self) -> None:
        items = [self._item() for _ in range(BATCH_SIZE)]
        request = mapper_pb2.MapBatchRequest(items=items, tenant=self.traffic.tenant())
        self._call("MapBatch", self.stub.MapBatch, request)

    tasks = {
        fn: WEIGHTS[name]
        for name, fn in (("map", map_one), ("batch", map_batch))
        if name in WEIGHTS
    } or {map_one: 1}


class ProfileShape(LoadTestShape):
    """The stage table of MAPPER_BENCH_SHAPE (standard | soak | constant) over -u, -r and -t."""

    use_common_options = True

    def tick(self) -> tuple[int, float] | None:
        if not hasattr(self, "_stages"):
            options = self.runner.environment.parsed_options
            self._stages = plan_stages(
                SHAPE, options.num_users, options.spawn_rate, options.run_time
            )
        stage = stage_at(self._stages, self.get_run_time())
        return None if stage is None else (stage.users, stage.spawn_rate)
