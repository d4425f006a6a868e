"""Reference-audio uploads and session recordings: good input stored atomically, bad input refused."""

from __future__ import annotations

import base64
import io
import json
import struct
import subprocess
import zipfile
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from omnikube.audio import decode_audio
from omnikube_gateway import recordings

from tests.fixtures.speech import CODECS, SENTENCE, speak


def wav_bytes(seconds: float = 1.0, rate: int = 16000, channels: int = 1, float32: bool = False) -> bytes:
    samples = (0.1 * np.sin(np.arange(int(seconds * rate) * channels) / 10)).astype(np.float32)
    if float32:
        data, tag, bits = samples.astype("<f4").tobytes(), 3, 32
    else:
        data, tag, bits = (samples * 32767).astype("<i2").tobytes(), 1, 16
    block = channels * bits // 8
    fmt = struct.pack("<HHIIHH", tag, channels, rate, rate * block, block, bits)
    return b"RIFF" + struct.pack("<I", 4 + 8 + len(fmt) + 8 + len(data)) + b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt \
        + b"data" + struct.pack("<I", len(data)) + data


PNG_1PX = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR4nGP4z8DwHwAFAAH/iZk9HQAAAABJRU5ErkJggg=="


def upload(client, name: str = "My voice", data: bytes | None = None, **extra):
    body = {"name": name, "audio_base64": base64.b64encode(wav_bytes() if data is None else data).decode(), **extra}
    return client.post("/api/assets/ref_audio", json=body)


def test_an_uploaded_voice_is_stored_as_16k_mono_wav_and_listed(gateway_app, tmp_path):
    response = upload(gateway_app, data=wav_bytes(2.0, rate=44100, channels=2, float32=True))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["success"] and body["name"] == "My voice" and body["message"] == "Uploaded successfully, duration=2000ms"
    listing = gateway_app.get("/api/assets/ref_audio").json()
    assert listing["total"] == 1 and listing["ref_audios"][0]["id"] == body["id"]
    stored = tmp_path / "data" / "ref_audio" / f"{body['id']}.wav"
    assert stored.read_bytes()[24:28] == (16000).to_bytes(4, "little")  # the WAV header's sample rate
    assert decode_audio(stored.read_bytes()).size == 32000
    assert json.loads((tmp_path / "data" / "ref_audio" / "registry.json").read_text())[0]["filename"] == f"{body['id']}.wav"


@pytest.mark.parametrize("codec", sorted(CODECS))
def test_a_voice_in_any_common_format_is_stored_as_16k_wav(gateway_app, tmp_path, encoded_speech, codec):
    response = upload(gateway_app, data=encoded_speech(codec))
    assert response.status_code == 200, response.text
    stored = decode_audio((tmp_path / "data" / "ref_audio" / f"{response.json()['id']}.wav").read_bytes())
    assert abs(stored.size - speak(SENTENCE).size) / 16000 < 0.1


@pytest.mark.parametrize("data, fragment", [
    (b"ID3 this is an mp3", "Not a usable audio file"),
    (b"plain text, not audio at all", "not a decodable audio file"),
    (base64.b64decode(PNG_1PX), "no audio stream"),
    (wav_bytes(61.0, rate=8000), "longer than the limit of 60 s"),
    (wav_bytes(0.1), "must last"),
])
def test_uploads_that_are_not_usable_audio_are_refused_with_a_reason(gateway_app, data, fragment):
    response = upload(gateway_app, data=data)
    assert response.status_code == 400 and fragment in response.json()["detail"]
    assert gateway_app.get("/api/assets/ref_audio").json()["total"] == 0


def test_invalid_base64_an_empty_name_and_missing_fields_are_refused(gateway_app):
    bad = gateway_app.post("/api/assets/ref_audio", json={"name": "x", "audio_base64": "***"})
    assert bad.status_code == 400 and bad.json()["detail"] == "audio_base64 is not valid base64"
    assert upload(gateway_app, name="  \x00 ").status_code == 400
    assert gateway_app.post("/api/assets/ref_audio", json={"name": "x"}).status_code == 422


def test_an_oversized_upload_is_refused_before_it_is_read(gateway_app):
    response = gateway_app.post("/api/assets/ref_audio", content=b"{" + b" " * (17 * 1024 * 1024) + b"}",
                                headers={"content-type": "application/json"})
    assert response.status_code == 413


def test_names_are_cleaned_of_path_and_control_characters(gateway_app):
    assert upload(gateway_app, name="../../etc/passwd\n").json()["name"] == "....etcpasswd"


