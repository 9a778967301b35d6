"""API keys: the key a call presents and its check in constant time, for every transport."""

import hmac


def presented_key(headers: dict[bytes, bytes]) -> bytes | None:
    """The key from `Authorization: Bearer <key>` or `X-API-Key: <key>` (HTTP headers or gRPC metadata)."""
    authorization = headers.get(b"authorization", b"")
    scheme, _, token = authorization.partition(b" ")
    if scheme.lower() == b"bearer" and token.strip():
        return token.strip()
    return headers.get(b"x-api-key") or None


def key_matches(key: bytes, keys: list[bytes]) -> bool:
    matched = False
    for candidate in keys:  # every key is compared, so timing does not tell which one, or how close
        matched |= hmac.compare_digest(key, candidate)
    return matched
