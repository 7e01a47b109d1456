"""Loading a registered mapper version as a MapperModel: download, verify, pick the engine."""

# vLLM (the serving engine code, offline mode) is the batch engine; transformers generate is the
# fallback where vLLM is not installed or cannot start, with the same label constraint.

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llama_mapper.domain.errors import FailedPrecondition, NotFound
from llama_mapper.inference.base_model import DEFAULT_MODEL_ID, prepare_base_model
from llama_mapper.inference.model import MapperModel
from llama_mapper.platform.settings.common import common

log = logging.getLogger(__name__)


@dataclass
class LoadedModel:
    model: MapperModel
    info: dict[str, Any]
    close: Callable[[], None] = field(default=lambda: None)
    engine: Any = None  # the VllmEngine behind `model`, which other adapters can share


def _vllm_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("vllm") is not None


# vLLM engines kept between runs (a long-lived evaluation service), one per base model: starting
# one costs about a minute on CPU, a LoRA adapter on a running one milliseconds.
_WARM_ENGINES: dict[str, Any] = {}
_WARM_LOCK = threading.Lock()


def _vllm_engine(base_path: Path, keep: bool) -> Any:
    """The engine serving runs (its MAPPER_SERVING_ENGINE__* settings) on this base."""
    from llama_mapper.inference.vllm_engine import VllmEngine
    from llama_mapper.platform.settings.serving import served_engine_config

    if not keep:
        return VllmEngine(served_engine_config(str(base_path)))
    with _WARM_LOCK:
        engine = _WARM_ENGINES.get(str(base_path))
        if engine is None:
            engine = VllmEngine(served_engine_config(str(base_path)))
            _WARM_ENGINES[str(base_path)] = engine
        return engine


def shutdown_warm_engines() -> None:
    with _WARM_LOCK:
        for engine in _WARM_ENGINES.values():
            engine.shutdown()
        _WARM_ENGINES.clear()


def load_model(
    base_model: str,
    adapter_dir: Path | None,
    *,
    name: str,
    version: int | None,
    engine: str = "auto",
    expected_base_sha256: str = "",
    keep_engine: bool = False,
) -> LoadedModel:
    """A MapperModel for `adapter_dir` on `base_model`; refuses a base whose weights differ.

    `keep_engine`: the vLLM engine outlives the run (closing the model leaves it running) and
    the next run on the same base reuses it."""
    base = prepare_base_model(base_model or DEFAULT_MODEL_ID, common().cache_dir)
    if expected_base_sha256 and expected_base_sha256 != base.sha256:
        raise FailedPrecondition(
            f"{name} v{version} was trained on base {expected_base_sha256[:12]}, "
            f"but {base.model_id} here is {base.sha256[:12]}"
        )
    info: dict[str, Any] = {
        "name": name,
        "version": version,
        "base_model": base.model_id,
        "base_model_sha256": base.sha256,
    }
    if engine in ("auto", "vllm") and (_vllm_available() or engine == "vllm"):
        try:
            from llama_mapper.inference.vllm_engine import AdapterRef

            vllm = _vllm_engine(base.path, keep_engine)
            key = None
            if adapter_dir:
                # Keyed by its directory (model, version, artifact digest): unique per files.
                key = f"{adapter_dir.name}"
                if key not in vllm._adapters:  # the directory names its digest: same files
                    vllm.add_adapter(AdapterRef(name, adapter_dir, version), key=key)
            info["engine"] = "vllm"
            close = (lambda: None) if keep_engine else vllm.shutdown
            return LoadedModel(vllm.model(key), info, close, engine=vllm)
        except Exception as exc:
            if engine == "vllm":
                raise
            log.warning(
                "vLLM engine unavailable (%s: %s): falling back to transformers",
                type(exc).__name__,
                exc,
            )
    from llama_mapper.inference.transformers_engine import HFMapperModel

    info["engine"] = "transformers"
    model = HFMapperModel(
        base.path, adapter_dir, description={"adapter": name, "adapter_version": version}
    )
    return LoadedModel(model, info)


