"""OpenAI request validation and translation to the worker, stop sequences, audio conversion."""

import base64

import numpy as np
import pytest

from omnikube_gateway.openai_api import StopScanner
from omnikube_gateway.openai_audio import float32_to_wav, wav_to_float32
from omnikube_gateway.wav import encode_pcm16

from tests.fixtures.speech import SENTENCE, speak
from omnikube_gateway.openai_errors import OpenAIError
from omnikube_gateway.openai_messages import parse_request, to_worker_request

PNG = "data:image/png;base64," + base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\0" * 16).decode()


def request(**fields):
    body = {"model": "minicpm-o-4.5", "messages": [{"role": "user", "content": "Hi"}]}
    body.update(fields)
    return parse_request(body)


def refusal(**fields) -> OpenAIError:
    with pytest.raises(OpenAIError) as refused:
        to_worker_request(request(**fields))
    return refused.value


def test_text_image_and_audio_parts_become_worker_content_items():
    wav = base64.b64encode(encode_pcm16(np.full(24000, 0.2, dtype=np.float32), 24000)).decode()
    frame = to_worker_request(request(messages=[
        {"role": "developer", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "What is this?"},
                                     {"type": "image_url", "image_url": {"url": PNG}},
                                     {"type": "input_audio", "input_audio": {"data": wav, "format": "wav"}}]}])).frame
    system, user = frame["messages"]
    assert system == {"role": "system", "content": "Be brief."}
    assert [item["type"] for item in user["content"]] == ["text", "image", "audio"]
    assert user["content"][1]["data"] == PNG.split(",", 1)[1]
    assert len(base64.b64decode(user["content"][2]["data"])) == 16000 * 4  # 1 s resampled to 16 kHz float32


def test_sampling_parameters_go_to_the_generation_block():
    frame = to_worker_request(request(max_completion_tokens=20, temperature=0.2, top_p=0.5, seed=7)).frame
    assert frame["generation"] == {"max_new_tokens": 20, "temperature": 0.2, "top_p": 0.5, "seed": 7}
    assert frame["tts"] == {"enabled": False}


def test_a_remote_image_url_is_refused_with_a_clear_reason():
    error = refusal(messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}]}])
    assert error.status == 400 and error.code == "invalid_image_url" and "data: URLs" in error.message
    assert error.param == "messages[0].content[0].image_url.url"


def test_mp3_input_audio_is_decoded_to_16_khz(encoded_speech):
    mp3 = base64.b64encode(encoded_speech("mp3")).decode()
    frame = to_worker_request(request(messages=[
        {"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": mp3, "format": "mp3"}}]}])).frame
    pcm = np.frombuffer(base64.b64decode(frame["messages"][0]["content"][0]["data"]), dtype="<f4")
    assert abs(pcm.size / 16000 - speak(SENTENCE).size / 16000) < 0.1


def test_input_audio_that_does_not_decode_is_refused_with_the_reason():
    error = refusal(messages=[{"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": "AAAA", "format": "mp3"}}]}])
    assert error.param == "messages[0].content[0].input_audio.data" and error.code == "invalid_audio"


def test_an_input_audio_format_openai_does_not_define_is_refused():
    error = refusal(messages=[{"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": "AAAA", "format": "aiff"}}]}])
    assert error.param == "messages[0].content[0].input_audio.format"


def test_tool_messages_are_refused():
    assert refusal(messages=[{"role": "tool", "content": "x", "tool_call_id": "1"}]).param == "messages[0].role"


@pytest.mark.parametrize("fields, param", [
    ({"temperature": 3}, "temperature"),
    ({"n": 2}, "n"),
    ({"max_tokens": 100000}, "max_tokens"),
    ({"modalities": ["text", "audio"]}, "audio"),
    ({"modalities": ["text", "audio"], "audio": {"voice": "default", "format": "mp3"}}, "audio.format"),
    ({"modalities": ["text", "audio"], "audio": {"voice": "default", "format": "wav"}, "stream": True}, "audio.format"),
    ({"messages": []}, "messages"),
])
def test_invalid_parameters_are_a_400_naming_the_parameter(fields, param):
    with pytest.raises(OpenAIError) as refused:
        request(**fields)
    assert refused.value.status == 400 and refused.value.param == param


def test_a_stop_sequence_split_across_chunks_is_still_found_and_cut():
    scanner = StopScanner(["END"])
    out = scanner.feed("one two E") + scanner.feed("N") + scanner.feed("D three")
    assert out + scanner.flush() == "one two " and scanner.stopped


def test_without_a_stop_sequence_text_flows_through_unchanged():
    scanner = StopScanner([])
    assert scanner.feed("a") + scanner.feed("b") + scanner.flush() == "ab" and not scanner.stopped


def test_float32_output_round_trips_through_pcm16_wav():
    tone = (0.5 * np.sin(np.linspace(0, 100, 24000))).astype("<f4")
    wav = float32_to_wav(tone.tobytes())
    back = np.frombuffer(wav_to_float32(wav, target_rate=24000), dtype="<f4")
    assert back.size == tone.size and np.max(np.abs(back - tone)) < 1e-3
