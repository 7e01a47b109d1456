"""A local stack of its own for the tests that need the real thing: `mapperctl stack up` on free
ports and a var dir of its own, driven with mapperctl as a user would."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.support.serving import free_port

MAPPERCTL = str(Path(sys.executable).with_name("mapperctl"))


class Stack:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.var = root / "var"
        ports = {
            name: free_port()
            for name in (
                "MAPPER_VALIDATION_PORT",
                "MAPPER_REGISTRY_PORT",
                "MAPPER_EVALUATION_PORT",
                "MAPPER_RAY_PORT",
                "MAPPER_RAY_DASHBOARD_PORT",
                "MAPPER_RAY_CLIENT_PORT",
                "MAPPER_RAY_AGENT_PORT",
                "MAPPER_SERVING_HTTP_PORT",
                "MAPPER_SERVING_GRPC_PORT",
            )
        }
        self.ports = ports
        self.env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("MAPPER_", "RAY_ADDRESS", "RAY_JOB_ADDRESS"))
        }
        self.env.update({k: str(v) for k, v in ports.items()})
        self.env.update(
            {
                # Only the variables the README names for a second stack: ports and the var dir.
                "MAPPER_VAR_DIR": str(self.var),
                "MAPPER_REGISTRY_ADDRESS": f"127.0.0.1:{ports['MAPPER_REGISTRY_PORT']}",
                "MAPPER_EVALUATION_ADDRESS": f"127.0.0.1:{ports['MAPPER_EVALUATION_PORT']}",
                "MAPPER_SERVING_URL": f"http://127.0.0.1:{ports['MAPPER_SERVING_HTTP_PORT']}",
                # Small and fast for a shared 2-core box: transformers for the evaluations (no
                # second vLLM engine), random adapters' labels let through, quick refreshes.
                "MAPPER_EVALUATION_ENGINE": "transformers",
                "MAPPER_SERVING_THRESHOLD": "0",
                "MAPPER_SERVING_ROLLOUT_REFRESH_S": "0.5",
                "MAPPER_SERVING_REGISTRY_TIMEOUT_S": "1",
                "MAPPER_SERVING_DEADLINE_S": "60",
                "MAPPER_SERVING_RATE_LIMIT_RPS": "0",
                "MAPPER_SERVING_ENGINE__KV_CACHE_SPACE_GIB": "1",
                "MAPPER_SERVING_ENGINE__MAX_NUM_SEQS": "16",
                "MAPPER_REGISTRY_LEASE_SWEEP_S": "1",
                "PYTHONUNBUFFERED": "1",
            }
        )
        self.url = self.env["MAPPER_SERVING_URL"]
        self.ray = f"127.0.0.1:{ports['MAPPER_RAY_PORT']}"
        self.figures: dict[str, object] = {}

    def mapperctl(
        self,
        *argv: str,
        check: bool = True,
        timeout: float = 600,
        input_text: str | None = None,
        env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess:
        proc = subprocess.run(
            [MAPPERCTL, *argv],
            env=env if env is not None else self.env,
            input=input_text,
            cwd=self.root,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"mapperctl {' '.join(argv)} -> {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
            )
        return proc

    def deploy(self) -> None:
        self.mapperctl("serve", "deploy", "--address", self.ray, timeout=900)

    def pid(self, name: str) -> int:
        return int((self.var / "run" / f"{name}.pid").read_text())

    @property
    def headers(self) -> dict[str, str]:
        """The serving token `stack up` generated (mapperctl reads the same file)."""
        return {"authorization": f"Bearer {(self.var / 'serving-token').read_text().strip()}"}
