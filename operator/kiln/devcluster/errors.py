"""API errors as `Status` objects, with the codes and reasons kube-apiserver gives."""

from __future__ import annotations

from typing import Any

from kiln.devcluster import schema


class ApiError(Exception):
    """An error the API server answers with: HTTP code, reason, message and details."""

    def __init__(self, code: int, reason: str, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details

    def status(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        }
        if self.details is not None:
            body["details"] = self.details
        return body


def _qualified(plural: str, group: str) -> str:
    return f"{plural}.{group}" if group else plural


def bad_request(message: str) -> ApiError:
    return ApiError(400, "BadRequest", message)


def not_found(plural: str, group: str, name: str) -> ApiError:
    resource = _qualified(plural, group)
    details = {"name": name, "group": group, "kind": plural}
    return ApiError(404, "NotFound", f'{resource} "{name}" not found', details)


def already_exists(plural: str, group: str, name: str) -> ApiError:
    resource = _qualified(plural, group)
    details = {"name": name, "group": group, "kind": plural}
    return ApiError(409, "AlreadyExists", f'{resource} "{name}" already exists', details)


def conflict(plural: str, group: str, name: str, why: str) -> ApiError:
    resource = _qualified(plural, group)
    details = {"name": name, "group": group, "kind": plural}
    return ApiError(409, "Conflict", f'Operation cannot be fulfilled on {resource} "{name}": {why}', details)


STALE_OBJECT = "the object has been modified; please apply your changes to the latest version and try again"


def gone(message: str) -> ApiError:
    return ApiError(410, "Expired", message)


def forbidden(plural: str, group: str, name: str, why: str) -> ApiError:
    resource = _qualified(plural, group)
    details = {"name": name, "group": group, "kind": plural}
    return ApiError(403, "Forbidden", f'{resource} "{name}" is forbidden: {why}', details)


def method_not_allowed(message: str) -> ApiError:
    return ApiError(405, "MethodNotAllowed", message)


def unsupported_media_type(content_type: str) -> ApiError:
    return ApiError(415, "UnsupportedMediaType", f"the body of the request was in an unknown format: {content_type}")


def invalid(kind: str, group: str, name: str, field_errors: list[schema.FieldError]) -> ApiError:
    """422 Invalid, worded as kube-apiserver words it: one line per field error."""
    if len(field_errors) == 1:
        summary = str(field_errors[0])
    else:
        summary = "[" + ", ".join(str(error) for error in field_errors) + "]"
    causes = [{"reason": error.reason, "message": error.message, "field": error.field} for error in field_errors]
    details = {"name": name, "group": group, "kind": kind, "causes": causes}
    qualified_kind = f"{kind}.{group}" if group else kind
    return ApiError(422, "Invalid", f'{qualified_kind} "{name}" is invalid: {summary}', details)
