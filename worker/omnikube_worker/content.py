"""Wire messages -> backend turns, decoding every media item (and failing clearly on bad ones).

`POST /chat` arrives pydantic-validated (`omnikube.protocol.Message`). `/ws/chat`, half duplex and
legacy streaming accept items leniently, as the original does: unknown item types and empty items
are dropped, and a message left with nothing is dropped too. Bad media fails in both modes.
"""

from __future__ import annotations

from typing import Any, Iterable

from omnikube.protocol import AudioItem, ImageItem, Message, TextItem, VideoItem

from .backend import Audio, Image, Part, Turn, Video
from .media import MediaError, decode_image, decode_pcm16k, decode_video

ROLES = ("system", "user", "assistant")


def turns_from_messages(messages: Iterable[Message]) -> list[Turn]:
    """Validated messages (POST /chat) -> turns."""
    turns = []
    for index, message in enumerate(messages):
        items = [TextItem(type="text", text=message.content)] if isinstance(message.content, str) else message.content
        parts = [_decode_item(item, f"messages[{index}].content[{n}]") for n, item in enumerate(items)]
        turns.append(Turn(role=message.role, parts=parts))
    return turns


def turns_from_lenient(messages: Any) -> list[Turn]:
    """Raw message dicts (/ws/chat, /ws/streaming) -> turns, dropping empty and unknown items."""
    if not isinstance(messages, list):
        raise MediaError("messages: expected a list of {role, content} objects")
    turns = []
    for index, message in enumerate(messages):
        if not isinstance(message, dict):
            raise MediaError(f"messages[{index}]: expected an object with role and content")
        role = message.get("role")
        if role not in ROLES:
            raise MediaError(f"messages[{index}].role: {role!r} is not one of {', '.join(ROLES)}")
        parts = parts_from_lenient(message.get("content"), f"messages[{index}].content")
        if parts:
            turns.append(Turn(role=role, parts=parts))
    return turns


def parts_from_lenient(content: Any, where: str) -> list[Part]:
    if isinstance(content, str):
        return [content] if content else []
    if not isinstance(content, list):
        return []
    parts: list[Part] = []
    for n, item in enumerate(content):
        if not isinstance(item, dict) or not (item.get("text") or item.get("data")):
            continue
        model = _LENIENT_ITEMS.get(item.get("type"))
        if model is None:
            continue
        try:
            parsed = model.model_validate(item)
        except ValueError as exc:
            raise MediaError(f"{where}[{n}]: {_first_error(exc)}") from exc
        parts.append(_decode_item(parsed, f"{where}[{n}]"))
    return parts


_LENIENT_ITEMS = {"text": TextItem, "image": ImageItem, "audio": AudioItem, "video": VideoItem}


def _decode_item(item: TextItem | ImageItem | AudioItem | VideoItem, where: str) -> Part:
    if isinstance(item, TextItem):
        return item.text
    if isinstance(item, AudioItem):
        return Audio(decode_pcm16k(item.data, where))
    if isinstance(item, ImageItem):
        return Image(decode_image(item.data, where))
    return Video(decode_video(item.data, where), stack_frames=item.stack_frames)


def _first_error(exc: Exception) -> str:
    errors = getattr(exc, "errors", None)
    if callable(errors):
        first = errors()[0]
        loc = ".".join(str(p) for p in first.get("loc", ()))
        return f"{loc}: {first.get('msg')}" if loc else str(first.get("msg"))
    return str(exc)
