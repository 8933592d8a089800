"""Per-chain ingestion: pure planning, jobs, the worker process."""
