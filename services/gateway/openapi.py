"""The OpenAPI 3 document of the gateway, made from the route table and the protos."""

from __future__ import annotations

import re
from typing import Any

from google.protobuf.descriptor import Descriptor, FieldDescriptor

from services.gateway import webapp
from services.gateway.routes import ROUTES, Route

ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "status", "message", "requestId"],
            "properties": {
                "code": {"type": "integer", "description": "HTTP status"},
                "status": {
                    "type": "string",
                    "description": "gRPC status name, e.g. INVALID_ARGUMENT",
                },
                "message": {"type": "string"},
                "field": {"type": "string", "description": "the offending field, for bad input"},
                "requestId": {"type": "string"},
                "retryAfterMs": {
                    "type": "integer",
                    "minimum": 1,
                    "description": "on 429 and 503: milliseconds to wait before trying "
                    "again (jittered by the server: honour it as given; Retry-After carries "
                    "it in whole seconds, rounded up)",
                },
            },
        }
    },
}
HEALTH_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["status"],
    "properties": {"status": {"type": "string", "enum": ["ok"]}},
}
READY_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["ready", "services"],
    "properties": {
        "ready": {"type": "boolean"},
        "services": {
            "type": "object",
            "description": "service -> its health status, e.g. SERVING, UNAVAILABLE",
            "additionalProperties": {"type": "string"},
        },
    },
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
ERRORS = {
    "400": "Bad input (field named)",
    "401": "Missing, forged or expired token",
    "403": "Not the caller's resource, or not entitled",
    "404": "Not found",
    "409": "Already exists, or a conflicting change",
    "429": "Rate limited",
    "503": "A service is unavailable",
    "504": "A service did not answer in time",
}
BODY_ERRORS = {
    "413": "Body larger than the gateway accepts (the message names the limit)",
    "415": "Body sent as a media type other than JSON",
}
RATE_LIMITED = {"429": ERRORS["429"]}
UPLOAD_PATH = "/v1/vodUploads"
UPLOADED_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["sourceObject", "sizeBytes"],
    "properties": {
        "sourceObject": {
            "type": "string",
            "description": "the source's object name, for POST /v1/vodPublications",
        },
        "sizeBytes": {"type": "string", "format": "int64"},
    },
}


def _schema_name(descriptor: Descriptor) -> str:
    return descriptor.full_name.removeprefix("livemesh.").replace(".", "_")


def _field_schema(fd: FieldDescriptor, schemas: dict[str, Any]) -> dict[str, Any]:
    if fd.message_type is not None and fd.message_type.GetOptions().map_entry:
        value = fd.message_type.fields_by_name["value"]
        return {"type": "object", "additionalProperties": _field_schema(value, schemas)}
    if fd.type == FieldDescriptor.TYPE_MESSAGE:
        full = fd.message_type.full_name
        item = WELL_KNOWN.get(full) or {
            "$ref": f"#/components/schemas/{_add_message(fd.message_type, schemas)}"
        }
    elif fd.type == FieldDescriptor.TYPE_ENUM:
        item = {"type": "string", "enum": [v.name for v in fd.enum_type.values]}
    else:
        item = dict(SCALARS.get(fd.type, {"type": "string"}))
    is_repeated = getattr(fd, "is_repeated", None)
    repeated = (
        is_repeated
        if isinstance(is_repeated, bool)
        else (fd.label == FieldDescriptor.LABEL_REPEATED)
    )
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


def _errors(described: dict[str, str]) -> dict[str, Any]:
    error = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
    return {
        code: {"description": text, "content": error} for code, text in sorted(described.items())
    }


def _json(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _operation(route: Route, schemas: dict[str, Any]) -> dict[str, Any]:
    response_schema = _add_message(route.response.DESCRIPTOR, schemas)
    op: dict[str, Any] = {
        "operationId": route.operation_id,
        "summary": route.summary,
        "parameters": [
            {"name": var, "in": "path", "required": True, "schema": {"type": "string"}}
            for var in re.findall(r"{(\w+)}", route.path)
        ]
        + [
            {
                "name": param,
                "in": "query",
                "required": param == "q",
                "schema": _field_schema(route.request.DESCRIPTOR.fields_by_name[f], schemas),
            }
            for param, f in route.query.items()
        ],
        "responses": {
            "200": {
                "description": "OK",
                "content": {
                    "application/json": {
                        "schema": {"$ref": f"#/components/schemas/{response_schema}"}
                    }
                },
            },
            **_errors(ERRORS | (BODY_ERRORS if route.body else {})),
        },
    }
    if route.body:
        body = route.request.DESCRIPTOR
        if route.body_field:
            body = body.fields_by_name[route.body_field].message_type
        op["requestBody"] = {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {"$ref": f"#/components/schemas/{_add_message(body, schemas)}"}
                }
            },
        }
    if route.auth or route.operator:
        op["security"] = [{"bearer": []}]
    return op


