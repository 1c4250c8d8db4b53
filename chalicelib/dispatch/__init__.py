"""Dispatch: planning fires, the due table, shard leases, the tick that sends runs to SQS."""
