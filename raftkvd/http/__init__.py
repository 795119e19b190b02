"""The REST API of a node: an aiohttp server in its own thread (server.py) that reaches the
node only through the node's own ZeroMQ client protocol (forward.py), never its core or LMDB."""