def _upload_path() -> dict[str, Any]:
    """The operator's VOD upload (services/gateway/uploads.py): raw bytes in, a name out."""
    described = {k: ERRORS[k] for k in ("400", "401", "403", "429", "503")}
    return {
        "post": {
            "operationId": "gateway.UploadVodSource",
            "summary": "Upload a video file (the body, streamed to the object store, up to "
            "the gateway's limit) to publish as a title (operator)",
            "requestBody": {
                "required": True,
                "content": {"*/*": {"schema": {"type": "string", "format": "binary"}}},
            },
            "responses": {
                "200": _json("Stored", UPLOADED_SCHEMA),
                **_errors(described | {"413": BODY_ERRORS["413"]}),
            },
            "security": [{"bearer": []}],
        }
    }


def _web_paths() -> dict[str, dict[str, Any]]:
    """The viewer app's and console's pages and the static files they load."""

    def static(op_id: str, summary: str, media: str, name: bool) -> dict[str, Any]:
        params = [{"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}]
        ok = {"description": "the file", "content": {media: {"schema": {"type": "string"}}}}
        not_found = {"404": ERRORS["404"]} if name else {}
        return {
            "get": {
                "operationId": op_id,
                "summary": summary,
                "parameters": params if name else [],
                "responses": {"200": ok, **_errors(RATE_LIMITED | not_found)},
            }
        }

    pages = {
        path: static(f"web.{page.split('.')[0]}", f"The {page} page", "text/html", False)
        for path, page in webapp.PAGES.items()
    }
    return pages | {
        "/web/{name}": static("web.File", "The app's own scripts and styles", "*/*", True),
        "/vendor/{name}": static(
            "web.Vendor", "The player libraries (dash.js, hls.js)", "text/javascript", True
        ),
    }


def document(server_url: str = "/") -> dict[str, Any]:
    schemas: dict[str, Any] = {"Error": ERROR_SCHEMA}
    paths: dict[str, dict[str, Any]] = {}
    for route in ROUTES:
        paths.setdefault(route.path, {})[route.method.lower()] = _operation(route, schemas)
    paths["/healthz"] = {
        "get": {
            "operationId": "gateway.Health",
            "summary": "Liveness",
            "responses": {"200": _json("OK", HEALTH_SCHEMA), **_errors(RATE_LIMITED)},
        }
    }
    paths["/readyz"] = {
        "get": {
            "operationId": "gateway.Ready",
            "summary": "Readiness: every service behind answers SERVING",
            "responses": {
                "200": _json("ready", READY_SCHEMA),
                "503": _json("not ready", READY_SCHEMA),
                **_errors(RATE_LIMITED),
            },
        }
    }
    paths["/metrics"] = {
        "get": {
            "operationId": "gateway.Metrics",
            "summary": "The gateway's outbound-call metrics, Prometheus text format",
            "responses": {
                "200": {
                    "description": "OK",
                    "content": {"text/plain": {"schema": {"type": "string"}}},
                },
                **_errors(RATE_LIMITED),
            },
        }
    }
    session = [{"name": "session", "in": "path", "required": True, "schema": {"type": "string"}}]
    steering_errors = _errors({k: ERRORS[k] for k in ("400", "404", "429", "503")})
    paths["/v1/sessions/{session}/manifest.mpd"] = {
        "get": {
            "operationId": "gateway.SessionManifest",
            "summary": "The session's MPD: every ranked edge a BaseURL, DASH content steering",
            "parameters": session,
            "responses": {
                "200": {
                    "description": "OK",
                    "content": {"application/dash+xml": {"schema": {"type": "string"}}},
                },
                **steering_errors,
            },
        }
    }
    paths["/v1/sessions/{session}/master.m3u8"] = {
        "get": {
            "operationId": "gateway.SessionPlaylist",
            "summary": "The session's LL-HLS multivariant playlist: a Pathway per ranked edge, "
            "HLS content steering",
            "parameters": session,
            "responses": {
                "200": {
                    "description": "OK",
                    "content": {"application/vnd.apple.mpegurl": {"schema": {"type": "string"}}},
                },
                **steering_errors,
            },
        }
    }
    paths["/v1/sessions/{session}/steering"] = {
        "get": {
            "operationId": "gateway.SessionSteering",
            "summary": "The session's content steering manifest (DASH-IF and HLS): edges "
            "serving now",
            "parameters": session,
            "responses": {"200": _json("OK", {"type": "object"}), **steering_errors},
        }
    }
    paths["/openapi.json"] = {
        "get": {
            "operationId": "gateway.OpenApi",
            "summary": "This document",
            "responses": {"200": _json("OK", {"type": "object"}), **_errors(RATE_LIMITED)},
        }
    }
    paths[UPLOAD_PATH] = _upload_path()
    paths.update(_web_paths())
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "livemesh gateway",
            "version": "1.0.0",
            "description": "HTTP/JSON API for players and browsers. Bodies follow the "
            "proto3 JSON mapping of the livemesh protos (camelCase).",
        },
        "servers": [{"url": server_url}],
        "paths": paths,
        "components": {
            "schemas": dict(sorted(schemas.items())),
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
            },
        },
    }
