"""Keep moto's DynamoDB atomic per request, as DynamoDB is.

A conditional write is a check-and-set in DynamoDB; moto runs requests on parallel threads
without a lock, so two of them can interleave inside one and both "win". Serialising moto's
DynamoDB handler (one process-wide lock) restores the service's guarantee; moto is bound by
one interpreter lock anyway, so this costs little throughput.

The same lock lets `local.state` see each write's result before the next request runs
(`after_write`) and take a consistent snapshot.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

DYNAMODB_LOCK = threading.RLock()
AfterWrite = Callable[[str, dict[str, Any]], None]
_hooks: list[AfterWrite] = []


def after_write(hook: AfterWrite | None) -> None:
    """Call `hook(action, request)` after every successful DynamoDB request, under the lock
    (None: no hook)."""
    _hooks.clear()
    if hook is not None:
        _hooks.append(hook)


def serialise_dynamodb() -> None:
    import moto.dynamodb.responses as responses

    handler: Any = responses.DynamoHandler
    if getattr(handler, "_serialised", False):
        return
    original = handler.call_action

    def call_action(self: Any) -> Any:
        with DYNAMODB_LOCK:
            result = original(self)
            if _hooks and isinstance(result, tuple) and int(result[0]) < 300:
                for hook in _hooks:
                    hook(str(self._get_action()), dict(self.body or {}))
            return result

    handler.call_action = call_action
    handler._serialised = True
