"""The OpenAPI 3.1 description of /api/v1 (served at /api/v1/openapi.json)."""

from __future__ import annotations

from typing import Any

from monitor.storage.suppression import SUPPRESSION_REASONS


def _param(name: str, where: str, description: str, *, required: bool = False, schema: dict | None = None) -> dict:
    return {"name": name, "in": where, "required": required, "description": description,
            "schema": schema or {"type": "string"}}


def _ok(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


_ERRORS = {
    "400": {"$ref": "#/components/responses/BadRequest"},
    "401": {"$ref": "#/components/responses/Unauthorized"},
}
_ADDRESS = _param("address", "path", "an address (bob@example.net) or a domain (@example.net)", required=True)
_LIMIT = _param("limit", "query", "items per page (1-1000, default 100)", schema={"type": "integer", "minimum": 1,
                                                                                  "maximum": 1000})
_REASON_BODY = {"required": True, "content": {"application/json": {"schema": {
    "type": "object", "required": ["reason"], "properties": {"reason": {"type": "string", "maxLength": 500}}}}}}
_ACTOR = _param("X-Repmon-Actor", "header", "who is asking (kept in the audit as api:NAME)")


def _paths() -> dict[str, Any]:
    ref = "#/components/schemas/"
    return {
        "/suppressions": {"get": {
            "summary": "List suppressions (addresses, then domains), cursor paging",
            "parameters": [
                _param("reason", "query", "only this reason", schema={"type": "string", "enum": list(SUPPRESSION_REASONS)}),
                _param("source", "query", "only this source (a trailing * matches a prefix)"),
                _param("since", "query", "first seen at or after: a duration (7d) or an ISO date"),
                _param("search", "query", "part of the address or the detail"),
                _param("include_expired", "query", "true: expired soft suppressions too"),
                _param("cursor", "query", "next_cursor of the previous page"), _LIMIT],
            "responses": {"200": _ok("a page", {"type": "object", "properties": {
                "items": {"type": "array", "items": {"$ref": ref + "Suppression"}},
                "next_cursor": {"type": ["string", "null"]}}}), **_ERRORS}}},
        "/suppressions/{address}": {
            "get": {"summary": "One suppression with the event that caused it and its audit history",
                    "parameters": [_ADDRESS],
                    "responses": {"200": _ok("found", {"$ref": ref + "SuppressionDetail"}),
                                  "404": {"$ref": "#/components/responses/NotFound"}, **_ERRORS}},
            "put": {"summary": "Suppress an address or @domain by hand (reason manual), audited",
                    "parameters": [_ADDRESS, _ACTOR], "requestBody": _REASON_BODY,
                    "responses": {"200": _ok("on the list", {"$ref": ref + "Suppression"}), **_ERRORS}},
            "delete": {"summary": "Take an address or @domain off the list, audited; the old evidence never "
                                  "suppresses it again",
                       "parameters": [_ADDRESS, _ACTOR, _param("reason", "query", "why (or a JSON body {reason})")],
                       "responses": {"200": _ok("removed: the audit entry", {"$ref": ref + "Audit"}),
                                     "404": {"$ref": "#/components/responses/NotFound"}, **_ERRORS}}},
        "/check": {"get": {
            "summary": "Is this address suppressed (by address or by domain)?",
            "parameters": [_param("address", "query", "the recipient", required=True)],
            "responses": {"200": _ok("the answer", {"type": "object", "required": ["suppressed"], "properties": {
                "address": {"type": "string"}, "suppressed": {"type": "boolean"},
                "reason": {"type": ["string", "null"]}, "detail": {"type": ["string", "null"]},
                "expires": {"type": ["string", "null"]}, "kind": {"type": ["string", "null"]}}}), **_ERRORS}}},
        "/events": {"get": {
            "summary": "Every stored event in id order; resume with next_cursor",
            "parameters": [_param("cursor", "query", "next_cursor of the previous page (0: from the start)"), _LIMIT],
            "responses": {"200": _ok("a page", {"type": "object", "properties": {
                "items": {"type": "array", "items": {"type": "object"}}, "next_cursor": {"type": "string"}}}),
                **_ERRORS}}},
        "/health": {"get": {
            "summary": "The stored health state of every IP, domain and lane",
            "responses": {"200": _ok("states", {"type": "object", "properties": {
                "items": {"type": "array", "items": {"$ref": ref + "HealthState"}}}}), **_ERRORS}}},
        "/actions": {"get": {
            "summary": "The policy's actions (and operators')",
            "parameters": [_param("active", "query", "true: only actions in force"),
                           _param("since", "query", "started or ended within (default 7d)")],
            "responses": {"200": _ok("actions", {"type": "object", "properties": {
                "items": {"type": "array", "items": {"$ref": ref + "Action"}}}}), **_ERRORS}}},
        "/actions/{id}/cancel": {"post": {
            "summary": "End an action now (as `repmon actions cancel ID`)",
            "parameters": [_param("id", "path", "the action", required=True, schema={"type": "integer"}), _ACTOR],
            "requestBody": {"required": False, "content": {"application/json": {"schema": {
                "type": "object", "properties": {"reason": {"type": "string"}}}}}},
            "responses": {"200": _ok("ended", {"$ref": ref + "Action"}),
                          "404": {"$ref": "#/components/responses/NotFound"},
                          "409": {"$ref": "#/components/responses/Conflict"}, **_ERRORS}}},
        "/openapi.json": {"get": {"summary": "This description",
                                  "responses": {"200": _ok("OpenAPI 3.1", {"type": "object"}), **_ERRORS}}},
    }


def _schemas() -> dict[str, Any]:
    nullable = {"type": ["string", "null"]}
    suppression = {"type": "object", "properties": {
        "address": {"type": "string"}, "kind": {"type": "string", "enum": ["address", "domain"]},
        "domain": {"type": "string"}, "reason": {"type": "string", "enum": list(SUPPRESSION_REASONS)},
        "detail": nullable, "source": {"type": "string"}, "event_id": {"type": ["integer", "null"]},
        "first_seen": {"type": "string", "format": "date-time"}, "last_seen": {"type": "string", "format": "date-time"},
        "count": {"type": "integer"}, "expires": nullable, "active": {"type": "boolean"}}}
    audit = {"type": "object", "properties": {
        "id": {"type": "integer"}, "op": {"type": "string", "enum": ["add", "remove"]}, "target": {"type": "string"},
        "at": {"type": "string", "format": "date-time"}, "actor": {"type": "string"}, "why": {"type": "string"},
        "removed": {"type": ["object", "null"]}}}
    return {
        "Suppression": suppression,
        "SuppressionDetail": {"allOf": [{"$ref": "#/components/schemas/Suppression"}, {"type": "object", "properties": {
            "suppressed": {"type": "boolean"}, "event": {"type": ["object", "null"]},
            "history": {"type": "array", "items": {"$ref": "#/components/schemas/Audit"}}}}]},
        "Audit": audit,
        "HealthState": {"type": "object", "properties": {
            "subject": {"type": "string"}, "kind": {"type": "string"},
            "state": {"type": "string", "enum": ["healthy", "warning", "critical", "blocked"]},
            "score": {"type": "integer"}, "reasons": {"type": "array", "items": {"type": "string"}},
            "findings": {"type": "array"}, "evaluated": nullable, "changed": nullable}},
        "Action": {"type": "object", "properties": {
            "id": {"type": "integer"}, "subject": {"type": "string"}, "action": {"type": "string"},
            "rule": {"type": "string"}, "created_by": {"type": "string"},
            "evidence": {"type": "array", "items": {"type": "string"}}, "destinations": {"type": "array"},
            "target": nullable, "rate": {"type": ["number", "null"]}, "started": nullable, "expires": nullable,
            "ended": nullable, "end_reason": nullable}},
        "Error": {"type": "object", "required": ["error"], "properties": {
            "error": {"type": "string"}, "field": {"type": "string"}}},
    }


def _response(description: str) -> dict[str, Any]:
    return {"description": description,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}


def spec() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {"title": "repmon API", "version": "1"},
        "servers": [{"url": "/api/v1"}],
        "security": [{"bearer": []}],
        "paths": _paths(),
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": _schemas(),
            "responses": {"BadRequest": _response("bad input; `field` names it"),
                          "Unauthorized": _response("no or wrong bearer token"),
                          "NotFound": _response("not found"), "Conflict": _response("cannot be done now")},
        },
    }
