"""The generic reader: findings in the output of a detector that has no reader of its own, any shape."""

# It walks the document and reads each object by what its keys mean (readers/generic_keys.py):
# lists of findings under any key and any depth, maps of category -> flag / score / severity,
# bare label lists, [label, score] tuples, parallel `labels` / `scores` lists, a single verdict
# object, free-text verdicts. Three rules keep it safe to serve:
#
# - a raw label is a short label-like token (<= MAX_LABEL_CHARS, redacted) or "": free text (a
#   verdict's reason) goes to the `reason` attribute, redacted and clipped, where the model can read
#   it; detected content (`text`, `match`, `quote`, ...) is never read;
# - a document is never serialized into a label: an unrecognized shape becomes a finding with an
#   empty label and a redacted outline of its keys (`unrecognized_finding`);
# - the work is bounded (depth, values visited, text length, findings): past a limit the reader
#   raises InvalidArgument naming where, it never hangs or overflows the stack.

from __future__ import annotations

import itertools
import json
from collections.abc import Mapping, Sequence
from typing import Any

from llama_mapper.domain.errors import PayloadTooLarge
from llama_mapper.domain.findings import NormalizedFinding, Span
from llama_mapper.domain.readers.base import DetectorOutputError
from llama_mapper.domain.readers.generic_keys import Role
from llama_mapper.domain.readers.generic_object import ObjectView
from llama_mapper.domain.readers.generic_values import (
    MAX_ATTRIBUTES,
    MAX_LABEL_CHARS,
    MAX_REASON_CHARS,
    REASON,
    Draft,
    as_number,
    label_or_reason,
    named,
    redacted_label,
    redacted_reason,
    score_of,
    text_findings,
)

# What evaluation clips a raw label to; a generic raw label is far shorter (MAX_LABEL_CHARS).
RAW_LABEL_CHARS = 200
# Bounds on the work one document may cost; past them the reader refuses it (InvalidArgument).
MAX_DEPTH = 64
MAX_NODES = 50_000
MAX_DOCUMENT_CHARS = 4_000_000  # JSON text, top level plus JSON nested in strings
MAX_NESTED_JSON_CHARS = 262_144  # a string longer than this is never parsed as JSON
MAX_FINDINGS = 1_000
FIELDS = "fields"  # the attribute holding an unrecognized document's key outline


class GenericOutputError(DetectorOutputError):
    """The output is over the generic reader's limits (depth, size, findings)."""


# --- the walk ------------------------------------------------------------------------------------


def _path_text(path: Sequence[str | int]) -> str:
    parts = ["$"]
    for step in path[:8]:
        parts.append(f"[{step}]" if isinstance(step, int) else "." + redacted_label(step[:24]))
    return "".join(parts) + ("…" if len(path) > 8 else "")


