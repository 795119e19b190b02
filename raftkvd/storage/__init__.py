"""Durable state: one LMDB environment and the Raft log kept in it."""
