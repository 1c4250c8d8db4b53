"""The contract suites run every storage port against both adapters: DynamoDB (PynamoDB on
moto, with the tables of infra/) and in memory."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from chalicelib.store import Stores, in_memory, on_dynamodb


def _empty_tables() -> None:
    from moto.dynamodb.models import dynamodb_backends

    for table in dynamodb_backends["123456789012"]["us-east-1"].tables.values():
        table.items.clear()


@pytest.fixture(params=["dynamodb", "memory"])
def stores(request: pytest.FixtureRequest) -> Iterator[Stores]:
    if request.param == "memory":
        yield in_memory()
        return
    request.getfixturevalue("aws")
    _empty_tables()
    yield on_dynamodb()
    _empty_tables()
