"""MiniCPM-o 4.5's own code behind the worker's real process and API, on the CPU.

One `omnikube-worker --backend minicpmo --device cpu` process loads a random-weight checkpoint of
the real architecture (toy size) built by `omnikube-checkpoint`; only its output heads are scripted
(tests/fixtures/scripted_model.py) so turns end. Every request type goes over HTTP or WebSocket and
the assertions are what the protocol promises.
"""

from __future__ import annotations

import base64
import io
import json
import wave
from pathlib import Path

import httpx
import numpy as np
import pytest
from websockets.sync.client import connect

from omnikube_worker.checkpoint import BUILD_MARKER

from tests.fixtures.processes import WorkerProc, launch_gateway, wait_until
from tests.fixtures.speech import speak
from tests.fixtures.video import make_clip
from tests.fixtures.worker_app import pcm_b64, png_b64

pytestmark = pytest.mark.timeout(600)

REPLY = " Hello there, my friend."   # what the scripted heads say (scripted_model.ScriptedHeads)


def post_chat(worker: WorkerProc, **body) -> dict:
    body.setdefault("messages", [{"role": "user", "content": "Hello, who are you?"}])
    response = httpx.post(f"{worker.url}/chat", json=body, timeout=300.0)
    assert response.status_code == 200, response.text
    return response.json()


def wav_samples(data: str) -> tuple[int, np.ndarray]:
    with wave.open(io.BytesIO(base64.b64decode(data))) as wav:
        frames = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2")
        return wav.getframerate(), frames.astype(np.float32) / 32768.0


def pcm(data: str) -> np.ndarray:
    return np.frombuffer(base64.b64decode(data), dtype="<f4")


def ws(worker: WorkerProc, path: str):
    return connect(f"{worker.ws_url}{path}", max_size=2**27, compression=None, open_timeout=30)


def receive_until(socket, *types: str) -> list[dict]:
    frames = []
    while True:
        frames.append(json.loads(socket.recv(timeout=300)))
        if frames[-1]["type"] in types + ("error",):
            return frames


def idle(worker: WorkerProc) -> None:
    wait_until(lambda: (worker.health() or {}).get("worker_status") == "idle", 60.0, "the worker to be idle again")


def sessions(worker_data: Path) -> dict[str, Path]:
    return {p.name: p for p in (worker_data / "sessions").iterdir()} if (worker_data / "sessions").exists() else {}


@pytest.fixture(scope="module")
def worker_data(model_worker: WorkerProc) -> Path:
    return model_worker.log_path.parent / "data"


def test_the_checkpoint_is_a_normal_model_directory_of_the_real_architecture(tiny_checkpoint):
    files = {p.name for p in tiny_checkpoint.iterdir()}
    assert {"config.json", "model.safetensors", "modeling_minicpmo_unified.py", "tokenizer.json"} <= files
    token2wav = {p.name for p in (tiny_checkpoint / "assets" / "token2wav").iterdir()}
    assert {"speech_tokenizer_v2_25hz.onnx", "campplus.onnx", "flow.yaml", "flow.pt", "config.yaml", "hift.pt",
            "hift_original.pt"} <= token2wav
    assert json.loads((tiny_checkpoint / BUILD_MARKER).read_text())["parameters"] > 90_000_000


def test_health_says_the_real_backend_answers(model_worker):
    health = model_worker.health()
    assert health["backend"] == "minicpmo" and health["simulated"] is False and health["model_loaded"] is True


def test_a_text_chat_runs_the_models_generation_and_says_what_it_generated(model_worker):
    answer = post_chat(model_worker, generation={"max_new_tokens": 32, "do_sample": False})
    assert answer["success"] and answer["text"] == REPLY and answer["simulated"] is False
    stats = answer["token_stats"]
    assert stats["generated_tokens"] >= 7 and stats["input_tokens"] > 5 and answer["audio_data"] is None


def test_a_spoken_reply_is_24khz_speech_of_plausible_length(model_worker, worker_data):
    before = set(sessions(worker_data))
    answer = post_chat(model_worker, generation={"max_new_tokens": 32}, tts={"enabled": True})
    rate, samples = wav_samples(answer["audio_data"])
    assert rate == 24000 and 0.5 < samples.size / rate < 10 and np.abs(samples).max() > 0
    new = set(sessions(worker_data)) - before
    assert new, "the chat was not recorded"
    recording = sessions(worker_data)[new.pop()]
    wait_until(lambda: (recording / "recording.json").exists(), 30.0, "the chat recording to be finalised")
    assert any((recording / "ai_audio").iterdir())


