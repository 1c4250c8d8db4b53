"""The in-memory adapter of every storage port: the same guarantees as DynamoDB (conditional
writes are atomic under one lock), for fast tests of tick, worker and lifecycle logic and for
the scale model. Not for production: nothing is persisted."""

# ---- tasks ----------------------------------------------------------------------------------

# MemoryTasks: `store/memory/tasks.py`


# ---- runs, counters, dedupe and concurrency leases (execution) ------------------------------

# MemoryRuns, MemoryStats, MemoryLeases: `store/memory/execution.py`


# ---- due fires, shard leases and watermarks (dispatch) --------------------------------------
# In `store/memory/dispatch.py`.


# ---- agents, events, idempotency keys (services) --------------------------------------------

# MemoryAgents, MemoryEvents, MemoryKeys: `store/memory/services.py`
