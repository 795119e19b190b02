"""A raftkvd node with the chaos suite's seams passed in (no test switch lives in raftkvd itself).

    python tests/chaos/node_main.py --raft-bind tcp://HOST:PORT [--raft-source IP]
        [--unsafe-local-reads] run ...

`--raft-bind`: the node's Raft ROUTER binds there, behind the fault proxy, while its peers
keep dialing its `raft` address (the proxy's front). `--raft-source`: the node dials its peers
from this local address, by which the proxy knows which link a connection is (faultproxy.py).
`--unsafe-local-reads`: a deliberately
broken read path that serves linearizable reads from the leader's own state without a
ReadIndex round, whose stale reads the chaos checker must catch (its own test only).
"""

from __future__ import annotations

import argparse
import functools
import logging
import sys

from raftkvd.cli import main
from raftkvd.net.clientendpoint import Request
from raftkvd.server.node import Node
from raftkvd.server.reads import Reads

log = logging.getLogger("tests.chaos.node_main")


class UnsafeLocalReads(Reads):
    """UNSAFE: a leader cut off from its quorum keeps answering from a stale state."""

    def linearizable(self, request: Request) -> None:
        self.serve(request)


def run(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="node_main.py", add_help=False)
    parser.add_argument("--raft-bind", required=True)
    parser.add_argument("--raft-source")
    parser.add_argument("--unsafe-local-reads", action="store_true")
    args, rest = parser.parse_known_args(argv)
    reads = UnsafeLocalReads if args.unsafe_local_reads else Reads
    if args.unsafe_local_reads:
        logging.basicConfig(stream=sys.stderr)
        log.warning("event=test_hook UNSAFE: linearizable reads are served without ReadIndex and "
                    "may be stale; for the chaos checker's own test only")
    main(rest, node_factory=functools.partial(Node, raft_bind=args.raft_bind, raft_source=args.raft_source,
                                              reads=reads))


if __name__ == "__main__":
    run(sys.argv[1:])
