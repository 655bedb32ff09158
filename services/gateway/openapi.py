"""The OpenAPI 3 document of the gateway, made from the route table and the protos."""

from __future__ import annotations

import re
from typing import Any

from google.protobuf.descriptor import Descriptor, FieldDescriptor

from services.gateway.routes import ROUTES, Route

ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["error"],
    "properties": {"error": {
        "type": "object",
        "required": ["code", "status", "message", "requestId"],
        "properties": {
            "code": {"type": "integer", "description": "HTTP status"},
            "status": {"type": "string", "description": "gRPC status name, e.g. INVALID_ARGUMENT"},
            "message": {"type": "string"},
            "field": {"type": "string", "description": "the offending field, for bad input"},
            "requestId": {"type": "string"},
        },
    }},
}
SCALARS: dict[int, dict[str, Any]] = {
    FieldDescriptor.TYPE_STRING: {"type": "string"},
    FieldDescriptor.TYPE_BOOL: {"type": "boolean"},
    FieldDescriptor.TYPE_DOUBLE: {"type": "number"},
    FieldDescriptor.TYPE_FLOAT: {"type": "number"},
    FieldDescriptor.TYPE_INT32: {"type": "integer", "format": "int32"},
    FieldDescriptor.TYPE_INT64: {"type": "string", "format": "int64"},  # proto3 JSON: a string
    FieldDescriptor.TYPE_BYTES: {"type": "string", "format": "byte"},
}
WELL_KNOWN: dict[str, dict[str, Any]] = {
    "google.protobuf.Timestamp": {"type": "string", "format": "date-time"},
    "google.protobuf.FieldMask": {"type": "string", "description": "comma-separated paths"},
}
ERRORS = {"400": "Bad input (field named)", "401": "Missing, forged or expired token",
          "403": "Not the caller's resource, or not entitled", "404": "Not found",
          "429": "Rate limited", "503": "A service is unavailable"}


def _schema_name(descriptor: Descriptor) -> str:
    return descriptor.full_name.removeprefix("livemesh.").replace(".", "_")


def _field_schema(fd: FieldDescriptor, schemas: dict[str, Any]) -> dict[str, Any]:
    if fd.message_type is not None and fd.message_type.GetOptions().map_entry:
        value = fd.message_type.fields_by_name["value"]
        return {"type": "object", "additionalProperties": _field_schema(value, schemas)}
    if fd.type == FieldDescriptor.TYPE_MESSAGE:
        full = fd.message_type.full_name
        item = WELL_KNOWN.get(full) or {"$ref": f"#/components/schemas/"
                                                f"{_add_message(fd.message_type, schemas)}"}
    elif fd.type == FieldDescriptor.TYPE_ENUM:
        item = {"type": "string", "enum": [v.name for v in fd.enum_type.values]}
    else:
        item = dict(SCALARS.get(fd.type, {"type": "string"}))
    is_repeated = getattr(fd, "is_repeated", None)
    repeated = is_repeated if isinstance(is_repeated, bool) else (
        fd.label == FieldDescriptor.LABEL_REPEATED)
    return {"type": "array", "items": item} if repeated else item


def _add_message(descriptor: Descriptor, schemas: dict[str, Any]) -> str:
    name = _schema_name(descriptor)
    if name in schemas:
        return name
    schemas[name] = {}  # placeholder: recursive messages refer to it
    schemas[name] = {
        "type": "object",
        "properties": {fd.json_name: _field_schema(fd, schemas) for fd in descriptor.fields},
    }
    return name


def _operation(route: Route, schemas: dict[str, Any]) -> dict[str, Any]:
    op: dict[str, Any] = {
        "operationId": route.operation_id,
        "summary": route.summary,
        "parameters": [
            {"name": var, "in": "path", "required": True, "schema": {"type": "string"}}
            for var in re.findall(r"{(\w+)}", route.path)
        ] + [
            {"name": param, "in": "query", "required": param == "q",
             "schema": _field_schema(route.request.DESCRIPTOR.fields_by_name[f], schemas)}
            for param, f in route.query.items()
        ],
        "responses": {
            "200": {"description": "OK", "content": {"application/json": {"schema": {
                "$ref": f"#/components/schemas/{_add_message(route.response.DESCRIPTOR, schemas)}"
            }}}},
            **{code: {"description": text, "content": {"application/json": {
                "schema": {"$ref": "#/components/schemas/Error"}}}}
               for code, text in ERRORS.items()},
        },
    }
    if route.body:
        body = route.request.DESCRIPTOR
        if route.body_field:
            body = body.fields_by_name[route.body_field].message_type
        op["requestBody"] = {"required": True, "content": {"application/json": {"schema": {
            "$ref": f"#/components/schemas/{_add_message(body, schemas)}"}}}}
    if route.auth:
        op["security"] = [{"bearer": []}]
    return op


def document(server_url: str = "/") -> dict[str, Any]:
    schemas: dict[str, Any] = {"Error": ERROR_SCHEMA}
    paths: dict[str, dict[str, Any]] = {}
    for route in ROUTES:
        paths.setdefault(route.path, {})[route.method.lower()] = _operation(route, schemas)
    paths["/healthz"] = {"get": {"operationId": "gateway.Health", "summary": "Liveness",
                                 "responses": {"200": {"description": "OK"}}}}
    paths["/readyz"] = {"get": {"operationId": "gateway.Ready",
                                "summary": "Readiness: every service behind answers SERVING",
                                "responses": {"200": {"description": "ready"},
                                              "503": {"description": "not ready"}}}}
    paths["/openapi.json"] = {"get": {"operationId": "gateway.OpenApi",
                                      "summary": "This document",
                                      "responses": {"200": {"description": "OK"}}}}
    return {
        "openapi": "3.0.3",
        "info": {"title": "livemesh gateway", "version": "1.0.0",
                 "description": "HTTP/JSON API for players and browsers. Bodies follow the "
                                "proto3 JSON mapping of the livemesh protos (camelCase)."},
        "servers": [{"url": server_url}],
        "paths": paths,
        "components": {
            "schemas": dict(sorted(schemas.items())),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                                           "bearerFormat": "JWT"}},
        },
    }
