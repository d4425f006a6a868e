"""The minicpmo backend without weights: attention choice, pt_path override, and the translation
between protocol messages and model calls, checked against a stand-in with the model's methods."""

from __future__ import annotations

import base64
import io
import wave
from typing import Any, Iterator

import numpy as np
import pytest

from omnikube_worker.minicpmo import (MiniCPMoBackend, ModelCalls, apply_attention, apply_weight_override,
                                      call_supported, resolve_attn_implementation)
from omnikube_worker.settings import WorkerSettings

from tests.fixtures.worker_app import pcm_b64, png_b64, silence, tone

torch = pytest.importorskip("torch", reason="torch is installed by scripts/setup.d/25-torch-cpu.sh")


# ---- attention ------------------------------------------------------------------------------------

@pytest.mark.parametrize("configured, flash, expected", [
    ("auto", True, "flash_attention_2"), ("auto", False, "sdpa"),
    ("sdpa", True, "sdpa"), ("eager", False, "eager"), ("flash_attention_2", True, "flash_attention_2"),
])
def test_attention_follows_the_guides_rule(configured, flash, expected):
    assert resolve_attn_implementation(configured, flash_available=flash) == expected


def test_forcing_flash_attention_without_flash_attn_fails_at_load():
    with pytest.raises(RuntimeError, match="flash-attn is not installed"):
        resolve_attn_implementation("flash_attention_2", flash_available=False)


def test_the_audio_encoder_always_gets_sdpa():
    from types import SimpleNamespace

    config = SimpleNamespace(llm_config=SimpleNamespace(), vision_config=SimpleNamespace(), audio_config=SimpleNamespace())
    apply_attention(config, "flash_attention_2")
    assert config._attn_implementation == config.llm_config._attn_implementation == "flash_attention_2"
    assert config.vision_config._attn_implementation == "flash_attention_2"
    assert config.audio_config._attn_implementation == "sdpa"


# ---- pt_path override -------------------------------------------------------------------------------

def test_pt_override_loads_matching_tensors_and_reports_the_rest(tmp_path):
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 2))
    state = {"0.weight": torch.full((3, 4), 7.0), "0.bias": torch.zeros(3), "extra.weight": torch.ones(1)}
    path = tmp_path / "override.pt"
    torch.save({"state_dict": state}, path)
    report = apply_weight_override(model, str(path))
    assert torch.equal(model[0].weight, torch.full((3, 4), 7.0))
    assert report.loaded == 2
    assert sorted(report.missing) == ["1.bias", "1.weight"] and report.unexpected == ["extra.weight"]


def test_pt_override_that_is_not_a_state_dict_is_refused(tmp_path):
    path = tmp_path / "bad.pt"
    torch.save([1, 2, 3], path)
    with pytest.raises(ValueError, match="expected a state dict"):
        apply_weight_override(torch.nn.Linear(2, 2), str(path))


# ---- a stand-in with the model's method signatures ---------------------------------------------------

class StandInDecoder:
    def __init__(self) -> None:
        self.length = 0
        self.resets = 0

    def get_cache_length(self) -> int:
        return self.length

    def reset(self) -> None:
        self.resets += 1
        self.length = 0


