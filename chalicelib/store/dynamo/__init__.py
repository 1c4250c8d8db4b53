"""The DynamoDB adapter of every storage port (PynamoDB models in `store/models.py`)."""

# ---- tasks ----------------------------------------------------------------------------------

# DynamoTasks: `store/dynamo/tasks.py`


# ---- runs, counters, dedupe and concurrency leases (execution) ------------------------------

# DynamoRuns, DynamoStats, DynamoLeases: `store/dynamo/execution.py`


# ---- due fires, shard leases and watermarks (dispatch) --------------------------------------
# In `store/dynamo/dispatch.py`.


# ---- agents, events, idempotency keys (services) --------------------------------------------

# DynamoAgents, DynamoEvents, DynamoKeys: `store/dynamo/services.py`
