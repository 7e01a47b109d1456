"""The local stack (`make up` / `make down`): three gRPC services and a Ray head as background
processes, each recorded under its own var dir, so `down` stops exactly what its `up` started."""

from __future__ import annotations

import contextlib
import json
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

from llama_mapper.domain.errors import FailedPrecondition, InvalidArgument, Unavailable
from llama_mapper.platform.rpc.channel import open_channel
from llama_mapper.platform.settings.evaluation import EvaluationSettings
from llama_mapper.platform.settings.registry import RegistrySettings
from llama_mapper.platform.settings.serving import RAY_SERVE_ENV
from llama_mapper.platform.settings.stack import RAY_WORKER_PORTS, RaySettings, var_dir
from llama_mapper.platform.settings.validation import SIGNING_KEY_FILE, ValidationSettings
from llama_mapper.platform.tls import LocalTls, local_tls

START_TIMEOUT_S = 120.0
TOKEN_FILE = "registry-token"  # noqa: S105 - a file name, not a secret
# The local stack's secrets: each generated once under the var dir (mode 0600), handed to what
# needs it through its variable, and read back by mapperctl in a fresh shell.
LOCAL_SECRETS = {
    "MAPPER_REGISTRY_TOKEN": TOKEN_FILE,
    "MAPPER_SERVING_AUTH_TOKEN": "serving-token",
    "MAPPER_VALIDATION_SIGNING_KEY": SIGNING_KEY_FILE,
}


@dataclass(frozen=True)
class Service:
    name: str
    module: str
    port: int

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"


def services() -> tuple[Service, ...]:
    """The three gRPC services on the ports their own settings read (MAPPER_<SERVICE>_PORT)."""
    return (
        Service("validation", "llama_mapper.validation.server", ValidationSettings().port),
        Service("registry", "llama_mapper.registry.server", RegistrySettings().port),
        Service("evaluation", "llama_mapper.evaluation.server", EvaluationSettings().port),
    )


def service(name: str) -> Service:
    return next(s for s in services() if s.name == name)


def local_secret(variable: str) -> str:
    """The value of `variable` (one of LOCAL_SECRETS): the environment's, else one generated once
    under the var dir."""
    if value := os.environ.get(variable):
        return value
    path = var_dir() / LOCAL_SECRETS[variable]
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_urlsafe(32))
    return path.read_text().strip()


def registry_token() -> str:
    return local_secret("MAPPER_REGISTRY_TOKEN")


def _service_env(name: str, env: dict[str, str]) -> dict[str, str]:
    """What one service gets: the signing key only where reports are signed (validation; the Ray
    head's training jobs check them), not in the registry or evaluation."""
    if name == "validation":
        return env
    return {k: v for k, v in env.items() if k != "MAPPER_VALIDATION_SIGNING_KEY"}


def default_dataset_roots(var: Path) -> list[str]:
    """Where the local stack's validation service may read datasets unless
    MAPPER_VALIDATION_DATASET_ROOTS says otherwise: its var dir (the demo builds under var/demo)
    and the checkout's data/ (`mapperctl data build --out data/`)."""
    return [str(var.resolve()), str((Path.cwd() / "data").resolve())]


def use_local_token() -> None:
    """Lets mapperctl talk to the stack `make up` started without exporting its secrets by hand,
    over TLS checked against the stack's own CA when it was started with --tls."""
    for variable, name in LOCAL_SECRETS.items():
        path = var_dir() / name
        if variable not in os.environ and path.exists():
            os.environ[variable] = path.read_text().strip()
    tls = local_tls_if_any()
    if tls is not None:
        for variable, value in tls.client_env().items():
            os.environ.setdefault(variable, value)


def local_tls_if_any(root: Path | None = None) -> LocalTls | None:
    """The CA of a stack started with --tls, else None."""
    directory = (root or var_dir()) / "tls"
    return local_tls(directory) if (directory / "ca.pem").exists() else None


def healthy(address: str, timeout: float = 1.0, ca_file: Path | None = None) -> bool:
    if ca_file is None and (tls := local_tls_if_any()) is not None:
        ca_file = tls.ca_file
    with open_channel(address, ca_file=ca_file) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=""), timeout=timeout
            )
        except grpc.RpcError:
            return False
    return reply.status == health_pb2.HealthCheckResponse.SERVING


