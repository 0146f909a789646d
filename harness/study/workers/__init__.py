"""Several workers on one study: the claim loop with its heartbeats, the storage and its lock."""
