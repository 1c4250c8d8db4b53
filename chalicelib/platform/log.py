"""Structured JSON logs (Powertools Logger): one event per line, correlation ids appended."""

from __future__ import annotations

import traceback

from aws_lambda_powertools import Logger

logger = Logger(service="tasks-api")


def failure(exc: BaseException) -> dict[str, object]:
    """Where an unexpected exception came from, for a log line: its type and the frames
    (file, line, function), never its message or local values, which may quote a header, a
    token or a target's response."""
    frames = traceback.extract_tb(exc.__traceback__)[-8:]
    return {
        "error_type": type(exc).__name__,
        "trace": [f"{f.filename.rsplit('/', 2)[-1]}:{f.lineno} in {f.name}" for f in frames],
    }
