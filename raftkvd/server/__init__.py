"""One node: the loop that owns time and sockets (node.py) around its replica, the driver of
the core and the request handlers, behind Protocol seams (seams.py)."""
