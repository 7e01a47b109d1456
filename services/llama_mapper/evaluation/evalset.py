"""Frozen evaluation sets: mapper and analyst cases read from dataset rows, with the set's digest."""

# An eval set is a directory of JSON Lines files (the data builder's layout: rows carrying `id`,
# `split`, `detector`, the `finding` payload or the prompt it is in, and the expected `labels`) with
# an optional `manifest.json`, or a single `.jsonl` file. Its digest is the sha256 of the manifest
# when there is one, else of the data files' bytes in name order: two runs compare only when their
# digests match.

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llama_mapper.domain import jsonio
from llama_mapper.domain.errors import FailedPrecondition, InvalidArgument, NotFound
from llama_mapper.domain.findings import NormalizedFinding
from llama_mapper.domain.prompt import parse_analyst_user_prompt

MANIFEST = "manifest.json"
_USER_PREFIX = "Detector output: "
# Splits that name cases for fitting the temperature rather than for measuring.
CALIBRATION_SPLITS = frozenset({"calibration", "calib", "validation", "val", "eval"})
# The data builder writes heldout_pair / heldout_detector; hand-written sets may use held_out_*.
HELD_OUT_PREFIXES = ("held_out", "heldout")
# Training rows are never measured: a directory's *train* files are skipped.
_SKIPPED_FILES = ("train",)


def is_held_out(split: str) -> bool:
    return split.startswith(HELD_OUT_PREFIXES)


@dataclass(frozen=True)
class MapperCase:
    """One finding with the label set the mapper must answer."""

    id: str
    detector: str
    finding: Mapping[str, Any]
    labels: frozenset[str]
    split: str = "test"
    source: str = ""
    heldout: bool = False  # a golden case drawn from held-out material
    # The detector's native output, when the case is one: the hybrid maps it from here (readers,
    # generic reader, rules, model) as /v1/map does; `finding` is then what the reader found.
    native: Any = None

    def normalized(self) -> NormalizedFinding:
        """The finding as the rules mapper sees it, rebuilt from the prompt payload."""
        attributes = {
            k: v for k, v in self.finding.items() if k not in {"label", "score", "severity"}
        }
        score = self.finding.get("score")
        severity = self.finding.get("severity")
        return NormalizedFinding(
            detector=self.detector,
            raw_label=str(self.finding.get("label", "")),
            score=float(score) if isinstance(score, int | float) else None,
            severity=int(severity) if isinstance(severity, int) else None,
            attributes=attributes,
        )


@dataclass(frozen=True)
class AnalystCase:
    """(framework, canonical finding, context) with the rubric's assessment."""

    id: str
    framework: str
    finding: Mapping[str, Any]
    expected: Mapping[str, Any]
    split: str = "test"
    context: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class EvalSet:
    uri: str
    sha256: str
    mapper: tuple[MapperCase, ...]
    analyst: tuple[AnalystCase, ...] = ()
    manifest: Mapping[str, Any] = field(default_factory=dict)

    def split(self, predicate: Any) -> tuple[MapperCase, ...]:
        return tuple(c for c in self.mapper if predicate(c.split))

    @property
    def measured(self) -> tuple[MapperCase, ...]:
        """Cases that are measured: everything but calibration and held-out splits."""
        return self.split(lambda s: s not in CALIBRATION_SPLITS and not is_held_out(s))

    @property
    def calibration(self) -> tuple[MapperCase, ...]:
        return self.split(lambda s: s in CALIBRATION_SPLITS)

    def held_out(self) -> dict[str, tuple[MapperCase, ...]]:
        names = sorted({c.split for c in self.mapper if is_held_out(c.split)})
        return {name: self.split(lambda s, n=name: s == n) for name in names}

    def truncated(self, max_cases: int) -> EvalSet:
        if max_cases <= 0:
            return self
        return EvalSet(
            self.uri, self.sha256, self.mapper[:max_cases], self.analyst[:max_cases], self.manifest
        )


def _user_payload(row: Mapping[str, Any]) -> dict[str, Any]:
    for message in row.get("input") or ():
        content = message.get("content", "")
        if message.get("role") == "user" and content.startswith(_USER_PREFIX):
            return jsonio.loads(content[len(_USER_PREFIX) :], what=f"row {row.get('id')!r}")
    raise InvalidArgument(f"row {row.get('id')!r} has neither `finding` nor a mapper prompt")