class StandInDuplex:
    """MiniCPMODuplex's surface: prepare / streaming_prefill / streaming_generate / finalize / stop."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict]] = []
        self.decoder = StandInDecoder()
        self.force_listen_count = 3
        self.max_new_speak_tokens_per_chunk = 20
        self.script: list[dict] = []
        self.fail_next = False

    def prepare(self, prefix_system_prompt: str, suffix_system_prompt: str, ref_audio: Any = None,
                prompt_wav_path: str | None = None) -> str:
        self.calls.append(("prepare", dict(prefix=prefix_system_prompt, suffix=suffix_system_prompt,
                                           ref_audio=ref_audio, prompt_wav_path=prompt_wav_path)))
        self.decoder.length = 40
        return prefix_system_prompt + "<ref audio>" + suffix_system_prompt

    def streaming_prefill(self, audio_waveform: np.ndarray | None = None, frame_list: list | None = None,
                          max_slice_nums: int = 1) -> dict:
        self.calls.append(("streaming_prefill", dict(audio=audio_waveform, frames=frame_list, max_slice_nums=max_slice_nums)))
        self.decoder.length += 25
        return {"success": True}

    def streaming_generate(self, decode_mode: str = "sampling", temperature: float = 0.7, top_k: int = 20,
                           top_p: float = 0.8, listen_prob_scale: float = 1.0, listen_top_k: int | None = None,
                           text_repetition_penalty: float = 1.05, text_repetition_window_size: int = 512,
                           length_penalty: float = 1.1, force_listen_override: bool = False,
                           prompt_wav_path: str | None = None) -> dict:
        self.calls.append(("streaming_generate", dict(decode_mode=decode_mode, temperature=temperature, top_k=top_k,
                                                      force_listen_override=force_listen_override)))
        if self.fail_next:
            self.fail_next = False
            raise RuntimeError("CUDA out of memory (stand-in)")
        if self.script:
            return self.script.pop(0)
        return {"is_listen": True, "text": "", "end_of_turn": False, "current_time": 1, "cost_all": 0.03}

    def finalize(self) -> None:
        self.calls.append(("finalize", {}))

    def set_session_stop(self) -> None:
        self.calls.append(("set_session_stop", {}))

    def _reset_streaming_state(self) -> None:
        self.calls.append(("_reset_streaming_state", {}))


class StandInModel:
    """MiniCPMO's surface used by the worker: chat, streaming_*, reset_session, init_token2wav_cache."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict]] = []
        self.kv = 0
        self._last_chat_token_stats: dict = {}

    def chat(self, msgs: list[dict], tokenizer: Any = None, sampling: bool = True, max_new_tokens: int = 512,
             stream: bool = False, use_tts_template: bool = False, generate_audio: bool = False,
             tts_ref_audio: np.ndarray | None = None, omni_mode: bool = False, enable_thinking: bool = False,
             return_prompt: bool = False, max_slice_nums: int | None = None, **kwargs: Any):
        self.calls.append(("chat", dict(msgs=msgs, sampling=sampling, max_new_tokens=max_new_tokens,
                                        generate_audio=generate_audio, tts_ref_audio=tts_ref_audio,
                                        use_tts_template=use_tts_template, max_slice_nums=max_slice_nums, **kwargs)))
        self._last_chat_token_stats = {"input_tokens": 23, "generated_tokens": 2}
        if generate_audio:
            return "2", "<prompt>", torch.full((4800,), 0.25)
        return "2", "<prompt>"

    def streaming_prefill(self, session_id: str, msgs: list[dict], omni_mode: bool = False,
                          max_slice_nums: int | None = None, use_tts_template: bool = False,
                          enable_thinking: bool = False, is_last_chunk: bool = False, **kwargs: Any) -> str:
        self.calls.append(("streaming_prefill", dict(session_id=session_id, msgs=msgs, is_last_chunk=is_last_chunk)))
        self.kv += 10
        return "<prompt>"

    def streaming_generate(self, session_id: str, do_sample: bool = True, generate_audio: bool = True,
                           max_new_tokens: int = 256, use_tts_template: bool = True, length_penalty: float = 1.1,
                           **kwargs: Any) -> Iterator[tuple]:
        self.calls.append(("streaming_generate", dict(session_id=session_id, generate_audio=generate_audio, do_sample=do_sample,
                                                      max_new_tokens=max_new_tokens, length_penalty=length_penalty, **kwargs)))
        for text in ("Hello ", "world."):
            self.kv += 2
            yield (torch.full((2400,), 0.1), text) if generate_audio else (text, None)

    def reset_session(self, reset_token2wav_cache: bool = True) -> None:
        self.calls.append(("reset_session", dict(reset_token2wav_cache=reset_token2wav_cache)))
        self.kv = 0

    def init_token2wav_cache(self, prompt_speech_16k: np.ndarray) -> None:
        self.calls.append(("init_token2wav_cache", dict(samples=len(prompt_speech_16k))))

    def _get_kv_cache_length(self) -> int:
        return self.kv


