"""Annal broker: storage engine (``broker.storage``), network servers (``broker.server``),
cluster coordination (``broker.coordination``) and the wire protocol (``broker.protocol``)."""

__version__ = "0.1.0"
