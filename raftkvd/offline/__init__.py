"""Tools that work on a stopped node's data dir: restore from a backup, disaster recovery."""