def listening(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(1.0)
        return probe.connect_ex(("127.0.0.1", port)) == 0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class LocalStack:
    """One stack: its var dir (logs, pids, the Ray record) and the ports its settings name."""

    def __init__(self, root: Path | None = None, ray: RaySettings | None = None) -> None:
        self.var = root or var_dir()
        self.ray = ray or RaySettings()
        self.ray_temp_dir = self.ray.head_temp_dir(self.var)
        self.services = services()
        tls = local_tls_if_any(self.var)
        self.ca_file = tls.ca_file if tls is not None else None

    # -- records ----------------------------------------------------------------------------------

    def _pid_path(self, name: str) -> Path:
        return self.var / "run" / f"{name}.pid"

    def _ray_record(self) -> Path:
        return self.var / "run" / "ray.json"

    def running_pid(self, name: str) -> int | None:
        path = self._pid_path(name)
        if not path.exists():
            return None
        text = path.read_text().strip()
        pid = int(text) if text.isdigit() else 0
        return pid if pid and _alive(pid) else None

    # -- checks before anything starts --------------------------------------------------------------

    def ports(self) -> dict[str, int]:
        ports = {f"{s.name} (MAPPER_{s.name.upper()}_PORT)": s.port for s in self.services}
        ports.update(
            {
                "Ray GCS (MAPPER_RAY_PORT)": self.ray.port,
                "Ray dashboard (MAPPER_RAY_DASHBOARD_PORT)": self.ray.dashboard_port,
                "Ray client (MAPPER_RAY_CLIENT_PORT)": self.ray.client_port,
                "Ray agent (MAPPER_RAY_AGENT_PORT)": self.ray.agent_port,
            }
        )
        return ports

    def check_ports(self, *, with_ray: bool) -> None:
        """InvalidArgument naming the variables when two ports collide or one lies in Ray's
        worker range; FailedPrecondition when a port is taken by something this stack did not start."""
        ports = {k: v for k, v in self.ports().items() if with_ray or not k.startswith("Ray")}
        seen: dict[int, str] = {}
        for name, port in ports.items():
            if port in seen:
                raise InvalidArgument(f"{name} and {seen[port]} are both port {port}")
            seen[port] = name
            if with_ray and port in RAY_WORKER_PORTS:
                raise InvalidArgument(
                    f"{name} is {port}, inside Ray's worker port range "
                    f"{RAY_WORKER_PORTS.start}-{RAY_WORKER_PORTS.stop - 1}: `ray start` would fail"
                )
        ours = {s.port for s in self.services if self.running_pid(s.name)}
        if self._ray_record().exists():
            ours |= {
                self.ray.port,
                self.ray.dashboard_port,
                self.ray.client_port,
                self.ray.agent_port,
            }
        taken = [
            f"{name} ({port})"
            for name, port in ports.items()
            if port not in ours and listening(port)
        ]
        if taken:
            raise FailedPrecondition(
                f"ports in use by something this stack (var dir {self.var}) did not start: "
                f"{', '.join(taken)}; stop it or choose other ports"
            )

    # -- up -------------------------------------------------------------------------------------

    def up(
        self, *, only: list[str] | None = None, with_ray: bool = True, tls: bool = False
    ) -> list[str]:
        """Starts what is not running; returns the lines to print. When anything fails, what this
        call started is stopped again before the error is raised: a failed `up` leaves nothing.
        `tls` (kept for later `up`s of the same var dir): every service speaks TLS only, with a
        certificate of the stack's own CA, and every client checks it."""
        with_ray = with_ray and (not only or "ray" in only)
        self.check_ports(with_ray=with_ray)
        certificates = local_tls(self.var / "tls") if tls else local_tls_if_any(self.var)
        env = {
            **os.environ,
            **{variable: local_secret(variable) for variable in LOCAL_SECRETS},
            "MAPPER_REGISTRY_ADDRESS": service("registry").address,
            "MAPPER_VAR_DIR": str(self.var),
            "MAPPER_VALIDATION_DATASET_ROOTS": os.environ.get(
                "MAPPER_VALIDATION_DATASET_ROOTS", json.dumps(default_dataset_roots(self.var))
            ),
            "PYTHONUNBUFFERED": "1",
        }
        if certificates is not None:
            env.update(certificates.server_env(tuple(s.name for s in self.services)))
            env.update(certificates.client_env())
            self.ca_file = certificates.ca_file
        lines: list[str] = []
        started: list[str] = []
        try:
            for svc in self.services:
                if only and svc.name not in only:
                    continue
                if self.running_pid(svc.name):
                    lines.append(f"{svc.name}: already running")
                    continue
                self._start_service(svc, env)
                started.append(svc.name)
                lines.append(f"{svc.name}: serving on {svc.address} (log {self._log(svc.name)})")
            if with_ray:
                lines.append(self._start_ray(env))
        except BaseException:
            for name in started:
                self._stop_pid(name)
            raise
        lines.append(f"registry token: {self.var / TOKEN_FILE} (or MAPPER_REGISTRY_TOKEN)")
        lines.append(
            f"validation: datasets under {env['MAPPER_VALIDATION_DATASET_ROOTS']}; reports signed "
            f"with {self.var / SIGNING_KEY_FILE} (or MAPPER_VALIDATION_SIGNING_KEY)"
        )
        if certificates is not None:
            lines.append(f"TLS: every service; the stack's CA is {certificates.ca_file}")
        return lines

    def _log(self, name: str) -> Path:
        return self.var / "log" / f"{name}.log"

    def _start_service(self, svc: Service, env: dict[str, str]) -> None:
        log = self._log(svc.name)
        log.parent.mkdir(parents=True, exist_ok=True)
        self._pid_path(svc.name).parent.mkdir(parents=True, exist_ok=True)
        with open(log, "ab") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", svc.module],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={
                    **_service_env(svc.name, env),
                    f"MAPPER_{svc.name.upper()}_PORT": str(svc.port),
                },
                start_new_session=True,
            )
        self._pid_path(svc.name).write_text(str(proc.pid))
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                self._pid_path(svc.name).unlink(missing_ok=True)
                raise Unavailable(f"{svc.name} exited with {proc.returncode}; see {log}")
            if healthy(svc.address, ca_file=self.ca_file):
                return
            time.sleep(0.5)
        self._stop_pid(svc.name)
        raise Unavailable(f"{svc.name} not healthy on {svc.address} after {START_TIMEOUT_S}s")

    def _ray_cli(self) -> str:
        ray = Path(sys.executable).with_name("ray")
        if not ray.exists():
            raise FailedPrecondition("ray is not installed in this environment: run `make setup`")
        return str(ray)

    def _start_ray(self, env: dict[str, str]) -> str:
        ray = self.ray
        if self._ray_record().exists() and listening(ray.port) and listening(ray.dashboard_port):
            return f"ray: already running (dashboard {ray.dashboard_url})"
        # `ray start` with token auth refuses to run without a token, and on a fresh machine there
        # is none yet: create ~/.ray/auth_token once (a no-op when a token or RAY_AUTH_TOKEN exists).
        subprocess.run(
            [self._ray_cli(), "get-auth-token", "--generate"],
            check=True,
            stdout=subprocess.DEVNULL,
            env={**env, "RAY_AUTH_MODE": "token"},
        )
        token = Path.home() / ".ray" / "auth_token"
        if token.exists():
            token.chmod(0o600)  # Ray writes it with the umask's mode; it is a credential
        # Recorded before the start: a start that dies half way is still ours to clean up.
        record = {"temp_dir": str(self.ray_temp_dir), "port": ray.port}
        self._ray_record().parent.mkdir(parents=True, exist_ok=True)
        self._ray_record().write_text(json.dumps(record))
        started = subprocess.run(
            [
                self._ray_cli(),
                "start",
                "--head",
                f"--port={ray.port}",
                "--dashboard-host=127.0.0.1",
                f"--dashboard-port={ray.dashboard_port}",
                f"--ray-client-server-port={ray.client_port}",
                f"--dashboard-agent-listen-port={ray.agent_port}",
                "--include-dashboard=true",
                "--disable-usage-stats",
                f"--temp-dir={self.ray_temp_dir}",
            ],
            check=False,
            stdout=subprocess.DEVNULL,
            # Job drivers inherit the head's environment: the registry address and token reach
            # training jobs this way, never on a command line or in the dashboard's job record.
            # `python` in a job's entrypoint is this environment's interpreter, and relative paths
            # in a job (configs, datasets) resolve against the project that started the stack.
            env={
                **RAY_SERVE_ENV,
                **env,
                "RAY_AUTH_MODE": "token",
                # The raylet waits this long for the agents it spawns to write their ports; on a
                # loaded 2-core box their start exceeded Ray's 60 s and the head came up without a
                # raylet.
                "RAY_raylet_start_wait_time_s": env.get("RAY_raylet_start_wait_time_s", "180"),
                "RAY_agent_register_timeout_ms": env.get("RAY_agent_register_timeout_ms", "180000"),
                "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
                "MAPPER_PROJECT_DIR": str(Path.cwd()),
            },
        )
        if started.returncode != 0:
            self._stop_ray()  # nothing half-started is left to pass for a running head
            raise Unavailable(
                f"`ray start --head` exited with {started.returncode} (logs under "
                f"{self.ray_temp_dir}); if a port was still held by a stopping cluster, run "
                "`make up` again"
            )
        return f"ray: head on {ray.address}, dashboard {ray.dashboard_url}"

    # -- down -----------------------------------------------------------------------------------

    def _stop_pid(self, name: str, timeout: float = 15.0) -> bool:
        pid = self.running_pid(name)
        self._pid_path(name).unlink(missing_ok=True)
        if pid is None:
            return False
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and _alive(pid):
            time.sleep(0.2)
        if _alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
        return True

    def down(self) -> list[str]:
        lines = [
            f"{s.name}: {'stopped' if self._stop_pid(s.name) else 'not running'}"
            for s in self.services
        ]
        # Not `ray stop`: that ends every Ray cluster of this user on the machine. Only the head
        # this stack recorded, found by the temp dir and GCS port in its own record.
        if not self._ray_record().exists():
            lines.append("ray: not started by this stack")
            return lines
        self._stop_ray()
        lines.append("ray: stopped")
        return lines

    def _recorded_head(self) -> tuple[str, int] | None:
        try:
            record = json.loads(self._ray_record().read_text())
            return str(record["temp_dir"]), int(record["port"])
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def _stop_ray(self, timeout: float = 15.0) -> None:
        head = self._recorded_head()
        if head is not None:
            temp_dir, port = head
            for sig in (signal.SIGTERM, signal.SIGKILL):
                for pid in ray_head_pids(temp_dir, port):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, sig)
                deadline = time.monotonic() + timeout
                while time.monotonic() < deadline and ray_head_pids(temp_dir, port):
                    time.sleep(0.3)
                if not ray_head_pids(temp_dir, port):
                    break
        self._ray_record().unlink(missing_ok=True)
        # A dying process can hold its port for a moment; an `up` right after must find it free
        # (a head whose agent port is still taken starts without a raylet).
        ray = self.ray
        ports = (ray.port, ray.dashboard_port, ray.client_port, ray.agent_port)
        deadline = time.monotonic() + 30
        while any(listening(p) for p in ports) and time.monotonic() < deadline:
            time.sleep(0.5)

    # -- status ---------------------------------------------------------------------------------

    def status(self) -> list[tuple[str, str, str, str]]:
        rows = []
        for svc in self.services:
            pid = self.running_pid(svc.name)
            up = pid and healthy(svc.address, ca_file=self.ca_file)
            state = "serving" if up else ("starting" if pid else "down")
            rows.append((svc.name, svc.address, str(pid or "-"), state))
        head = self._recorded_head()
        ray_state = "running" if head and ray_head_pids(*head) else "down"
        rows.append(("ray", self.ray.address, "-", ray_state))
        return rows


def ray_head_pids(temp_dir: str, gcs_port: int) -> list[int]:
    """The head's processes (their command lines name its temp dir) and all their descendants
    (workers and agents rename themselves `ray::...`)."""
    marker = temp_dir.rstrip("/").encode() + b"/"
    # Some head processes are re-parented to init and never name the temp dir (the Ray client
    # server: `python -m ray.util.client.server --address=IP:GCS_PORT ...`): they name our GCS.
    gcs = f":{gcs_port}".encode()
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
