"""Database plumbing: the embedded server, per-process pools, numbered migrations, partitions."""
