"""`make demo QUICK=1` end to end, as `make test` runs it: the whole product on one machine.

The demo starts its own stack (three gRPC services, a Ray head), trains through `ray job submit`,
evaluates through the evaluation service, serves, canaries with the bench as a gate and maps the
examples through the live endpoint. Here it runs on ports and a var/ directory of its own, so a
developer's `make up` stack on the default ports is left alone.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.serving import free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
MAPPERCTL = str(Path(sys.executable).with_name("mapperctl"))


def _listening(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(1.0)
        return probe.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.timeout(2400)
def test_quick_demo_end_to_end(tmp_path):
    ports = {
        "MAPPER_VALIDATION_PORT": free_port(),
        "MAPPER_REGISTRY_PORT": free_port(),
        "MAPPER_EVALUATION_PORT": free_port(),
        "MAPPER_RAY_PORT": free_port(),
        "MAPPER_RAY_DASHBOARD_PORT": free_port(),
        "MAPPER_RAY_CLIENT_PORT": free_port(),
        "MAPPER_RAY_AGENT_PORT": free_port(),
        "MAPPER_SERVING_HTTP_PORT": free_port(),
        "MAPPER_SERVING_GRPC_PORT": free_port(),
    }
    # Ray's unix sockets live under its temp dir, whose path must stay short.
    ray_temp = Path(f"/tmp/ray-demo-{os.getpid()}")
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("MAPPER_", "RAY_ADDRESS", "RAY_JOB_ADDRESS"))
    }
    env.update({key: str(port) for key, port in ports.items()})
    env.update(
        {
            "MAPPER_VAR_DIR": str(tmp_path / "var"),
            "MAPPER_RAY_TEMP_DIR": str(ray_temp),
            "PYTHONUNBUFFERED": "1",
            "CI": "true",
        }
    )
    proc = subprocess.run(
        [MAPPERCTL, "demo", "--quick", "--root", str(tmp_path / "demo")],
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=2300,
        check=False,
    )
    out = proc.stdout
    (tmp_path / "demo.log").write_text(out)
    assert proc.returncode == 0, out[-6000:]

    # The closing table, with every figure filled in.
    table = out[out.rindex("llama-mapper demo") :]
    # print_table: the label column, two or more spaces, the value.
    rows = dict(re.findall(r"^(\S.*?)\s{2,}(\S.*)$", table, flags=re.M))
    assert re.fullmatch(r"\d+ mapper rows, \d+ analyst rows", rows["dataset"])
    assert re.match(r"v\d+: 8 steps in \d+ s \(job\), [\d.]+ tokens/s", rows["mapper adapter"])
    assert re.match(
        r"v\d+: \d+ steps in \d+ s \(job\), [\d.]+ tokens/s; "
        r"schema-valid [\d.]+, risk-level accuracy [\d.]+, control F1 [\d.]+, "
        r"remediation by the model [\d.]+",
        rows["analyst adapter"],
    ), rows["analyst adapter"]
    quality = re.fullmatch(
        r"accuracy ([\d.]+), macro-F1 ([\d.]+), ECE ([\d.]+), fallback ([\d.]+)",
        rows["quality (hybrid, golden set)"],
    )
    assert quality, rows["quality (hybrid, golden set)"]
    assert re.fullmatch(
        r"\w+ fitted on (\d+|None) model-bound cases, review threshold (None|[\d.]+)",
        rows["calibration"],
    ), rows["calibration"]
    # Quick mode measures no held-out split and no robustness: the row says so, never a guess.
    assert rows["held-out"].startswith("detector None, pairs None, shapes None"), rows["held-out"]
    # Rules answer most of the golden set whatever an 8-step adapter says.
    assert float(quality.group(1)) > 0.5
    assert re.match(r"treatment [\d.]+ ms vs 20000 ms", rows["p95 vs target"]), rows[
        "p95 vs target"
    ]
    # The gate ran on the evaluation above and let v1 take traffic, so the canary ran.
    assert rows["gate"] == "passed (cpu-2core)", rows["gate"]
    assert re.match(r"(complete|rolled_back): ", rows["canary"]), rows["canary"]
    assert rows["champion"].startswith(("v", "none (rules only)"))
    # The analyst's own gate (risk and controls from the rubric pass its generous targets) made
    # it the analyst's champion, and the served app answered step 7's /v1/analyze with it.
    analyst_version = rows["analyst adapter"].split(":")[0]
    assert rows["analyst gate"] == "passed (cpu-2core)", rows["analyst gate"]
    assert rows["analyst champion"] == analyst_version, rows["analyst champion"]
    assert re.fullmatch(
        rf"\d+ assessments, remediation by the model \d+ \(adapter {analyst_version} ready\)",
        rows["analyst served"],
    ), rows["analyst served"]
    assert (tmp_path / "demo" / "data" / "manifest.json").is_file()
    assert Path(rows["evaluation report"].split()[0], "report.json").is_file()

    # Step 6 mapped every example through the live endpoint.
    examples = (ROOT / "examples" / "detector-outputs.jsonl").read_text().splitlines()
    mapped = out[out.index("==> 6. map the examples") : out.index("==> 7. assess")]
    assert len(re.findall(r"\[(rule|model|fallback)[^\]]*\]$", mapped, flags=re.M)) == len(
        [line for line in examples if line.strip()]
    )

    # Step 7 assessed the mapped findings through /v1/analyze.
    assessed = out[out.index("==> 7. assess") : out.index("==> stop the stack")]
    assert re.search(r"^  remediation by (model|fallback): \d+$", assessed, flags=re.M), assessed

    # `stack down` left nothing running (a process may take a moment to let go of its port).
    deadline = time.monotonic() + 30
    while (open_ports := [k for k, port in ports.items() if _listening(port)]) and (
        time.monotonic() < deadline
    ):
        time.sleep(1)
    assert not open_ports, open_ports
    leftovers = subprocess.run(
        ["pgrep", "-f", str(ray_temp)], capture_output=True, text=True, check=False
    )
    assert leftovers.stdout.strip() == "", leftovers.stdout
