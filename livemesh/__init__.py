"""Generated: the livemesh API, made from ``protos/`` by ``make protos``. Do not edit.

``livemesh.<domain>.v1`` holds the messages (``*_pb2``), their types (``*.pyi``) and the
gRPC stubs (``*_pb2_grpc``) of ``protos/livemesh/<domain>/v1/*.proto``.
"""
