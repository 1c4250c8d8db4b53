"""Table names are configuration: one process can point the DynamoDB stores at two prefixes'
tables, and `stores()` follows the settings when they change."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import boto3
import pytest

from chalicelib.domain.records import Agent, AgentStatus
from chalicelib.platform.config import settings
from chalicelib.store import models, on_dynamodb, stores

OTHER = "other-prefix-"


@pytest.fixture()
def other_agents_table(aws: None, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    ddb = boto3.client("dynamodb")
    spec = ddb.describe_table(TableName="test-agents")["Table"]
    if f"{OTHER}agents" not in ddb.list_tables()["TableNames"]:
        ddb.create_table(
            TableName=f"{OTHER}agents",
            KeySchema=spec["KeySchema"],
            AttributeDefinitions=spec["AttributeDefinitions"],
            BillingMode="PAY_PER_REQUEST",
        )
    yield
    monkeypatch.undo()
    settings.cache_clear()
    models.configure()  # back to the settings' tables for the tests that follow in this process
    assert models.AgentModel.Meta.table_name == "test-agents"


def _agent() -> Agent:
    return Agent(str(uuid.uuid4()), "n", "2027-03-01T12:00:00Z", AgentStatus.ACTIVE, "h", "s")


def _in_table(table: str, agent_id: str) -> bool:
    return "Item" in boto3.client("dynamodb").get_item(TableName=table, Key={"agent_id": {"S": agent_id}})


def test_two_prefixes_in_one_process_hit_different_tables(other_agents_table: None) -> None:
    mine, theirs = _agent(), _agent()
    assert on_dynamodb("test-").agents.put_if_absent(mine)
    assert on_dynamodb(OTHER).agents.put_if_absent(theirs)
    assert _in_table(f"{OTHER}agents", theirs.agent_id) and not _in_table("test-agents", theirs.agent_id)
    assert on_dynamodb("test-").agents.get(theirs.agent_id) is None
    assert on_dynamodb("test-").agents.get(mine.agent_id) == mine
    assert _in_table("test-agents", mine.agent_id) and not _in_table(f"{OTHER}agents", mine.agent_id)


def test_stores_follow_a_changed_prefix(other_agents_table: None, monkeypatch: pytest.MonkeyPatch) -> None:
    a = _agent()
    assert stores().agents.put_if_absent(a)
    assert _in_table("test-agents", a.agent_id)
    monkeypatch.setenv("TASKAPI_PREFIX", OTHER)
    settings.cache_clear()
    b = _agent()
    assert stores().agents.put_if_absent(b)
    assert _in_table(f"{OTHER}agents", b.agent_id) and not _in_table("test-agents", b.agent_id)
    assert stores().agents.get(a.agent_id) is None