def test_ref_audio_max_ms_cuts_the_voice_the_auto_system_prompt_carries(model_worker):
    spoken = {"enabled": True, "mode": "audio_assistant"}
    whole = post_chat(model_worker, generation={"max_new_tokens": 8, "do_sample": False}, tts=spoken)
    cut = post_chat(model_worker, generation={"max_new_tokens": 8, "do_sample": False}, tts={**spoken, "ref_audio_max_ms": 1000})
    # The prompt holds the voice as audio tokens: a 1 s cut of the (longer) default voice is fewer.
    assert cut["token_stats"]["input_tokens"] < whole["token_stats"]["input_tokens"]


def test_image_and_spoken_audio_in_one_message_reach_the_model(model_worker):
    voice = speak("What do you see in this picture?")
    text_only = post_chat(model_worker, generation={"max_new_tokens": 16})
    omni = post_chat(model_worker, omni_mode=True, generation={"max_new_tokens": 16}, messages=[{"role": "user", "content": [
        {"type": "image", "data": png_b64(64, 48)}, {"type": "audio", "data": pcm_b64(voice)},
        {"type": "text", "text": "Describe it."}]}])
    assert omni["success"] and omni["text"] == REPLY
    # The image's slices and the audio's frames are placeholders in the prompt the model saw.
    assert omni["token_stats"]["input_tokens"] > text_only["token_stats"]["input_tokens"] + 20


def test_a_video_reaches_the_model_as_frames_and_its_soundtrack(model_worker, tmp_path):
    clip = make_clip(tmp_path / "clip.mp4", seconds=2.0)
    text_only = post_chat(model_worker, generation={"max_new_tokens": 4, "do_sample": False})
    answer = post_chat(model_worker, omni_mode=True, image={"max_slice_nums": 1}, generation={"max_new_tokens": 4, "do_sample": False},
                       messages=[{"role": "user", "content": [{"type": "video", "data": base64.b64encode(clip.read_bytes()).decode()},
                                                              {"type": "text", "text": "What happens in this clip?"}]}])
    assert answer["success"], answer
    # minicpmo-utils cut the clip into 1 s units of a frame and its audio: their placeholders are in the prompt.
    assert answer["token_stats"]["input_tokens"] > text_only["token_stats"]["input_tokens"] + 20


def test_use_image_id_reaches_the_prompt_the_model_builds(model_worker):
    def input_tokens(use_image_id: bool) -> int:
        answer = post_chat(model_worker, generation={"max_new_tokens": 4, "do_sample": False},
                           image={"use_image_id": use_image_id}, messages=[{"role": "user", "content": [
                               {"type": "image", "data": png_b64(64, 48)}, {"type": "text", "text": "Describe it."}]}])
        return answer["token_stats"]["input_tokens"]

    assert input_tokens(True) > input_tokens(False)  # the <image_id>N</image_id> marker


def test_ws_chat_streams_text_and_audio_deltas_then_done(model_worker):
    with ws(model_worker, "/ws/chat") as socket:
        socket.send(json.dumps({"messages": [{"role": "user", "content": "Say hello."}], "streaming": True,
                                "tts": {"enabled": True}, "generation": {"max_new_tokens": 32}}))
        frames = receive_until(socket, "done")
    assert frames[0]["type"] == "prefill_done", frames
    chunks, done = [f for f in frames if f["type"] == "chunk"], frames[-1]
    assert done["type"] == "done" and done["text"] == REPLY == "".join(c.get("text_delta", "") for c in chunks)
    audio = np.concatenate([pcm(c["audio_data"]) for c in chunks if c.get("audio_data")])
    assert 0.5 < audio.size / 24000 < 10
    idle(model_worker)


def test_the_streaming_kv_cache_grows_with_each_turn_and_clear_cache_resets_it(model_worker):
    lengths = []
    for text in ("First question.", "Second question, a little longer than the first."):
        with ws(model_worker, "/ws/chat") as socket:
            socket.send(json.dumps({"messages": [{"role": "user", "content": text}], "streaming": True,
                                    "generation": {"max_new_tokens": 16}}))
            assert receive_until(socket, "done")[-1]["type"] == "done"
        idle(model_worker)
        lengths.append(httpx.get(f"{model_worker.url}/cache_info").json()["kv_cache_length"])
    assert lengths[0] > 10
    assert httpx.post(f"{model_worker.url}/clear_cache").status_code == 200
    assert httpx.get(f"{model_worker.url}/cache_info").json()["kv_cache_length"] == 0