def mapper_case(row: Mapping[str, Any]) -> MapperCase:
    """A mapper case from a dataset row (schemas/mapper-example.json) or a hand-written one."""
    finding = row.get("finding")
    detector = row.get("detector")
    if finding is None or detector is None:
        body = _user_payload(row)
        finding = finding if finding is not None else body["finding"]
        detector = detector or body["detector"]
    labels = row.get("labels") or ([row["label"]] if row.get("label") else [row.get("output")])
    if not labels or not all(isinstance(x, str) and x for x in labels):
        raise InvalidArgument(f"row {row.get('id')!r} has no expected label")
    return MapperCase(
        id=str(
            row.get("id")
            or hashlib.sha256(json.dumps([detector, finding], sort_keys=True).encode()).hexdigest()[
                :16
            ]
        ),
        detector=str(detector),
        finding=dict(finding),
        labels=frozenset(labels),
        split=str(row.get("split") or "test"),
        source=str(row.get("source") or ""),
        heldout=bool(row.get("heldout", False)),
        native=row.get("native"),
    )


def analyst_case(row: Mapping[str, Any]) -> AnalystCase:
    expected = row.get("expected") or row.get("output")
    if isinstance(expected, str):
        expected = jsonio.loads(expected, what=f"analyst row {row.get('id')!r}: output")
    finding = row.get("finding")
    framework = row.get("framework")
    context = row.get("context")
    for message in row.get("input") or ():
        if message.get("role") != "user":
            continue
        content = message.get("content", "")
        body = parse_analyst_user_prompt(content)
        if body is not None:
            # The builder's prompt: framework, label, confidence, context.
            found = {k: body[k] for k in ("label", "confidence") if k in body}
            finding = finding if finding is not None else found
            framework = framework or body.get("framework")
            context = context if context is not None else body.get("context")
        elif content.startswith("Context: "):
            # The first builder's prompt (analyst rows before the rubric module).
            body_text = content[len("Context: ") :].rsplit(" Analyze", 1)[0]
            old = jsonio.loads(body_text, what=f"analyst row {row.get('id')!r}")
            finding = finding if finding is not None else old["finding"]
            framework = framework or old["compliance_framework"]
    if finding is None or framework is None or not isinstance(expected, dict):
        raise InvalidArgument(f"analyst row {row.get('id')!r} lacks framework, finding or output")
    return AnalystCase(
        str(row.get("id")),
        str(framework),
        dict(finding),
        expected,
        str(row.get("split") or "test"),
        dict(context or {}),
    )


def _rows(path: Path) -> Iterable[dict[str, Any]]:
    with open(path, "rb") as fh:
        for number, line in enumerate(fh, 1):
            if line.strip():
                row = jsonio.loads(line, what=f"{path.name}:{number}")
                if not isinstance(row, dict):
                    raise InvalidArgument(f"{path.name}:{number}: a case must be a JSON object")
                yield row


def load_eval_set(uri: str | Path) -> EvalSet:
    """Reads an eval set directory (or one .jsonl file); NotFound when it is missing."""
    path = Path(str(uri)).expanduser()
    if str(uri).startswith("s3://"):
        raise FailedPrecondition("s3:// eval sets are fetched by the registry client first")
    try:
        return _load_eval_set(uri, path)
    except OSError as exc:  # a name too long, a file that cannot be read
        raise InvalidArgument(
            f"eval set {str(uri)[:200]!r} cannot be read ({exc.strerror})"
        ) from None


def _load_eval_set(uri: str | Path, path: Path) -> EvalSet:
    if not path.exists():
        raise NotFound(f"eval set {str(uri)!r} does not exist")
    files = (
        sorted(p for p in path.rglob("*.jsonl") if not any(k in p.stem for k in _SKIPPED_FILES))
        if path.is_dir()
        else [path]
    )
    if not files:
        raise NotFound(f"eval set {str(uri)!r} holds no .jsonl files")
    manifest: dict[str, Any] = {}
    digest = hashlib.sha256()
    if path.is_dir() and (path / MANIFEST).is_file():
        raw = (path / MANIFEST).read_bytes()
        manifest = jsonio.loads(raw, what=MANIFEST)
        digest.update(raw)
    elif len(files) == 1:
        # A single file (the golden set): the sha256 of its bytes, as its frozen metadata records.
        digest.update(files[0].read_bytes())
    else:
        for file in files:
            digest.update(file.name.encode() + b"\0" + file.read_bytes())
    mapper: list[MapperCase] = []
    analyst: list[AnalystCase] = []
    for file in files:
        for row in _rows(file):
            if row.get("task") == "analyst" or ("framework" in row and row.get("task") != "mapper"):
                analyst.append(analyst_case(row))
            else:
                mapper.append(mapper_case(row))
    return EvalSet(str(uri), digest.hexdigest(), tuple(mapper), tuple(analyst), manifest)


def default_eval_set_uri() -> str:
    """The frozen golden set that ships with the data package."""
    from llama_mapper.domain.golden import golden_paths

    return str(golden_paths()[0])


def write_eval_set(
    directory: Path, rows: Iterable[Mapping[str, Any]], name: str = "cases.jsonl"
) -> Path:
    """Writes rows as an eval set directory (tests and the CLI's ad-hoc sets)."""
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / name, "w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(row, sort_keys=True) + "\n")
    return directory
