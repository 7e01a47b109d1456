"""`mapperctl stack up|down|status` (`make up` / `make down` / `make status`)."""

from __future__ import annotations

import argparse

from llama_mapper.platform.stack import LocalStack
from llama_mapper.platform.terminal import print_table


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
