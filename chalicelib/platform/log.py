"""Structured JSON logs (Powertools Logger): one event per line, correlation ids appended."""

from __future__ import annotations

from aws_lambda_powertools import Logger

logger = Logger(service="tasks-api")
