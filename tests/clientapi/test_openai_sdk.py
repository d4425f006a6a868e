"""`/v1/chat/completions` and `/v1/models` used through the real `openai` package."""

from __future__ import annotations

import asyncio
import base64
import io
import wave

import httpx
import numpy as np
import openai
import pytest
from openbmb_realtime import RealtimeClient

from omnikube_gateway.wav import encode_pcm16

from .conftest import API_KEY, AUTH, MAX_QUEUE, eventually, image_bytes, queue_length, speech

pytestmark = pytest.mark.timeout(120)  # process start-up on a loaded machine dominates
MODEL = "minicpm-o-4.5"
HELLO = [{"role": "user", "content": "Hello there"}]


def sync_client(gateway, api_key: str = API_KEY) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=api_key, max_retries=0)


def async_client(gateway) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{gateway.url}/v1", api_key=API_KEY, max_retries=0)


def test_models_lists_the_served_model_and_its_alias(one_worker_gateway):
    gateway, _ = one_worker_gateway
    ids = [model.id for model in sync_client(gateway).models.list()]
    assert ids[:2] == ["openbmb/MiniCPM-o-4_5", MODEL]


def test_a_plain_completion_returns_the_models_text_and_the_workers_token_counts(one_worker_gateway):
    gateway, _ = one_worker_gateway
    completion = sync_client(gateway).chat.completions.create(model=MODEL, messages=HELLO)
    choice = completion.choices[0]
    assert choice.message.role == "assistant" and choice.finish_reason == "stop"
    assert choice.message.content.startswith('[simulated] You said: "Hello there".')
    usage = completion.usage
    assert usage.prompt_tokens > 0 and usage.completion_tokens == len(choice.message.content.split())
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    assert completion.id.startswith("chatcmpl-") and completion.model == MODEL


def test_max_tokens_cuts_the_answer_with_finish_reason_length(one_worker_gateway):
    gateway, _ = one_worker_gateway
    completion = sync_client(gateway).chat.completions.create(model=MODEL, messages=HELLO, max_completion_tokens=3)
    assert completion.choices[0].finish_reason == "length" and completion.usage.completion_tokens == 3


def test_a_stop_sequence_ends_the_text_before_it(one_worker_gateway):
    gateway, _ = one_worker_gateway
    completion = sync_client(gateway).chat.completions.create(model=MODEL, messages=HELLO, stop=["This answer"])
    assert completion.choices[0].message.content == '[simulated] You said: "Hello there". '
    assert completion.choices[0].finish_reason == "stop"


def test_streaming_sends_chunks_that_add_up_to_the_answer_then_usage(one_worker_gateway):
    gateway, _ = one_worker_gateway
    client = sync_client(gateway)
    chunks = list(client.chat.completions.create(model=MODEL, messages=HELLO, stream=True, stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == client.chat.completions.create(model=MODEL, messages=HELLO).choices[0].message.content
    assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) > 1
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens > 0
    assert len({c.id for c in chunks}) == 1


def test_an_image_data_url_reaches_the_model(one_worker_gateway):
    gateway, _ = one_worker_gateway
    url = "data:image/png;base64," + base64.b64encode(image_bytes(32, 16, "PNG")).decode()
    completion = sync_client(gateway).chat.completions.create(model=MODEL, messages=[{"role": "user", "content": [
        {"type": "text", "text": "What is this?"}, {"type": "image_url", "image_url": {"url": url}}]}])
    assert "I see 1 image (32x16)" in completion.choices[0].message.content


def test_wav_input_audio_reaches_the_model_as_16_khz_audio(one_worker_gateway):
    gateway, _ = one_worker_gateway
    samples = np.frombuffer(speech(1.5), dtype="<f4")
    wav_44k = encode_pcm16(np.interp(np.linspace(0, samples.size - 1, int(1.5 * 44100)), np.arange(samples.size), samples), 44100)
    completion = sync_client(gateway).chat.completions.create(model=MODEL, messages=[{"role": "user", "content": [
        {"type": "input_audio", "input_audio": {"data": base64.b64encode(wav_44k).decode(), "format": "wav"}}]}])
    assert "I heard 1.5 seconds of audio" in completion.choices[0].message.content


def test_audio_output_is_a_wav_with_its_transcript(one_worker_gateway):
    gateway, _ = one_worker_gateway
    completion = sync_client(gateway).chat.completions.create(
        model=MODEL, messages=HELLO, modalities=["text", "audio"], audio={"voice": "alloy", "format": "wav"})
    audio = completion.choices[0].message.audio
    assert audio.transcript.startswith("[simulated]") and audio.id.startswith("audio_")
    assert audio.expires_at > completion.created
    with wave.open(io.BytesIO(base64.b64decode(audio.data))) as wav:
        assert wav.getframerate() == 24000 and wav.getsampwidth() == 2 and wav.getnframes() > 24000


def test_streamed_audio_output_arrives_as_pcm16_deltas_with_the_transcript(one_worker_gateway):
    gateway, _ = one_worker_gateway
    stream = sync_client(gateway).chat.completions.create(
        model=MODEL, messages=HELLO, modalities=["text", "audio"], audio={"voice": "default", "format": "pcm16"}, stream=True)
    deltas = [c.choices[0].delta.audio for c in stream if c.choices and c.choices[0].delta.audio]
    pcm = b"".join(base64.b64decode(d.data) for d in deltas if d.data)
    transcript = "".join(d.transcript or "" for d in deltas)
    assert transcript.startswith('[simulated] You said: "Hello there".')
    assert len(pcm) > 24000 * 2 and len(pcm) % 2 == 0
    assert deltas[-1].expires_at is not None and len({d.id for d in deltas}) == 1


def test_an_unknown_voice_is_a_400_naming_the_voices_that_exist(one_worker_gateway):
    gateway, _ = one_worker_gateway
    with pytest.raises(openai.BadRequestError) as refused:
        sync_client(gateway).chat.completions.create(
            model=MODEL, messages=HELLO, modalities=["text", "audio"], audio={"voice": "nobody", "format": "wav"})
    assert refused.value.code == "invalid_voice" and "default" in refused.value.message


def test_a_remote_image_url_is_a_400_saying_only_data_urls_work(one_worker_gateway):
    gateway, _ = one_worker_gateway
    with pytest.raises(openai.BadRequestError) as refused:
        sync_client(gateway).chat.completions.create(model=MODEL, messages=[{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}]}])
    assert refused.value.status_code == 400 and refused.value.code == "invalid_image_url"
    assert refused.value.param == "messages[0].content[0].image_url.url"


