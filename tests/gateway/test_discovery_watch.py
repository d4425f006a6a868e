"""The pod watch's own logic against a scripted API server: relist on 410 Gone, back off and keep the
known workers on network errors, apply every kind of pod change. (The real API server is exercised
in test_discovery.py.)"""

from __future__ import annotations

import asyncio
import json

import httpx

from omnikube import labels
from omnikube_gateway import discovery
from omnikube_gateway.discovery import PodWatcher
from omnikube_gateway.kube import KubeAuth
from omnikube_gateway.registry import WorkerRegistry
from tests.fixtures.gateway import until


def pod(name: str, *, ready: bool = True, ip: str | None = "10.0.0.5", index: int = 0, drain: bool = False,
        port: int | None = None, deleting: bool = False, rv: str = "1") -> dict:
    annotations = {labels.DRAIN: "true"} if drain else {}
    if port is not None:
        annotations[labels.WORKER_PORT] = str(port)
    meta = {"name": name, "resourceVersion": rv, "labels": {labels.WORKER_INDEX: str(index)}, "annotations": annotations}
    if deleting:
        meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    status = {"conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}
    if ip:
        status["podIP"] = ip
    return {"metadata": meta, "status": status}


class ScriptedApi:
    """Answers list and watch calls from a script; each watch call pops the next scripted stream."""

    def __init__(self, lists: list, watches: list):
        self.lists, self.watches = lists, watches
        self.calls: list[str] = []

    async def handler(self, request: httpx.Request) -> httpx.Response:
        watch = request.url.params.get("watch") == "1"
        self.calls.append(("watch@" + request.url.params["resourceVersion"]) if watch else "list")
        assert request.url.params["labelSelector"] == "sel"
        script = (self.watches if watch else self.lists).pop(0) if (self.watches if watch else self.lists) else None
        if script is None:
            await asyncio.Event().wait()  # nothing more scripted: hang like an idle watch
        if isinstance(script, Exception):
            raise script
        if not watch:
            if isinstance(script, int):
                return httpx.Response(script, json={"message": "boom"})
            return httpx.Response(200, json={"metadata": {"resourceVersion": script[0]}, "items": script[1]})

        async def stream():
            for event in script:
                yield (json.dumps(event) + "\n").encode()
        return httpx.Response(200, content=stream())


async def run(api: ScriptedApi) -> tuple[PodWatcher, WorkerRegistry]:
    registry = WorkerRegistry()
    watcher = PodWatcher(registry, KubeAuth("http://api", False), namespace="ns", selector="sel", base_port=22400)
    watcher.start(httpx.AsyncClient(transport=httpx.MockTransport(api.handler), base_url="http://api"))
    return watcher, registry


async def test_ready_pods_with_an_ip_become_workers_on_the_index_port_or_the_annotated_one():
    api = ScriptedApi([("5", [pod("a", index=2), pod("b", port=9000), pod("c", ip=None)])], [])
    watcher, registry = await run(api)
    try:
        await until(watcher.synced.is_set, "first list")
        assert registry.get("a").port == 22402 and registry.get("b").port == 9000
        assert registry.get("c") is None  # no IP yet
    finally:
        await watcher.stop()


async def test_watch_events_mark_not_ready_terminating_drained_and_deleted_pods():
    events = [
        {"type": "MODIFIED", "object": pod("a", ready=False, rv="6")},
        {"type": "MODIFIED", "object": pod("b", deleting=True, rv="7")},
        {"type": "MODIFIED", "object": pod("c", drain=True, rv="8")},
        {"type": "DELETED", "object": pod("d", rv="9")},
        {"type": "ADDED", "object": pod("e", rv="10")},
    ]
    api = ScriptedApi([("5", [pod(n) for n in "abcd"])], [events])
    watcher, registry = await run(api)
    try:
        await until(lambda: registry.get("e") is not None, "the last event")
        assert not registry.get("a").ready and not registry.get("b").ready
        assert registry.get("c").draining and registry.get("c").ready
        assert registry.get("d") is None
    finally:
        await watcher.stop()


async def test_an_expired_watch_relists_and_drops_pods_that_vanished_meanwhile():
    gone = {"type": "ERROR", "object": {"kind": "Status", "code": 410, "message": "too old resource version"}}
    api = ScriptedApi([("5", [pod("a")]), ("20", [pod("b")])], [[gone]])
    watcher, registry = await run(api)
    try:
        await until(lambda: registry.get("b") is not None, "the relist")
        assert registry.get("a") is None
        await until(lambda: "watch@20" in api.calls, "a watch from the new version")
    finally:
        await watcher.stop()


async def test_network_errors_back_off_and_keep_the_last_known_workers(monkeypatch):
    monkeypatch.setattr(discovery, "BACKOFF_START_S", 0.01)
    api = ScriptedApi([("5", [pod("a")]), 500, ("30", [pod("a"), pod("b")])],
                      [httpx.ConnectError("api server restarting")])
    watcher, registry = await run(api)
    try:
        await until(lambda: api.calls[:2] == ["list", "watch@5"], "the failed watch")
        assert registry.get("a") is not None  # kept while the API is away
        await until(lambda: registry.get("b") is not None, "recovery after the 500")
        assert api.calls[:4] == ["list", "watch@5", "list", "list"]
    finally:
        await watcher.stop()
