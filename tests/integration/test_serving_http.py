"""The router's HTTP app behind a real socket (uvicorn), driven by the MapperClient mapperctl uses."""

from __future__ import annotations

import pytest

from llama_mapper.platform.settings.serving import ServingSettings
from llama_mapper.serving.api import build_app
from llama_mapper.serving.router_core import RouterCore

pytestmark = pytest.mark.integration

MAPPED = [{"entity_type": "EMAIL_ADDRESS", "start": 0, "end": 5, "score": 0.9}]


def test_http_client_over_a_real_socket():
    import socket
    import threading
    import time

    import uvicorn

    from llama_mapper.domain.errors import InvalidArgument, ResourceExhausted
    from llama_mapper.serving.client import MapperClient

    core = RouterCore(ServingSettings(rate_limit_rps=0.001, rate_limit_burst=4), None, None)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(build_app(lambda: core), port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    try:
        with MapperClient(f"http://127.0.0.1:{port}", tenant="cli", retries=0) as client:
            assert client.map("presidio", MAPPED)["taxonomy"] == ["pii.email_address"]
            assert len(client.map_batch([{"detector": "presidio", "output": MAPPED}])) == 1
            document = client.map_document(
                [{"detector": "presidio", "output": MAPPED}], text="a@b.c", request_id="doc"
            )
            assert document["taxonomy"] == ["pii.email_address"]
            assert document["provenance"]["positions"] == "text"
            with pytest.raises(InvalidArgument):
                client.map("presidio", {"not": "a list"})
            with pytest.raises(ResourceExhausted):
                client.map("presidio", MAPPED)
    finally:
        server.should_exit = True
        thread.join(10)
