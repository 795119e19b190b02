"""raftkvd: a replicated, strongly consistent key-value store on Raft."""
