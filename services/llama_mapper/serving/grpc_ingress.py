"""Serve's gRPC ingress for MapperService, and the one fix it needs for our generated code."""

# protoc names the message classes' module after the proto path (`llama_mapper.mapper.v1.mapper_pb2`)
# while the generated code lives in `llama_mapper._proto.mapper.v1`. Serve pickles requests and
# responses between its proxy and the replica, and pickle finds classes by module name: both sides
# import this module (the proxy through `add_MapperServiceServicer_to_server` below, the replica
# through router.py), which registers the proto-path name as an alias of the real module.

from __future__ import annotations

import sys
from typing import Any

from llama_mapper._proto.mapper.v1 import mapper_pb2, mapper_pb2_grpc

sys.modules.setdefault(mapper_pb2.MapRequest.__module__, mapper_pb2)

SERVICER_FUNCTION = "llama_mapper.serving.grpc_ingress.add_MapperServiceServicer_to_server"


def add_MapperServiceServicer_to_server(servicer: Any, server: Any) -> None:  # noqa: N802 (grpc's name)
    mapper_pb2_grpc.add_MapperServiceServicer_to_server(servicer, server)
