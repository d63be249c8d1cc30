"""Cluster state behind one interface (``Coordinator``): standalone or ZooKeeper."""

from broker.coordination.base import BrokerInfo, Coordinator, PlacementListener, TopicPlacement

__all__ = ["BrokerInfo", "Coordinator", "PlacementListener", "TopicPlacement"]
