"""The simulated backend on its own: determinism, real audio, timings, faults, VAD and media codecs."""

from __future__ import annotations

import asyncio
import base64
import threading
import time

import numpy as np
import pytest

from omnikube_worker.backend import Audio, DuplexInput, DuplexSetup, GenerateOptions, Turn
from omnikube_worker.faults import FaultPlan, Faults, SimulatedFault
from omnikube_worker.media import MediaError, decode_pcm16k, encode_pcm, encode_wav
from omnikube_worker.settings import SimOptions
from omnikube_worker.simulated import SimulatedBackend
from omnikube_worker.synth import speak

from tests.fixtures.worker_app import silence, tone

USER = [Turn("user", ["What is the weather like?"])]


def run(coro):
    return asyncio.run(coro)


def test_the_same_prompt_gives_the_same_text_and_audio():
    backend = SimulatedBackend(SimOptions.zero_delay())
    first = run(backend.chat(USER, GenerateOptions(generate_audio=True)))
    second = run(backend.chat(USER, GenerateOptions(generate_audio=True)))
    assert first.text == second.text and np.array_equal(first.audio, second.audio)
    assert first.text.startswith("[simulated]") and "What is the weather like?" in first.text


def test_synthesized_speech_is_audible_bounded_and_speech_shaped():
    audio = speak("hello there general kenobi")
    assert audio.dtype == np.float32 and 0.2 < abs(audio).max() <= 0.31
    frames = audio[: audio.size // 480 * 480].reshape(-1, 480)
    loud = np.sqrt((frames ** 2).mean(axis=1)) > 0.01
    assert 0.3 < loud.mean() < 0.98  # syllables with pauses between them, not a constant tone


def test_speak_fits_words_into_an_exact_duration():
    assert speak("one two three", duration_s=1.0).size == 24000
    assert speak("", duration_s=0.5).size == 12000


def test_tokens_per_second_paces_streamed_generation():
    backend = SimulatedBackend(SimOptions.zero_delay(tokens_per_s=100.0, words_per_chunk=2))
    run(backend.stream_prefill(USER, GenerateOptions()))

    async def collect():
        started = time.monotonic()
        pieces = [p async for p in backend.stream_generate(GenerateOptions(max_new_tokens=10), threading.Event())]
        return pieces, time.monotonic() - started

    pieces, elapsed = run(collect())
    assert [p.tokens for p in pieces] == [2] * 5 and elapsed >= 0.1  # 10 tokens at 100/s


def test_stop_ends_generation_early():
    backend = SimulatedBackend(SimOptions.zero_delay(words_per_chunk=1))
    stop = threading.Event()

    async def collect():
        pieces = []
        async for piece in backend.stream_generate(GenerateOptions(), stop):
            pieces.append(piece)
            stop.set()
        return pieces

    assert len(run(collect())) == 1


def test_slow_fault_multiplies_delays():
    backend = SimulatedBackend(SimOptions.zero_delay(prefill_ms=20.0, fault="slow:5"))
    started = time.monotonic()
    run(backend.stream_prefill(USER, GenerateOptions()))
    assert time.monotonic() - started >= 0.1


def test_fault_plans_parse_and_bad_ones_are_refused():
    plan = FaultPlan.parse("crash_after_chunks:3, slow:2.5,load_error")
    assert (plan.crash_after_chunks, plan.slowdown, plan.load_error) == (3, 2.5, True)
    for bad in ("explode", "slow:0", "crash_after_chunks:x"):
        with pytest.raises(ValueError):
            FaultPlan.parse(bad)


def test_crash_fires_on_the_chunk_after_the_planned_count():
    crashed = []
    faults = Faults(FaultPlan(crash_after_chunks=2), crash=lambda: crashed.append(True))
    for _ in range(2):
        run(faults.before_chunk())
    assert not crashed
    run(faults.before_chunk())
    assert crashed == [True]


def test_error_fault_raises_a_model_error():
    faults = Faults(FaultPlan(error_after_chunks=0))
    with pytest.raises(SimulatedFault):
        run(faults.before_chunk())


def test_a_later_session_that_sends_no_config_starts_from_the_defaults_not_the_last_sessions():
    from omnikube.protocol import DuplexConfig

    backend = SimulatedBackend(SimOptions.zero_delay())
    run(backend.duplex_prepare(DuplexSetup("hi", config=DuplexConfig(force_listen_count=0, generate_audio=False))))
    run(backend.duplex_close())
    run(backend.duplex_prepare(DuplexSetup("hi")))
    run(backend.duplex_step(DuplexInput(audio=tone())))
    # The default force_listen_count (3) holds the first answer back: the last session's 0 is gone.
    assert run(backend.duplex_step(DuplexInput(audio=silence()))).is_listen is True


def test_user_speech_interrupts_the_model_mid_answer():
    backend = SimulatedBackend(SimOptions.zero_delay())
    from omnikube.protocol import DuplexConfig

    run(backend.duplex_prepare(DuplexSetup("hi", config=DuplexConfig(force_listen_count=0))))
    run(backend.duplex_step(DuplexInput(audio=tone())))
    assert run(backend.duplex_step(DuplexInput(audio=silence()))).is_listen is False
    assert run(backend.duplex_step(DuplexInput(audio=tone()))).is_listen is True  # barge-in


def test_pcm_round_trip_and_wav_encoding():
    samples = tone(0.25)
    decoded = decode_pcm16k(encode_pcm(samples))
    assert np.array_equal(decoded, samples)
    assert encode_wav(samples)[:4] == b"RIFF"


def test_non_finite_samples_are_refused():
    data = base64.b64encode(np.array([0.0, np.nan], dtype="<f4").tobytes()).decode()
    with pytest.raises(MediaError, match="not float PCM"):
        decode_pcm16k(data)


def test_audio_turns_count_tokens_by_duration():
    backend = SimulatedBackend(SimOptions.zero_delay())
    short = run(backend.stream_prefill([Turn("user", [Audio(tone(1.0))])], GenerateOptions()))
    run(backend.stream_reset())
    long = run(backend.stream_prefill([Turn("user", [Audio(tone(4.0))])], GenerateOptions()))
    assert long > short
