-- Closed monthly partitions whose indexes were rebuilt packed (see store.compact_closed_partitions).
CREATE TABLE partition_maintenance (
    name         text PRIMARY KEY,
    compacted_at timestamptz NOT NULL DEFAULT now()
);