def duplex_session(worker: WorkerProc, session_id: str, chunks: list[dict], **prepare) -> list[dict]:
    with ws(worker, f"/ws/duplex?session_id={session_id}") as socket:
        socket.send(json.dumps({"type": "prepare", "config": {"force_listen_count": 0}, **prepare}))
        frames = [json.loads(socket.recv(timeout=300))]
        for chunk in chunks:
            socket.send(json.dumps({"type": "audio_chunk", **chunk}))
            frames.append(json.loads(socket.recv(timeout=300)))
        socket.send(json.dumps({"type": "stop"}))
        frames.append(json.loads(socket.recv(timeout=300)))
    return frames


def one_second_chunks(samples: np.ndarray, count: int) -> list[np.ndarray]:
    padded = np.concatenate([samples, np.zeros(max(0, count * 16000 - samples.size), dtype=np.float32)])
    return [padded[i * 16000:(i + 1) * 16000] for i in range(count)]


def test_an_audio_duplex_session_listens_then_speaks_a_turn_and_frees_the_worker(model_worker, worker_data):
    chunks = [{"audio_base64": pcm_b64(c)} for c in one_second_chunks(speak("Hello, can you hear me?"), 5)]
    frames = duplex_session(model_worker, "adx_real", chunks)
    assert frames[0]["type"] == "prepared" and frames[-1]["type"] == "stopped"
    results = frames[1:-1]
    assert all(r["type"] == "result" for r in results), results
    spoken = [r for r in results if not r["is_listen"]]
    assert spoken and spoken[0]["text"] == REPLY and spoken[0]["end_of_turn"] is True
    assert 0.5 < pcm(spoken[0]["audio_data"]).size / 24000 < 5
    assert all(r["audio_data"] is None for r in results if r["is_listen"])
    cache = [r["kv_cache_length"] for r in results]
    assert cache == sorted(cache) and cache[-1] > cache[0]
    idle(model_worker)
    recording = next(p for name, p in sessions(worker_data).items() if name.endswith("adx_real"))
    wait_until(lambda: (recording / "recording.json").exists(), 30.0, "the duplex recording to be finalised")
    assert len(list((recording / "user_audio").iterdir())) == 5


def test_an_omni_duplex_session_feeds_frames_to_the_vision_encoder(model_worker):
    frame = png_b64(96, 64)
    chunks = [{"audio_base64": pcm_b64(c), "frame_base64_list": [frame]} for c in one_second_chunks(speak("Look."), 3)]
    frames = duplex_session(model_worker, "odx_real", chunks)
    results = frames[1:-1]
    assert [r["type"] for r in results] == ["result"] * 3 and all(r["vision_slices"] >= 1 for r in results)
    idle(model_worker)


def test_duplex_without_audio_out_speaks_text_only(model_worker):
    chunks = [{"audio_base64": pcm_b64(c)} for c in one_second_chunks(speak("Just text please."), 4)]
    frames = duplex_session(model_worker, "adx_text", chunks, config={"force_listen_count": 0, "generate_audio": False})
    spoken = [r for r in frames[1:-1] if not r["is_listen"]]
    assert spoken and spoken[0]["text"] == REPLY and spoken[0]["audio_data"] is None
    idle(model_worker)


def test_a_paused_duplex_session_resumes_where_it_was(model_worker):
    with ws(model_worker, "/ws/duplex?session_id=adx_pause") as socket:
        socket.send(json.dumps({"type": "prepare", "config": {"force_listen_count": 0}}))
        assert json.loads(socket.recv(timeout=300))["type"] == "prepared"
        socket.send(json.dumps({"type": "audio_chunk", "audio_base64": pcm_b64(np.zeros(16000, np.float32))}))
        before = json.loads(socket.recv(timeout=300))["kv_cache_length"]
        socket.send(json.dumps({"type": "pause"}))
        assert json.loads(socket.recv(timeout=60))["type"] == "paused"
        assert model_worker.health()["worker_status"] == "duplex_paused"
        socket.send(json.dumps({"type": "resume"}))
        assert json.loads(socket.recv(timeout=60))["type"] == "resumed"
        socket.send(json.dumps({"type": "audio_chunk", "audio_base64": pcm_b64(np.zeros(16000, np.float32))}))
        after = json.loads(socket.recv(timeout=300))
        socket.send(json.dumps({"type": "stop"}))
        assert json.loads(socket.recv(timeout=60))["type"] == "stopped"
    assert after["type"] == "result" and after["kv_cache_length"] > before
    idle(model_worker)


