"""Session recordings on disk, in the original's layout (spec data.md §1), for the gateway to serve.

`<data_dir>/sessions/<id>/` gets `meta.json` at creation, media as the session goes
(`user_audio/NNN.wav` 16 kHz, `ai_audio/*.wav` 24 kHz, `user_frames/NNN.jpg`, `user_images/`,
`user_videos/`), and `recording.json` (+ `merged_replay.wav` for duplex) at `finalize`. Every file
is written atomically (temporary name, then rename) and off the event loop. A recorder never takes
a session down: a failed write is logged and the session goes on.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
import string
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from omnikube.protocol import INPUT_SAMPLE_RATE, OUTPUT_SAMPLE_RATE

from . import replay_video
from .media import MediaError, b64decode, encode_wav

log = logging.getLogger("omnikube.worker.recording")

SUBDIRS = ("user_audio", "user_frames", "ai_audio", "user_images", "user_videos")


def chat_recording_id() -> str:
    return "chat_" + "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(6))


def numbered(index: int) -> str:
    return f"{index:03d}"


def last_user_text(turns: list) -> str:
    """The text parts of the last user turn, joined with a space."""
    user = next((t for t in reversed(turns) if t.role == "user"), None)
    return " ".join(p for p in user.parts if isinstance(p, str)) if user else ""


def raw_items(messages: list, kind: str) -> list[bytes]:
    """Raw bytes of the last user message's `kind` items, as uploaded (undecodable ones skipped)."""
    user = next((m for m in reversed(messages) if isinstance(m, dict) and m.get("role") == "user"), None)
    content = user.get("content") if user else None
    raws = []
    for item in content if isinstance(content, list) else []:
        if isinstance(item, dict) and item.get("type") == kind and isinstance(item.get("data"), str):
            try:
                raws.append(b64decode(item["data"], kind))
            except MediaError:
                continue
    return raws