class RegistryModels:
    """Resolves versions and aliases and downloads adapters through the registry client."""

    def __init__(
        self,
        client_factory: Callable[[], Any],
        adapters_dir: Path,
        engine: str = "auto",
        *,
        keep_engine: bool = False,
    ) -> None:
        self.client_factory = client_factory
        self.adapters_dir = adapters_dir
        self.engine = engine
        self.keep_engine = keep_engine

    def resolve(self, model: str, version: int | None, alias: str | None) -> int:
        client = self.client_factory()
        if alias:
            return int(client.resolve_alias(model, alias).version)
        if not version:
            raise NotFound(f"{model}: name a version or an alias")
        client.get_version(model, version)  # NotFound for an unknown model or version
        return version

    def champion(self, model: str) -> int | None:
        try:
            return int(self.client_factory().resolve_alias(model, "champion").version)
        except NotFound:
            return None

    def _fetch(self, client: Any, model: str, version: int, artifact_sha256: str) -> Path:
        """The version's files, downloaded once (sha256-verified by the client). The cache key
        carries the artifact digest: another registry's "mapper v1" is never mistaken for this one."""
        dest = self.adapters_dir / f"{model}-v{version}-{artifact_sha256[:16]}"
        if not (dest / "adapter_config.json").is_file():
            dest.parent.mkdir(parents=True, exist_ok=True)
            client.download(model, version, dest)
        return dest

    def load(self, model: str, version: int) -> LoadedModel:
        client = self.client_factory()
        record = client.get_version(model, version).version
        dest = self._fetch(client, model, version, record.artifact_sha256)
        lineage = record.lineage
        loaded = load_model(
            lineage.base_model_id or DEFAULT_MODEL_ID,
            dest,
            name=model,
            version=version,
            engine=self.engine,
            expected_base_sha256=lineage.base_model_sha256,
            keep_engine=self.keep_engine,
        )
        loaded.info["artifact_sha256"] = record.artifact_sha256
        # What serving applies today; a run that fits a new one answers with that instead.
        loaded.info["registered_temperature"] = record.temperature or 1.0
        loaded.info["registered_calibrator"] = record.calibrator_json
        if record.HasField("threshold"):
            loaded.info["registered_threshold"] = record.threshold
        return loaded

    def load_analyst(self, model: str, version: int, host: LoadedModel | None = None) -> Any:
        """The analyst adapter, on the mapper's vLLM engine when `host` runs one on the same base
        (a second LoRA, sampled as served: JSON-constrained), else on transformers generate
        (free text, validated by the metrics)."""
        client = self.client_factory()
        record = client.get_version(model, version).version
        dest = self._fetch(client, model, version, record.artifact_sha256)
        base = prepare_base_model(
            record.lineage.base_model_id or DEFAULT_MODEL_ID, common().cache_dir
        )
        engine = host.engine if host is not None else None
        if engine is not None and engine.base.sha256 == base.sha256:
            from llama_mapper.inference.vllm_engine import AdapterRef, VllmAnalystModel

            name = f"{model}-v{version}"
            engine.add_adapter(AdapterRef(name, dest, version))
            return VllmAnalystModel(engine, name)
        from llama_mapper.inference.transformers_engine import HFAnalystModel

        return HFAnalystModel(base.path, dest)

    def targets(self, model: str, hardware_profile: str) -> dict[str, float]:
        # All of the model's targets, filtered here: the registry answers NOT_FOUND for a profile
        # without targets, which this service reports as FAILED_PRECONDITION (NOT_FOUND stays for
        # an unknown model).
        found = [
            t
            for t in self.client_factory().get_targets(model)
            if t.hardware_profile == hardware_profile
        ]
        if not found:
            raise FailedPrecondition(
                f"no targets stored for {model} on hardware profile {hardware_profile!r}"
            )
        message = found[0]
        fields = (
            "p95_latency_ms",
            "min_accuracy",
            "min_macro_f1",
            "max_ece",
            "min_schema_valid_rate",
        )
        return {f: getattr(message, f) for f in fields if message.HasField(f)}

    def record_metrics(
        self,
        model: str,
        version: int,
        values: dict[str, float],
        *,
        eval_set_sha256: str,
        temperature: float | None,
        report_uri: str,
        calibrator_json: str = "",
        threshold: float | None = None,
    ) -> None:
        self.client_factory().record_metrics(
            model,
            version,
            values,
            eval_set_sha256=eval_set_sha256,
            temperature=temperature,
            report_uri=report_uri,
            calibrator_json=calibrator_json,
            threshold=threshold,
        )

    def record_gate(
        self,
        model: str,
        version: int,
        hardware_profile: str,
        *,
        passed: bool,
        summary: str,
        details_json: str,
        report_uri: str,
    ) -> None:
        self.client_factory().record_gate_result(
            model,
            version,
            hardware_profile,
            passed=passed,
            summary=summary,
            details_json=details_json,
            report_uri=report_uri,
        )