def test_half_duplex_hears_a_spoken_turn_and_answers_it(model_worker):
    speech = np.concatenate([np.zeros(8000, np.float32), speak("What is the weather like today?"),
                             np.zeros(32000, np.float32)])
    with ws(model_worker, "/ws/half_duplex?session_id=hdx_real") as socket:
        socket.send(json.dumps({"type": "prepare", "config": {"generation": {"max_new_tokens": 32}}}))
        assert json.loads(socket.recv(timeout=300))["type"] == "prepared"
        for chunk in one_second_chunks(speech, int(np.ceil(speech.size / 16000))):
            socket.send(json.dumps({"type": "audio_chunk", "audio_base64": pcm_b64(chunk)}))
        frames = receive_until(socket, "turn_done")
        socket.send(json.dumps({"type": "stop"}))
    assert frames[-1]["type"] == "turn_done", frames[-3:]
    assert "generating" in [f["type"] for f in frames] and frames[-1]["text"] == REPLY
    audio = np.concatenate([pcm(f["audio_data"]) for f in frames if f["type"] == "chunk" and f.get("audio_data")])
    assert 0.5 < audio.size / 24000 < 10
    idle(model_worker)


def test_the_mode_switch_is_timed_and_exported(model_worker):
    metrics = httpx.get(f"{model_worker.url}/metrics").text
    counts = [line for line in metrics.splitlines() if line.startswith("omnikube_worker_mode_switch_seconds_count")]
    assert {line.split('mode="')[1].split('"')[0] for line in counts} >= {"chat", "streaming", "duplex"}


# ---- through the gateway, with the real client libraries ---------------------------------------------

@pytest.fixture(scope="module")
def model_gateway(model_worker: WorkerProc, tmp_path_factory: pytest.TempPathFactory):
    gateway = launch_gateway(tmp_path_factory.mktemp("model-gateway"), [model_worker])
    yield gateway
    gateway.kill()


def test_the_gateway_serves_the_voice_the_worker_speaks_with_when_it_has_no_voice_file(model_gateway, model_worker):
    worker_voice = httpx.get(f"{model_worker.url}/default_ref_audio", timeout=30).json()
    assert worker_voice["name"] == "ref_minicpm_signature.wav" and worker_voice["sample_rate"] == 16000
    assert len(base64.b64decode(worker_voice["base64"])) == 4 * worker_voice["samples"] > 4 * 16000
    # The gateway's configured file (assets/ref_audio/..., relative) is not on its machine.
    assert httpx.get(f"{model_gateway.url}/api/default_ref_audio", timeout=30).json() == worker_voice


def test_the_openai_client_gets_the_models_reply_through_the_gateway(model_gateway, model_worker):
    import openai

    client = openai.OpenAI(base_url=f"{model_gateway.url}/v1", api_key="unused", max_retries=0, timeout=300)
    completion = client.chat.completions.create(model="minicpm-o-4.5", messages=[{"role": "user", "content": "Hi!"}],
                                                max_completion_tokens=32, temperature=0)
    assert completion.choices[0].message.content == REPLY and completion.usage.completion_tokens > 0
    idle(model_worker)


async def test_a_realtime_sdk_session_hears_speech_and_gets_a_spoken_turn_through_the_gateway(model_gateway, model_worker):
    from openbmb_realtime import AudioDelta, RealtimeClient, TextDelta, TurnCompleted

    session = await RealtimeClient(api_key="unused", base_url=model_gateway.url).audio.connect(
        model="minicpm-o-4.5-realtime", system_prompt="Be brief.")
    for chunk in one_second_chunks(speak("Hello there, are you listening to me?"), 12):
        await session.send_audio(chunk.astype("<f4").tobytes())
    events = []
    async for event in session:
        events.append(event)
        if isinstance(event, TurnCompleted) or len(events) > 200:
            break
    await session.close()
    assert isinstance(events[-1], TurnCompleted), events[-5:]
    assert REPLY in "".join(e.text for e in events if isinstance(e, TextDelta))
    assert sum(len(e.audio) for e in events if isinstance(e, AudioDelta)) > 4 * 24000 * 0.5
    idle(model_worker)
