"""What brokers and clients both read from ZooKeeper: the znode layout (``paths``), the
batched read of a parent's children with their data (``reads``), and the loop that turns
watch events into coalesced re-reads (``refresh``). Nothing here starts a ZooKeeper server or
registers a broker: that is ``annal.broker.coordination``."""