def test_concurrent_uploads_all_land_in_the_registry(gateway_app, tmp_path):
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda i: upload(gateway_app, name=f"v{i}").status_code, range(12)))
    assert results == [200] * 12
    index = json.loads((tmp_path / "data" / "ref_audio" / "registry.json").read_text())
    assert sorted(e["name"] for e in index) == sorted(f"v{i}" for i in range(12))


def test_deleting_a_voice_removes_file_and_entry_and_unknown_ids_are_404(gateway_app, tmp_path):
    ref_id = upload(gateway_app).json()["id"]
    assert gateway_app.delete(f"/api/assets/ref_audio/{ref_id}").json() == {"success": True, "id": ref_id, "name": None, "message": "Deleted"}
    assert not (tmp_path / "data" / "ref_audio" / f"{ref_id}.wav").exists()
    assert gateway_app.delete(f"/api/assets/ref_audio/{ref_id}").status_code == 404
    assert gateway_app.delete("/api/assets/ref_audio/..%2F..%2Fregistry").status_code == 404


def test_the_default_voice_is_404_when_its_file_is_missing(gateway_app):
    response = gateway_app.get("/api/default_ref_audio")
    assert response.status_code == 404 and response.json()["detail"].startswith("Default ref audio not found")


# -- recordings ----------------------------------------------------------------------------------
@pytest.fixture
def session(tmp_path):
    folder = tmp_path / "data" / "sessions" / "omni_abc"
    (folder / "user_audio").mkdir(parents=True)
    (folder / "meta.json").write_text(json.dumps({"session_id": "omni_abc", "app_type": "omni_duplex",
                                                  "created_at": "2026-01-01T00:00:00+00:00", "ended_at": None}))
    (folder / "recording.json").write_text(json.dumps({"session_id": "omni_abc", "mode": "duplex", "chunks": []}))
    (folder / "user_audio" / "000.wav").write_bytes(wav_bytes(0.5))
    return folder


def test_meta_recording_and_assets_are_served(gateway_app, session):
    assert gateway_app.get("/api/sessions/omni_abc").json()["app_type"] == "omni_duplex"
    assert gateway_app.get("/api/sessions/omni_abc/recording").json()["mode"] == "duplex"
    asset = gateway_app.get("/api/sessions/omni_abc/assets/user_audio/000.wav")
    assert asset.status_code == 200 and asset.headers["content-type"] == "audio/wav"
    assert gateway_app.get("/api/sessions/omni_abc/assets/user_audio/001.wav").status_code == 404
    head = gateway_app.head("/api/sessions/omni_abc/assets/user_audio/000.wav")  # what a player probes first
    assert head.status_code == 200 and head.headers["content-length"] == asset.headers["content-length"]
    assert gateway_app.get("/api/sessions/nope").json() == {"detail": "Session not found: nope"}


def test_the_replay_video_is_served_as_mp4_with_ranges_for_the_viewer(gateway_app, session):
    video = session / "merged_replay.mp4"
    subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-f", "lavfi", "-i", "testsrc=size=160x120:rate=5:duration=1",
                    "-f", "lavfi", "-i", "sine=duration=1", "-pix_fmt", "yuv420p", "-shortest", str(video)],
                   check=True, timeout=60)
    whole = gateway_app.get("/api/sessions/omni_abc/assets/merged_replay.mp4")
    assert whole.status_code == 200 and whole.headers["content-type"] == "video/mp4" and whole.content == video.read_bytes()
    part = gateway_app.get("/api/sessions/omni_abc/assets/merged_replay.mp4", headers={"Range": "bytes=0-99"})
    assert part.status_code == 206 and part.content == video.read_bytes()[:100]  # a <video> element seeks this way


def test_ids_and_asset_paths_that_could_escape_are_refused(gateway_app, session):
    assert gateway_app.get("/api/sessions/omni.abc").status_code == 400
    assert gateway_app.get("/api/sessions/omni_abc/assets/..%2Fmeta.json").status_code == 400
    assert gateway_app.get("/api/sessions/omni_abc/assets/user_audio/..%2F..%2F..%2Fx").status_code == 400


def test_the_zip_download_holds_every_file_under_the_session_id(gateway_app, session):
    response = gateway_app.get("/api/sessions/omni_abc/download")
    assert response.headers["content-type"] == "application/zip"
    names = zipfile.ZipFile(io.BytesIO(response.content)).namelist()
    assert sorted(names) == ["omni_abc/meta.json", "omni_abc/recording.json", "omni_abc/user_audio/000.wav"]


