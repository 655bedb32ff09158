"""Typed errors a servicer raises; the server scaffold maps them to gRPC status codes.

A servicer never calls ``context.abort`` itself: it raises one of these, and the
error interceptor turns it into the status, the message and (for bad input) the
``livemesh-field`` trailing metadata entry naming the offending field.
"""

from __future__ import annotations

import grpc

FIELD_METADATA_KEY = "livemesh-field"


class ServiceError(Exception):
    """An expected failure with its status code; the message is shown to the caller."""

    code = grpc.StatusCode.UNKNOWN

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class InvalidArgument(ServiceError):
    code = grpc.StatusCode.INVALID_ARGUMENT

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}", field)


class NotFound(ServiceError):
    code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(ServiceError):
    code = grpc.StatusCode.ALREADY_EXISTS


class Unauthenticated(ServiceError):
    code = grpc.StatusCode.UNAUTHENTICATED


class PermissionDenied(ServiceError):
    code = grpc.StatusCode.PERMISSION_DENIED


class FailedPrecondition(ServiceError):
    code = grpc.StatusCode.FAILED_PRECONDITION


class Unavailable(ServiceError):
    code = grpc.StatusCode.UNAVAILABLE
