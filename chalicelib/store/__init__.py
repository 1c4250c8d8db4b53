"""Storage: the PynamoDB tables and the run counters."""
