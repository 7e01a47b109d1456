"""The router's FastAPI app (RouterCore, rules + fallback, no engine) under uvicorn, for bench tests.

`python tests/integration/bench_router.py PORT` serves the same routes, validation, rate limiter
and metrics as the Serve deployment, without Ray start-up: a Locust run of a few seconds measures
the real HTTP path.
"""

from __future__ import annotations

import sys

import uvicorn

from llama_mapper.serving.api import build_app
from llama_mapper.serving.service import RouterCore
from llama_mapper.serving.settings import ServingSettings


def main(port: int) -> None:
    settings = ServingSettings(engine_enabled=False, rate_limit_rps=0)
    core = RouterCore(settings, None, None)
    app = build_app(lambda: core)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


if __name__ == "__main__":
    main(int(sys.argv[1]))
