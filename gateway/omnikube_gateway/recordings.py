"""Session recordings: the read, share and upload routes of data.md §2, and retention (§3).

Workers write `<data_dir>/sessions/<id>/`; the gateway serves it. Differences from the original,
on purpose: ids that are not `[A-Za-z0-9_-]{1,128}` are rejected (400) instead of being rewritten
so that two ids alias one folder; containment is checked on resolved paths; uploads are refused as
soon as they pass the limit (not after spooling the whole body); `comment.txt` and
`frontend_replay.*` are written atomically; the zip is built in a temporary file, not in memory;
retention never deletes a session that is still recording (no `ended_at`) unless it is also
older than the retention period; every file operation runs off the event loop.
"""

from __future__ import annotations

import asyncio
import json
import logging
import mimetypes
import shutil
import tempfile
import zipfile
from datetime import datetime, timedelta, timezone
from pathlib import Path

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import FileResponse, JSONResponse
from starlette.background import BackgroundTask

from .auth import require_admin, require_api_key
from .storage import atomic_write_bytes, check_id, inside, read_limited

log = logging.getLogger(__name__)
router = APIRouter(dependencies=[Depends(require_api_key)])

UPLOAD_LIMIT = 200 * 1024 * 1024
COMMENT_LIMIT = 2000
UPLOAD_TYPES = {"video/webm": ".webm", "video/mp4": ".mp4", "audio/wav": ".wav", "audio/webm": ".webm"}
MIME = {".wav": "audio/wav", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png",
        ".webm": "video/webm", ".mp4": "video/mp4", ".mp3": "audio/mpeg", ".json": "application/json"}


def sessions_root(request: Request) -> Path:
    return request.app.state.settings.data_dir / "sessions"


def session_dir(request: Request, session_id: str) -> Path:
    check_id(session_id)
    return sessions_root(request) / session_id


