"""Optional API-key authentication, off unless a key file is configured.

Two key sets: public keys guard the client API (chat, sessions, queue tickets, data), admin keys
guard the admin routes; an admin key is also accepted wherever a public key is. Key files hold
one key per line (`#` comments allowed) — in a cluster, mount a Secret's key as that file.

- `require_api_key`: FastAPI dependency for HTTP routes (`Authorization: Bearer <key>`, or
  `X-API-Key`); 401 with a JSON reason and `WWW-Authenticate: Bearer` otherwise.
- `require_admin`: the same for admin routes, with admin keys only (403 for a valid public key).
- `authorize_websocket(ws)`: for WebSocket routes, before `accept`; also takes `?api_key=` because
  browsers cannot set headers on a WebSocket. Returns False after closing with 1008.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass, field
from pathlib import Path

from fastapi import HTTPException, Request, WebSocket


@dataclass
class KeySet:
    public: frozenset[str] = field(default_factory=frozenset)
    admin: frozenset[str] = field(default_factory=frozenset)

    @property
    def public_enabled(self) -> bool:
        return bool(self.public or self.admin)

    def accepts_public(self, key: str | None) -> bool:
        return not self.public_enabled or _member(key, self.public | self.admin)

    def accepts_admin(self, key: str | None) -> bool:
        return not self.admin or _member(key, self.admin)


def _member(key: str | None, keys: frozenset[str]) -> bool:
    if not key:
        return False
    # Compare against every key so that timing does not reveal which one almost matched.
    return any([hmac.compare_digest(key.encode(), k.encode()) for k in keys])


def read_key_file(path: str | None) -> frozenset[str]:
    """Blocking; called once at start-up. A configured but missing file is an error, not "no auth"."""
    if not path:
        return frozenset()
    text = Path(path).read_text(encoding="utf-8")
    keys = frozenset(line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#"))
    if not keys:
        raise ValueError(f"{path}: no keys in key file")
    return keys


def _presented(headers, query) -> str | None:
    auth = headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip()
    return headers.get("x-api-key") or query.get("api_key")


def _keys(app) -> KeySet:
    return getattr(app.state, "keys", None) or KeySet()


async def require_api_key(request: Request) -> None:
    keys = _keys(request.app)
    if not keys.public_enabled:
        return  # open gateway: skip parsing headers and query string on every request
    if not keys.accepts_public(_presented(request.headers, request.query_params)):
        raise HTTPException(401, "Missing or invalid API key", headers={"WWW-Authenticate": "Bearer"})


async def require_admin(request: Request) -> None:
    keys = _keys(request.app)
    key = _presented(request.headers, request.query_params)
    if keys.admin and not keys.accepts_admin(key):
        if keys.accepts_public(key) and key:
            raise HTTPException(403, "Admin API key required")
        raise HTTPException(401, "Missing or invalid admin API key", headers={"WWW-Authenticate": "Bearer"})
    if not keys.admin and not keys.accepts_public(key):
        raise HTTPException(401, "Missing or invalid API key", headers={"WWW-Authenticate": "Bearer"})


async def authorize_websocket(ws: WebSocket) -> bool:
    if _keys(ws.app).accepts_public(_presented(ws.headers, ws.query_params)):
        return True
    await ws.close(code=1008, reason="Missing or invalid API key")
    return False
