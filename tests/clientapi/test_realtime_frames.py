"""The Realtime frame translation, without sockets: both client generations, validation, events."""

import base64
import json

import numpy as np
import pytest

from omnikube_gateway.wav import encode_pcm16
from omnikube_gateway.realtime_frames import (
    BadFrame,
    CloseRequest,
    Ignored,
    InputChunk,
    OutputMapper,
    SessionInit,
    audio_chunk_frame,
    parse_client_frame,
    prepare_frame,
)

SECOND = base64.b64encode(np.zeros(16000, dtype="<f4").tobytes()).decode()
JPEG = base64.b64encode(b"\xff\xd8\xff\xe0" + b"\0" * 32).decode()


def frame(**fields) -> str:
    return json.dumps(fields)


def test_the_demo_clients_session_update_becomes_a_prepare_with_its_prompt_voice_and_length_penalty():
    init = parse_client_frame(frame(type="session.update", session={
        "instructions": "Be brief.", "ref_audio": SECOND, "max_slice_nums": 2, "voice_config": {"length_penalty": 1.05}}), video=True)
    assert isinstance(init, SessionInit) and not init.sdk
    assert prepare_frame(init) == {
        "type": "prepare", "system_prompt": "Be brief.", "deferred_finalize": True, "max_slice_nums": 2,
        "ref_audio_base64": SECOND, "config": {"length_penalty": 1.05}}


def test_the_sdks_empty_session_init_gets_the_default_prompt():
    init = parse_client_frame(frame(type="session.init", payload={}), video=False)
    assert isinstance(init, SessionInit) and init.sdk
    assert prepare_frame(init)["system_prompt"] == "You are a helpful assistant."


def test_sdk_config_maps_temperature_vision_hd_and_the_limits_that_stay_in_the_gateway():
    init = parse_client_frame(frame(type="session.init", payload={"config": {
        "temperature": 0.3, "vision_hd": True, "max_kv_tokens": 4000, "max_tokens": 50, "tts_enabled": False}}), video=True)
    assert init.max_slice_nums == 4 and init.max_kv_tokens == 4000 and init.max_turn_tokens == 50 and not init.tts_enabled
    assert prepare_frame(init)["config"] == {"temperature": 0.3}


def test_a_wav_reference_voice_is_converted_to_raw_float32_pcm():
    wav = encode_pcm16(np.full(8000, 0.1, dtype=np.float32), 8000)
    init = parse_client_frame(frame(type="session.init", payload={"voice": {"ref_audio_base64": base64.b64encode(wav).decode()}}), video=False)
    assert len(base64.b64decode(init.ref_audio_base64)) == 16000 * 4


def test_an_out_of_range_temperature_is_refused_before_it_reaches_the_worker():
    with pytest.raises(BadFrame) as refused:
        parse_client_frame(frame(type="session.init", payload={"config": {"temperature": 9}}), video=False)
    assert refused.value.code == "invalid_payload" and "temperature" in refused.value.message


def test_both_append_generations_become_the_same_audio_chunk():
    gen1 = parse_client_frame(frame(type="input_audio_buffer.append", audio=SECOND, video_frames=[JPEG], force_listen=True), video=True)
    gen2 = parse_client_frame(frame(type="input.append", input={"audio": SECOND, "video_frames": [JPEG], "force_listen": True}), video=True)
    assert gen1 == gen2 == InputChunk(SECOND, [JPEG], True, None)
    assert audio_chunk_frame(gen2, force_listen=True) == {
        "type": "audio_chunk", "audio_base64": SECOND, "force_listen": True, "frame_base64_list": [JPEG]}


@pytest.mark.parametrize("bad, code", [
    ('{"type": "input.append"}', "missing_field"),
    (frame(type="input.append", input={"audio": "not base64!"}), "invalid_payload"),
    (frame(type="input.append", input={"audio": base64.b64encode(b"abc").decode()}), "invalid_payload"),
    (frame(type="input_audio_buffer.append", audio=SECOND, video_frames=["aGVsbG8="]), "invalid_payload"),
    ("{not json", "invalid_json"),
    (b"\x00\x01", "invalid_json"),
    ("[1, 2]", "invalid_payload"),
])
def test_malformed_frames_are_refused_with_a_code(bad, code):
    with pytest.raises(BadFrame) as refused:
        parse_client_frame(bad, video=True)
    assert refused.value.code == code


def test_video_frames_are_refused_in_audio_mode():
    with pytest.raises(BadFrame, match="mode=video"):
        parse_client_frame(frame(type="input.append", input={"audio": SECOND, "video_frames": [JPEG]}), video=False)


def test_close_keeps_a_well_formed_reason_and_replaces_anything_else():
    assert parse_client_frame(frame(type="session.close", reason="connect_timeout"), video=True) == CloseRequest("connect_timeout")
    assert parse_client_frame(frame(type="session.close", reason="<script>"), video=True) == CloseRequest("user_stop")
    assert parse_client_frame(frame(type="session.close"), video=True) == CloseRequest("user_stop")


def test_unknown_frame_types_are_ignored_not_fatal():
    assert parse_client_frame(frame(type="client_diagnostic", x=1), video=True) == Ignored("client_diagnostic")


def speak(text, end=False, n=3):
    return {"type": "result", "is_listen": False, "text": text, "audio_data": SECOND, "end_of_turn": end,
            "n_tokens": n, "n_tts_tokens": 24, "kv_cache_length": 200}


def listen(kv=150):
    return {"type": "result", "is_listen": True, "text": "", "audio_data": None, "kv_cache_length": kv}


def test_the_browser_gets_a_listen_event_for_every_listening_step():
    mapper = OutputMapper(sdk=False)
    assert mapper.events(listen()) == [{"type": "response.listen", "kv_cache_length": 150}]
    assert mapper.events(listen()) == [{"type": "response.listen", "kv_cache_length": 150}]


def test_the_sdk_gets_a_listen_event_only_when_the_model_stops_speaking():
    mapper = OutputMapper(sdk=True)
    assert mapper.events(listen()) == []
    mapper.events(speak("Hi "))
    assert [e["type"] for e in mapper.events(listen())] == ["response.listen"]
    assert mapper.events(listen()) == []


def test_a_speaking_step_carries_audio_text_and_at_the_end_of_turn_a_done_with_usage():
    mapper = OutputMapper(sdk=True)
    events = mapper.events(speak("Bye.", end=True))
    assert [e["type"] for e in events] == ["response.output_audio.delta", "response.output_text.delta", "response.done"]
    assert events[0]["audio"] == SECOND and events[1]["text"] == "Bye." and events[1]["end_of_turn"] is True
    assert events[2]["usage"]["output_tokens"] == 3 and events[2]["usage"]["total_tokens"] == 200
    assert events[2]["usage"]["input_tokens"] == 197


def test_with_tts_disabled_the_audio_is_withheld_but_the_text_is_not():
    events = OutputMapper(sdk=True, tts_enabled=False).events(speak("Hi"))
    assert events[0]["audio"] is None and events[1]["text"] == "Hi"
