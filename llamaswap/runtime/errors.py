"""Errors: llama-swap's JSON error envelope, built from an HTTP status. Pure.

`{"src": "llama-swap", "error": {"message", "type", "param": null, "code"}}`: OpenAI-style,
so clients that read body["error"]["message"] work, and `src` tells that the proxy (not an
upstream server) produced it.
"""

from __future__ import annotations

import json

_BY_STATUS = {
    400: ("invalid_request_error", "bad_request"),
    401: ("authentication_error", "unauthorized"),
    403: ("authentication_error", "forbidden"),
    404: ("invalid_request_error", "not_found"),
    409: ("invalid_request_error", "conflict"),
    429: ("rate_limit_error", "rate_limit_exceeded"),
    502: ("server_error", "bad_gateway"),
    503: ("server_error", "service_unavailable"),
    504: ("server_error", "gateway_timeout"),
}


def error_type(status: int) -> tuple[str, str]:
    """(OpenAI error type, default code) for an HTTP status."""
    if status in _BY_STATUS:
        return _BY_STATUS[status]
    if 400 <= status < 500:
        return "invalid_request_error", "invalid_request"
    return "server_error", "internal_error"


def envelope(status: int, message: str, code: str | None = None) -> dict:
    etype, default_code = error_type(status)
    return {
        "src": "llama-swap",
        "error": {"message": message, "type": etype, "param": None, "code": code or default_code},
    }


def envelope_bytes(status: int, message: str, code: str | None = None) -> bytes:
    return json.dumps(envelope(status, message, code), separators=(",", ":")).encode()
