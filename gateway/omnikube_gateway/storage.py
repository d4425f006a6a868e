"""File helpers shared by the data modules: atomic writes, id validation, bounded body reads.

All of these block; callers run them through `asyncio.to_thread` (except `read_limited`, which is
async and reads the request stream).
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any

from fastapi import HTTPException, Request

SAFE_ID = re.compile(r"^[A-Za-z0-9_-]{1,128}$")


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temporary file in the same directory, fsync, then rename over the target:
    readers see the old file or the new one, never a torn one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, value: Any) -> None:
    atomic_write_bytes(path, json.dumps(value, ensure_ascii=False, indent=2).encode("utf-8"))


def read_json(path: Path, default: Any = None) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return default


def sanitize_id(raw: str) -> str:
    """The original's rule for ids used as names: characters outside [A-Za-z0-9_-] become `_`."""
    return re.sub(r"[^A-Za-z0-9_-]", "_", raw)[:128]


def check_id(raw: str, what: str = "session_id") -> str:
    """Strict form for data routes: reject instead of silently aliasing two ids to one folder."""
    if not SAFE_ID.match(raw):
        raise HTTPException(400, f"Invalid {what}: only letters, digits, '_' and '-' (1-128 characters)")
    return raw


def inside(root: Path, candidate: Path) -> bool:
    root, candidate = root.resolve(), candidate.resolve()
    return candidate == root or root in candidate.parents


async def read_limited(request: Request, limit: int, what: str = "Request body") -> bytes:
    """Read a request body, refusing (413) as soon as it exceeds `limit` bytes, so an oversized
    upload is never held in memory in full."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise HTTPException(413, f"{what} too large (max {limit} bytes)")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise HTTPException(413, f"{what} too large (max {limit} bytes)")
        chunks.append(chunk)
    return b"".join(chunks)
