"""The registry as the serving side sees it: rollout record, champion, temperature, history."""

from __future__ import annotations

from datetime import UTC
from typing import Any

from llama_mapper.domain.errors import NotFound
from llama_mapper.platform.settings.serving import ServingSettings
from llama_mapper.registry.client import RegistryClient
from llama_mapper.serving.arms import RolloutView

_STAGE_NAMES = {1: "shadow", 2: "canary", 3: "complete", 4: "rolled_back", 5: "aborted"}


def registry_client(
    settings: ServingSettings, *, timeout_s: float | None = None
) -> RegistryClient | None:
    """The serving side's registry client (actor "serving"); None when no registry is configured.
    The router's reads use a short `timeout_s`; adapter downloads the client's default."""
    if not settings.registry_address:
        return None
    token = settings.registry_token.get_secret_value() if settings.registry_token else None
    return RegistryClient(
        settings.registry_address,
        token=token,
        actor="serving",
        ca_file=settings.registry_ca_file,
        timeout_s=timeout_s or 60.0,
    )


def rollout_view(record: Any) -> RolloutView | None:
    """A RolloutView from the registry's Rollout message (None when unset)."""
    if record is None or not record.model:
        return None
    return RolloutView(
        model=record.model,
        control_version=int(record.control_version),
        treatment_version=int(record.treatment_version),
        treatment_weight=float(record.treatment_weight),
        stage=_STAGE_NAMES.get(int(record.stage), "unspecified"),
        shadow=bool(record.shadow),
        shadow_fraction=float(record.shadow_fraction),
        salt=record.salt,
        revision=int(record.revision),
        lease_expires_at=(
            record.lease_expire_time.ToDatetime(tzinfo=UTC).timestamp()
            if record.HasField("lease_expire_time")
            else None
        ),
    )


class RegistrySource:
    """RolloutSource (router) and the controller's store, over one RegistryClient."""

    def __init__(self, client: Any) -> None:
        self.client = client

    def rollout(self, model: str) -> RolloutView | None:
        try:
            return rollout_view(self.client.get_rollout(model))
        except NotFound:
            return None

    def champion(self, model: str, alias: str) -> int | None:
        try:
            return int(self.client.resolve_alias(model, alias).version)
        except NotFound:
            return None

    def temperature(self, model: str, version: int) -> float:
        return self.calibration(model, version)[0]

    def calibration(self, model: str, version: int) -> tuple[float, str, float | None]:
        """(temperature, calibrator JSON, threshold) as the version's evaluation recorded them."""
        record = self.client.get_version(model, version).version
        return (
            float(record.temperature) if record.HasField("temperature") else 1.0,
            record.calibrator_json,
            float(record.threshold) if record.HasField("threshold") else None,
        )

    def set_rollout(
        self,
        current: RolloutView,
        *,
        weight: float,
        stage: str,
        reason: str,
        lease_s: float = 0.0,
        force: bool = False,
        hardware_profile: str = "",
        **kw: Any,
    ) -> RolloutView:
        record = self.client.set_rollout(
            current.model,
            control_version=kw.get("control_version", current.control_version),
            treatment_version=kw.get("treatment_version", current.treatment_version),
            treatment_weight=weight,
            stage=stage,
            expected_revision=current.revision,
            shadow=kw.get("shadow", current.shadow),
            shadow_fraction=kw.get("shadow_fraction", current.shadow_fraction),
            reason=reason,
            lease_seconds=lease_s,
            force=force,
            hardware_profile=hardware_profile,
        )
        view = rollout_view(record)
        assert view is not None
        return view

    def renew_lease(self, current: RolloutView, lease_s: float) -> RolloutView:
        record = self.client.renew_rollout_lease(
            current.model, expected_revision=current.revision, lease_seconds=lease_s
        )
        view = rollout_view(record)
        assert view is not None
        return view

    def finish(
        self, current: RolloutView, outcome: str, *, reason: str, alias: str = "champion"
    ) -> RolloutView:
        """complete | rolled_back | aborted, in one registry transaction (complete moves `alias`)."""
        response = self.client.finish_rollout(
            current.model, outcome, expected_revision=current.revision, reason=reason, alias=alias
        )
        view = rollout_view(response.rollout)
        assert view is not None
        return view

    def p95_target(self, model: str, profile: str) -> float | None:
        try:
            targets = self.client.get_targets(model, profile)
        except NotFound:
            return None
        for target in targets:
            if target.hardware_profile == profile and target.HasField("p95_latency_ms"):
                return float(target.p95_latency_ms)
        return None
