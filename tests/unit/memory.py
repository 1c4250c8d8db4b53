"""The in-memory world the fast tests run in: the memory stores, the memory run queues and a
test clock installed for the body of a `with`, and the configured ones back afterwards."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from chalicelib import store
from chalicelib.dispatch import queue
from chalicelib.platform import wiring
from chalicelib.store import Stores


@contextmanager
def installed(stores: Stores, queues: queue.MemoryRunQueues, clock: Callable[[], float]) -> Iterator[None]:
    store.use(stores)
    queue.use(queues)
    wiring.set_clock(clock)
    try:
        yield
    finally:
        store.use(None)
        queue.use(None)
        wiring.reset()