def test_a_wrong_api_key_is_a_401(one_worker_gateway):
    gateway, _ = one_worker_gateway
    with pytest.raises(openai.AuthenticationError) as refused:
        sync_client(gateway, api_key="sk-wrong").chat.completions.create(model=MODEL, messages=HELLO)
    assert refused.value.code == "invalid_api_key"


def test_an_unknown_model_is_a_404(one_worker_gateway):
    gateway, _ = one_worker_gateway
    with pytest.raises(openai.NotFoundError) as refused:
        sync_client(gateway).chat.completions.create(model="gpt-4o", messages=HELLO)
    assert refused.value.code == "model_not_found"


async def test_a_full_queue_is_a_429_with_retry_after_and_queued_requests_complete_later(one_worker_gateway):
    gateway, _ = one_worker_gateway
    holder = await RealtimeClient(api_key=API_KEY, base_url=gateway.url).audio.connect(model=MODEL)  # holds the worker
    client = async_client(gateway)
    waiting = [asyncio.create_task(client.chat.completions.create(model=MODEL, messages=HELLO)) for _ in range(MAX_QUEUE)]
    await eventually(lambda: _is(queue_length(gateway), MAX_QUEUE), what="the queue to fill")
    with pytest.raises(openai.RateLimitError) as refused:
        await client.chat.completions.create(model=MODEL, messages=HELLO)
    assert refused.value.code == "queue_full" and int(refused.value.response.headers["retry-after"]) >= 1
    await holder.close()
    answers = await asyncio.gather(*waiting)
    assert all(a.choices[0].message.content.startswith("[simulated]") for a in answers)


async def _is(value, expected) -> bool:
    return (await value) == expected


async def test_a_client_that_gives_up_while_queued_leaves_the_queue(one_worker_gateway):
    gateway, _ = one_worker_gateway
    holder = await RealtimeClient(api_key=API_KEY, base_url=gateway.url).audio.connect(model=MODEL)
    impatient = openai.AsyncOpenAI(base_url=f"{gateway.url}/v1", api_key=API_KEY, max_retries=0, timeout=1.0)
    with pytest.raises(openai.APITimeoutError):
        await impatient.chat.completions.create(model=MODEL, messages=HELLO)
    await eventually(lambda: _is(queue_length(gateway), 0), what="the abandoned ticket to leave the queue")
    await holder.close()



def test_an_uploaded_reference_voice_can_be_chosen_by_its_id(one_worker_gateway):
    gateway, _ = one_worker_gateway
    voice = encode_pcm16(np.frombuffer(speech(1.0), dtype="<f4"), 16000)
    uploaded = httpx.post(f"{gateway.url}/api/assets/ref_audio", headers=AUTH, timeout=10,
                          json={"name": "test voice", "audio_base64": base64.b64encode(voice).decode()}).json()
    completion = sync_client(gateway).chat.completions.create(
        model=MODEL, messages=HELLO, modalities=["text", "audio"], audio={"voice": uploaded["id"], "format": "wav"})
    assert completion.choices[0].message.audio.transcript.startswith("[simulated]")