class StandInTokenizer:
    def encode(self, text: str) -> list[int]:
        return list(range(len(text.split())))


@pytest.fixture
def stand_in(worker_client):
    model, duplex = StandInModel(), StandInDuplex()
    calls = ModelCalls(model, StandInTokenizer(), duplex, default_voice=tone(2.0), default_voice_path="/voices/default.wav")
    client = worker_client(backend=MiniCPMoBackend(WorkerSettings(backend="minicpmo"), calls=calls))
    return client, model, duplex


def named(calls, name):
    return [kwargs for call, kwargs in calls if call == name]


def test_health_says_the_real_backend_answers(stand_in):
    client, _, _ = stand_in
    body = client.get("/health").json()
    assert body["backend"] == "minicpmo" and body["simulated"] is False


def test_post_chat_with_tts_embeds_the_default_voice_in_a_system_turn_and_returns_a_wav(stand_in):
    client, model, _ = stand_in
    body = client.post("/chat", json={"messages": [{"role": "user", "content": "1+1?"}], "tts": {"enabled": True},
                                      "generation": {"max_new_tokens": 10, "do_sample": False}}).json()
    call = named(model.calls, "chat")[0]
    assert call["msgs"][0]["role"] == "system" and isinstance(call["msgs"][0]["content"][1], np.ndarray)
    assert call["msgs"][1] == {"role": "user", "content": ["1+1?"]}
    assert (call["max_new_tokens"], call["sampling"], call["generate_audio"], call["use_tts_template"]) == (10, False, True, True)
    assert call["tts_ref_audio"].size == 32000
    assert body["text"] == "2" and body["token_stats"]["input_tokens"] == 23 and body["tokens_generated"] == 2
    with wave.open(io.BytesIO(base64.b64decode(body["audio_data"]))) as wav:
        assert wav.getframerate() == 24000 and wav.getnframes() == 4800


def test_a_client_system_message_suppresses_the_voice_prompt_and_media_reach_the_model(stand_in):
    client, model, _ = stand_in
    content = [{"type": "image", "data": png_b64(20, 10)}, {"type": "audio", "data": pcm_b64(tone(0.5))}]
    client.post("/chat", json={"messages": [{"role": "system", "content": "Be terse."}, {"role": "user", "content": content}],
                               "tts": {"enabled": True}, "image": {"max_slice_nums": 4}})
    call = named(model.calls, "chat")[0]
    assert [m["role"] for m in call["msgs"]] == ["system", "user"]
    image, audio = call["msgs"][1]["content"]
    assert image.size == (20, 10) and image.mode == "RGB" and audio.size == 8000
    assert call["max_slice_nums"] == 4


def test_ws_chat_resets_prefills_every_message_and_streams_the_models_pieces(stand_in):
    client, model, _ = stand_in
    with client.websocket_connect("/ws/chat") as ws:
        ws.send_json({"messages": [{"role": "system", "content": "sys"}, {"role": "user", "content": "hi"}],
                      "tts": {"enabled": True}, "generation": {"max_new_tokens": 7}})
        frames = [ws.receive_json() for _ in range(4)]
    names = [name for name, _ in model.calls]
    assert names[:3] == ["reset_session", "streaming_prefill", "streaming_prefill"]
    prefills = named(model.calls, "streaming_prefill")
    assert [p["is_last_chunk"] for p in prefills] == [False, True]
    assert prefills[1]["msgs"] == [{"role": "user", "content": "hi"}] and prefills[0]["session_id"] == "streaming"
    assert named(model.calls, "streaming_generate")[0]["max_new_tokens"] == 7
    assert frames[0] == {"type": "prefill_done", "input_tokens": 20, "backend": "minicpmo", "simulated": False}
    assert [f["text_delta"] for f in frames[1:3]] == ["Hello ", "world."]
    assert len(base64.b64decode(frames[1]["audio_data"])) == 2400 * 4
    assert frames[3]["type"] == "done" and frames[3]["text"] == "Hello world."