class Walker:
    """One walk over one document: the limits' counters, and whether anything read as a finding."""

    def __init__(self, detector: str, min_score: float) -> None:
        self.detector = detector
        self.min_score = min_score
        self.nodes = 0
        self.nested_chars = 0
        self.recognized = False

    def visit(self, path: list[str | int]) -> None:
        self.nodes += 1
        if self.nodes > MAX_NODES:
            self.refuse(f"more than {MAX_NODES} values", path)
        if len(path) > MAX_DEPTH:
            self.refuse(f"nested deeper than {MAX_DEPTH} levels", path)

    def refuse(self, why: str, path: Sequence[str | int]) -> None:
        where = _path_text(path)
        raise GenericOutputError(
            f"{self.detector}: output {why} (at {where})", details={"path": where}
        )

    def nested_json(self, text: str, path: list[str | int]) -> Any:
        """A string that holds a JSON container (an API gateway's `body`), parsed; else None."""
        if len(text) > MAX_NESTED_JSON_CHARS:
            return None
        stripped = text.strip()
        if stripped[:1] not in ("{", "["):
            return None
        self.nested_chars += len(stripped)
        if self.nested_chars > MAX_DOCUMENT_CHARS:
            self.refuse(f"holds more than {MAX_DOCUMENT_CHARS} characters of JSON", path)
        try:
            value = json.loads(stripped)
        except RecursionError:
            self.refuse("nested too deep to parse", path)
        except ValueError:
            return None
        return value if isinstance(value, dict | list) else None

    def walk(
        self, node: Any, path: list[str | int], name: str | None, mode: Role | None
    ) -> list[Draft]:
        self.visit(path)
        if isinstance(node, Mapping):
            return self.read_object(node, path, name, mode)
        if isinstance(node, list | tuple):
            return self.read_list(node, path, name, mode)
        if isinstance(node, str):
            if name is not None:  # a value under a category key: the key is the label
                self.recognized = True
                return [named(name)]
            nested = self.nested_json(node, path)
            if nested is not None:
                return self.walk(nested, path, None, None)
            found, recognized = text_findings(node)
            self.recognized |= recognized
            return found
        return []

    # lists ---------------------------------------------------------------------------------------

    def read_list(
        self, items: Sequence[Any], path: list[str | int], name: str | None, mode: Role | None
    ) -> list[Draft]:
        if not items:
            self.recognized = True
            return []
        single = self.read_tuple(items)
        if single is not None:
            for index in range(len(items)):
                self.visit([*path, index])
            return single
        found: list[Draft] = []
        for index, item in enumerate(items):
            found.extend(self.walk(item, [*path, index], name, mode))
            if len(found) > MAX_FINDINGS:
                self.refuse(f"holds more than {MAX_FINDINGS} findings", [*path, index])
        return found

    def read_tuple(self, items: Sequence[Any]) -> list[Draft] | None:
        """[label, score], [score, label], [label, start, end(, score)]: one finding."""
        if not 2 <= len(items) <= 4:
            return None
        texts = [i for i in items if isinstance(i, str)]
        numbers = [i for i in items if not isinstance(i, str)]
        if len(texts) != 1 or any(i is not None and as_number(i) is None for i in numbers):
            return None
        label, reason = label_or_reason(texts[0])
        found = Draft(label, attributes={REASON: reason} if reason else {})
        ints = [i for i in numbers if isinstance(i, int) and not isinstance(i, bool)]
        floats = [i for i in numbers if isinstance(i, float)]
        if len(ints) >= 2 and 0 <= ints[0] <= ints[1] < 2**53:
            found.span = Span(ints[0], ints[1])
        scores = floats or (ints if len(ints) == 1 else [])
        if scores:
            found.score = score_of(scores[0], percent=False)
            if found.score is not None and found.score < self.min_score:
                self.recognized = True
                return []
        self.recognized = True
        return [found]

    # objects -------------------------------------------------------------------------------------

    def read_object(
        self, obj: Mapping[Any, Any], path: list[str | int], name: str | None, mode: Role | None
    ) -> list[Draft]:
        if not obj:
            self.recognized = True
            return []
        view = ObjectView(self, obj, path, mode)
        labelled = any(tier < 3 for tier, _, _ in view.labels)
        found = view.parallel_lists() + view.merged_maps()
        for key, meaning, value in view.children:
            child_mode = meaning.role if meaning.role in (Role.SCORE, Role.SEVERITY) else mode
            child_name = key if meaning.nameable else None
            child = self.walk(value, [*path, key], child_name, child_mode)
            # Inside an entity ({"type": "EMAIL", "matches": [...]}) only label lists, envelopes
            # and sub-categories hold findings; a flag or a list of values describes the entity.
            if not labelled or meaning.role is Role.LABEL or meaning.role is Role.OTHER:
                found.extend(child)
        strong = [f for f in found if not f.weak]
        if strong or (found and not view.labels):
            context = view.context()
            for finding in strong or found:
                finding.inherit(context)
            return strong or found
        return view.own_findings(name)


# --- entry points --------------------------------------------------------------------------------


