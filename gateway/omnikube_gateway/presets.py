"""Presets (data.md §5): read-only YAML under `<presets_dir>/<mode>/*.yaml`.

The gateway ships a set of its own (`assets/presets/`, text only: no voice of ours to ship);
`--presets-dir` points at others, for example the demo's `assets/presets` mounted from a ConfigMap
or volume. A relative audio path in a preset is read from the folder that holds `assets/`, the
demo's service root, so its files work unchanged.

`GET /api/presets` lists them per mode with audio replaced by references (name, duration);
`GET /api/presets/{mode}/{preset_id}/audio` returns the audio itself as the workers expect it
(base64 raw float32 16 kHz mono). The listing is built once, off the event loop; audio is decoded
per call, also off the loop. A bad YAML file is logged and skipped.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from pathlib import Path
from typing import Any

import yaml
from fastapi import APIRouter, Depends, HTTPException, Request

from omnikube.audio import AudioDecodeError, decode_audio
from omnikube.protocol import INPUT_SAMPLE_RATE

from .auth import require_api_key

log = logging.getLogger(__name__)
router = APIRouter(dependencies=[Depends(require_api_key)])

def _audio_file(root: Path, path: str) -> Path:
    return Path(path) if Path(path).is_absolute() else root.parent.parent / path


def _audio_ref(root: Path, path: str) -> dict[str, Any]:
    try:
        samples = decode_audio(_audio_file(root, path).read_bytes(), rate=INPUT_SAMPLE_RATE)
        duration = round(samples.size / INPUT_SAMPLE_RATE, 1)
    except (OSError, AudioDecodeError):
        duration = 0
    return {"data": None, "path": path, "name": Path(path).name, "duration": duration}


def _audio_data(root: Path, path: str) -> dict[str, Any]:
    try:
        samples = decode_audio(_audio_file(root, path).read_bytes(), rate=INPUT_SAMPLE_RATE)
    except (OSError, AudioDecodeError):
        return {"data": None, "name": Path(path).name, "duration": 0}
    return {"data": base64.b64encode(samples.astype("<f4").tobytes()).decode(), "name": Path(path).name,
            "duration": round(samples.size / INPUT_SAMPLE_RATE, 1)}


def load_raw(root: Path) -> dict[str, list[dict[str, Any]]]:
    """Presets as written in the YAML files, per mode, sorted by `order` (blocking)."""
    modes: dict[str, list[dict[str, Any]]] = {}
    if not root.is_dir():
        return modes
    for mode_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        presets = []
        for file in sorted([*mode_dir.glob("*.yaml"), *mode_dir.glob("*.yml")]):
            try:
                doc = yaml.safe_load(file.read_text(encoding="utf-8"))
            except (OSError, yaml.YAMLError) as exc:
                log.error("skipping preset %s: %s", file, exc)
                continue
            if isinstance(doc, dict) and doc:
                presets.append(doc)
        presets.sort(key=lambda p: p.get("order", 999) if isinstance(p.get("order"), int) else 999)
        if presets:
            modes[mode_dir.name] = presets
    return modes


def describe(root: Path, raw: dict[str, list[dict[str, Any]]]) -> dict[str, list[dict[str, Any]]]:
    listing: dict[str, list[dict[str, Any]]] = {}
    for mode, presets in raw.items():
        listing[mode] = []
        for preset in presets:
            item = dict(preset)
            if isinstance(item.get("system_content"), list):
                item["system_content"] = [
                    {"type": "audio", **_audio_ref(root, str(c.get("path")))} if isinstance(c, dict) and c.get("type") == "audio" else c
                    for c in item["system_content"]
                ]
            if item.get("ref_audio_path"):
                item["ref_audio"] = _audio_ref(root, str(item.pop("ref_audio_path")))
            listing[mode].append(item)
    return listing


async def _raw(request: Request) -> dict[str, list[dict[str, Any]]]:
    state = request.app.state
    if getattr(state, "presets_raw", None) is None:
        state.presets_raw = await asyncio.to_thread(load_raw, state.settings.presets_dir)
    return state.presets_raw


@router.get("/api/presets")
async def list_presets(request: Request) -> dict:
    state = request.app.state
    if getattr(state, "presets", None) is None:
        state.presets = await asyncio.to_thread(describe, state.settings.presets_dir, await _raw(request))
    return state.presets


@router.get("/api/presets/{mode}/{preset_id}/audio")
async def preset_audio(mode: str, preset_id: str, request: Request) -> dict:
    preset = next((p for p in (await _raw(request)).get(mode, []) if str(p.get("id")) == preset_id), None)
    if preset is None:
        raise HTTPException(404, f"Preset not found: {mode}/{preset_id}")

    root = request.app.state.settings.presets_dir

    def load() -> dict:
        body: dict[str, Any] = {}
        if isinstance(preset.get("system_content"), list):
            body["system_content_audio"] = [_audio_data(root, str(c.get("path"))) for c in preset["system_content"]
                                            if isinstance(c, dict) and c.get("type") == "audio"]
        if preset.get("ref_audio_path"):
            body["ref_audio"] = _audio_data(root, str(preset["ref_audio_path"]))
        return body

    return await asyncio.to_thread(load)
