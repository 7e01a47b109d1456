"""A small HTTP client of the router, for `mapperctl map` and scripts: retries 429 and 503 politely."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import httpx

from llama_mapper.domain.errors import (
    InvalidArgument,
    MapperError,
    NotFound,
    PayloadTooLarge,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
)
from llama_mapper.platform.settings.serving import ServingClientSettings

_BY_STATUS: dict[int, type[MapperError]] = {
    401: Unauthenticated,
    404: NotFound,
    413: PayloadTooLarge,
    422: InvalidArgument,
    429: ResourceExhausted,
    503: Unavailable,
}


class MapperClient:
    """`map` / `map_batch` / `map_document` against a router; errors come back as the server's
    MapperError class."""

    def __init__(
        self,
        url: str | None = None,
        *,
        token: str | None = None,
        tenant: str | None = None,
        timeout_s: float = 30.0,
        retries: int = 3,
    ) -> None:
        settings = ServingClientSettings()
        self.url = (url or settings.url).rstrip("/")
        headers = {}
        token = token or settings.bearer()
        if token:
            headers["authorization"] = f"Bearer {token}"
        if tenant:
            headers["x-tenant-id"] = tenant
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout_s)
        self.retries = retries

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> MapperClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def _post(self, path: str, body: Mapping[str, Any]) -> dict[str, Any]:
        for attempt in range(self.retries + 1):
            try:
                response = self._http.post(path, json=dict(body))
            except httpx.TransportError as exc:
                raise Unavailable(f"router at {self.url} unreachable ({exc})") from None
            if response.status_code in (429, 503) and attempt < self.retries:
                time.sleep(min(float(response.headers.get("retry-after", 1)), 10.0))
                continue
            if response.status_code == 200:
                return response.json()
            try:
                message = response.json()["error"]["message"]
            except (ValueError, KeyError, TypeError):
                message = response.text[:200]
            raise _BY_STATUS.get(response.status_code, MapperError)(message)
        raise Unavailable("retries exhausted")  # pragma: no cover - the loop returns or raises

    def map(self, detector: str, output: Any, *, request_id: str | None = None) -> dict[str, Any]:
        """The canonical result of one detector output."""
        body: dict[str, Any] = {"detector": detector, "output": output}
        if request_id:
            body["request_id"] = request_id
        return self._post("/v1/map", body)["result"]

    def map_batch(self, items: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        return [r["result"] for r in self._post("/v1/map/batch", {"items": list(items)})["results"]]

    def analyze(
        self,
        framework: str,
        finding: Mapping[str, Any],
        context: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """The hybrid analyst's assessment of one canonical finding (POST /v1/analyze)."""
        body: dict[str, Any] = {"framework": framework, "finding": dict(finding)}
        if context:
            body["context"] = dict(context)
        return self._post("/v1/analyze", body)["assessment"]

    def map_document(
        self,
        outputs: Sequence[Mapping[str, Any]],
        *,
        text: str | None = None,
        text_sha256: str | None = None,
        request_id: str | None = None,
    ) -> dict[str, Any]:
        """The document result of several detectors' outputs for one text."""
        body: dict[str, Any] = {"outputs": [dict(o) for o in outputs]}
        for key, value in (
            ("text", text),
            ("text_sha256", text_sha256),
            ("request_id", request_id),
        ):
            if value is not None:
                body[key] = value
        return self._post("/v1/map/document", body)["result"]
