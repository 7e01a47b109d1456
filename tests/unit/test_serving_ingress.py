"""The router's gRPC methods over a real channel (grpc.aio on port 0), without Ray Serve."""

from __future__ import annotations

import asyncio
import json

import grpc
import pytest

from llama_mapper._proto.mapper.v1 import mapper_pb2 as pb
from llama_mapper._proto.mapper.v1 import mapper_pb2_grpc
from llama_mapper.domain.schemas import validate
from llama_mapper.platform.settings.serving import ServingSettings
from llama_mapper.serving.router_core import RouterCore

ingress = pytest.importorskip("llama_mapper.serving.ingress")


class Replica(ingress.MapperRouter.func_or_class):
    """The deployment's class as a replica runs it, minus Serve: the ASGI wrapper's async
    __del__ (which only a Serve replica awaits) is not run."""

    def __del__(self):
        pass


def replica(**settings):
    """A replica with its core set directly, as its __init__ would set it without a registry."""
    router = Replica.__new__(Replica)
    router.settings = ServingSettings(**settings)
    router.core = RouterCore(router.settings, None, None)
    return router


TEXT = "Zoë, call +44 20 7946 0958\nkey = AKIAFAKE\n"
PHONE = (TEXT.index("+44"), TEXT.index("\n"))
PHONE_BYTES = (len(TEXT[: PHONE[0]].encode()), len(TEXT[: PHONE[1]].encode()))
OUTPUTS = [
    pb.DocumentOutput(
        detector="presidio",
        output_json=json.dumps(
            [{"entity_type": "PHONE_NUMBER", "start": PHONE[0], "end": PHONE[1], "score": 0.8}]
        ),
    ),
    pb.DocumentOutput(
        detector="google-dlp",
        output_json=json.dumps(
            {
                "findings": [
                    {
                        "infoType": {"name": "PHONE_NUMBER"},
                        "location": {
                            "byteRange": {"start": str(PHONE_BYTES[0]), "end": str(PHONE_BYTES[1])}
                        },
                    }
                ]
            }
        ),
    ),
    pb.DocumentOutput(
        detector="detect-secrets",
        output_json=json.dumps(
            {"results": {"f": [{"type": "AWS Access Key", "filename": "f", "line_number": 2}]}}
        ),
    ),
]


async def serve(replica):
    server = grpc.aio.server()
    mapper_pb2_grpc.add_MapperServiceServicer_to_server(replica, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, mapper_pb2_grpc.MapperServiceStub(grpc.aio.insecure_channel(f"127.0.0.1:{port}"))


def test_map_document_over_a_channel_converts_with_the_text_and_checks_like_map():
    async def go():
        server, stub = await serve(replica(rate_limit_rps=0.001, rate_limit_burst=5))
        try:
            reply = await stub.MapDocument(
                pb.MapDocumentRequest(outputs=OUTPUTS, text=TEXT, request_id="g1")
            )
            doc = json.loads(reply.result_json)
            validate("document-output", doc)
            assert reply.request_id == "g1" and reply.adapter_version == 0
            assert "AKIA" not in reply.result_json and "Zoë" not in reply.result_json
            assert doc["provenance"]["positions"] == "text"
            phone, secret = doc["findings"]
            assert (phone["span"]["start"], phone["span"]["end"]) == PHONE
            assert len(phone["sources"]) == 2
            assert secret["span_unit"] == "char" and secret["sources"][0]["span_unit"] == "line"
            # `text` unset (not empty): the positions stay as reported.
            unset = await stub.MapDocument(pb.MapDocumentRequest(outputs=OUTPUTS[:1]))
            assert json.loads(unset.result_json)["provenance"]["positions"] == "reported"
            with pytest.raises(grpc.aio.AioRpcError) as empty_text:
                await stub.MapDocument(pb.MapDocumentRequest(outputs=OUTPUTS[:1], text=""))
            assert empty_text.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "past the text's 0 characters" in empty_text.value.details()
            # A burst of five: these cost 3 + 1 + 1 (each output counts); three more are over.
            with pytest.raises(grpc.aio.AioRpcError) as limited:
                await stub.MapDocument(pb.MapDocumentRequest(outputs=OUTPUTS))
            assert limited.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        finally:
            await server.stop(None)

    asyncio.run(go())


@pytest.mark.parametrize(
    ("request_", "needle"),
    [
        (pb.MapDocumentRequest(), "$.outputs: 1 to 32"),
        (pb.MapDocumentRequest(outputs=[OUTPUTS[0]] * 33), "$.outputs: 1 to 32"),
        (
            pb.MapDocumentRequest(outputs=[OUTPUTS[0], pb.DocumentOutput(output_json="[]")]),
            "$.outputs[1].detector is required",
        ),
        (
            pb.MapDocumentRequest(
                outputs=[pb.DocumentOutput(detector="presidio", output_json="[")]
            ),
            "$.outputs[0].output_json is not JSON",
        ),
        (
            pb.MapDocumentRequest(
                outputs=[pb.DocumentOutput(detector="presidio", output_json='{"x": 1}')]
            ),
            "$.outputs[0].output: presidio",
        ),
        (pb.MapDocumentRequest(outputs=OUTPUTS, text_sha256="beef"), "64 lowercase hex"),
        (pb.MapDocumentRequest(outputs=OUTPUTS, request_id="r" * 129), "at most 128"),
        (pb.MapDocumentRequest(outputs=OUTPUTS, text="x" * 70_000), "over 65536"),
    ],
)
def test_map_document_refusals_are_invalid_argument_naming_the_field(request_, needle):
    async def go():
        server, stub = await serve(replica(rate_limit_rps=0))
        try:
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await stub.MapDocument(request_)
            assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert needle in refused.value.details()
        finally:
            await server.stop(None)

    asyncio.run(go())