def test_post_chat_sampling_reaches_the_model_and_greedy_sends_none(stand_in):
    client, model, _ = stand_in
    sampled = {"do_sample": True, "temperature": 0.2, "top_p": 0.5, "top_k": 7}
    client.post("/chat", json={"messages": [{"role": "user", "content": "hi"}], "generation": sampled})
    client.post("/chat", json={"messages": [{"role": "user", "content": "hi"}], "generation": {"do_sample": False, "temperature": 0.2}})
    first, greedy = named(model.calls, "chat")
    assert (first["sampling"], first["temperature"], first["top_p"], first["top_k"]) == (True, 0.2, 0.5, 7)
    assert greedy["sampling"] is False and not {"temperature", "top_p", "top_k"} & set(greedy)


def test_ws_chat_sampling_and_seed_reach_the_streaming_model(stand_in):
    torch = pytest.importorskip("torch")
    client, model, _ = stand_in
    first_draws = []
    for _ in range(2):
        with client.websocket_connect("/ws/chat") as ws:
            ws.send_json({"messages": [{"role": "user", "content": "hi"}],
                          "generation": {"temperature": 1.3, "top_p": 0.9, "seed": 42}})
            while ws.receive_json()["type"] != "done":
                pass
        first_draws.append(torch.rand(1).item())  # what the model's next random draw would be
    call = named(model.calls, "streaming_generate")[0]
    assert (call["do_sample"], call["temperature"], call["top_p"], call["top_k"]) == (True, 1.3, 0.9, 100)
    assert first_draws[0] == first_draws[1]  # the same seed, the same random stream


def test_a_sampling_value_out_of_range_is_refused_before_the_model(stand_in):
    client, model, _ = stand_in
    response = client.post("/chat", json={"messages": [{"role": "user", "content": "hi"}], "generation": {"temperature": 3}})
    assert response.status_code == 422 and "temperature" in response.text
    assert not named(model.calls, "chat")


def test_duplex_prepare_wraps_the_prompt_and_passes_the_voices(stand_in):
    client, model, duplex = stand_in
    with client.websocket_connect("/ws/duplex?session_id=adx_1") as ws:
        ws.send_json({"type": "prepare", "system_prompt": "Be kind.", "tts_ref_audio_base64": pcm_b64(tone(1.0))})
        prepared = ws.receive_json()
    call = named(duplex.calls, "prepare")[0]
    assert call["prefix"] == "<|im_start|>system\nBe kind.\n<|audio_start|>" and call["suffix"] == "<|audio_end|><|im_end|>"
    assert call["ref_audio"].size == 32000 and call["prompt_wav_path"] == "/voices/default.wav"
    assert named(model.calls, "init_token2wav_cache") == [{"samples": 16000}]
    assert prepared["prompt_length"] == len(call["prefix"] + "<ref audio>" + call["suffix"])


def test_duplex_chunks_become_prefill_plus_generate_with_the_sessions_sampling(stand_in):
    client, _, duplex = stand_in
    duplex.script = [{"is_listen": False, "text": "Hi", "audio_waveform": torch.full((24000,), 0.2),
                      "end_of_turn": True, "current_time": 4, "cost_llm": 0.05, "cost_tts": 0.0, "cost_all": 0.2,
                      "n_tokens": 3, "n_tts_tokens": 25}]
    with client.websocket_connect("/ws/duplex?session_id=omni_1") as ws:
        ws.send_json({"type": "prepare", "config": {"temperature": 0.3, "decode_mode": "greedy"}, "max_slice_nums": 2})
        ws.receive_json()
        ws.send_json({"type": "audio_chunk", "audio_base64": pcm_b64(silence()), "frame_base64_list": [png_b64()],
                      "force_listen": True})
        result = ws.receive_json()
        health = client.get("/health").json()
    prefill = named(duplex.calls, "streaming_prefill")[0]
    assert prefill["audio"].size == 16000 and len(prefill["frames"]) == 1 and prefill["max_slice_nums"] == 2
    generate = named(duplex.calls, "streaming_generate")[0]
    assert (generate["temperature"], generate["decode_mode"], generate["force_listen_override"]) == (0.3, "greedy", True)
    assert result["is_listen"] is False and result["text"] == "Hi" and result["end_of_turn"] is True
    assert len(base64.b64decode(result["audio_data"])) == 24000 * 4
    assert (result["cost_llm_ms"], result["cost_tts_ms"], result["n_tokens"], result["n_tts_tokens"]) == (50.0, None, 3, 25)
    assert (result["vision_slices"], result["vision_tokens"]) == (2, 128) and result["kv_cache_length"] == 65
    assert health["kv_cache_length"] == 65