def _parse(detector: str, output: Any) -> Any:
    if isinstance(output, bytes | bytearray):
        if len(output) > MAX_DOCUMENT_CHARS:
            raise PayloadTooLarge(f"{detector}: output over {MAX_DOCUMENT_CHARS} bytes")
        output = bytes(output).decode("utf-8", "replace")
    if isinstance(output, str):
        if len(output) > MAX_DOCUMENT_CHARS:
            raise PayloadTooLarge(f"{detector}: output over {MAX_DOCUMENT_CHARS} characters")
        stripped = output.strip()
        if stripped:
            try:
                return json.loads(stripped)
            except RecursionError:
                raise GenericOutputError(
                    f"{detector}: output nested too deep to parse (at $)", details={"path": "$"}
                ) from None
            except ValueError:
                return output
    return output


def extract_generic(
    detector: str, output: Any, *, min_score: float = 0.5
) -> list[NormalizedFinding] | None:
    """Findings from an unknown detector's output, whatever its shape; None when nothing in it
    reads as a finding, a verdict or an explicit "nothing" (see `read_generic`).

    Empty outputs ("", [], {}, null), clean verdicts ({"flagged": false}, "SAFE") and scores all
    below `min_score` (or the vendor's own threshold) are `[]`: the detector reported nothing.
    Raises InvalidArgument (GenericOutputError, PayloadTooLarge) past the limits above.
    """
    document = _parse(detector, output)
    if document is None or document is False:
        return []
    if document is True:
        return [NormalizedFinding(detector, "flagged")]
    walker = Walker(detector, min_score)
    found = walker.walk(document, [], None, None)
    if len(found) > MAX_FINDINGS:
        walker.refuse(f"holds more than {MAX_FINDINGS} findings", [])
    if not found and not walker.recognized:
        return None
    return [
        NormalizedFinding(
            detector,
            f.label[:MAX_LABEL_CHARS],
            score=f.score,
            severity=f.severity,
            span=f.span,
            attributes=dict(list(f.attributes.items())[:MAX_ATTRIBUTES]),
        )
        for f in found
    ]


def short_text(output: Any) -> str:
    """A bounded, redacted description of a document for a person or the model: a text's words,
    a structure's key names (never its values)."""
    if isinstance(output, bytes | bytearray):
        output = bytes(output[: 4 * MAX_REASON_CHARS]).decode("utf-8", "replace")
    if isinstance(output, str):
        return redacted_reason(output[: 4 * MAX_REASON_CHARS])
    keys: list[str] = []
    stack: list[tuple[Any, str, int]] = [(output, "", 0)]
    while stack and len(keys) < 32:
        node, prefix, depth = stack.pop()
        if isinstance(node, Mapping) and depth < 4:
            for key in itertools.islice(node, 16):
                if isinstance(key, str | int) and not isinstance(key, bool):
                    path = f"{prefix}.{key}" if prefix else str(key)
                    keys.append(path[:48])
                    stack.append((node[key], path, depth + 1))
        elif isinstance(node, list | tuple) and node and depth < 4:
            stack.append((node[0], f"{prefix}[]", depth + 1))
    if not keys:
        return "a " + ("number" if as_number(output) is not None else type(output).__name__)
    return redacted_reason(", ".join(sorted(set(keys))))


def unrecognized_finding(detector: str, output: Any) -> NormalizedFinding:
    """What nothing could read: an empty label, and the document's key outline for the model."""
    return NormalizedFinding(detector, "", attributes={FIELDS: short_text(output)})


def read_generic(detector: str, output: Any, *, min_score: float = 0.5) -> list[NormalizedFinding]:
    """`extract_generic`, with an unrecognized shape as one `unrecognized_finding`: what the hybrid
    mapper asks the model about (or falls back on) for a detector without a reader."""
    found = extract_generic(detector, output, min_score=min_score)
    return found if found is not None else [unrecognized_finding(detector, output)]
