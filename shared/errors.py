"""Errors the API answers with, rendered in one shape by one middleware.

    ApiError(status, code, message, **extra)      any 4xx/5xx the API answers
    ├── BadRequest                  400  bad_request / invalid_mpi_id / invalid_check_character / ...
    │   ├── ValidationFailed        400  validation_error (details: one entry per bad field)
    │   ├── SameIdentity            400  same_identity (a merge of an identity into itself)
    │   └── NotAPair                400  not_a_pair (a review item that is not a pair)
    ├── Unauthorized                401  unauthorized
    ├── Forbidden                   403  forbidden
    ├── NotFound                    404  not_found
    │   └── NoValidCard             404  no_valid_card
    ├── Conflict                    409  conflict
    │   ├── Duplicate               409  duplicate_detected (existing_mpi_id, similarity_score, ...)
    │   ├── ExternalIdInUse         409  external_id_in_use (existing_mpi_id)
    │   ├── ConflictingExternalIds  409  conflicting_external_ids (a merge of two DHIS2 UIDs...)
    │   ├── AlreadyMerged           409  already_merged
    │   ├── NotMerged               409  not_merged / not_directly_merged (an unmerge with no merge to undo)
    │   ├── AlreadyDecided          409  already_decided (a review item)
    │   └── CorruptMergeChain       409  corrupt_merge_chain
    ├── PayloadTooLarge             413  payload_too_large
    └── TooManyRequests             429  rate_limited (with a Retry-After header)

The body is ``{"status": code, "error": message, ...extra}``, the shape of the 409 in the
API reference; ``details`` carries per-field information where there is some. ``headers``
are sent with the answer (``Retry-After``, ``Allow``).
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "AlreadyDecided",
    "AlreadyMerged",
    "ApiError",
    "BadRequest",
    "Conflict",
    "ConflictingExternalIds",
    "CorruptMergeChain",
    "Duplicate",
    "ExternalIdInUse",
    "Forbidden",
    "NoValidCard",
    "NotAPair",
    "NotFound",
    "NotMerged",
    "PayloadTooLarge",
    "SameIdentity",
    "TooManyRequests",
    "Unauthorized",
    "ValidationFailed",
]


class ApiError(Exception):
    status = 500
    code = "internal"

    def __init__(self, message: str, *, code: str | None = None, status: int | None = None, **extra: Any) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status
        self.extra = extra
        self.headers: dict[str, str] = {}

    def body(self) -> dict[str, Any]:
        return {"status": self.code, "error": self.message, **self.extra}


class BadRequest(ApiError):
    status = 400
    code = "bad_request"


class ValidationFailed(BadRequest):
    code = "validation_error"


class Unauthorized(ApiError):
    status = 401
    code = "unauthorized"


class Forbidden(ApiError):
    status = 403
    code = "forbidden"


class NotFound(ApiError):
    status = 404
    code = "not_found"


class Conflict(ApiError):
    status = 409
    code = "conflict"


class Duplicate(Conflict):
    code = "duplicate_detected"


class PayloadTooLarge(ApiError):
    status = 413
    code = "payload_too_large"


class SameIdentity(BadRequest):
    code = "same_identity"


class NotAPair(BadRequest):
    code = "not_a_pair"


class NoValidCard(NotFound):
    code = "no_valid_card"


class ExternalIdInUse(Conflict):
    code = "external_id_in_use"


class ConflictingExternalIds(Conflict):
    code = "conflicting_external_ids"


class AlreadyMerged(Conflict):
    code = "already_merged"


class NotMerged(Conflict):
    code = "not_merged"


class AlreadyDecided(Conflict):
    code = "already_decided"


class CorruptMergeChain(Conflict):
    code = "corrupt_merge_chain"


class TooManyRequests(ApiError):
    status = 429
    code = "rate_limited"

    def __init__(self, message: str, *, retry_after: int, **extra: Any) -> None:
        super().__init__(message, retry_after=retry_after, **extra)
        self.headers["Retry-After"] = str(retry_after)
