"""Who is calling: bearer tokens to principals, and the rights each principal holds."""

# One table serves every gRPC service and the HTTP router. A caller without a token, with a
# malformed header or with a token nobody issued is UNAUTHENTICATED; a known principal asking for a
# right it does not hold is PERMISSION_DENIED. The principal of a call is what audit records name.

from __future__ import annotations

import contextvars
import hashlib
import hmac
import json
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from llama_mapper.domain.errors import InvalidArgument, PermissionDenied, Unauthenticated

READ, WRITE = "read", "write"
RIGHTS = frozenset({READ, WRITE})
_SCHEME = "bearer "
# A token shorter than this is refused at start-up: it could be guessed.
MIN_TOKEN_CHARS = 16


@dataclass(frozen=True)
class Principal:
    """An authenticated caller: its name (what audit history records) and its rights."""

    name: str
    rights: frozenset[str]

    def may(self, right: str) -> bool:
        return right in self.rights


# Who calls when a server was started without any token (local development only).
LOCAL_DEVELOPMENT = Principal("local-development", RIGHTS)

_current: contextvars.ContextVar[Principal | None] = contextvars.ContextVar(
    "llama_mapper_principal", default=None
)


def current_principal() -> Principal | None:
    """The principal of the call being handled, set by the interceptor or the HTTP guard."""
    return _current.get()


@contextmanager
def acting_as(principal: Principal) -> Iterator[None]:
    token = _current.set(principal)
    try:
        yield
    finally:
        _current.reset(token)


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8")).digest()


class TokenTable:
    """Issued tokens (kept as sha256 digests) and the principal each one authenticates."""

    def __init__(self, entries: Iterable[tuple[str, Principal]]) -> None:
        self._by_digest: dict[bytes, Principal] = {}
        for token, principal in entries:
            if len(token) < MIN_TOKEN_CHARS:
                raise InvalidArgument(
                    f"the token of principal {principal.name!r} has {len(token)} characters; "
                    f"at least {MIN_TOKEN_CHARS} are needed"
                )
            self._by_digest[_digest(token)] = principal

    @classmethod
    def build(
        cls, *, token: str | None, name: str, tokens_file: Path | None = None
    ) -> TokenTable | None:
        """The shared `token` (principal `name`, every right) plus the principals of
        `tokens_file`; None when neither is set (the server then runs without auth)."""
        entries: list[tuple[str, Principal]] = []
        if token:
            entries.append((token, Principal(name, RIGHTS)))
        table = cls(entries)
        if tokens_file is not None:
            table._by_digest.update(load_tokens_file(tokens_file))
        return table if table._by_digest else None

    def __len__(self) -> int:
        return len(self._by_digest)

    def authenticate(self, authorization: str | None, *, what: str) -> Principal:
        """The principal of an `Authorization: Bearer <token>` value, or Unauthenticated."""
        if not authorization or not authorization.lower().startswith(_SCHEME):
            raise Unauthenticated(f"{what} needs 'authorization: Bearer <token>'")
        presented = _digest(authorization[len(_SCHEME) :].strip())
        found = None
        # Compare against every digest in constant time: timing says nothing about which matched.
        for digest, principal in self._by_digest.items():
            if hmac.compare_digest(presented, digest):
                found = principal
        if found is None:
            raise Unauthenticated(f"the bearer token sent with {what} is not valid here")
        return found


def authorize(principal: Principal, right: str, what: str) -> None:
    if not principal.may(right):
        raise PermissionDenied(f"principal {principal.name!r} may not {right} ({what})")


def load_tokens_file(path: Path) -> Mapping[bytes, Principal]:
    """Principals from a JSON file: `{"principals": [{"name", "token_sha256", "rights"}]}`.

    Only digests are stored, so the file can be read by more people than the tokens themselves.
    """
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
        entries = document["principals"]
        table: dict[bytes, Principal] = {}
        for index, entry in enumerate(entries):
            rights = frozenset(entry["rights"])
            if not rights <= RIGHTS or not isinstance(entry["name"], str):
                raise ValueError(f"$.principals[{index}]: rights must be among {sorted(RIGHTS)}")
            table[bytes.fromhex(entry["token_sha256"])] = Principal(entry["name"], rights)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InvalidArgument(f"tokens file {path}: {exc}") from None
    return table


def token_sha256(token: str) -> str:
    """The digest a tokens file stores for `token`."""
    return _digest(token).hex()
