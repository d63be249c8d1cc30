"""Annal broker network edges: gRPC servicer, binary data port (fetch/produce), process main."""
