"""The router's FastAPI app (RouterCore, rules + fallback, no engine) under uvicorn, for bench tests.

`python tests/integration/bench_router.py PORT [RATE_RPS]` serves the same routes, validation, rate
limiter and metrics as the Serve deployment, without Ray start-up: a Locust run of a few seconds
measures the real HTTP path. RATE_RPS (default 0: off) sets the per-tenant limit, whose 429s are
errors the bench must count.
"""

from __future__ import annotations

import sys

import uvicorn

from llama_mapper.platform.settings.serving import ServingSettings
from llama_mapper.serving.api import build_app
from llama_mapper.serving.router_core import RouterCore


def main(port: int, rate_rps: float = 0.0) -> None:
    settings = ServingSettings(engine_enabled=False, rate_limit_rps=rate_rps, rate_limit_burst=1)
    core = RouterCore(settings, None, None)
    app = build_app(lambda: core)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


if __name__ == "__main__":
    main(int(sys.argv[1]), *(float(arg) for arg in sys.argv[2:3]))
