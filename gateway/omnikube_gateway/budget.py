"""A chat request's token budget as the gateway reads it, for the ETA (eta.py, "Token budgets").

The gateway never validates a chat request (the worker does); it only looks for
`generation.max_new_tokens`, taking the worker's default when the request leaves it out, in
requests small enough to parse on the event loop. Anything else gives no budget: the ETA then
falls back to the type's durations alone.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from omnikube.protocol import NotAJsonObject, loads_object

PARSE_LIMIT = 65536  # larger requests carry media; parsing them on the event loop would stall it


def requested_tokens(request: Any, generation: type[BaseModel]) -> int | None:
    """`max_new_tokens` of a parsed request whose `generation` section is `generation`."""
    if not isinstance(request, dict):
        return None
    section = request.get("generation", {})
    if not isinstance(section, dict):
        return None
    value = section.get("max_new_tokens", generation.model_fields["max_new_tokens"].default)
    return value if type(value) is int and value > 0 else None


def frame_tokens(frame: str | bytes, generation: type[BaseModel]) -> int | None:
    """The same for a request frame not parsed yet (e.g. `/ws/chat`'s first message)."""
    if len(frame) >= PARSE_LIMIT:
        return None
    try:
        return requested_tokens(loads_object(frame), generation)
    except NotAJsonObject:  # also nested too deeply: the worker answers it with an error frame
        return None
