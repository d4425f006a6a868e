"""OpenAI's error object, so that OpenAI clients raise their usual typed exceptions.

Every failure of `/v1/chat/completions` and `/v1/models` is answered as

    {"error": {"message": ..., "type": ..., "param": ..., "code": ...}}

with the status code OpenAI uses for it (the `openai` package maps 400, 401, 404, 429 and 5xx to
`BadRequestError`, `AuthenticationError`, `NotFoundError`, `RateLimitError`, `InternalServerError`)
and `Retry-After` where waiting helps.
"""

from __future__ import annotations

import math
from typing import Any

from fastapi.responses import JSONResponse


class OpenAIError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.code = code
        self.param = param
        self.retry_after = retry_after

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def response(self) -> JSONResponse:
        headers = {}
        if self.retry_after is not None:
            headers["Retry-After"] = str(max(1, math.ceil(self.retry_after)))
        if self.status == 401:
            headers["WWW-Authenticate"] = "Bearer"
        return JSONResponse(self.body(), status_code=self.status, headers=headers)


def invalid_request(message: str, *, param: str | None = None, code: str | None = None) -> OpenAIError:
    return OpenAIError(400, message, param=param, code=code)


def unauthorized(message: str = "Missing or invalid API key") -> OpenAIError:
    return OpenAIError(401, message, type="authentication_error", code="invalid_api_key")


def queue_full(message: str, retry_after: float) -> OpenAIError:
    return OpenAIError(429, message, type="rate_limit_error", code="queue_full", retry_after=retry_after)


def unavailable(message: str, *, code: str, retry_after: float | None = None) -> OpenAIError:
    return OpenAIError(503, message, type="server_error", code=code, retry_after=retry_after)


def worker_failed(message: str) -> OpenAIError:
    """The worker's connection broke (crash, unreachable); the model never answered."""
    return OpenAIError(502, message, type="server_error", code="worker_unavailable")


def model_failed(message: str) -> OpenAIError:
    """The worker is alive but its model call failed."""
    return OpenAIError(500, message, type="server_error", code="worker_error")


# The metrics outcome of each refusal, by code (then by status).
_OUTCOME_BY_CODE = {"queue_full": "queue_full", "no_worker_available": "queue_timeout", "cancelled": "cancelled",
                    "worker_unavailable": "worker_failed", "invalid_api_key": "unauthorized"}


def outcome(error: OpenAIError) -> str:
    return _OUTCOME_BY_CODE.get(error.code or "", "bad_request" if error.status < 500 else "worker_error")
