"""Bearer-token check for registry calls: which calls need it and whether a header carries it."""

from __future__ import annotations

import hmac

from llama_mapper.domain.errors import PermissionDenied, Unauthenticated

_SCHEME = "bearer "


def check_bearer(authorization: str | None, token: str) -> None:
    """Raise Unauthenticated without a bearer token, PermissionDenied for a wrong one."""
    if not authorization or not authorization.lower().startswith(_SCHEME):
        raise Unauthenticated("this call needs 'authorization: Bearer <token>' metadata")
    presented = authorization[len(_SCHEME) :].strip()
    # Constant-time comparison: the time taken says nothing about how much of the token matched.
    if not hmac.compare_digest(presented.encode(), token.encode()):
        raise PermissionDenied("the bearer token is not valid for this registry")
