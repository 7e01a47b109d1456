"""EvaluationClient: mapperctl's side of the evaluation service (start, follow, report, compare, gate)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

import grpc

from llama_mapper._proto.evaluation.v1 import evaluation_pb2 as pb
from llama_mapper._proto.evaluation.v1 import evaluation_pb2_grpc as pb_grpc
from llama_mapper.domain.errors import Unavailable
from llama_mapper.evaluation.service import TERMINAL, RunInfo, RunRequest
from llama_mapper.evaluation.servicer import (
    comparison_parts,
    gate_outcome,
    progress_info,
    report_parts,
    run_info,
    start_request_message,
    version_ref,
)
from llama_mapper.platform.rpc.channel import call_metadata, open_channel, unary
from llama_mapper.platform.rpc.errors import from_rpc_error

CONNECT_TIMEOUT_S = 2.0
T = TypeVar("T")


def _absolute(uri: str) -> str:
    """A local path as an absolute one: the service resolves paths against its own directory."""
    return uri if not uri or "://" in uri else str(Path(uri).resolve())


class EvaluationClient:
    """One channel to an evaluation service, with the methods of EvaluationService that mapperctl
    uses (start, watch, report, compare, gate, close), so the CLI drives either the same way.
    Every method raises llama_mapper.domain.errors, the class the server raised, on failure."""

    def __init__(
        self,
        address: str,
        *,
        token: str | None = None,
        ca_file: Path | None = None,
        timeout_s: float = 120.0,
    ) -> None:
        self.address = address
        self._channel = open_channel(address, ca_file=ca_file)
        self._stub = pb_grpc.EvaluationServiceStub(self._channel)
        self._token = token
        self.timeout_s = timeout_s

    @classmethod
    def connect(
        cls,
        address: str,
        *,
        token: str | None = None,
        ca_file: Path | None = None,
        timeout_s: float = CONNECT_TIMEOUT_S,
    ) -> EvaluationClient:
        """A client whose channel is ready; Unavailable, naming the address, when nothing answers."""
        client = cls(address, token=token, ca_file=ca_file)
        try:
            grpc.channel_ready_future(client._channel).result(timeout=timeout_s)
        except grpc.FutureTimeoutError:
            client.close()
            raise Unavailable(
                f"no evaluation service answers at {address} (waited {timeout_s:g} s)"
            ) from None
        return client

    def close(self) -> None:
        self._channel.close()

    def _metadata(self) -> list[tuple[str, str]]:
        return call_metadata(self._token)

    def _call(self, method: Callable[..., T], request: Any) -> T:
        return unary(method, request, token=self._token, timeout_s=self.timeout_s)

    def start(self, request: RunRequest) -> RunInfo:
        request = replace(
            request,
            eval_set_uri=_absolute(request.eval_set_uri),
            held_out_set_uri=_absolute(request.held_out_set_uri),
            calibration_set_uri=_absolute(request.calibration_set_uri),
            analyst_set_uri=_absolute(request.analyst_set_uri),
        )
        response = self._call(self._stub.StartEvaluation, start_request_message(request))
        return run_info(response.run)

    def watch(self, run_id: str) -> Iterator[RunInfo]:
        """Progress snapshots until the run ends (no deadline: a model run may take hours)."""
        last: RunInfo | None = None
        try:
            for message in self._stub.StreamProgress(
                pb.StreamProgressRequest(run_id=run_id), metadata=self._metadata()
            ):
                last = progress_info(message)
                yield last
        except grpc.RpcError as exc:
            raise from_rpc_error(exc) from None
        if last is None or last.state not in TERMINAL:
            raise Unavailable(
                f"the evaluation service at {self.address} ended the progress stream of run "
                f"{run_id} before the run ended (the run may go on there)"
            )

    def report(self, run_id: str) -> tuple[RunInfo, dict[str, Any]]:
        return report_parts(self._call(self._stub.GetReport, pb.GetReportRequest(run_id=run_id)))

    def compare(
        self,
        model: str,
        candidate: int,
        baseline: int | None,
        eval_set_sha256: str = "",
        alpha: float = 0.0,
    ) -> tuple[RunInfo, RunInfo, dict[str, Any]]:
        request = pb.CompareVersionsRequest(
            candidate=version_ref(model, candidate, None),
            eval_set_sha256=eval_set_sha256,
            alpha=alpha,
        )
        if baseline is not None:
            request.baseline.CopyFrom(version_ref(model, baseline, None))
        return comparison_parts(self._call(self._stub.CompareVersions, request).comparison)

    def gate(
        self, model: str, version: int, hardware_profile: str = "", alpha: float = 0.0
    ) -> dict[str, Any]:
        request = pb.CheckGateRequest(
            candidate=version_ref(model, version, None),
            hardware_profile=hardware_profile,
            alpha=alpha,
        )
        return gate_outcome(self._call(self._stub.CheckGate, request))
