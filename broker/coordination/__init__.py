"""Cluster state behind one interface (``Coordinator``): standalone or ZooKeeper."""

from annal.broker.coordination.base import BrokerInfo, Coordinator, PlacementListener, TopicPlacement

__all__ = ["BrokerInfo", "Coordinator", "PlacementListener", "TopicPlacement"]
