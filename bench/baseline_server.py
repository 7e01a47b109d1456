"""The straightforward baseline the serving stack is compared with: FastAPI + transformers + PEFT.

One process, one model, requests answered one at a time through `generate` (no continuous
batching, no prefix cache, no multi-LoRA): what a team ships before it has an engine. It speaks
the router's contract for `POST /v1/map` and `GET /healthz` and maps with the same hybrid mapper,
prompt format (llama_mapper.domain.prompt) and label-constrained decoding as the evaluation's
transformers engine, so the Locust bench drives both with the same load:

    python bench/baseline_server.py --base-dir <base> --adapter-dir <adapter> --port 8100
    mapperctl bench compare --host http://127.0.0.1:8000 --baseline-host http://127.0.0.1:8100
"""

from __future__ import annotations

import argparse
import asyncio
import logging
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from llama_mapper.domain.errors import MapperError
from llama_mapper.inference.hybrid import HybridMapper
from llama_mapper.inference.transformers_engine import HFMapperModel


def build_app(model: Any, *, deadline_s: float = 60.0) -> FastAPI:
    app = FastAPI(title="llama-mapper transformers baseline")
    hybrid = HybridMapper(deadline_s=deadline_s)
    # One generate at a time: torch already uses every core for one call.
    lock = asyncio.Lock()

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok", "engine": "transformers"}

    @app.post("/v1/map")
    async def map_one(request: Request) -> Any:
        body = await request.json()
        try:
            async with lock:
                outcome = await asyncio.to_thread(
                    hybrid.map,
                    body["detector"],
                    body["output"],
                    model=model,
                    request_id=body.get("request_id"),
                )
        except MapperError as error:
            return JSONResponse({"error": error.message}, status_code=error.http_status)
        except (KeyError, TypeError):
            return JSONResponse({"error": "body needs detector and output"}, status_code=422)
        return {"result": outcome.result, "router_arm": "baseline", "adapter_version": 0}

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--base-dir", required=True, help="base model directory (mapperctl model prepare)"
    )
    parser.add_argument("--adapter-dir", default=None, help="LoRA adapter directory (PEFT)")
    parser.add_argument(
        "--dtype", default="float32", help="float32 is faster than bf16 on these CPUs"
    )
    parser.add_argument(
        "--device", default="auto", help="auto (CUDA when torch sees it), cpu or cuda[:N]"
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8100)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO)
    model = HFMapperModel(args.base_dir, args.adapter_dir, dtype=args.dtype, device=args.device)
    uvicorn.run(build_app(model), host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