def _read_json_file(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None


@router.get("/api/sessions", dependencies=[Depends(require_admin)])
async def list_sessions(request: Request, limit: int = Query(20, ge=1, le=500)):
    """Recent sessions, newest first (an addition: the original had no listing)."""
    root = sessions_root(request)

    def scan() -> tuple[int, list[dict]]:
        if not root.is_dir():
            return 0, []
        folders = sorted((f for f in root.iterdir() if f.is_dir()), key=lambda f: f.stat().st_mtime, reverse=True)
        listed = []
        for folder in folders[:limit]:
            try:
                meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
            except (OSError, ValueError):
                meta = {}
            listed.append({"session_id": folder.name, **{k: meta.get(k) for k in ("app_type", "created_at", "ended_at", "duration_s", "title")}})
        return len(folders), listed

    total, sessions = await asyncio.to_thread(scan)
    return {"total": total, "sessions": sessions}


@router.get("/api/sessions/{session_id}")
async def get_meta(session_id: str, request: Request):
    meta = await asyncio.to_thread(_read_json_file, session_dir(request, session_id) / "meta.json")
    if meta is None:
        raise HTTPException(404, f"Session not found: {session_id}")
    return JSONResponse(meta)


@router.get("/api/sessions/{session_id}/recording")
async def get_recording(session_id: str, request: Request):
    recording = await asyncio.to_thread(_read_json_file, session_dir(request, session_id) / "recording.json")
    if recording is None:
        raise HTTPException(404, f"Recording not found for session: {session_id}")
    return JSONResponse(recording)


ASSET_PATH = "/api/sessions/{session_id}/assets/{asset_path:path}"


# HEAD is its own route, out of the schema: one route with two methods gives both one operation id.
@router.head(ASSET_PATH, include_in_schema=False)
@router.get(ASSET_PATH)
async def get_asset(session_id: str, asset_path: str, request: Request):
    base = session_dir(request, session_id)
    if ".." in Path(asset_path).parts or asset_path.startswith("/") or "\\" in asset_path:
        raise HTTPException(400, "Invalid asset path")
    target = base / asset_path
    if not await asyncio.to_thread(inside, base, target):
        raise HTTPException(400, "Path traversal detected")
    if not await asyncio.to_thread(target.is_file):
        raise HTTPException(404, f"Asset not found: {asset_path}")
    media = MIME.get(target.suffix.lower()) or mimetypes.guess_type(target.name)[0] or "application/octet-stream"
    return FileResponse(target, media_type=media)


@router.get("/api/sessions/{session_id}/download")
async def download(session_id: str, request: Request):
    base = session_dir(request, session_id)
    if not await asyncio.to_thread(base.is_dir):
        raise HTTPException(404, f"Session not found: {session_id}")

    def build() -> str:
        handle = tempfile.NamedTemporaryFile(prefix="omnikube-zip-", suffix=".zip", delete=False)
        with handle, zipfile.ZipFile(handle, "w", zipfile.ZIP_DEFLATED) as archive:
            for file in sorted(base.rglob("*")):
                if file.is_file() and not file.is_symlink():
                    archive.write(file, f"{session_id}/{file.relative_to(base)}")
        return handle.name

    zip_path = await asyncio.to_thread(build)
    return FileResponse(zip_path, media_type="application/zip", filename=f"{session_id}.zip",
                        background=BackgroundTask(asyncio.to_thread, Path(zip_path).unlink, missing_ok=True))


@router.post("/api/sessions/{session_id}/upload-recording")
async def upload_recording(session_id: str, request: Request):
    base = session_dir(request, session_id)
    if not await asyncio.to_thread(base.is_dir):
        raise HTTPException(404, f"Session not found: {session_id}")
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > UPLOAD_LIMIT + 64 * 1024:
        raise HTTPException(413, "File too large (max 200MB)")
    received = 0

    async def receive():
        nonlocal received
        message = await request.receive()
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            if received > UPLOAD_LIMIT + 64 * 1024:
                raise HTTPException(413, "File too large (max 200MB)")
        return message

    form = await Request(request.scope, receive).form(max_files=1, max_fields=8)
    try:
        upload = form.get("file")
        if upload is None or isinstance(upload, str):
            raise HTTPException(400, "Multipart field 'file' is required")
        content_type = (upload.content_type or "").split(";")[0].strip().lower()
        ext = UPLOAD_TYPES.get(content_type)
        if ext is None:
            raise HTTPException(400, f"Unsupported file type: {content_type}")

        def store() -> int:
            upload.file.seek(0, 2)
            size = upload.file.tell()
            if size > UPLOAD_LIMIT:
                raise HTTPException(413, "File too large (max 200MB)")
            upload.file.seek(0)
            target = base / f"frontend_replay{ext}"
            with tempfile.NamedTemporaryFile(dir=base, prefix=".upload-", delete=False) as tmp:
                shutil.copyfileobj(upload.file, tmp, 1024 * 1024)
            Path(tmp.name).replace(target)
            return size

        size = await asyncio.to_thread(store)
    finally:
        await form.close()
    return {"status": "ok", "path": f"frontend_replay{ext}", "size_bytes": size}


@router.get("/api/sessions/{session_id}/comment")
async def get_comment(session_id: str, request: Request):
    base = session_dir(request, session_id)

    def read() -> str | None:
        if not base.is_dir():
            return None
        path = base / "comment.txt"
        return path.read_text(encoding="utf-8") if path.exists() else ""

    comment = await asyncio.to_thread(read)
    if comment is None:
        raise HTTPException(404, f"Session not found: {session_id}")
    return {"comment": comment}


@router.post("/api/sessions/{session_id}/comment")
async def post_comment(session_id: str, request: Request):
    base = session_dir(request, session_id)
    raw = await read_limited(request, 64 * 1024, "Comment")
    try:
        body = json.loads(raw or b"{}")
    except ValueError:
        raise HTTPException(400, "Body must be JSON {\"comment\": string}")
    comment = body.get("comment") if isinstance(body, dict) else None
    if comment is None:
        comment = ""
    if not isinstance(comment, str):
        raise HTTPException(400, "comment must be a string")
    comment = comment.strip()
    if len(comment) > COMMENT_LIMIT:
        raise HTTPException(413, f"Comment too long (max {COMMENT_LIMIT} chars)")

    def write() -> bool:
        if not base.is_dir():
            return False
        if comment:
            atomic_write_bytes(base / "comment.txt", comment.encode("utf-8"))
        else:
            (base / "comment.txt").unlink(missing_ok=True)
        return True

    if not await asyncio.to_thread(write):
        raise HTTPException(404, f"Session not found: {session_id}")
    return {"status": "ok", "len": len(comment)}


# -- retention -------------------------------------------------------------------------------------
def cleanup(root: Path, retention_days: int, max_storage_gb: float, now: datetime | None = None) -> dict:
    """Delete expired sessions, then the oldest until under the cap (blocking)."""
    if retention_days <= 0 and max_storage_gb <= 0:
        return {"status": "skipped", "deleted": 0}
    if not root.is_dir():
        return {"status": "ok", "message": "No sessions directory", "deleted": 0}
    now = now or datetime.now(timezone.utc)
    sessions, errors = [], []
    for folder in root.iterdir():
        if not folder.is_dir():
            continue
        try:
            meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
            created = datetime.fromisoformat(meta["created_at"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            # Unreadable meta: fall back to the folder's age rather than keeping it forever.
            errors.append(f"{folder.name}: {exc}")
            meta, created = {}, datetime.fromtimestamp(folder.stat().st_mtime, timezone.utc)
        if created.tzinfo is None:
            created = created.replace(tzinfo=timezone.utc)
        size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
        sessions.append((created, folder, size, meta.get("ended_at") is not None))
    sessions.sort(key=lambda item: item[0])
    deleted_expired = deleted_capacity = 0
    remaining = []
    for created, folder, size, ended in sessions:
        if retention_days > 0 and created < now - timedelta(days=retention_days):
            shutil.rmtree(folder, ignore_errors=True)
            deleted_expired += 1
        else:
            remaining.append((created, folder, size, ended))
    if max_storage_gb > 0:
        cap = max_storage_gb * 1024 ** 3
        total = sum(item[2] for item in remaining)
        for item in list(remaining):
            if total <= cap:
                break
            if not item[3]:
                continue  # still recording
            shutil.rmtree(item[1], ignore_errors=True)
            remaining.remove(item)
            total -= item[2]
            deleted_capacity += 1
    return {"status": "ok", "scanned": len(sessions), "deleted": deleted_expired + deleted_capacity,
            "deleted_expired": deleted_expired, "deleted_capacity": deleted_capacity, "remaining": len(remaining),
            "remaining_size_mb": round(sum(i[2] for i in remaining) / 1024 ** 2, 1), "errors": errors}


async def cleanup_loop(root: Path, retention_days: int, max_storage_gb: float, *, first_delay: float = 60.0, period: float = 86400.0) -> None:
    await asyncio.sleep(first_delay)
    while True:
        try:
            report = await asyncio.to_thread(cleanup, root, retention_days, max_storage_gb)
            log.info("recording cleanup: %s", report)
        except Exception:
            log.exception("recording cleanup failed")
        await asyncio.sleep(period)
