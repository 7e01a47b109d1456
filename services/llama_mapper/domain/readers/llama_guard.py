"""Reader for Llama Guard 3's text verdict: `safe`, or `unsafe` and MLCommons hazard codes."""

from __future__ import annotations

import re
from typing import Any

from llama_mapper.domain.findings import DetectorReport, NormalizedFinding
from llama_mapper.domain.readers.base import DetectorOutputError, expect, reader

DETECTOR = "llama-guard"

# What the model emits when it says "unsafe" but names no hazard: kept as a raw label that no table
# maps, so the rules mapper answers other.unknown with needs_review.
UNSAFE_WITHOUT_CODE = "unsafe"

_EXPECTED = "expected 'safe' or 'unsafe' followed by hazard codes (S1-S14)"
_CODE = re.compile(r"^S0*(\d{1,3})$", re.IGNORECASE)
# Llama Guard 3 puts the codes on the second line, comma separated; serving stacks and prompt
# variants also produce "unsafe S1", "unsafe\nS1, S10" or one code per line.
_TOKEN_SEPARATORS = re.compile(r"[\s,]+")


@reader(DETECTOR)
def read_llama_guard(output: Any) -> DetectorReport:
    """Reads the generated text. Meta documents no JSON form of the verdict, so only text (or its
    UTF-8 bytes) is accepted. Unknown codes such as S15 are kept as raw labels, not rejected."""
    text = _as_text(output)
    tokens = [token for token in _TOKEN_SEPARATORS.split(text) if token]
    expect(bool(tokens), DETECTOR, f"{_EXPECTED}, got empty output")
    verdict = tokens[0].lower()
    if verdict == "safe":
        expect(
            len(tokens) == 1,
            DETECTOR,
            f"{_EXPECTED}, got 'safe' followed by {len(tokens) - 1} more token(s)",
        )
        return DetectorReport(DETECTOR, (), explicit_no_finding=True)
    # The text is never quoted: a model that went off-script may be echoing the user's content.
    expect(verdict == "unsafe", DETECTOR, f"{_EXPECTED}, got {len(text)} characters of other text")
    codes: list[str] = []
    for position, token in enumerate(tokens[1:], start=1):
        match = _CODE.match(token)
        if match is None:
            raise DetectorOutputError(
                f"{DETECTOR}: {_EXPECTED}; token {position} after 'unsafe' is not of the form "
                "S<number>"
            )
        code = f"S{int(match.group(1))}"
        if code not in codes:
            codes.append(code)
    if not codes:
        return DetectorReport(DETECTOR, (NormalizedFinding(DETECTOR, UNSAFE_WITHOUT_CODE),))
    return DetectorReport(DETECTOR, tuple(NormalizedFinding(DETECTOR, code) for code in codes))


def _as_text(output: Any) -> str:
    if isinstance(output, bytes):
        try:
            output = output.decode("utf-8")
        except UnicodeDecodeError:
            raise DetectorOutputError(f"{DETECTOR}: output is not UTF-8 text") from None
    if not isinstance(output, str):
        raise DetectorOutputError(
            f"{DETECTOR}: expected the model's text verdict, got {type(output).__name__}"
        )
    return output.strip()
