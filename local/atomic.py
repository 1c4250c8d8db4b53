"""Keep moto's DynamoDB atomic per request, as DynamoDB is.

A conditional write is a check-and-set in DynamoDB; moto runs requests on parallel threads
without a lock, so two of them can interleave inside one and both "win". Serialising moto's
DynamoDB handler (one process-wide lock) restores the service's guarantee; moto is bound by
one interpreter lock anyway, so this costs little throughput.
"""

from __future__ import annotations

import threading
from typing import Any


def serialise_dynamodb() -> None:
    import moto.dynamodb.responses as responses

    handler: Any = responses.DynamoHandler
    if getattr(handler, "_serialised", False):
        return
    lock = threading.RLock()
    original = handler.call_action

    def call_action(self: Any) -> Any:
        with lock:
            return original(self)

    handler.call_action = call_action
    handler._serialised = True
