"""Wire protocol: generated gRPC/protobuf modules (``annal_pb2``, ``annal_pb2_grpc``, made by
``proto/generate.py``) and the sans-I/O framing of the binary data port (``framing``)."""
