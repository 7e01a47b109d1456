"""`make up` / `make down`: the local stack (three gRPC services and a Ray head) as background processes.

Every process runs in its own session with its log under var/log/ and its pid under var/run/, so
`down` stops exactly what `up` started and nothing is left running.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from llama_mapper.domain.errors import FailedPrecondition, Unavailable
from llama_mapper.platform.terminal import print_table

VAR = Path(os.environ.get("MAPPER_VAR_DIR", "var"))
RAY_GCS_PORT = int(os.environ.get("MAPPER_RAY_PORT", "6380"))  # 6379 is Redis on these machines
RAY_DASHBOARD_PORT = int(os.environ.get("MAPPER_RAY_DASHBOARD_PORT", "8265"))
# Ray's fixed defaults (client server 10001, dashboard agent 52365) would collide with a second
# head on the same machine (e.g. the demo that `make test` runs beside a developer's stack).
RAY_CLIENT_PORT = int(os.environ.get("MAPPER_RAY_CLIENT_PORT", "10001"))
RAY_AGENT_PORT = int(os.environ.get("MAPPER_RAY_AGENT_PORT", "52375"))
# Its own temp dir, so a plain `ray.init()` elsewhere on the machine (tests, notebooks) does not
# attach to the stack's cluster by discovering /tmp/ray/ray_current_cluster.
RAY_TEMP_DIR = os.environ.get(
    "MAPPER_RAY_TEMP_DIR",
    "/tmp/ray-mapper",  # noqa: S108 - Ray puts unix sockets here, whose paths must stay short
)
RAY_ADDRESS = f"127.0.0.1:{RAY_GCS_PORT}"
START_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class Service:
    name: str
    module: str
    port: int

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"


# The ports are the variables each service reads itself (MAPPER_<SERVICE>_PORT).
SERVICES = (
    Service(
        "validation",
        "llama_mapper.validation.server",
        int(os.environ.get("MAPPER_VALIDATION_PORT", "50051")),
    ),
    Service(
        "registry",
        "llama_mapper.registry.server",
        int(os.environ.get("MAPPER_REGISTRY_PORT", "50052")),
    ),
    Service(
        "evaluation",
        "llama_mapper.evaluation.server",
        int(os.environ.get("MAPPER_EVALUATION_PORT", "50053")),
    ),
)


def registry_token() -> str:
    """The local stack's registry token: MAPPER_REGISTRY_TOKEN, else one generated once under var/."""
    if token := os.environ.get("MAPPER_REGISTRY_TOKEN"):
        return token
    path = VAR / "registry-token"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_urlsafe(32))
    return path.read_text().strip()


def use_local_token() -> None:
    """Lets mapperctl talk to the stack `make up` started without exporting its token by hand."""
    path = VAR / "registry-token"
    if "MAPPER_REGISTRY_TOKEN" not in os.environ and path.exists():
        os.environ["MAPPER_REGISTRY_TOKEN"] = path.read_text().strip()


def _pid_path(name: str) -> Path:
    return VAR / "run" / f"{name}.pid"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _running_pid(name: str) -> int | None:
    path = _pid_path(name)
    if not path.exists():
        return None
    pid = int(path.read_text().strip() or 0)
    return pid if pid and _alive(pid) else None


def healthy(address: str, timeout: float = 1.0) -> bool:
    with grpc.insecure_channel(address) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=""), timeout=timeout
            )
        except grpc.RpcError:
            return False
    return reply.status == health_pb2.HealthCheckResponse.SERVING


def _start_service(service: Service, env: dict[str, str]) -> None:
    if _running_pid(service.name):
        print(f"{service.name}: already running")
        return
    log = VAR / "log" / f"{service.name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    _pid_path(service.name).parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", service.module],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )
    _pid_path(service.name).write_text(str(proc.pid))
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise Unavailable(f"{service.name} exited with {proc.returncode}; see {log}")
        if healthy(service.address):
            print(f"{service.name}: serving on {service.address} (log {log})")
            return
        time.sleep(0.5)
    raise Unavailable(f"{service.name} not healthy on {service.address} after {START_TIMEOUT_S}s")


