"""Load generator for the WebSocket benchmark, run as its own process (`python -m bench.ws_client`).

Opens one audio full-duplex session per URL, `prepare`s each, waits until every session is ready,
then sends `audio_chunk`s at the protocol's real cadence and size (1 s of 16 kHz float32 mono,
base64, once a second; worker-api.md §5), staggered evenly over the second so load is smooth.
Per message it measures send -> `result` (the worker answers each chunk once, in order). Prints
`measuring` when the window opens, `done` when it closes, then one JSON line with the samples.
Compression is off: the relay's cost is what is measured, not zlib's.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import math
import sys
import time

import numpy as np
import websockets

CHUNK_SAMPLES = 16_000  # 1 s at 16 kHz
OPEN_TIMEOUT_S = 60.0  # connect, wait for a worker, prepare


def audio_chunk_message() -> bytes:
    t = np.arange(CHUNK_SAMPLES, dtype=np.float32) / CHUNK_SAMPLES
    tone = (0.2 * np.sin(2 * math.pi * 220.0 * t)).astype("<f4")
    return json.dumps({"type": "audio_chunk", "audio_base64": base64.b64encode(tone.tobytes()).decode()}).encode()


class Session:
    def __init__(self, url: str, index: int) -> None:
        self.url = url
        self.index = index
        self.ws = None
        self.error: str | None = None
        self.latencies_ms: list[float] = []
        self.late_sends = 0

    async def open(self) -> None:
        self.ws = await websockets.connect(self.url, max_size=128 * 1024 * 1024, compression=None,
                                           open_timeout=60, ping_interval=None)
        await self.ws.send(json.dumps({"type": "prepare", "system_prompt": "You are a helpful assistant."}))
        while True:
            frame = json.loads(await self.ws.recv())
            if frame.get("type") == "prepared":
                return
            if frame.get("type") == "error":
                raise RuntimeError(f"error before prepared: {frame}")

    async def _until_stopped(self) -> None:
        while json.loads(await self.ws.recv()).get("type") != "stopped":
            pass

    async def pump(self, message: bytes, start: float, window: tuple[float, float], cadence: float) -> None:
        """Send a chunk every `cadence` s from `start`; keep latencies of sends inside `window`."""
        k = 0
        while True:
            due = start + k * cadence
            if due >= window[1]:
                break
            now = time.monotonic()
            if due > now:
                await asyncio.sleep(due - now)
            elif now - due > cadence:
                self.late_sends += 1
            sent = time.monotonic()
            await self.ws.send(message, text=True)
            while True:
                frame = json.loads(await self.ws.recv())
                if frame.get("type") == "result":
                    break
                if frame.get("type") == "error":
                    raise RuntimeError(f"error frame: {frame}")
            if window[0] <= sent < window[1]:
                self.latencies_ms.append((time.monotonic() - sent) * 1000)
            k += 1

    async def close(self) -> None:
        """End as a polite client does: `stop`, wait for `stopped`, then close."""
        if self.ws is None:
            return
        try:
            await self.ws.send(json.dumps({"type": "stop"}))
            await asyncio.wait_for(self._until_stopped(), 5)
            await asyncio.wait_for(self.ws.close(), 5)
        except Exception:  # noqa: BLE001 - closing is best effort; the numbers are already in
            pass


async def main(urls: list[str], warmup: float, duration: float, cadence: float, open_concurrency: int) -> dict:
    """Every session open, then the measured window; returns the samples and counts."""
    sessions = [Session(url, i) for i, url in enumerate(urls)]
    gate = asyncio.Semaphore(open_concurrency)

    async def open_one(session: Session) -> None:
        async with gate:
            try:
                await asyncio.wait_for(session.open(), OPEN_TIMEOUT_S)
            except Exception as exc:  # noqa: BLE001 - reported per session
                session.error = f"open: {type(exc).__name__}: {exc}"
                if session.ws is not None:
                    await session.ws.close()

    opened_at = time.monotonic()
    await asyncio.gather(*(open_one(s) for s in sessions))
    open_s = time.monotonic() - opened_at
    ready = [s for s in sessions if s.error is None]
    message = audio_chunk_message()
    start = time.monotonic() + 0.5
    window = (start + warmup, start + warmup + duration)

    async def run_one(session: Session) -> None:
        offset = cadence * session.index / max(1, len(sessions))
        try:
            await session.pump(message, start + offset, window, cadence)
        except Exception as exc:  # noqa: BLE001 - reported per session
            session.error = f"pump: {type(exc).__name__}: {exc}"

    cpu: dict[str, float] = {}

    async def announce() -> None:
        await asyncio.sleep(max(0.0, window[0] - time.monotonic()))
        print("measuring", flush=True)
        cpu["start"] = time.process_time()
        await asyncio.sleep(max(0.0, window[1] - time.monotonic()))
        cpu["end"] = time.process_time()
        print("done", flush=True)

    await asyncio.gather(announce(), *(run_one(s) for s in ready))
    await asyncio.gather(*(s.close() for s in ready))
    errors = [s.error for s in sessions if s.error]
    return {
        "sessions": len(sessions),
        "failed": len(errors),
        "errors": errors[:5],
        "open_s": open_s,
        "late_sends": sum(s.late_sends for s in sessions),
        "client_cpu": (cpu["end"] - cpu["start"]) / duration,
        "latencies_ms": [round(x, 3) for s in sessions for x in s.latencies_ms],
        "message_bytes": len(message),
    }


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--urls", required=True, help="file with one WebSocket URL per line (one session each)")
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--cadence", type=float, default=1.0)
    parser.add_argument("--open-concurrency", type=int, default=50)
    args = parser.parse_args()
    with open(args.urls) as f:
        urls = [line.strip() for line in f if line.strip()]
    try:
        import uvloop  # a cheaper event loop leaves more CPU to what is measured
        runner = uvloop.run
    except ImportError:
        runner = asyncio.run
    result = runner(main(urls, args.warmup, args.duration, args.cadence, args.open_concurrency))
    print("RESULT " + json.dumps(result), flush=True)
    sys.exit(0)


if __name__ == "__main__":
    cli()
