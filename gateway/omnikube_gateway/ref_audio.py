"""Reference voices: the configured default voice and the registry of uploaded ones (data.md §4).

Layout (the guide's): `<data_dir>/ref_audio/registry.json` (a JSON array of entries) and
`<data_dir>/ref_audio/<uuid>.wav` (16 kHz mono PCM16). Uploads may be any audio file FFmpeg decodes
(WAV, MP3, FLAC, OGG/Opus, M4A/AAC, ...: `omnikube.audio`), stored resampled to 16 kHz mono. Unlike
the original, the registry follows `service.data_dir`, uploads are bounded (body size, duration)
and refused with a 400 and the reason when they are not audio, names are cleaned, every write is atomic, and the index is changed under a
file lock (read-modify-write), so concurrent uploads from one or several gateway replicas never
lose an entry. All decoding and file work runs off the event loop.

For other modules: `registry.audio_base64(ref_id)` gives a voice as the workers expect it (base64
raw float32 16 kHz mono); `registry.get(ref_id)` the entry, or None.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import fcntl
import json
import math
import re
import uuid
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from fastapi import APIRouter, Depends, HTTPException, Request
from pydantic import BaseModel, ConfigDict

from omnikube.audio import AudioDecodeError, decode_audio
from omnikube.protocol import INPUT_SAMPLE_RATE, DefaultRefAudio

from . import wav
from .auth import require_admin, require_api_key
from .storage import atomic_write_bytes, atomic_write_json, read_limited

router = APIRouter()

UPLOAD_BODY_LIMIT = 16 * 1024 * 1024
MIN_DURATION_S, MAX_DURATION_S = 0.5, 60.0
MAX_NAME = 100
# A worker answers from its event loop (the model runs in threads); the payload is a few hundred kB.
WORKER_VOICE_TIMEOUT_S = 10.0
_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


class Upload(BaseModel):
    model_config = ConfigDict(extra="ignore")
    name: str
    audio_base64: str


def clean_name(raw: str) -> str:
    name = re.sub(r"[\x00-\x1f\x7f/\\]", "", raw).strip()[:MAX_NAME]
    if not name:
        raise HTTPException(400, "name must contain at least one printable character")
    return name


def decode_upload(audio_base64: str) -> tuple[np.ndarray, int]:
    """Validate and normalise an uploaded voice to 16 kHz mono float32 (blocking)."""
    try:
        data = base64.b64decode(audio_base64, validate=True)
    except (binascii.Error, ValueError):
        raise HTTPException(400, "audio_base64 is not valid base64")
    try:
        samples = decode_audio(data, rate=INPUT_SAMPLE_RATE, max_seconds=MAX_DURATION_S, max_bytes=UPLOAD_BODY_LIMIT,
                               what="reference audio")
    except AudioDecodeError as exc:
        raise HTTPException(400, f"Not a usable audio file: {exc} (reference audio must last "
                                 f"{MIN_DURATION_S:g}-{MAX_DURATION_S:g} s)")
    duration = samples.size / INPUT_SAMPLE_RATE
    if duration < MIN_DURATION_S:
        raise HTTPException(400, f"Reference audio must last {MIN_DURATION_S:g}-{MAX_DURATION_S:g} s (got {duration:.2f} s)")
    return samples, INPUT_SAMPLE_RATE


class RefAudioRegistry:
    def __init__(self, root: Path):
        self.root = root
        self.index_path = root / "registry.json"
        self._entries: list[dict[str, Any]] = []

    async def load(self) -> None:
        await asyncio.to_thread(self.root.mkdir, parents=True, exist_ok=True)
        self._entries = await asyncio.to_thread(self._read)

    def entries(self) -> list[dict[str, Any]]:
        return list(self._entries)

    def get(self, ref_id: str) -> dict[str, Any] | None:
        return next((e for e in self._entries if e.get("id") == ref_id), None)

    async def add(self, name: str, samples: np.ndarray) -> dict[str, Any]:
        ref_id = str(uuid.uuid4())
        entry = {
            "id": ref_id, "name": name, "filename": f"{ref_id}.wav", "source_type": "upload",
            "duration_ms": math.floor(samples.size / INPUT_SAMPLE_RATE * 1000), "sample_rate": INPUT_SAMPLE_RATE,
            "created_at": datetime.now().isoformat(),
        }

        def write() -> list[dict[str, Any]]:
            atomic_write_bytes(self.root / entry["filename"], wav.encode_pcm16(samples, INPUT_SAMPLE_RATE))
            with self._locked():
                entries = self._read() + [entry]
                atomic_write_json(self.index_path, entries)
            return entries

        self._entries = await asyncio.to_thread(write)
        return entry

    async def delete(self, ref_id: str) -> dict[str, Any] | None:
        def remove() -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
            with self._locked():
                entries = self._read()
                found = next((e for e in entries if e.get("id") == ref_id), None)
                if found is not None:
                    entries = [e for e in entries if e is not found]
                    atomic_write_json(self.index_path, entries)
                    (self.root / f"{ref_id}.wav").unlink(missing_ok=True)
            return found, entries

        found, self._entries = await asyncio.to_thread(remove)
        return found

    async def audio_base64(self, ref_id: str) -> str | None:
        """The voice as base64 raw float32 16 kHz mono, or None if unknown."""
        if not _UUID.match(ref_id) or self.get(ref_id) is None:
            return None

        def read() -> str:
            samples = decode_audio((self.root / f"{ref_id}.wav").read_bytes(), rate=INPUT_SAMPLE_RATE)
            return base64.b64encode(samples.astype("<f4").tobytes()).decode()

        try:
            return await asyncio.to_thread(read)
        except (OSError, AudioDecodeError):
            return None

    @contextmanager
    def _locked(self):
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".registry.lock", "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _read(self) -> list[dict[str, Any]]:
        try:
            data = json.loads(self.index_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return []
        except ValueError:
            return []  # corrupt index: start over (writes are atomic, so only outside edits do this)
        return [e for e in data if isinstance(e, dict) and isinstance(e.get("id"), str)] if isinstance(data, list) else []


@router.get("/api/assets/ref_audio", dependencies=[Depends(require_api_key)])
async def list_ref_audio(request: Request) -> dict:
    registry: RefAudioRegistry = request.app.state.ref_audio
    registry._entries = await asyncio.to_thread(registry._read)  # another replica may have written
    entries = registry.entries()
    return {"total": len(entries), "ref_audios": entries}


@router.post("/api/assets/ref_audio", dependencies=[Depends(require_api_key)])
async def upload_ref_audio(request: Request) -> dict:
    raw = await read_limited(request, UPLOAD_BODY_LIMIT, "Reference audio upload")
    try:
        body = Upload.model_validate_json(raw)
    except ValueError as exc:
        raise HTTPException(422, f"Body must be JSON {{\"name\": str, \"audio_base64\": str}}: {exc.__class__.__name__}")
    name = clean_name(body.name)
    samples, _ = await asyncio.to_thread(decode_upload, body.audio_base64)
    entry = await request.app.state.ref_audio.add(name, samples)
    return {"success": True, "id": entry["id"], "name": name, "message": f"Uploaded successfully, duration={entry['duration_ms']}ms"}


@router.delete("/api/assets/ref_audio/{ref_id}", dependencies=[Depends(require_admin)])
async def delete_ref_audio(ref_id: str, request: Request) -> dict:
    found = await request.app.state.ref_audio.delete(ref_id) if _UUID.match(ref_id) else None
    if found is None:
        raise HTTPException(404, f"Ref audio not found: {ref_id}")
    return {"success": True, "id": ref_id, "name": None, "message": "Deleted"}


_default_cache: dict[str, dict] = {}


@router.get("/api/default_ref_audio", dependencies=[Depends(require_api_key)])
async def default_ref_audio(request: Request) -> dict:
    """The configured voice file when the gateway can read it; otherwise the voice a worker uses
    when a request names none (in a cluster the file usually lives with the weights, not here)."""
    path = request.app.state.settings.config.audio.ref_audio_path
    if path in _default_cache:
        return _default_cache[path]
    if path and await asyncio.to_thread(Path(path).is_file):
        _default_cache[path] = await asyncio.to_thread(_load_default, Path(path))
        return _default_cache[path]
    voice, why = await _workers_default_voice(request)
    if voice is None:
        where = f"Default ref audio not found: {path}" if path else "No default ref audio configured"
        raise HTTPException(404, f"{where}; {why}")
    return voice


def _load_default(file: Path) -> dict:
    try:
        samples = decode_audio(file.read_bytes(), rate=INPUT_SAMPLE_RATE, max_seconds=MAX_DURATION_S)
    except AudioDecodeError as exc:
        raise HTTPException(500, f"Failed to load ref audio: {exc}")
    return DefaultRefAudio.from_samples(file.name, samples).model_dump()


async def _workers_default_voice(request: Request) -> tuple[dict | None, str]:
    """The first healthy worker's default voice, or None and why there is none. Not cached: a
    rolled-out worker may bring another voice."""
    state = request.app.state
    reasons = []
    for worker in [w for w in state.registry if w.healthy and w.ready]:
        try:
            response = await state.worker_clients.get(worker.worker_id, worker.http_url).get(
                f"{worker.http_url}/default_ref_audio", timeout=WORKER_VOICE_TIMEOUT_S)
            if response.status_code == 200:
                return DefaultRefAudio.model_validate_json(response.content).model_dump(), ""
            reasons.append(f"worker {worker.worker_id}: {response.json().get('detail', response.status_code)}")
        except (httpx.HTTPError, ValueError) as exc:
            reasons.append(f"worker {worker.worker_id}: {type(exc).__name__}")
    return None, "; ".join(reasons) or "no healthy worker to ask"
