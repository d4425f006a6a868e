"""Session recordings in the original's layout (spec data.md §1), written by the worker."""

from __future__ import annotations

import base64
import io
import json
import subprocess
import wave
from pathlib import Path

import numpy as np
import pytest

from tests.fixtures.speech import SENTENCE, speak
from tests.fixtures.worker_app import pcm_b64, png_b64, silence, tone, wait_for


@pytest.fixture
def recording_client(worker_client, tmp_path):
    return worker_client(recording=True, data_dir=str(tmp_path), gpu_id=2), tmp_path / "sessions"


def read(path: Path) -> dict:
    return json.loads(path.read_text())


def wav_info(path: Path) -> tuple[int, int, int]:
    with wave.open(str(path)) as wav:
        return wav.getframerate(), wav.getnchannels(), wav.getnframes()


def test_a_duplex_session_leaves_meta_recording_media_and_a_merged_replay(recording_client):
    client, sessions = recording_client
    with client.websocket_connect("/ws/duplex?session_id=omni_x1") as ws:
        ws.send_json({"type": "prepare", "system_prompt": "Hi.", "config": {"force_listen_count": 0}})
        session_id = ws.receive_json()["recording_session_id"]
        for chunk in (tone(), silence(), silence()):
            ws.send_json({"type": "audio_chunk", "audio_base64": pcm_b64(chunk), "frame_base64_list": [png_b64()]})
            ws.receive_json()
        ws.send_json({"type": "stop"})
        ws.receive_json()
    folder = sessions / session_id
    wait_for(lambda: (folder / "recording.json").exists(), "the recording")
    meta, record = read(folder / "meta.json"), read(folder / "recording.json")
    assert session_id.endswith("_omni_x1") and meta["app_type"] == "omni_duplex" and meta["worker_id"] == 2
    assert meta["ended_at"] is not None and meta["config"]["system_prompt"] == "Hi." and meta["config"]["force_listen_count"] == 0
    assert record["mode"] == "duplex" and [c["index"] for c in record["chunks"]] == [0, 1, 2]
    listen, speak = record["chunks"][0], record["chunks"][1]
    assert listen["result"]["mode"] == "LISTEN" and listen["user_audio"] == "user_audio/000.wav"
    assert listen["user_frame"] == "user_frames/000.jpg"
    assert (folder / "user_frames/000.jpg").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"  # raw bytes as sent
    assert speak["result"]["mode"] == "SPEAK" and speak["result"]["ai_audio"] == "ai_audio/turn_0_chunk_001.wav"
    assert wav_info(folder / "user_audio/000.wav") == (16000, 1, 16000)
    assert wav_info(folder / speak["result"]["ai_audio"]) == (24000, 1, 24000)
    assert record["merged_replay"] == "merged_replay.wav" and wav_info(folder / "merged_replay.wav") == (16000, 2, 48000)
    # Each chunk's start on the replay, for the viewer to seek to (1 s chunks, 1 s answers here).
    assert [c["replay_offset_s"] for c in record["chunks"]] == [0.0, 1.0, 2.0]
    assert "wall_clock_ms" in speak["result"]["timing"] and "all_ms" in speak["result"]["timing"]


def test_post_chat_records_one_turn_and_returns_its_id(recording_client):
    client, sessions = recording_client
    body = client.post("/chat", json={"messages": [{"role": "system", "content": "Sys."},
                                                   {"role": "user", "content": "Hello there"}],
                                      "tts": {"enabled": True}}).json()
    folder = sessions / body["recording_session_id"]
    record = read(folder / "recording.json")
    assert body["recording_session_id"].startswith("chat_") and len(body["recording_session_id"]) == 11
    assert record["mode"] == "chat" and record["config"]["system_prompt"] == "Sys."
    turn = record["turns"][0]
    assert turn["input"] == {"text": "Hello there"} and turn["output"]["text"] == body["text"]
    assert turn["output"]["audio"] == "ai_audio/turn_0.wav" and wav_info(folder / "ai_audio/turn_0.wav")[0] == 24000


def test_ws_chat_records_user_audio_and_images_and_reports_the_id_in_done(recording_client):
    client, sessions = recording_client
    content = [{"type": "text", "text": "Look"}, {"type": "audio", "data": pcm_b64(tone(0.5))},
               {"type": "image", "data": png_b64()}]
    with client.websocket_connect("/ws/chat") as ws:
        ws.send_json({"messages": [{"role": "user", "content": content}], "streaming": False})
        ws.receive_json()
        done = ws.receive_json()
    wait_for(lambda: (sessions / done["recording_session_id"] / "recording.json").exists(), "the recording")
    turn = read(sessions / done["recording_session_id"] / "recording.json")["turns"][0]
    assert turn["input"] == {"text": "Look", "audio": "user_audio/000.wav", "images": ["user_images/img_0.jpg"]}
    assert turn["timing"]["input_tokens"] == done["input_tokens"]


def test_half_duplex_records_each_voice_turn(recording_client):
    client, sessions = recording_client
    with client.websocket_connect("/ws/half_duplex?session_id=hdx_rec") as ws:
        ws.send_json({"type": "prepare"})
        assert ws.receive_json()["recording_session_id"] == "hdx_rec"
        audio = np.concatenate([speak(SENTENCE), silence(0.75)])
        for start in range(0, audio.size, 8000):
            ws.send_json({"type": "audio_chunk", "audio_base64": pcm_b64(audio[start:start + 8000])})
        while ws.receive_json()["type"] != "turn_done":
            pass
        ws.send_json({"type": "stop"})
    wait_for(lambda: (sessions / "hdx_rec" / "recording.json").exists(), "the recording")
    record = read(sessions / "hdx_rec" / "recording.json")
    assert record["mode"] == "half_duplex_audio" and len(record["turns"]) == 1
    turn = record["turns"][0]
    assert turn["turn_index"] == 0 and turn["input"]["type"] == "voice" and turn["input"]["audio"] == "user_audio/000.wav"
    assert turn["timing"]["speech_input_ms"] == turn["input"]["duration_ms"] > 900


