"""The REST API of a node, served by a child process of the node: process.py spawns worker.py,
which runs httpserver.py, the REST handlers of rest.py behind the limits of guards.py. It
reaches the node only through the node's own ZeroMQ client protocol (forward.py), never its
core or LMDB."""
