"""Replication: followers copy leaders' logs over the data port, leaders keep the in-sync
replica set and the high watermark (docs/replication.md)."""
