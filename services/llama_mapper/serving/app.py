"""The Serve application: the engine deployment(s) and the router (HTTP + gRPC ingress), and deploy()."""

# `serve run llama_mapper.serving.app:app_builder` and deploy/serve/mapper.yaml use `app_builder`;
# `mapperctl serve deploy` calls `deploy`, which also waits for the adapters and warms the engine up
# (the first constrained request compiles the label grammar: ~15 s on CPU) before returning.

from __future__ import annotations

import logging
import time
from typing import Any

import httpx
from ray import serve
from ray.serve.config import HTTPOptions, gRPCOptions

from llama_mapper.platform.settings.serving import ServingSettings
from llama_mapper.serving.engine import MAIN_DEPLOYMENT, TREATMENT_DEPLOYMENT, MapperEngine
from llama_mapper.serving.grpc_ingress import SERVICER_FUNCTION
from llama_mapper.serving.ingress import MapperRouter

log = logging.getLogger(__name__)


def engine_deployments(settings: ServingSettings) -> list[str]:
    """Names of the engine deployments `build` binds for these settings."""
    if not settings.engine_enabled or settings.external_engine_url:
        return []
    if settings.treatment_engine_deployed:
        return [MAIN_DEPLOYMENT, TREATMENT_DEPLOYMENT]
    return [MAIN_DEPLOYMENT]


def build(settings: ServingSettings) -> Any:
    """The application graph: MapperRouter(MapperEngine[, MapperEngineTreatment]) or, with the
    engine disabled, the router alone."""
    # Secrets stay SecretStr in the bound arguments (pickled to the replicas, never logged).
    config = settings.model_dump(mode="python")
    engine = treatment = None
    deployments = engine_deployments(settings)
    if MAIN_DEPLOYMENT in deployments:
        engine = MapperEngine.options(ray_actor_options=settings.engine_actor_options()).bind(
            config
        )
    if TREATMENT_DEPLOYMENT in deployments:
        # The same replica class under its own name: its own process, restarts and health checks.
        treatment = MapperEngine.options(
            name=TREATMENT_DEPLOYMENT,
            ray_actor_options=settings.engine_actor_options(treatment=True),
        ).bind(settings.treatment_engine_settings().model_dump(mode="python"))
    router = MapperRouter.options(ray_actor_options={"num_cpus": 0.25})
    if treatment is None:
        return router.bind(engine, config)
    return router.bind(engine, config, treatment_engine=treatment)


def app_builder(args: dict[str, Any]) -> Any:
    """Serve's application builder: `args` are ServingSettings fields (env vars fill the rest)."""
    return build(ServingSettings(**args))


def start_serve(settings: ServingSettings) -> None:
    grpc = None
    if settings.grpc_port:
        grpc = gRPCOptions(port=settings.grpc_port, grpc_servicer_functions=[SERVICER_FUNCTION])
    serve.start(
        http_options=HTTPOptions(host=settings.http_host, port=settings.http_port),
        grpc_options=grpc,
    )


def wait_ready(settings: ServingSettings, *, timeout_s: float = 300.0) -> dict[str, Any]:
    """Polls /healthz until no adapter is still loading; returns the last health document."""
    url = f"http://{settings.http_host}:{settings.http_port}"
    deadline = time.monotonic() + timeout_s
    health: dict[str, Any] = {}
    while time.monotonic() < deadline:
        try:
            httpx.get(f"{url}/v1/models", timeout=10, headers=_auth(settings))
            health = httpx.get(f"{url}/healthz", timeout=10).json()
            statuses = set(health.get("adapters", {}).values())
            # Ready once nothing is loading: with no champion and no rollout yet there is nothing
            # to load (the rules answer), provided the registry was reached to find that out.
            known = (
                bool(statuses)
                or (health.get("registry") or {}).get("state") in ("fresh", "local")
                or not settings.engine_enabled
                or not settings.registry_address  # nothing could ever be loaded
            )
            if "loading" not in statuses and known:
                return health
        except httpx.HTTPError:
            pass
        time.sleep(1.0)
    raise TimeoutError(f"serving app not ready after {timeout_s:.0f}s: {health}")


def _auth(settings: ServingSettings) -> dict[str, str]:
    if settings.auth_token is None:
        return {}
    return {"authorization": f"Bearer {settings.auth_token.get_secret_value()}"}


def deploy(
    settings: ServingSettings, *, warm_up: bool = True, timeout_s: float = 600.0
) -> dict[str, Any]:
    """Starts Serve (HTTP + gRPC), runs the app, waits for the adapters, warms the engine up."""
    started = time.perf_counter()
    start_serve(settings)
    serve.run(build(settings), name=settings.app_name, route_prefix="/")
    health = wait_ready(settings, timeout_s=timeout_s)
    warm_s = None
    if warm_up and settings.engine_enabled:
        for name in engine_deployments(settings):
            handle = serve.get_deployment_handle(name, app_name=settings.app_name)
            warm_s = (warm_s or 0.0) + handle.warm_up.remote().result(timeout_s=timeout_s)
    return {
        "url": f"http://{settings.http_host}:{settings.http_port}",
        "grpc_port": settings.grpc_port or None,
        "health": health,
        "warm_up_s": warm_s,
        "deploy_s": time.perf_counter() - started,
    }
