"""What the gateway reads of a chat request for the ETA: its max_new_tokens, or the worker's default."""

from __future__ import annotations

import json

from omnikube.protocol import GenerationConfig, WsChatGeneration
from omnikube_gateway.budget import PARSE_LIMIT, frame_tokens, requested_tokens


def test_a_request_s_own_max_new_tokens_is_its_budget():
    assert requested_tokens({"messages": [], "generation": {"max_new_tokens": 40}}, GenerationConfig) == 40


def test_a_request_without_one_gets_the_default_of_its_endpoint():
    assert requested_tokens({"messages": []}, GenerationConfig) == GenerationConfig().max_new_tokens
    assert frame_tokens(json.dumps({"messages": []}), WsChatGeneration) == WsChatGeneration().max_new_tokens


def test_malformed_or_oversized_requests_give_no_budget():
    for request in ([], {"generation": []}, {"generation": {"max_new_tokens": "9"}}, {"generation": {"max_new_tokens": 0}},
                    {"generation": {"max_new_tokens": True}}):
        assert requested_tokens(request, GenerationConfig) is None
    assert frame_tokens("not json", WsChatGeneration) is None
    assert frame_tokens(json.dumps({"pad": "x" * PARSE_LIMIT}), WsChatGeneration) is None
