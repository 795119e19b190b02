"""What crosses a socket: peer links and their frames, the client endpoint, the status fetch."""
