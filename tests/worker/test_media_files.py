"""Audio files in the worker's protocol: any format FFmpeg decodes becomes 16 kHz mono PCM."""

from __future__ import annotations

import base64

import numpy as np
import pytest

from omnikube_worker.media import MediaError, decode_pcm16k

from tests.fixtures.speech import CODECS, SENTENCE, speak, voiced_span


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


@pytest.mark.parametrize("codec", sorted(CODECS))
def test_an_encoded_file_decodes_to_the_same_speech_at_16k(encoded_speech, codec):
    samples = decode_pcm16k(b64(encoded_speech(codec)), "tts.ref_audio_data")
    reference = speak(SENTENCE)
    assert abs(samples.size - reference.size) / 16000 < 0.1  # codec priming/padding only
    start, end = voiced_span(samples)
    ref_start, ref_end = voiced_span(reference)
    assert abs(start - ref_start) < 0.05 and abs(end - ref_end) < 0.05
    assert 0.1 < float(np.abs(samples).max()) <= 1.0


def test_raw_float_pcm_still_passes_through_unchanged():
    samples = speak(SENTENCE)
    assert np.array_equal(decode_pcm16k(b64(samples.astype("<f4").tobytes())), samples)


@pytest.mark.parametrize("data, reason", [
    (b"RIFF\x00\x00\x00\x00WAVEjunk", "not a decodable audio file"),
    (b"ID3" + bytes(61), "not a decodable audio file"),
    (b"fLaC-not-really", "not a decodable audio file"),
])
def test_a_file_that_is_not_audio_gets_a_clear_error(data, reason):
    with pytest.raises(MediaError, match=reason):
        decode_pcm16k(b64(data), "tts.ref_audio_data")


def test_a_file_longer_than_the_limit_is_refused(encoded_speech):
    with pytest.raises(MediaError, match="longer than the limit of 1 s"):
        decode_pcm16k(b64(encoded_speech("mp3")), "ref_audio_base64", max_seconds=1.0)


def test_a_chat_turn_takes_an_mp3_voice_message(client, encoded_speech):
    body = {"messages": [{"role": "user", "content": [{"type": "audio", "data": b64(encoded_speech("mp3"))}]}]}
    response = client.post("/chat", json=body)
    assert response.status_code == 200 and response.json()["success"] is True
