"""The worker's measure of its own generation pace: a chat's time = overhead + ms per token x tokens."""

from __future__ import annotations

import pytest

from omnikube_worker.pace import GenerationPace
from omnikube_worker.settings import SimOptions


def test_chats_of_several_lengths_give_their_overhead_and_per_token_time():
    pace = GenerationPace()
    for tokens in (4, 10, 26, 7, 18):
        pace.add(120.0 + 40.0 * tokens, tokens)
    overhead, per_token = pace.fit()
    assert overhead == pytest.approx(120.0) and per_token == pytest.approx(40.0)


def test_chats_all_of_one_length_put_the_whole_time_on_the_tokens():
    pace = GenerationPace()
    for _ in range(3):
        pace.add(500.0, 10)
    assert pace.fit() == (0.0, pytest.approx(50.0))


def test_nothing_is_reported_before_a_chat_and_empty_answers_do_not_count():
    pace = GenerationPace()
    assert pace.fit() is None
    pace.add(300.0, 0)
    assert pace.fit() is None


def test_health_reports_the_pace_the_worker_measured_on_its_chats(worker_client):
    client = worker_client(sim=SimOptions.zero_delay(prefill_ms=20.0, tokens_per_s=200.0))
    assert client.get("/health").json()["ms_per_token"] is None
    for tokens in (2, 8):
        assert client.post("/chat", json={"messages": [{"role": "user", "content": "tell me a long story please"}],
                                          "generation": {"max_new_tokens": tokens}}).status_code == 200
    health = client.get("/health").json()
    assert health["ms_per_token"] >= 5.0 * 0.9  # 200 tokens/s is 5 ms each; the worker's time only adds to it
    assert health["generation_overhead_ms"] >= 0.0
