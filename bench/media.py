"""Benchmark 6: CPU cost of the worker's media path, per second of audio.

Silero VAD (`omnikube_worker.vad.SileroVad`, the ONNX model on onnxruntime, one thread): espeak-ng
sentences with pauses and light noise, fed in the original client's 0.5 s chunks, several passes;
CPU time (process time of this single-threaded loop) divided by the seconds of audio fed. Decoding
(`omnikube.audio.decode_audio`): the same speech encoded by the ffmpeg CLI as WAV, MP3, FLAC,
OGG/Opus and M4A/AAC, decoded and resampled to 16 kHz mono, CPU time per second of audio. Replay
video (`omnikube_worker.replay_video`): an omni recording of 60 one-second chunks with a frame
every chunk, wall time of the niced ffmpeg run that makes `merged_replay.mp4` after the session.
"""

from __future__ import annotations

import asyncio
import io
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from tests.fixtures.speech import CODECS, QUESTION, SENTENCE, speech_at, speech_file

from .context import Context
from .report import Section, Table, Target
from .stats import fmt

KEY = "media"
TITLE = "6. Media (VAD, decoding, replay video)"
TARGETS = ["Silero VAD CPU per second of audio < 10 ms (1% of a core per half-duplex stream)"]


def _cpu_per_audio_second(work, audio_s: float, passes: int) -> float:
    started = time.process_time()
    for _ in range(passes):
        work()
    return (time.process_time() - started) / (audio_s * passes) * 1000.0


def vad_cost(passes: int) -> tuple[float, float]:
    from omnikube_worker.vad import SileroVad, load_model

    load_model()
    track, _ = speech_at(30.0, [(1.0, SENTENCE), (8.0, QUESTION), (16.0, SENTENCE), (23.0, QUESTION)], noise_rms=0.01)

    def feed() -> None:
        vad = SileroVad()
        for start in range(0, track.size, 8000):
            vad.feed(track[start:start + 8000])

    return _cpu_per_audio_second(feed, track.size / 16000, passes), track.size / 16000


def decode_costs(passes: int) -> list[list[str]]:
    from omnikube.audio import decode_audio

    rows = []
    for codec in sorted(CODECS):
        data = speech_file(SENTENCE, codec).read_bytes()
        seconds = decode_audio(data).size / 16000
        cost = _cpu_per_audio_second(lambda: decode_audio(data), seconds, passes)
        rows.append([codec, f"{len(data) / 1024:.0f}", fmt(seconds, 1), fmt(cost, 2)])
    return rows


def replay_video_wall_s(chunks: int = 60) -> float:
    from PIL import Image

    from omnikube.audio import encode_wav
    from omnikube_worker import replay_video

    with tempfile.TemporaryDirectory(prefix="bench-replay-") as tmp:
        folder = Path(tmp)
        (folder / "user_frames").mkdir()
        entries = []
        for index in range(chunks):
            buffer = io.BytesIO()
            Image.new("RGB", (640, 480), (index * 4 % 256, 80, 160)).save(buffer, format="JPEG")
            (folder / "user_frames" / f"{index:03d}.jpg").write_bytes(buffer.getvalue())
            speaking = index % 10 >= 5
            entries.append({"index": index, "user_frame": f"user_frames/{index:03d}.jpg",
                            "result": {"mode": "SPEAK" if speaking else "LISTEN", **({"text": "word "} if speaking else {}),
                                       **({"end_of_turn": True} if index % 10 == 9 else {})}})
        stereo = np.random.default_rng(0).normal(0, 0.05, (chunks * 16000, 2)).astype(np.float32)
        (folder / "merged_replay.wav").write_bytes(encode_wav(stereo, 16000))
        started = time.monotonic()
        if not asyncio.run(replay_video.make(folder, entries, [1.0] * chunks)):
            raise RuntimeError("ffmpeg did not make the replay video")
        return time.monotonic() - started


def run(ctx: Context) -> Section:
    passes = 2 if ctx.quick else 10
    vad_ms, vad_audio_s = vad_cost(passes)
    section = Section(KEY, TITLE, " ".join(__doc__.split("\n", 1)[1].split()))
    section.tables.append(Table(["stage", "audio", "CPU ms per second of audio"],
                                [["Silero VAD, 0.5 s chunks", f"{fmt(vad_audio_s, 0)} s x {passes}", fmt(vad_ms, 2)]]))
    section.tables.append(Table(["format", "file KiB", "seconds", "decode + resample CPU ms per second of audio"],
                                decode_costs(passes)))
    if shutil.which("ffmpeg"):
        wall = replay_video_wall_s()
        section.tables.append(Table(["replay video", "wall s"], [["60 s omni session, 60 frames", fmt(wall, 2)]]))
    else:
        section.notes.append("Replay video not measured: ffmpeg is not installed.")
    section.targets.append(Target(TARGETS[0], vad_ms < 10.0, f"{fmt(vad_ms, 2)} ms per second of audio"))
    section.notes.append("The VAD runs in a thread per audio chunk (`asyncio.to_thread`), the decoder in a thread "
                         "per file, the video encoder as a niced child process after the worker is free: none of "
                         "this CPU is spent on an event loop.")
    return section
