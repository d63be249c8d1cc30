"""Annal broker: storage engine (``annal.broker.storage``), network servers (``annal.broker.server``),
cluster coordination (``annal.broker.coordination``) and the wire protocol (``annal.protocol``)."""

__version__ = "0.1.0"
