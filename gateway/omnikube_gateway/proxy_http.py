"""`POST /api/chat`: one-shot chat relayed to a worker's `POST /chat`.

Wire-compatible with the original (same body, the worker's JSON plus `queue_wait_ms` and
`estimated_queue_wait_s`), with these fixes: worker errors keep their HTTP status instead of
turning into 200; an unparseable body is 400, not 500; a full queue is 503 with `Retry-After`;
a client that leaves while queued frees its place at once (not within 2 s); a worker that refuses
the connection (refused, or no connection within 3 s) is taken out of rotation and the request is
retried on another worker (the engine's `ATTEMPTS`); a worker that answers 429 because another
session holds it (another gateway replica's) is marked busy and the request moves on to another
worker or back into the queue. A kept-alive connection that the worker closed just as it was
reused (closed before any byte of the answer) is retried once on a fresh connection before the
worker is judged failed: a one-shot chat has no side effect to repeat. The worker is reached
through the worker's lean `http1.Pool` (see `upstream`), not httpx: that is most of the CPU saved.

The worker's answer is not parsed: the two fields are spliced into the JSON object's bytes, so a
response carrying megabytes of base64 audio costs no JSON work on the event loop.

On the gateway's own server, `http_server.ChatProtocol` calls `chat` (and its auth dependency)
directly from the HTTP protocol, without the ASGI stack; the route below serves every other way in
(an ASGI test client, a pipelined request) and stays registered for the OpenAPI schema.
"""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response

from omnikube.protocol import GenerationConfig, NotAJsonObject, TaskType, loads_object

from . import http1, metrics
from .apps import disabled_reason
from .auth import require_api_key
from .budget import PARSE_LIMIT, requested_tokens
from .client_session import ATTEMPTS, QUEUE_REFUSALS, refusal_for, wait_disconnect
from .dispatch import Lease
from .storage import read_limited

router = APIRouter()

CHAT_BODY_LIMIT = 128 * 1024 * 1024  # matches the WebSocket frame limit: base64 video fits


def error(status: int, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status, headers=headers)


@router.post("/api/chat", dependencies=[Depends(require_api_key)])
async def chat(request: Request) -> Response:
    if not request.app.state.apps.enabled("turnbased"):
        return error(403, disabled_reason("turnbased"))
    body = await read_limited(request, CHAT_BODY_LIMIT, "Chat request")
    if not body.lstrip().startswith(b"{"):
        metrics.REQUESTS.labels(TaskType.chat.value, "bad_request").inc()
        return error(400, "Request body must be a JSON object")
    tokens = None
    if len(body) < PARSE_LIMIT:  # large bodies are the worker's to validate; parsing them here would block
        try:
            parsed = loads_object(body)
        except NotAJsonObject:
            metrics.REQUESTS.labels(TaskType.chat.value, "bad_request").inc()
            return error(400, "Request body must be a JSON object")
        tokens = requested_tokens(parsed, GenerationConfig)
    if request.app.state.dispatcher.can_dispatch_now():
        # The common case needs no watch for a client leaving while queued: it will not queue.
        return await _serve(request, body, {"queued": False}, tokens)
    phase = {"queued": True}
    served = asyncio.ensure_future(_serve(request, body, phase, tokens))
    gone = asyncio.ensure_future(wait_disconnect(request))
    try:
        done, _ = await asyncio.wait({served, gone}, return_when=asyncio.FIRST_COMPLETED)
        if served in done:
            return served.result()
        if phase["queued"]:
            served.cancel()  # the client left while waiting: give its place up now
            await asyncio.gather(served, return_exceptions=True)
            return Response(status_code=499)
        # Once a worker is running the request, let it finish (the worker cannot be stopped
        # mid-inference anyway) so that the worker is released only when it is really free.
        return await served
    finally:
        gone.cancel()


async def _serve(request: Request, body: bytes, phase: dict, tokens: int | None) -> Response:
    state = request.app.state
    for _ in range(ATTEMPTS):
        try:
            async with state.dispatcher.lease(TaskType.chat, max_new_tokens=tokens) as lease:
                phase["queued"] = False
                response = await _call_worker(state, lease, body)
                if response is not None:
                    return response
                phase["queued"] = True
        except QUEUE_REFUSALS as exc:
            refusal = refusal_for(exc)
            retry = {"Retry-After": str(int(refusal.retry_after_s))} if refusal.retry_after_s else None
            return error(503, refusal.message, retry)
    return error(502, "No worker could be reached (each one tried was taken out of rotation or busy)")


async def _call_worker(state, lease: Lease, body: bytes) -> Response | None:
    """The worker's answer, or None when the connection failed before the request was sent or the
    worker was taken (the request is then tried elsewhere)."""
    pool = state.worker_clients.pool(lease.worker_id, lease.http_url)
    try:
        upstream = await pool.request("POST", "/chat", body, timeout=state.settings.request_timeout)
    except http1.ConnectFailed as exc:
        lease.fail(f"connect: {exc}")
        return None
    except http1.UpstreamTimeout:
        lease.worker_error()
        return error(504, f"Worker {lease.worker_id} did not answer within {state.settings.request_timeout:g} s")
    except http1.ResponseTooLarge as exc:
        lease.worker_error()
        return error(502, f"Worker {lease.worker_id} failed: {exc}")
    except http1.UpstreamError as exc:
        lease.fail(str(exc))
        return error(502, f"Worker {lease.worker_id} failed: {exc}")
    if upstream.status == 429:
        lease.refused(f"POST /chat answered 429: {upstream.body[:120]!r}")
        return None
    content = upstream.body.rstrip()
    if not (content.startswith(b"{") and content.endswith(b"}")):
        lease.worker_error()
        return error(502, f"Worker {lease.worker_id} returned a non-JSON answer (HTTP {upstream.status})")
    if upstream.status != 200 or b'"success":false' in content or b'"success": false' in content:
        lease.worker_error()
    extra = f'"queue_wait_ms":{round(lease.queue_wait_s * 1000)},"estimated_queue_wait_s":{round(lease.estimated_wait_s, 1)}'
    separator = b"" if content[1:-1].strip() == b"" else b","
    spliced = content[:-1] + separator + extra.encode() + b"}"
    return Response(spliced, status_code=upstream.status, media_type="application/json")
