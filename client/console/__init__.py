"""Console tools: ``annal topics``, ``annal produce`` and ``annal consume`` (Kafka's
kafka-topics.sh, kafka-console-producer.sh and kafka-console-consumer.sh).

Each module exposes ``configure_parser(parser)`` and ``run(args) -> int`` for the ``annal``
dispatcher (``broker/cli.py``), and ``main(argv=None) -> int`` to run on its own.
"""
