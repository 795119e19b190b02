"""The client protocol of raftkv, shared by the daemon (raftkvd) and the client (raftctl).

protocol.py names the operations, answer codes and limits; frames.py encodes one request or
answer as a frame; routing.py is the client core that follows the leader. Neither side
imports the other's internals: both import this.
"""