class Recorder:
    """One session's recording. `kind` is "turns" (chat, half duplex) or "chunks" (duplex)."""

    def __init__(self, root: Path, session_id: str, app_type: str, worker_id: int, config: dict[str, Any]) -> None:
        self.dir = root / "sessions" / session_id
        self.session_id = session_id
        self.app_type = app_type
        self.kind = "chunks" if app_type in ("audio_duplex", "omni_duplex") else "turns"
        self.worker_id = worker_id
        self.config = config
        self.created = datetime.now(timezone.utc)
        self.started = time.monotonic()
        self.entries: list[dict[str, Any]] = []
        self.timeline: list[tuple[np.ndarray, np.ndarray | None]] = []  # duplex: (user 16k, ai 24k)
        self._pending: list[asyncio.Task[None]] = []
        self._finalizing: asyncio.Future[None] | None = None
        self.replay_video: asyncio.Task[bool] | None = None  # omni: the video, made after the session

    @classmethod
    async def start(cls, root: Path, session_id: str, app_type: str, worker_id: int,
                    config: dict[str, Any]) -> "Recorder":
        recorder = cls(root, session_id, app_type, worker_id, config)
        await asyncio.to_thread(recorder._create)
        return recorder

    def _create(self) -> None:
        for sub in SUBDIRS:
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
        self._write_json("meta.json", self._meta(None))

    def _meta(self, ended: datetime | None) -> dict[str, Any]:
        return {
            "session_id": self.session_id, "app_type": self.app_type,
            "created_at": self.created.isoformat(), "ended_at": ended.isoformat() if ended else None,
            "duration_s": round((ended - self.created).total_seconds(), 1) if ended else None,
            "worker_id": self.worker_id, "title": f"对话 {self.created:%m-%d %H:%M}", "config": self.config,
        }

    def elapsed_ms(self) -> float:
        return round((time.monotonic() - self.started) * 1000.0, 1)

    # -- media (queued; finalize waits for them) --
    def save_wav(self, relative: str, samples: np.ndarray, rate: int) -> str:
        self._queue(self._write_bytes, relative, lambda: encode_wav(samples, rate))
        return relative

    def save_raw(self, relative: str, data: bytes) -> str:
        self._queue(self._write_bytes, relative, lambda: data)
        return relative

    def add(self, entry: dict[str, Any]) -> None:
        self.entries.append(entry)

    def record_turn(self, index: int, request_ts_ms: float, input: dict[str, Any], text: str,
                    audio: np.ndarray | None, timing: dict[str, Any]) -> None:
        """One turn of a chat or half-duplex session (spec data.md §1.4)."""
        output: dict[str, Any] = {"text": text}
        if audio is not None and audio.size:
            output["audio"] = self.save_wav(f"ai_audio/turn_{index}.wav", audio, OUTPUT_SAMPLE_RATE)
            output["audio_duration_ms"] = round(audio.size / OUTPUT_SAMPLE_RATE * 1000)
        self.add({"turn_index": index, "request_ts_ms": request_ts_ms, "input": input, "output": output,
                  "timing": timing})

    def record_chunk(self, receive_ts_ms: float, user_audio: np.ndarray, frame: bytes | None, turn: int,
                     is_listen: bool, text: str, ai_audio: np.ndarray | None, end_of_turn: bool,
                     timing: dict[str, Any]) -> None:
        """One duplex step (spec data.md §1.5); `turn` counts the turns completed before it."""
        index = len(self.entries)
        entry: dict[str, Any] = {"index": index, "receive_ts_ms": receive_ts_ms,
                                 "user_audio": self.save_wav(f"user_audio/{numbered(index)}.wav", user_audio,
                                                             INPUT_SAMPLE_RATE)}
        if frame is not None:
            entry["user_frame"] = self.save_raw(f"user_frames/{numbered(index)}.jpg", frame)
        result: dict[str, Any] = {"mode": "LISTEN" if is_listen else "SPEAK"}
        if not is_listen:
            if text:
                result["text"] = text
            if ai_audio is not None and ai_audio.size:
                result["ai_audio"] = self.save_wav(f"ai_audio/turn_{turn}_chunk_{numbered(index)}.wav", ai_audio,
                                                   OUTPUT_SAMPLE_RATE)
                result["ai_audio_duration_ms"] = round(ai_audio.size / OUTPUT_SAMPLE_RATE * 1000)
            if end_of_turn:
                result["end_of_turn"] = True
        result["timing"] = timing
        entry["result"] = result
        self.add(entry)
        self.timeline.append((user_audio, None if is_listen else ai_audio))

    def _queue(self, write, relative: str, produce) -> None:
        self._pending.append(asyncio.create_task(asyncio.to_thread(write, relative, produce)))

    # -- finalize --
    async def finalize(self) -> None:
        """Idempotent: waits for media writes, then writes meta.json, the replay and recording.json.

        Shielded: a handler cancelled while its session ends must not leave a half-written record."""
        if self._finalizing is None:
            self._finalizing = asyncio.ensure_future(self._finalize(datetime.now(timezone.utc)))
        await asyncio.shield(self._finalizing)

    async def _finalize(self, ended: datetime) -> None:
        results = await asyncio.gather(*self._pending, return_exceptions=True)
        for failure in (r for r in results if isinstance(r, Exception)):
            log.warning("recording %s: a media write failed: %s", self.session_id, failure)
        try:
            record = await asyncio.to_thread(self._finish, ended)
        except OSError as exc:
            log.warning("recording %s: finalize failed: %s", self.session_id, exc)
            return
        if self.app_type == "omni_duplex" and "merged_replay" in record and replay_video.available():
            # Not awaited: the session (and the worker's lease) ends without waiting for the encoder.
            self.replay_video = asyncio.ensure_future(self._make_video(record))
            _background.add(self.replay_video)
            self.replay_video.add_done_callback(_background.discard)

    async def _make_video(self, record: dict[str, Any]) -> bool:
        if not await replay_video.make(self.dir, self.entries, slot_seconds(self.timeline)):
            return False
        record["merged_replay_video"] = replay_video.VIDEO
        try:
            await asyncio.to_thread(self._write_json, "recording.json", record)
        except OSError as exc:
            log.warning("recording %s: could not add the replay video: %s", self.session_id, exc)
            return False
        return True

    def _finish(self, ended: datetime) -> dict[str, Any]:
        self._write_json("meta.json", self._meta(ended))
        record: dict[str, Any] = {
            "session_id": self.session_id, "mode": "duplex" if self.kind == "chunks" else self.app_type,
            "worker_id": self.worker_id, "start_ts": self.created.isoformat(), "config": self.config,
            self.kind: self.entries,
        }
        if self.kind == "chunks" and self.timeline:
            self._write_bytes("merged_replay.wav", lambda: merged_replay(self.timeline))
            record["merged_replay"] = "merged_replay.wav"
            # Where each chunk starts on the replay (a chunk is as long as its longer side), so a
            # viewer can seek to it.
            offset = 0.0
            for entry, seconds in zip(self.entries, slot_seconds(self.timeline)):
                entry["replay_offset_s"] = round(offset, 3)
                offset += seconds
        self._write_json("recording.json", record)
        return record

    # -- atomic writes --
    def _write_json(self, relative: str, data: dict[str, Any]) -> None:
        self._write_bytes(relative, lambda: json.dumps(data, ensure_ascii=False, indent=2).encode("utf-8"))

    def _write_bytes(self, relative: str, produce) -> None:
        target = self.dir / relative
        temporary = target.with_name(f".{target.name}.{secrets.token_hex(4)}.tmp")
        temporary.write_bytes(produce())
        os.replace(temporary, target)


