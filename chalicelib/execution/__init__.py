"""Execute: the SQS worker, the step pipeline, the egress guard."""
