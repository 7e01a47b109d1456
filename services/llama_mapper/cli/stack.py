"""`mapperctl stack up|down|status` (`make up` / `make down` / `make status`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from llama_mapper.domain.errors import AlreadyExists
from llama_mapper.platform.stack import LocalStack
from llama_mapper.platform.terminal import print_table
from llama_mapper.platform.tls import local_tls


def _up(args: argparse.Namespace) -> int:
    for line in LocalStack().up(only=args.only, with_ray=not args.no_ray, tls=args.tls):
        print(line)
    return 0


def _down(_args: argparse.Namespace) -> int:
    for line in LocalStack().down():
        print(line)
    return 0


def _status(_args: argparse.Namespace) -> int:
    print_table(("service", "address", "pid", "state"), LocalStack().status())
    return 0


def _tls(args: argparse.Namespace) -> int:
    out = Path(args.out)
    if (out / "ca.pem").exists():
        raise AlreadyExists(f"{out} already holds a CA; remove it to issue new certificates")
    tls = local_tls(out, tuple(args.name), days=args.days)
    print(f"CA {tls.ca_file} (give it to every client)")
    print(f"server certificate {tls.cert_file} for {', '.join(args.name)}")
    print(f"server key {tls.key_file} (mode 0600: make it readable by the services' user only)")
    return 0


def add_parser(commands: argparse._SubParsersAction) -> None:
    stack = commands.add_parser("stack", help="start, stop or inspect the local stack")
    sub = stack.add_subparsers(dest="stack_command", required=True)
    start = sub.add_parser("up", help="start the gRPC services and a Ray head (idempotent)")
    start.add_argument(
        "--only", nargs="*", help="start only these (validation registry evaluation ray)"
    )
    start.add_argument("--no-ray", action="store_true", help="do not start the Ray head")
    start.add_argument(
        "--tls",
        action="store_true",
        help="every service speaks TLS only, with a certificate of a CA the stack creates under "
        "its var dir; mapperctl and the services check it (kept for later `up`s)",
    )
    start.set_defaults(func=_up)
    sub.add_parser("down", help="stop everything this stack's `up` started").set_defaults(
        func=_down
    )
    sub.add_parser("status", help="what is running").set_defaults(func=_status)
    tls = sub.add_parser(
        "tls",
        help="issue a CA and a server certificate for a deployment's service names "
        "(compose, Kubernetes); the local stack makes its own with `up --tls`",
    )
    tls.add_argument(
        "--out", required=True, help="directory for ca.pem, server.pem, server-key.pem"
    )
    tls.add_argument(
        "--name",
        action="append",
        required=True,
        help="DNS name or IP address the services answer on (repeat)",
    )
    tls.add_argument("--days", type=int, default=365, help="validity (default %(default)s)")
    tls.set_defaults(func=_tls)
