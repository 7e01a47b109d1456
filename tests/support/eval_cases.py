"""A small eval set built from the shipped mapping tables (no data builder needed), and a registry
stand-in whose versions answer like the rules, for evaluation tests."""

from __future__ import annotations

import random
from pathlib import Path

from llama_mapper.domain.errors import FailedPrecondition, NotFound
from llama_mapper.domain.rules import RulesMapper
from llama_mapper.domain.tables import default_tables
from llama_mapper.evaluation.evalset import write_eval_set
from llama_mapper.evaluation.models import LoadedModel
from llama_mapper.inference.model import Prediction


def _typo(text: str, rng: random.Random) -> str:
    i = rng.randrange(1, max(2, len(text) - 1))
    return text[:i] + text[i + 1 :] + "q"


def table_rows(per_detector: int = 6, seed: int = 0) -> list[dict]:
    """Exact table entries (rules map them), misspelt ones (held out: the model's job), gibberish."""
    rng = random.Random(seed)
    rows = []
    for name, table in sorted(default_tables().items()):
        keys = sorted(table.entries)[:per_detector]
        for key in keys:
            labels = list(table.entries[key].labels)
            rows.append(
                {
                    "id": f"{name}:{key}",
                    "detector": name,
                    "finding": {"label": key, "score": 0.97},
                    "labels": labels,
                    "split": "test",
                }
            )
        for key in keys[:2]:
            rows.append(
                {
                    "id": f"{name}:{key}:typo",
                    "detector": name,
                    "finding": {"label": _typo(key, rng), "score": 0.97},
                    "labels": list(table.entries[key].labels),
                    "split": "held_out_pairs",
                }
            )
        rows.append(
            {
                "id": f"{name}:gibberish",
                "detector": name,
                "finding": {"label": "zxqv-" + name[:3]},
                "labels": ["other.unknown"],
                "split": "test",
            }
        )
    return rows


def build_eval_set(directory: Path, **kwargs) -> Path:
    return write_eval_set(directory, table_rows(**kwargs))


class RulesBackedModel:
    """A MapperModel that answers with the rules' label (or a fixed wrong one): deterministic quality."""

    def __init__(self, wrong_every: int) -> None:
        self.rules = RulesMapper()
        self.wrong_every = wrong_every
        self.calls = 0

    @property
    def description(self):
        return {"engine": "fake"}

    def predict(self, queries):
        from llama_mapper.evaluation.evalset import MapperCase

        out = []
        for q in queries:
            self.calls += 1
            case = MapperCase("x", q.detector, q.finding, frozenset())
            match = self.rules.match(case.normalized())
            label = match.labels[0] if match else "other.no_finding"
            if self.wrong_every and self.calls % self.wrong_every == 0:
                label = "pii.other"
            out.append(Prediction(label, 0.95, -0.05, 0.001))
        return out


class FakeRegistry:
    """What the service needs of the registry: versions 1 (good, champion) and 2 (worse)."""

    def __init__(self) -> None:
        self.metrics: list[tuple] = []
        self.gates: list[tuple] = []
        self.targets_by_profile = {
            "cpu-2core": {
                "min_accuracy": 0.5,
                "min_schema_valid_rate": 1.0,
                "max_ece": 0.5,
                "p95_latency_ms": 1000.0,
            }
        }

    def resolve(self, model, version, alias):
        if model != "mapper":
            raise NotFound(f"unknown model {model!r}")
        if alias:
            if alias != "champion":
                raise NotFound(f"no alias {alias!r}")
            return 1
        if version not in (1, 2):
            raise NotFound(f"no version {version}")
        return version

    def champion(self, model):
        return 1

    def load(self, model, version):
        return LoadedModel(
            RulesBackedModel(0 if version == 1 else 2), {"name": model, "version": version}
        )

    def targets(self, model, profile):
        if profile not in self.targets_by_profile:
            raise FailedPrecondition(f"no targets for {profile}")
        return self.targets_by_profile[profile]

    def record_metrics(self, model, version, values, **kw):
        self.metrics.append((model, version, values, kw))

    def record_gate(self, model, version, profile, **kw):
        self.gates.append((model, version, profile, kw))
