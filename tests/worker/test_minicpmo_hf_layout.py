"""A model directory with only the Hugging Face style class (`modeling_minicpmo.py`): the worker
serves what that class can do and refuses the rest with the reason."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

import httpx
import pytest
from websockets.sync.client import connect

from omnikube_worker.checkpoint import BUILD_MARKER
from omnikube_worker.model_code import UNIFIED_MODULE

from tests.fixtures.processes import WorkerProc, launch_worker
from tests.fixtures.real_model import MODEL_LOAD_DEADLINE_S

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def hf_worker(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WorkerProc]:
    """The tiny checkpoint's files, linked, without the unified class."""
    directory = tmp_path_factory.mktemp("hf-layout")
    model = directory / "model"
    model.mkdir()
    for path in tiny_checkpoint.iterdir():
        if path.name not in (f"{UNIFIED_MODULE}.py", BUILD_MARKER):
            (model / path.name).symlink_to(path)
    worker = launch_worker(directory, backend="minicpmo", args=["--model-path", str(model), "--device", "cpu"],
                           deadline_s=MODEL_LOAD_DEADLINE_S)
    yield worker
    worker.kill()


def test_text_chat_runs_on_the_hugging_face_style_class(hf_worker):
    answer = httpx.post(f"{hf_worker.url}/chat", timeout=120, json={
        "messages": [{"role": "user", "content": "Hello"}], "generation": {"max_new_tokens": 4, "do_sample": False}})
    assert answer.status_code == 200 and answer.json()["success"] is True
    assert answer.json()["text"] and answer.json()["simulated"] is False  # (this class reports no token counts)


def test_a_spoken_reply_is_refused_with_the_reason(hf_worker):
    answer = httpx.post(f"{hf_worker.url}/chat", timeout=120, json={
        "messages": [{"role": "user", "content": "Hello"}], "tts": {"enabled": True}})
    assert answer.status_code == 422 and "modeling_minicpmo_unified.py" in answer.json()["error"]
    assert hf_worker.health()["worker_status"] == "idle"


def test_full_duplex_is_refused_with_the_reason_and_the_session_stays_usable(hf_worker):
    with connect(f"{hf_worker.ws_url}/ws/duplex?session_id=adx_hf", open_timeout=30) as socket:
        socket.send(json.dumps({"type": "prepare"}))
        frame = json.loads(socket.recv(timeout=60))
        assert frame["type"] == "error" and "no full-duplex mode" in frame["error"]
