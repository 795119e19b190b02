"""The replicated key-value state: the commands the log carries and the state machine (LMDB)."""