def _ray() -> str:
    ray = Path(sys.executable).with_name("ray")
    if not ray.exists():
        raise FailedPrecondition("ray is not installed in this environment: run `make setup`")
    return str(ray)


def _listening(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(1.0)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def _start_ray(env: dict[str, str]) -> None:
    if _listening(RAY_GCS_PORT) and _listening(RAY_DASHBOARD_PORT):
        print(f"ray: already running (dashboard http://127.0.0.1:{RAY_DASHBOARD_PORT})")
        return
    # `ray start` with token auth refuses to run without a token, and on a fresh machine there is
    # none yet: create ~/.ray/auth_token once (a no-op when a token exists or RAY_AUTH_TOKEN is set).
    subprocess.run(
        [_ray(), "get-auth-token", "--generate"],
        check=True,
        stdout=subprocess.DEVNULL,
        env={**env, "RAY_AUTH_MODE": "token"},
    )
    token = Path.home() / ".ray" / "auth_token"
    if token.exists():
        token.chmod(0o600)  # Ray writes it with the umask's mode; it is a credential
    started = subprocess.run(
        [
            _ray(),
            "start",
            "--head",
            f"--port={RAY_GCS_PORT}",
            "--dashboard-host=127.0.0.1",
            f"--dashboard-port={RAY_DASHBOARD_PORT}",
            f"--ray-client-server-port={RAY_CLIENT_PORT}",
            f"--dashboard-agent-listen-port={RAY_AGENT_PORT}",
            "--include-dashboard=true",
            "--disable-usage-stats",
            f"--temp-dir={RAY_TEMP_DIR}",
        ],
        check=False,
        stdout=subprocess.DEVNULL,
        # Job drivers inherit the head's environment: the registry address and token reach
        # training jobs this way, never on a command line or in the dashboard's job record.
        # `python` in a job's entrypoint is this environment's interpreter, and relative paths in
        # a job (configs, datasets) resolve against the project that started the stack.
        env={
            **env,
            "RAY_AUTH_MODE": "token",
            # The raylet waits this long for the agents it spawns to write their ports; on a loaded
            # 2-core box their start exceeded Ray's 60 s and the head came up without a raylet.
            "RAY_raylet_start_wait_time_s": env.get("RAY_raylet_start_wait_time_s", "180"),
            "RAY_agent_register_timeout_ms": env.get("RAY_agent_register_timeout_ms", "180000"),
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
            "MAPPER_PROJECT_DIR": str(Path.cwd()),
        },
    )
    if started.returncode != 0:
        _stop_ray_head()  # nothing half-started is left to pass for a running head
        raise Unavailable(
            f"`ray start --head` exited with {started.returncode} (logs under {RAY_TEMP_DIR}); "
            "if a port was still held by a stopping cluster, run `make up` again"
        )
    _pid_path("ray").parent.mkdir(parents=True, exist_ok=True)
    _pid_path("ray").write_text("started by mapperctl stack up\n")
    print(f"ray: head on 127.0.0.1:{RAY_GCS_PORT}, dashboard http://127.0.0.1:{RAY_DASHBOARD_PORT}")


def up(args: argparse.Namespace) -> int:
    env = {
        **os.environ,
        "MAPPER_REGISTRY_TOKEN": registry_token(),
        "MAPPER_REGISTRY_ADDRESS": SERVICES[1].address,
        "PYTHONUNBUFFERED": "1",
    }
    for service in SERVICES:
        if args.only and service.name not in args.only:
            continue
        # Each service reads its settings from MAPPER_<SERVICE>_* variables.
        _start_service(service, {**env, f"MAPPER_{service.name.upper()}_PORT": str(service.port)})
    if not args.no_ray and (not args.only or "ray" in args.only):
        _start_ray(env)
    print(f"registry token: {VAR / 'registry-token'} (or MAPPER_REGISTRY_TOKEN)")
    return 0


def _stop_pid(name: str, timeout: float = 15.0) -> bool:
    pid = _running_pid(name)
    _pid_path(name).unlink(missing_ok=True)
    if pid is None:
        return False
    os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and _alive(pid):
        time.sleep(0.2)
    if _alive(pid):
        os.killpg(pid, signal.SIGKILL)
    return True


def down(args: argparse.Namespace) -> int:
    for service in SERVICES:
        print(f"{service.name}: {'stopped' if _stop_pid(service.name) else 'not running'}")
    # Not `ray stop`: that ends every Ray cluster of this user on the machine (test clusters,
    # notebooks). Only the processes of the head `up` started, found by its own temp dir.
    # The temp dir is this stack's own, so what runs under it is ours even without a pid file
    # (a `ray start` that failed half way leaves a GCS and a dashboard behind).
    if _pid_path("ray").exists() or _ray_head_pids():
        _stop_ray_head()
        _pid_path("ray").unlink(missing_ok=True)
        # A dying process can hold its port for a moment; an `up` right after must find it free
        # (a head whose agent port is still taken starts without a raylet).
        ports = (RAY_GCS_PORT, RAY_DASHBOARD_PORT, RAY_CLIENT_PORT, RAY_AGENT_PORT)
        deadline = time.monotonic() + 30
        while any(_listening(port) for port in ports) and time.monotonic() < deadline:
            time.sleep(0.5)
        print("ray: stopped")
    else:
        print("ray: not started by `make up`")
    return 0


def _ray_head_pids() -> list[int]:
    """The head's processes (their command lines name its temp dir) and all their descendants
    (workers and agents rename themselves `ray::...`)."""
    marker = RAY_TEMP_DIR.rstrip("/").encode() + b"/"
    # Some head processes are re-parented to init and never name the temp dir (the Ray client
    # server: `python -m ray.util.client.server --address=IP:GCS_PORT ...`): they name our GCS.
    gcs = f":{RAY_GCS_PORT}".encode()
    roots, parents = set(), {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            stat = (entry / "stat").read_text()
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
            cmdline = (entry / "cmdline").read_bytes()
            if marker in cmdline or any(
                arg.startswith((b"--address=", b"--gcs-address=", b"--gcs_address="))
                and arg.endswith(gcs)
                for arg in cmdline.split(b"\0")
            ):
                roots.add(int(entry.name))
        except (OSError, ValueError, IndexError):
            continue
    found, frontier = set(roots), set(roots)
    while frontier:
        frontier = {pid for pid, ppid in parents.items() if ppid in frontier} - found
        found |= frontier
    return sorted(found)


def _stop_ray_head(timeout: float = 15.0) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in _ray_head_pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and _ray_head_pids():
            time.sleep(0.3)
        if not _ray_head_pids():
            return


def status(args: argparse.Namespace) -> int:
    rows = []
    for service in SERVICES:
        pid = _running_pid(service.name)
        state = "serving" if pid and healthy(service.address) else ("starting" if pid else "down")
        rows.append((service.name, service.address, pid or "-", state))
    print_table(("service", "address", "pid", "state"), rows)
    return 0


def add_parser(commands: argparse._SubParsersAction) -> None:
    stack = commands.add_parser("stack", help="start, stop or inspect the local stack")
    sub = stack.add_subparsers(dest="stack_command", required=True)
    start = sub.add_parser("up", help="start the gRPC services and a Ray head (idempotent)")
    start.add_argument(
        "--only", nargs="*", help="start only these (validation registry evaluation ray)"
    )
    start.add_argument("--no-ray", action="store_true", help="do not start the Ray head")
    start.set_defaults(func=up)
    sub.add_parser("down", help="stop everything `up` started").set_defaults(func=down)
    sub.add_parser("status", help="what is running").set_defaults(func=status)
