"""Entry point: `python -m llama_mapper.training.train --config configs/mapper-cpu.yaml`."""

from __future__ import annotations

import argparse
import json
import logging
import sys

from llama_mapper.domain.errors import MapperError
from llama_mapper.training.config import load_config
from llama_mapper.training.job import run_job


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Train a LoRA adapter on Ray Train.")
    parser.add_argument("--config", required=True, help="training config YAML")
    parser.add_argument(
        "--address", default=None, help="Ray address (default: $RAY_ADDRESS or local)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        summary = run_job(load_config(args.config), ray_address=args.address)
    except MapperError as exc:
        logging.getLogger("llama_mapper.training").error("refused: %s", exc.message)
        print(f"training refused: {type(exc).__name__}: {exc.message}", file=sys.stderr)
        return 2
    print(
        json.dumps(
            {
                k: summary[k]
                for k in ("name", "adapter_dir", "steps", "tokens_per_s", "registration")
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
