"""The HTTP/JSON gateway for players and browsers, in front of the gRPC services."""