_background: set[asyncio.Task[bool]] = set()  # running replay videos (the loop keeps weak references only)


def _slots(timeline: list[tuple[np.ndarray, np.ndarray | None]]):
    """Per chunk: user audio, AI audio at 16 kHz, and the chunk's length in samples on the replay."""
    for user, ai in timeline:
        ai16 = resample(ai, OUTPUT_SAMPLE_RATE, INPUT_SAMPLE_RATE) if ai is not None else np.zeros(0, np.float32)
        yield user, ai16, max(user.size, ai16.size, INPUT_SAMPLE_RATE)


async def finish_background(deadline: float | None = None) -> None:
    """Wait for the replay videos still being made (each bounded by replay_video.TIMEOUT_S), until
    the monotonic `deadline` if one is given; those still running then are cancelled (their
    recording keeps its merged_replay.wav, without the video)."""
    running = [task for task in _background if task.get_loop() is asyncio.get_running_loop()]
    if not running:
        return
    timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
    _, late = await asyncio.wait(running, timeout=timeout)
    for task in late:
        log.warning("replay video still being made at the drain deadline: cancelled")
        task.cancel()
    if late:
        await asyncio.gather(*late, return_exceptions=True)


def slot_seconds(timeline: list[tuple[np.ndarray, np.ndarray | None]]) -> list[float]:
    return [length / INPUT_SAMPLE_RATE for _, _, length in _slots(timeline)]


def merged_replay(timeline: list[tuple[np.ndarray, np.ndarray | None]]) -> bytes:
    """Stereo 16 kHz WAV, left = user, right = AI (24 -> 16 kHz linear), chunk after chunk."""
    left, right = [], []
    for user, ai16, length in _slots(timeline):
        left.append(np.pad(user, (0, length - user.size)))
        right.append(np.pad(ai16, (0, length - ai16.size)))
    stereo = np.stack([np.concatenate(left), np.concatenate(right)], axis=1)
    return encode_wav(stereo, INPUT_SAMPLE_RATE)


def resample(samples: np.ndarray, source: int, target: int) -> np.ndarray:
    if samples.size == 0:
        return samples.astype(np.float32)
    count = int(round(samples.size * target / source))
    positions = np.linspace(0, samples.size - 1, count)
    return np.interp(positions, np.arange(samples.size), samples).astype(np.float32)


async def maybe_start(enabled: bool, root: Path, session_id: str, app_type: str, worker_id: int,
                      config: dict[str, Any]) -> Recorder | None:
    """A recorder when recording is on; None (and a log line) when it is off or the disk fails."""
    if not enabled:
        return None
    try:
        return await Recorder.start(root, session_id, app_type, worker_id, config)
    except OSError as exc:
        log.warning("recording %s disabled for this session: %s", session_id, exc)
        return None
