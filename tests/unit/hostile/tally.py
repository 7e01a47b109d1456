"""The suite's figures: every hostile case records what it saw before it asserts, so a failing
run still counts its 5xx/INTERNAL answers, leaks and crashes (printed by conftest.py)."""

from __future__ import annotations

import logging
import re
from collections import Counter
from dataclasses import dataclass, field

# Planted in the hostile inputs' content; none may come back in a body, a message or a log line.
SSN = "123-45-6789"
EMAIL = "john.doe.hostile@example.com"
AWS_KEY = "AKIAIOSFODNN7HOSTILE"
CARD = "4111 1111 1111 1111"
SECRETS = (SSN, EMAIL, AWS_KEY, CARD)
PII_TEXT = f"John Doe SSN {SSN} email {EMAIL} key {AWS_KEY} card {CARD}"

_TRACEBACK = re.compile(r"Traceback \(most recent call last\)|File \"[^\"]+\.py\", line \d+")
SERVER_ERRORS = frozenset({"INTERNAL", "UNKNOWN", "DATA_LOSS"})


@dataclass
class Tally:
    cases: Counter = field(default_factory=Counter)  # per surface
    server_errors: list[str] = field(default_factory=list)
    leaks: list[str] = field(default_factory=list)
    crashes: list[str] = field(default_factory=list)

    def record(
        self, surface: str, case: str, *, server_error: bool, texts: list[str], logs: str = ""
    ) -> list[str]:
        """Counts one case; returns what is wrong with it (empty: nothing). `texts` are what the
        caller got back (no secrets, no tracebacks), `logs` what the service logged (no secrets)."""
        self.cases[surface] += 1
        problems = []
        if server_error:
            self.server_errors.append(f"{surface}:{case}")
            problems.append("a 5xx/INTERNAL answer")
        joined = "\n".join(texts)
        leaked = [secret for secret in SECRETS if secret in joined or secret in logs]
        if leaked:
            self.leaks.append(f"{surface}:{case}")
            problems.append(f"planted content came back: {leaked}")
        if _TRACEBACK.search(joined):
            self.crashes.append(f"{surface}:{case}")
            problems.append("a traceback in the answer")
        return problems

    def crash(self, surface: str, case: str, exc: BaseException) -> str:
        self.cases[surface] += 1
        self.crashes.append(f"{surface}:{case}")
        return f"{type(exc).__name__} escaped: {exc!s:.200}"

    def lines(self) -> list[str]:
        total = sum(self.cases.values())
        per = ", ".join(f"{surface} {n}" for surface, n in sorted(self.cases.items()))
        return [
            f"hostile cases run: {total} ({per})",
            f"5xx/INTERNAL answers: {len(self.server_errors)}",
            f"leaks (planted secrets/PII in bodies or logs): {len(self.leaks)}",
            f"crashes (exceptions escaping, tracebacks in bodies): {len(self.crashes)}",
            *(f"  failed: {name}" for name in self.server_errors + self.leaks + self.crashes),
        ]


TALLY = Tally()


def log_text(caplog) -> str:
    """Every record captured, formatted with its traceback, as one text."""
    formatter = logging.Formatter("%(name)s %(levelname)s %(message)s")
    return "\n".join(formatter.format(record) for record in caplog.records)