def test_deferred_finalize_runs_after_each_result_and_stop_frees_the_duplex_caches(stand_in):
    client, model, duplex = stand_in
    with client.websocket_connect("/ws/duplex?session_id=adx_1") as ws:
        ws.send_json({"type": "prepare"})
        ws.receive_json()
        ws.send_json({"type": "audio_chunk", "audio_base64": pcm_b64(silence())})
        ws.receive_json()
        ws.send_json({"type": "stop"})
        assert ws.receive_json() == {"type": "stopped"}
    names = [name for name, _ in duplex.calls]
    assert names == ["prepare", "streaming_prefill", "streaming_generate", "finalize", "set_session_stop",
                     "_reset_streaming_state"]
    assert duplex.decoder.resets == 1 and named(model.calls, "reset_session")[-1] == {"reset_token2wav_cache": True}


def test_a_duplex_config_persists_into_the_next_session_that_sends_none(stand_in):
    client, _, duplex = stand_in
    for config in ({"temperature": 0.2}, None):
        with client.websocket_connect("/ws/duplex?session_id=adx_1") as ws:
            ws.send_json({"type": "prepare", **({"config": config} if config else {})})
            ws.receive_json()
            ws.send_json({"type": "audio_chunk", "audio_base64": pcm_b64(silence())})
            ws.receive_json()
    assert [g["temperature"] for g in named(duplex.calls, "streaming_generate")] == [0.2, 0.2]


def test_a_model_exception_becomes_an_error_and_the_session_goes_on(stand_in):
    client, _, duplex = stand_in
    duplex.fail_next = True
    with client.websocket_connect("/ws/duplex?session_id=adx_1") as ws:
        ws.send_json({"type": "prepare"})
        ws.receive_json()
        ws.send_json({"type": "audio_chunk", "audio_base64": pcm_b64(silence())})
        assert "CUDA out of memory" in ws.receive_json()["error"]
        ws.send_json({"type": "audio_chunk", "audio_base64": pcm_b64(silence())})
        assert ws.receive_json()["type"] == "result"


def test_call_supported_passes_only_the_arguments_a_revision_takes():
    def old_revision(audio_waveform=None, frame_list=None):
        return audio_waveform, frame_list

    assert call_supported(old_revision, audio_waveform=1, frame_list=2, max_slice_nums=3) == (1, 2)


def test_a_reference_voice_wav_is_read_at_16khz_without_librosa(tmp_path, monkeypatch):
    import sys
    import wave as wave_module

    from omnikube_worker.minicpmo import load_reference_voice

    monkeypatch.setitem(sys.modules, "librosa", None)  # import librosa -> ImportError
    path = tmp_path / "voice.wav"
    with wave_module.open(str(path), "wb") as wav:
        wav.setnchannels(2), wav.setsampwidth(2), wav.setframerate(24000)
        wav.writeframes((np.full((24000, 2), 8192, dtype="<i2")).tobytes())
    voice = load_reference_voice(str(path))
    assert voice.dtype == np.float32 and voice.size == 16000 and abs(float(voice.mean()) - 0.25) < 1e-3