def test_a_session_that_ends_by_disconnect_is_still_finalised(recording_client):
    client, sessions = recording_client
    with client.websocket_connect("/ws/duplex?session_id=adx_gone") as ws:
        ws.send_json({"type": "prepare"})
        session_id = ws.receive_json()["recording_session_id"]
        ws.send_json({"type": "audio_chunk", "audio_base64": pcm_b64(silence())})
        ws.receive_json()
    wait_for(lambda: (sessions / session_id / "recording.json").exists(), "the recording")
    assert read(sessions / session_id / "meta.json")["app_type"] == "audio_duplex"


def test_nothing_is_written_when_recording_is_off(worker_client, tmp_path):
    client = worker_client(recording=False, data_dir=str(tmp_path))
    body = client.post("/chat", json={"messages": [{"role": "user", "content": "hi"}]}).json()
    assert body["recording_session_id"] is None and not (tmp_path / "sessions").exists()


def jpeg_b64(color: tuple[int, int, int], size: tuple[int, int] = (320, 240)) -> str:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="JPEG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def probe(path: Path) -> dict:
    out = subprocess.run(["ffprobe", "-v", "error", "-show_format", "-show_streams", "-of", "json", str(path)],
                         capture_output=True, text=True, check=True, timeout=60)
    return json.loads(out.stdout)


def omni_session(client, session_id: str, chunks: list, frames: list[str | None]) -> str:
    with client.websocket_connect(f"/ws/duplex?session_id={session_id}") as ws:
        ws.send_json({"type": "prepare", "system_prompt": "Hi."})
        recording_id = ws.receive_json()["recording_session_id"]
        for audio, frame in zip(chunks, frames):
            ws.send_json({"type": "audio_chunk", "audio_base64": pcm_b64(audio),
                          **({"frame_base64_list": [frame]} if frame else {})})
            ws.receive_json()
        ws.send_json({"type": "stop"})
        ws.receive_json()
    return recording_id


def test_an_omni_session_gets_a_replay_video_of_its_frames_and_merged_audio(recording_client):
    client, sessions = recording_client
    voice = speak(SENTENCE)
    chunks = [voice[i:i + 16000] for i in range(0, voice.size, 16000)] + [silence(), silence()]
    colors = [(200, 30, 30), None, (30, 200, 30), (30, 30, 200), None, (240, 240, 0), None]
    frames = [jpeg_b64(c, (320, 240) if i % 2 else (640, 360)) if c else None for i, c in enumerate(colors)]
    folder = sessions / omni_session(client, "omni_video", chunks, frames[:len(chunks)])
    wait_for(lambda: (folder / "merged_replay.mp4").exists() and "merged_replay_video" in read(folder / "recording.json"),
             "the replay video", 120)
    assert read(folder / "recording.json")["merged_replay_video"] == "merged_replay.mp4"
    info = probe(folder / "merged_replay.mp4")
    codecs = sorted(s["codec_name"] for s in info["streams"])
    assert codecs == ["aac", "h264"] and all(s.get("pix_fmt", "yuv420p") == "yuv420p" for s in info["streams"])
    _, _, frames_16k = wav_info(folder / "merged_replay.wav")
    assert abs(float(info["format"]["duration"]) - frames_16k / 16000) < 0.3
    decoded = subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-i", str(folder / "merged_replay.mp4"), "-f", "null", "-"],
                             capture_output=True, text=True, timeout=120)
    assert decoded.returncode == 0 and decoded.stderr == ""
    assert not [p.name for p in folder.iterdir() if p.name.startswith((".", "_"))]  # no temporary left behind


def test_audio_duplex_and_omni_sessions_without_frames_get_no_video(recording_client):
    client, sessions = recording_client
    for session_id in ("adx_novideo", "omni_noframes"):
        frames = [jpeg_b64((1, 2, 3))] * 2 if session_id.startswith("adx") else [None, None]
        folder = sessions / omni_session(client, session_id, [silence(), silence()], frames)
        wait_for(lambda: (folder / "recording.json").exists(), "the recording")
        assert "merged_replay_video" not in read(folder / "recording.json")
    assert not list(sessions.glob("*/merged_replay.mp4"))


def test_replay_videos_still_running_at_the_drain_deadline_are_cancelled():
    import asyncio
    import time

    from omnikube_worker import recording

    async def scenario() -> tuple[bool, bool, float]:
        quick = asyncio.ensure_future(asyncio.sleep(0.01, True))
        stuck = asyncio.ensure_future(asyncio.sleep(60, True))
        for task in (quick, stuck):
            recording._background.add(task)
            task.add_done_callback(recording._background.discard)
        started = time.monotonic()
        await recording.finish_background(started + 0.2)
        return quick.result(), stuck.cancelled(), time.monotonic() - started

    finished, cancelled, waited = asyncio.run(scenario())
    assert finished and cancelled
    assert waited < 5  # the deadline, not the stuck video's 60 s
