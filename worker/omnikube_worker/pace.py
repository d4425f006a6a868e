"""How long this worker's generations take: a chat's time as a fixed part plus a part per token.

Every completed chat (`POST /chat` and `/ws/chat`) adds its measured time and generated-token count;
a least-squares line through them, recent chats weighing more (`DECAY` per chat), gives
`overhead_ms` (set-up, media decoding, prefill) and `ms_per_token` (decoding). `/health` reports
both, and the gateway turns a request's `max_new_tokens` into the longest it should hold a worker.
With all chats of one length the line is not determined: all of the time is then put on the tokens.
"""

from __future__ import annotations

DECAY = 0.98  # weight of the previous chats at each new one: about the last 50 count


class GenerationPace:
    def __init__(self) -> None:
        self._n = self._x = self._y = self._xx = self._xy = 0.0

    def add(self, duration_ms: float, tokens: int) -> None:
        if tokens <= 0 or not duration_ms >= 0:
            return
        n, x, y = self._n * DECAY, self._x * DECAY, self._y * DECAY
        self._n, self._x, self._y = n + 1, x + tokens, y + duration_ms
        self._xx = self._xx * DECAY + tokens * tokens
        self._xy = self._xy * DECAY + tokens * duration_ms

    def fit(self) -> tuple[float, float] | None:
        """(overhead_ms, ms_per_token), or None before the first chat."""
        if self._n == 0:
            return None
        mean_x, mean_y = self._x / self._n, self._y / self._n
        spread = self._xx / self._n - mean_x * mean_x
        if spread > 1e-6 * max(1.0, mean_x * mean_x):
            slope = (self._xy / self._n - mean_x * mean_y) / spread
            if slope > 0 and mean_y - slope * mean_x >= 0:
                return mean_y - slope * mean_x, slope
        return 0.0, mean_y / mean_x
