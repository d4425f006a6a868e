"""`model.chat_cache: static`: turn-based replies decode with a preallocated KV cache (on a GPU that
lets transformers compile each decoding step once). Seen from inside: the tiny checkpoint loaded in
this process by the minicpmo backend, on the CPU, where nothing is compiled but the static cache is
the one that decodes."""

from __future__ import annotations

import asyncio
from typing import Iterator

import pytest

from omnikube_worker.backend import ChatResult, GenerateOptions, Turn
from omnikube_worker.minicpmo import CHAT_CACHE_TOKENS, MiniCPMoBackend, chat_generation
from omnikube_worker.settings import WorkerSettings

from tests.fixtures.scripted_model import ScriptedHeads

pytestmark = pytest.mark.timeout(600)


@pytest.fixture(scope="module")
def static_backend(tiny_checkpoint) -> MiniCPMoBackend:
    backend = MiniCPMoBackend(WorkerSettings(backend="minicpmo", model_path=str(tiny_checkpoint), device="cpu",
                                             chat_cache="static"))
    backend.load()
    return backend


@pytest.fixture
def scripted(static_backend: MiniCPMoBackend) -> Iterator[MiniCPMoBackend]:
    heads = ScriptedHeads(static_backend.calls.model.processor.tokenizer).install(static_backend.calls.model)
    yield static_backend
    heads.remove()


def reply(backend: MiniCPMoBackend, text: str = "Hello, who are you? Tell me about the weather.",
          **options: object) -> ChatResult:
    options = {"max_new_tokens": 12, "do_sample": False, **options}
    return asyncio.run(backend.chat([Turn("user", [text])], GenerateOptions(**options)))


def test_a_greedy_reply_with_the_static_cache_is_token_for_token_the_dynamic_one(static_backend):
    from transformers.cache_utils import StaticCache

    static = reply(static_backend)
    assert isinstance(static_backend.calls.model.llm._cache, StaticCache)
    calls = static_backend.calls
    calls.chat_generation = chat_generation("dynamic")
    try:
        dynamic = reply(static_backend)
    finally:
        calls.chat_generation = chat_generation("static")
    assert static.generated_tokens == dynamic.generated_tokens == 12
    assert static.text == dynamic.text


def test_the_models_own_input_preparation_is_back_after_a_static_reply(static_backend):
    # Streaming and duplex decode with the model's dynamic cache and its own glue.
    reply(static_backend)
    assert "prepare_inputs_for_generation" in static_backend.calls.model.llm.__dict__
    assert static_backend.calls.model.llm.generation_config.cache_implementation is None


def test_a_spoken_reply_with_the_static_cache_still_speaks(scripted):
    # The TTS speaks from the hidden states of every decoding step, which the static path must keep.
    result = reply(scripted, generate_audio=True)
    assert result.audio is not None and result.audio.size > 24000 * 0.5


def test_replies_of_any_length_decode_in_the_one_cache_reserved_at_load(static_backend):
    # One cache shape for the worker's life: on a GPU the compiled decoding step never recompiles.
    llm = static_backend.calls.model.llm
    reserved = llm._cache
    assert reserved.max_cache_len == CHAT_CACHE_TOKENS
    reply(static_backend, "Hi.", max_new_tokens=2)
    reply(static_backend, "Tell me a long story about the sea, the wind and a small boat. " * 20, max_new_tokens=40)
    assert llm._cache is reserved