def test_comments_are_trimmed_bounded_and_typed(gateway_app, session):
    assert gateway_app.post("/api/sessions/omni_abc/comment", json={"comment": "  nice  "}).json() == {"status": "ok", "len": 4}
    assert gateway_app.get("/api/sessions/omni_abc/comment").json() == {"comment": "nice"}
    assert gateway_app.post("/api/sessions/omni_abc/comment", json={"comment": 5}).status_code == 400
    assert gateway_app.post("/api/sessions/omni_abc/comment", json={"comment": "x" * 2001}).status_code == 413
    assert gateway_app.post("/api/sessions/omni_abc/comment", json={"comment": ""}).json()["len"] == 0
    assert not (session / "comment.txt").exists()


def test_a_browser_recording_upload_is_stored_and_bad_types_or_sizes_refused(gateway_app, session, monkeypatch):
    ok = gateway_app.post("/api/sessions/omni_abc/upload-recording", files={"file": ("recording.webm", b"webm-bytes", "video/webm")})
    assert ok.json() == {"status": "ok", "path": "frontend_replay.webm", "size_bytes": 10}
    assert (session / "frontend_replay.webm").read_bytes() == b"webm-bytes"
    bad = gateway_app.post("/api/sessions/omni_abc/upload-recording", files={"file": ("x.exe", b"MZ", "application/x-msdownload")})
    assert bad.status_code == 400 and bad.json()["detail"] == "Unsupported file type: application/x-msdownload"
    monkeypatch.setattr(recordings, "UPLOAD_LIMIT", 1000)
    big = gateway_app.post("/api/sessions/omni_abc/upload-recording", files={"file": ("r.webm", b"x" * 200_000, "video/webm")})
    assert big.status_code == 413
    assert gateway_app.post("/api/sessions/none_such/upload-recording", files={"file": ("r.webm", b"x", "video/webm")}).status_code == 404


def test_retention_deletes_sessions_older_than_the_retention_period(session, tmp_path):
    report = recordings.cleanup(tmp_path / "data" / "sessions", retention_days=1, max_storage_gb=-1)
    assert report["deleted_expired"] == 1 and not session.exists()


def test_recent_sessions_are_listed_newest_first(gateway_app, session, tmp_path):
    newer = tmp_path / "data" / "sessions" / "chat_newer"
    newer.mkdir()
    (newer / "meta.json").write_text(json.dumps({"app_type": "chat", "created_at": "2026-02-01T00:00:00+00:00"}))
    body = gateway_app.get("/api/sessions?limit=1").json()
    assert body["total"] == 2 and [s["session_id"] for s in body["sessions"]] == ["chat_newer"]
    assert body["sessions"][0]["app_type"] == "chat"


def test_the_shipped_presets_offer_a_choice_on_every_page(gateway_app):
    listing = gateway_app.get("/api/presets").json()
    assert sorted(listing) == ["audio_duplex", "half_duplex_audio", "omni", "turnbased"]
    assert [p["id"] for p in listing["audio_duplex"]] == ["english_call", "chinese_call"]
    assert all(p.get("system_prompt") or p.get("system_content") for mode in listing.values() for p in mode)
    assert listing["turnbased"][0]["system_content"][0]["type"] == "text"


def test_presets_list_voices_by_reference_and_serve_their_audio(gateway_app, tmp_path):
    root = tmp_path / "service" / "assets" / "presets"
    (root / "omni").mkdir(parents=True)
    (tmp_path / "voice.wav").write_bytes(wav_bytes(1.0, rate=24000))
    (root / "omni" / "b.yaml").write_text(f"id: calm\norder: 2\nname: Calm\nref_audio_path: {tmp_path / 'voice.wav'}\n")
    (root / "omni" / "a.yaml").write_text("id: first\norder: 1\nname: First\nsystem_prompt: hi\n")
    (root / "omni" / "broken.yaml").write_text("id: [unclosed\n")
    (tmp_path / "service" / "assets" / "ref_audio").mkdir()  # a relative path is read from the service root
    (tmp_path / "service" / "assets" / "ref_audio" / "warm.wav").write_bytes(wav_bytes(2.0, rate=16000))
    (root / "omni" / "c.yaml").write_text("id: warm\norder: 3\nname: Warm\nref_audio_path: assets/ref_audio/warm.wav\n")
    gateway_app.app.state.settings.presets_dir = root
    listing = gateway_app.get("/api/presets").json()
    assert [p["id"] for p in listing["omni"]] == ["first", "calm", "warm"]
    assert listing["omni"][2]["ref_audio"]["duration"] == 2.0
    assert listing["omni"][1]["ref_audio"] == {"data": None, "path": str(tmp_path / "voice.wav"), "name": "voice.wav", "duration": 1.0}
    audio = gateway_app.get("/api/presets/omni/calm/audio").json()["ref_audio"]
    assert len(base64.b64decode(audio["data"])) == 16000 * 4  # resampled to 16 kHz float32
    assert gateway_app.get("/api/presets/omni/nope/audio").status_code == 404
