"""The control plane: gRPC services, the HTTP/JSON gateway and the resilience layer."""
