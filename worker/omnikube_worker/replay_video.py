"""`merged_replay.mp4` for omni full-duplex recordings (spec data.md §1.5), made by the ffmpeg CLI.

A slideshow of the user's camera frames on the session's model timeline (chunk after chunk, each
as long as its slot in `merged_replay.wav`), with that stereo WAV as its sound (H.264 yuv420p /
AAC, `-shortest`) and the AI's words burned in as ASS subtitles (text accumulated per turn, held
1.5 s after the end of the turn). The original does the same inline in its finalise step.

Here it runs after the session is over and the worker is free again: `Recorder` starts it as a
background task once `recording.json` is written, ffmpeg runs as a niced child process (the event
loop only awaits it), and when the file is complete it is renamed into place and `recording.json`
is rewritten with `merged_replay_video`. A failure or a run past `TIMEOUT_S` only logs and leaves
the temporary files removed; the recording keeps its WAV replay.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import weakref
from pathlib import Path
from typing import Any

log = logging.getLogger("omnikube.worker.replay_video")

VIDEO = "merged_replay.mp4"
CONCAT = "_frames_concat.txt"
SUBTITLES = "_subtitles.ass"
TIMEOUT_S = 120.0
HOLD_S = 1.5
SIZE = (640, 480)   # frames are boxed into one size: the concat demuxer needs one resolution
FPS = 5

_encoders: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore]" = weakref.WeakKeyDictionary()


def _one_at_a_time() -> asyncio.Semaphore:
    """Several finished sessions do not start several encoders (one semaphore per event loop)."""
    return _encoders.setdefault(asyncio.get_running_loop(), asyncio.Semaphore(1))


def available() -> bool:
    return shutil.which("ffmpeg") is not None


def plan(entries: list[dict[str, Any]], slots_s: list[float]) -> tuple[str, str] | None:
    """The concat list and the ASS script for these chunks, or None when no chunk has a frame."""
    frames = [e.get("user_frame") for e in entries]
    if not any(frames):
        return None
    current = next(f for f in frames if f)  # before the first frame, show the first frame
    lines = ["ffconcat version 1.0"]
    for frame, slot in zip(frames, slots_s):
        current = frame or current
        lines += [f"file '{current}'", f"duration {slot:.3f}"]
    lines.append(f"file '{current}'")  # the demuxer ignores the last duration without this
    return "\n".join(lines) + "\n", _subtitles(entries, slots_s)


def _subtitles(entries: list[dict[str, Any]], slots_s: list[float]) -> str:
    events: list[list[Any]] = []   # [start, end, text]: one line per SPEAK chunk, the turn's text so far
    said, at = "", 0.0
    for entry, slot in zip(entries, slots_s):
        result = entry.get("result", {})
        if result.get("text"):
            if said:
                events[-1][1] = at   # the turn's previous line stays up until this one replaces it
            said += result["text"]
            events.append([at, at + slot, said])
        if result.get("end_of_turn") and said:
            events[-1][1] += HOLD_S
            said = ""
        at += slot
    header = ("[Script Info]\nScriptType: v4.00+\nPlayResX: %d\nPlayResY: %d\n\n[V4+ Styles]\n"
              "Format: Name, Fontsize, PrimaryColour, OutlineColour, BorderStyle, Outline, Alignment, MarginV\n"
              "Style: Default,22,&H00FFFFFF,&H00000000,1,2,2,20\n\n[Events]\n"
              "Format: Layer, Start, End, Style, Text\n") % SIZE
    return header + "".join(f"Dialogue: 0,{_ts(s)},{_ts(min(e, at))},Default,{_ass_text(t)}\n" for s, e, t in events)


def _ts(seconds: float) -> str:
    centis = int(round(seconds * 100))
    return f"{centis // 360000}:{centis // 6000 % 60:02d}:{centis // 100 % 60:02d}.{centis % 100:02d}"


def _ass_text(text: str) -> str:
    return text.replace("\\", "\\\\").replace("{", "(").replace("}", ")").replace("\n", "\\N")


async def make(directory: Path, entries: list[dict[str, Any]], slots_s: list[float]) -> bool:
    """Write `directory/merged_replay.mp4` (atomically); True when it was written."""
    async with _one_at_a_time():
        made = await asyncio.to_thread(plan, entries, slots_s)
        if made is None or not (directory / "merged_replay.wav").is_file():
            return False
        concat, subtitles = made
        await asyncio.to_thread(_write, directory, concat, subtitles)
        temporary = directory / f".{VIDEO}.tmp"
        width, height = SIZE
        video_filter = (f"scale={width}:{height}:force_original_aspect_ratio=decrease,"
                        f"pad={width}:{height}:(ow-iw)/2:(oh-ih)/2,format=yuv420p,subtitles={SUBTITLES}")
        command = ["ffmpeg", "-nostdin", "-y", "-loglevel", "error", "-f", "concat", "-safe", "0", "-i", CONCAT,
                   "-i", "merged_replay.wav", "-vf", video_filter, "-r", str(FPS), "-c:v", "libx264",
                   "-preset", "veryfast", "-tune", "stillimage", "-c:a", "aac", "-b:a", "128k", "-shortest",
                   # -shortest alone overshoots by the last image's extra frames: the audio sets the length
                   "-t", f"{sum(slots_s):.3f}", "-movflags", "+faststart", "-f", "mp4", temporary.name]
        if shutil.which("nice"):
            command = ["nice", "-n", "10", *command]  # the next session's model work comes first
        try:
            process = await asyncio.create_subprocess_exec(*command, cwd=directory, stdin=asyncio.subprocess.DEVNULL,
                                                           stdout=asyncio.subprocess.DEVNULL,
                                                           stderr=asyncio.subprocess.PIPE)
            try:
                _, stderr = await asyncio.wait_for(process.communicate(), TIMEOUT_S)
            except asyncio.TimeoutError:
                process.kill()
                await process.wait()
                log.warning("replay video for %s: ffmpeg ran past %.0f s, stopped", directory.name, TIMEOUT_S)
                return False
            except asyncio.CancelledError:  # the worker's drain deadline: no ffmpeg outlives it
                process.kill()
                await process.wait()
                raise
            if process.returncode != 0:
                log.warning("replay video for %s: ffmpeg failed (%s): %s", directory.name, process.returncode,
                            stderr.decode(errors="replace")[-500:])
                return False
            await asyncio.to_thread(os.replace, temporary, directory / VIDEO)
            return True
        except OSError as exc:
            log.warning("replay video for %s: %s", directory.name, exc)
            return False
        finally:
            await asyncio.to_thread(_clean, directory, temporary)


def _write(directory: Path, concat: str, subtitles: str) -> None:
    (directory / CONCAT).write_text(concat, encoding="utf-8")
    (directory / SUBTITLES).write_text(subtitles, encoding="utf-8")


def _clean(directory: Path, temporary: Path) -> None:
    for path in (directory / CONCAT, directory / SUBTITLES, temporary):
        path.unlink(missing_ok=True)
