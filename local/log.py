"""The local runtime's structured log (JSON lines on stdout, one event each)."""

from __future__ import annotations

from aws_lambda_powertools import Logger

logger = Logger(service="tasks-api-local")
