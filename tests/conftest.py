"""Test environment: fake AWS credentials and a fixed prefix, set before anything imports
chalicelib (the settings are read once; the PynamoDB models take their table names from them on
import, and `store.stores()` points them at another prefix if the settings change)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

for var in (
    "AWS_ENDPOINT_URL",
    "AWS_PROFILE",
    "AWS_SESSION_TOKEN",
    "AWS_ENDPOINT_URL_DYNAMODB",
    "AWS_ENDPOINT_URL_SQS",
):
    os.environ.pop(var, None)
os.environ.update(
    AWS_ACCESS_KEY_ID="testing",
    AWS_SECRET_ACCESS_KEY="testing",
    AWS_DEFAULT_REGION="us-east-1",
    AWS_REGION="us-east-1",
    TASKAPI_PREFIX="test-",
    TASKAPI_ADMIN_TOKEN="admin-token-for-tests-only",
    POWERTOOLS_LOG_LEVEL="WARNING",
    POWERTOOLS_METRICS_DISABLED="true",
)

# No secret in any log line of the whole session (tests/secrets_seen.py): fails the run otherwise.
from tests.secrets_seen import (  # noqa: E402, F401
    CHECKER,
    no_secret_in_any_log_line,
    pytest_runtest_setup,
    pytest_sessionfinish,
    pytest_terminal_summary,
    pytest_testnodedown,
)

# One local stack per test worker, shared by the e2e, clients and browser suites (tests/stack.py).
from tests.stack import local_stack  # noqa: E402, F401

CHECKER.secret("admin token", os.environ["TASKAPI_ADMIN_TOKEN"])


_ENVIRON = os.environ


@pytest.fixture(autouse=True)
def environ_is_the_process_environment() -> Iterator[None]:
    """A test that leaves `os.environ` replaced by a plain dict (chalice's test client does so per
    request, unsafely under threads) would make every later `setenv` invisible to C code such as
    OpenSSL: fail that test, and give the next one the real environment back."""
    yield
    if os.environ is not _ENVIRON:
        os.environ = _ENVIRON  # noqa: B003 - restoring the real mapping, not clearing it
        pytest.fail("os.environ was left replaced by another mapping")


@pytest.fixture(scope="session")
def aws() -> Iterator[None]:
    """In-process AWS (moto `mock_aws`) with the resources from infra/ (prefix `test-`), once per
    test process: the integration suite and the store contract suites share it."""
    import boto3
    from moto import mock_aws

    from local.atomic import serialise_dynamodb

    serialise_dynamodb()
    with mock_aws():
        from infra import stack

        stack.deploy(boto3.client("cloudformation"), "test-")
        stack.complete_for_emulator(boto3.client("dynamodb"), boto3.client("cloudwatch"), "test-")
        yield
