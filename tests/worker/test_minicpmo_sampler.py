"""What reaches the model's own TTS sampler, seen from inside: the tiny checkpoint loaded in this
process by the minicpmo backend, heads scripted, and the model code's `tts.generate` wrapped to
record the sampling settings it was called with. (Random vocoder weights make the same waveform
whatever the tokens, so the sampler's input is what a test can check.)"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from omnikube_worker.backend import GenerateOptions, Turn
from omnikube_worker.minicpmo import MiniCPMoBackend
from omnikube_worker.settings import WorkerSettings

from tests.fixtures.scripted_model import ScriptedHeads

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def sampler_calls(tiny_checkpoint) -> tuple[MiniCPMoBackend, list[Any]]:
    backend = MiniCPMoBackend(WorkerSettings(backend="minicpmo", model_path=str(tiny_checkpoint), device="cpu"))
    backend.load()
    model = backend.calls.model
    ScriptedHeads(model.processor.tokenizer, speak_period=4).install(model)
    calls: list[Any] = []
    generate = model.tts.generate

    def recording_generate(*args: Any, **kwargs: Any) -> Any:
        calls.append(kwargs.get("sampling_params"))
        return generate(*args, **kwargs)

    model.tts.generate = recording_generate
    return backend, calls


def speak(sampler_calls, **tts_sampling: Any) -> Any:
    backend, calls = sampler_calls
    calls.clear()
    options = GenerateOptions(max_new_tokens=8, do_sample=False, generate_audio=True, tts_sampling=tts_sampling)
    result = asyncio.run(backend.chat([Turn("user", ["Hello, who are you?"])], options))
    assert result.audio is not None and result.audio.size > 0
    (sampling,) = calls
    return sampling


def test_a_replys_tts_sampling_settings_reach_the_models_speech_sampler(sampler_calls):
    sampling = speak(sampler_calls, top_k=5, top_p=0.5, temperature=0.3, repetition_penalty=1.2)
    assert (sampling.top_k, sampling.top_p, sampling.temperature, sampling.repetition_penalty) == (5, 0.5, 0.3, 1.2)


def test_top_k_0_disables_top_k_instead_of_failing_the_speech(sampler_calls):
    assert speak(sampler_calls, top_k=0).top_k is None  # the model's sampler refuses 0
