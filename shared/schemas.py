"""Request bodies and query strings, validated by pydantic: one model per route.

Unknown fields are refused by name (``extra="forbid"``); every failure becomes one 400
``validation_error`` whose ``details`` lists each bad field with a reason.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from typing import Annotated, Any, Literal, TypeVar

import phonenumbers
import pycountry
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)

from .errors import BadRequest, ValidationFailed
from .matching import name_tokens
from .matching.family import MOTHER, RELATIONSHIPS, estimated_birth_date

__all__ = [
    "AuditQuery",
    "CardIn",
    "CardRevokeIn",
    "LinkDhis2In",
    "MatchIn",
    "MergeIn",
    "PatchIn",
    "ProgrammeIn",
    "RegisterIn",
    "RelatedIn",
    "ReviewDecisionIn",
    "ReviewQuery",
    "SearchQuery",
    "UnmergeIn",
    "MAX_JSON_DEPTH",
    "SEARCH_LIMIT_MAX",
    "SEARCH_OFFSET_MAX",
    "SEARCH_REPEAT_MAX",
    "SEARCH_TEXT_MAX",
    "SEARCH_WORDS_MAX",
    "check_search_words",
    "check_text",
    "decode_json",
    "parse_body",
    "parse_query",
]

_PROGRAMME = re.compile(r"[a-z][a-z0-9_]{1,39}")
_DHIS2_UID = re.compile(r"[A-Za-z][A-Za-z0-9]{10}")
_EXTERNAL_SYSTEM = re.compile(r"[A-Za-z][A-Za-z0-9_.-]{0,39}")

# No text field takes a control character: NUL cannot be stored by PostgreSQL at all, and
# the others have no business in a name, a code or an identifier. Free text (a reason) may
# hold tabs and line breaks. Lone surrogates (JSON "\ud800", undecodable import bytes)
# cannot be encoded as UTF-8 by either database.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
_CONTROL_FREE_TEXT = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff]")
# Fields of free text, by name, wherever they appear: the only ones allowed \t \n \r.
_FREE_TEXT = frozenset({"reason"})


def _control_problem(value: str, free_text: bool = False) -> str | None:
    found = (_CONTROL_FREE_TEXT if free_text else _CONTROL).search(value)
    if found is None:
        return None
    return f"control characters are not allowed (U+{ord(found.group()):04X} at position {found.start()})"


def check_text(field: str, value: str) -> None:
    """Refuse a path or query value holding a control character: 400 validation_error."""
    problem = _control_problem(value)
    if problem is not None:
        raise ValidationFailed(f"{field}: {problem}", details=[{"field": field, "message": problem}])


def _control_details(data: Any, path: str = "") -> list[dict[str, str]]:
    """One detail per string (key or value) of a decoded body that holds a control character."""
    out: list[dict[str, str]] = []
    if isinstance(data, dict):
        for key, value in data.items():
            where = f"{path}.{key}" if path else str(key)
            problem = _control_problem(str(key))
            if problem is not None:
                out.append({"field": path or "body", "message": f"a field name: {problem}"})
            out.extend(_control_details(value, where))
    elif isinstance(data, list):
        for index, value in enumerate(data):
            out.extend(_control_details(value, f"{path}.{index}" if path else str(index)))
    elif isinstance(data, str):
        problem = _control_problem(data, free_text=path.rsplit(".", 1)[-1] in _FREE_TEXT)
        if problem is not None:
            out.append({"field": path or "body", "message": problem})
    return out


def _birth_date(value: dt.date | None) -> dt.date | None:
    if value is None:
        return None
    if value > dt.date.today():
        raise ValueError("date of birth is in the future")
    if value.year < 1900:
        raise ValueError("date of birth is before 1900")
    return value


def _country(value: str) -> str:
    if pycountry.countries.get(alpha_2=value) is None:
        raise ValueError(f"{value!r} is not an ISO 3166-1 alpha-2 country code")
    return value


def _phone(value: str | None) -> str | None:
    if value is None:
        return None
    if not value.startswith("+"):
        raise ValueError("phone number must be in E.164 format, e.g. +221771234567")
    try:
        number = phonenumbers.parse(value, None)
    except phonenumbers.NumberParseException:
        raise ValueError("phone number must be in E.164 format, e.g. +221771234567") from None
    if not phonenumbers.is_valid_number(number):
        raise ValueError("phone number is not a valid number")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def _programme(value: str) -> str:
    if not _PROGRAMME.fullmatch(value):
        raise ValueError("programme_type is 2-40 lower-case letters, digits or _, starting with a letter")
    return value


def _external_ids(value: dict[str, str] | None) -> dict[str, str] | None:
    if value is None:
        return None
    if len(value) > 20:
        raise ValueError("at most 20 external ids")
    for system, ext in value.items():
        if not _EXTERNAL_SYSTEM.fullmatch(system):
            raise ValueError(f"external id system {system!r} must be 1-40 letters, digits, _ . -")
        if not ext.strip() or len(ext) > 200:
            raise ValueError(f"external id {system!r} must be 1-200 characters")
        if system == "dhis2_uid" and not _DHIS2_UID.fullmatch(ext):
            raise ValueError("dhis2_uid must be 11 letters or digits, starting with a letter")
    return value


# What each type enforces is also written into its JSON schema, so /openapi.json states it.
_COUNTRIES = sorted(c.alpha_2 for c in pycountry.countries)
Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)]
BirthDate = Annotated[dt.date | None, AfterValidator(_birth_date)]
Gender = Literal["M", "F", "U"]
Region = Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$")]
Country = Annotated[
    str, StringConstraints(pattern=r"^[A-Z]{2}$"), AfterValidator(_country), Field(json_schema_extra={"enum": _COUNTRIES})
]
Phone = Annotated[
    str | None, AfterValidator(_phone), Field(json_schema_extra={"pattern": r"^\+[1-9][0-9]{6,14}$"})
]
ExternalIds = Annotated[
    dict[str, Annotated[str, StringConstraints(strict=True, min_length=1, max_length=200)]] | None,
    AfterValidator(_external_ids),
    Field(json_schema_extra={"maxProperties": 20, "propertyNames": {"pattern": f"^{_EXTERNAL_SYSTEM.pattern}$"}}),
]
Programme = Annotated[
    str, AfterValidator(_programme), Field(json_schema_extra={"pattern": f"^{_PROGRAMME.pattern}$"})
]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=False)


class RelatedIn(_Body):
    """A caregiver link: ``mpi_id`` is this person's mother, father, guardian or caregiver."""

    mpi_id: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=40)]
    relationship: Literal["mother", "father", "guardian", "caregiver"]


assert RELATIONSHIPS == ("mother", "father", "guardian", "caregiver")
RelatedPersons = Annotated[list[RelatedIn] | None, Field(max_length=10)]
AgeYears = Annotated[int, Field(ge=0, le=120)]
AgeMonths = Annotated[int, Field(ge=0, le=59)]
# A given name may wait (a newborn before its naming) when a mother is linked: see RegisterIn.
GivenName = Annotated[str, StringConstraints(strip_whitespace=True, max_length=100)]


class _Estimate(BaseModel):
    """``date_of_birth_estimated``, or an age (``age_years``, ``age_months``) instead of a date.

    An age sets ``date_of_birth`` to the middle of the interval it allows on the day of the
    request (``family.estimated_birth_date``) and the flag; an age with a date is refused.
    """

    def _estimate(self) -> None:
        given = self.model_fields_set
        age_years, age_months = getattr(self, "age_years", None), getattr(self, "age_months", None)
        if age_years is not None and age_months is not None:
            raise ValueError("give age_years or age_months, not both")
        if age_years is None and age_months is None:
            if "date_of_birth" in given and "date_of_birth_estimated" not in given:
                setattr(self, "date_of_birth_estimated", False)  # noqa: B010 (pydantic records it as given)
            return
        if getattr(self, "date_of_birth", None) is not None:
            raise ValueError("give date_of_birth or an age (age_years, age_months), not both")
        if "date_of_birth_estimated" in given and not getattr(self, "date_of_birth_estimated", True):
            raise ValueError("a date from an age is an estimate: date_of_birth_estimated cannot be false")
        setattr(self, "date_of_birth", estimated_birth_date(dt.date.today(), age_years, age_months))  # noqa: B010
        setattr(self, "date_of_birth_estimated", True)  # noqa: B010


class _StrictDate(_Body):
    @field_validator("date_of_birth", mode="before", check_fields=False)
    @classmethod
    def _iso_date_only(cls, value: Any) -> Any:
        # pydantic would take 795225600 (a Unix time) as a date; the contract says YYYY-MM-DD.
        if value is not None and not (isinstance(value, str) and re.fullmatch(r"\d{4}-\d{2}-\d{2}", value)):
            raise ValueError("date must be a string in ISO 8601 format YYYY-MM-DD")
        return value


class RegisterIn(_StrictDate, _Estimate):
    first_name: GivenName = ""
    last_name: Name
    date_of_birth: BirthDate = None
    gender: Gender | None = None
    region_code: Region
    country_code: Country
    phone_number: Phone = None
    external_ids: ExternalIds = None
    force_create: bool = False
    date_of_birth_estimated: bool = False
    age_years: AgeYears | None = None
    age_months: AgeMonths | None = None
    related_persons: RelatedPersons = None

    @model_validator(mode="after")
    def _checked(self) -> RegisterIn:
        self._estimate()
        if self.date_of_birth_estimated and self.date_of_birth is None:
            raise ValueError("date_of_birth_estimated needs a date_of_birth or an age")
        if not self.first_name and not any(r.relationship == MOTHER for r in self.related_persons or []):
            raise ValueError("first_name is required, unless a newborn is registered with its mother in related_persons")
        return self


class PatchIn(_StrictDate, _Estimate):
    first_name: Name | None = None
    last_name: Name | None = None
    date_of_birth: BirthDate = None
    gender: Gender | None = None
    region_code: Region | None = None
    country_code: Country | None = None
    phone_number: Phone = None
    external_ids: ExternalIds = None
    date_of_birth_estimated: bool = False
    age_years: AgeYears | None = None
    age_months: AgeMonths | None = None
    related_persons: RelatedPersons = None  # the whole list: [] removes every link

    @model_validator(mode="after")
    def _something_to_change(self) -> PatchIn:
        if not self.model_fields_set:
            raise ValueError("nothing to update: give at least one field")
        self._estimate()
        if "related_persons" in self.model_fields_set and self.related_persons is None:
            raise ValueError("related_persons cannot be null: [] removes every link")
        for required in ("first_name", "last_name", "region_code", "country_code"):
            if required in self.model_fields_set and getattr(self, required) is None:
                raise ValueError(f"{required} cannot be removed")
        return self


class MatchIn(_StrictDate, _Estimate):
    first_name: Annotated[str, StringConstraints(strip_whitespace=True, max_length=100)] = ""
    last_name: Annotated[str, StringConstraints(strip_whitespace=True, max_length=100)] = ""
    date_of_birth: BirthDate = None
    gender: Gender | None = None
    region_code: Region | None = None
    country_code: Country | None = None
    phone_number: Phone = None
    external_ids: ExternalIds = None
    date_of_birth_estimated: bool = False
    age_years: AgeYears | None = None
    age_months: AgeMonths | None = None
    related_persons: RelatedPersons = None
    limit: Annotated[int, Field(ge=1, le=50)] = 10
    # Below the "possible" threshold a candidate is still worth showing to a clerk looking
    # for someone: it comes with confidence "unlikely".
    min_score: Annotated[float, Field(ge=0.0, le=1.0)] = 0.0

    @model_validator(mode="after")
    def _something_to_match(self) -> MatchIn:
        self._estimate()
        if not (self.first_name or self.last_name or self.phone_number or self.external_ids):
            raise ValueError("nothing to match on: give a name, a phone number or an external id")
        return self


class LinkDhis2In(_Body):
    dhis2_uid: Annotated[str, StringConstraints(pattern=f"^{_DHIS2_UID.pattern}$")]
    dhis2_instance_url: Annotated[str, StringConstraints(pattern=r"^https?://\S+$", max_length=300)] | None = None


class MergeIn(_Body):
    source_mpi_id: str
    target_mpi_id: str
    reason: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=500)]
    keep_target: bool = True


class ProgrammeIn(_Body):
    programme_type: Programme
    linked_at: dt.datetime | None = None

    @field_validator("linked_at")
    @classmethod
    def _aware(cls, value: dt.datetime | None) -> dt.datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("linked_at needs a time zone, e.g. 2026-01-10T00:00:00Z")
        return value


class CardIn(_Body):
    campaign_id: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.-]{1,80}$")]
    programme_type: Programme


class CardRevokeIn(_Body):
    reason: Annotated[str, StringConstraints(strip_whitespace=True, max_length=500)] = ""


# The limits of a search, whichever face asks (GET /mpi/search, GET /fhir/Patient): each name
# word is one index probe, so a search reads at most this many; what the page may be.
SEARCH_TEXT_MAX = 200  # characters of name text
SEARCH_WORDS_MAX = 10  # name words (as folded: "N'Diaye" is one word)
SEARCH_LIMIT_MAX = 200  # results a page
SEARCH_OFFSET_MAX = 100_000  # where a page may start
SEARCH_REPEAT_MAX = 5  # values of one repeatable parameter (FHIR: identifier, birthdate...)


def check_search_words(text: str) -> str:
    """``text`` if its name words are within ``SEARCH_WORDS_MAX``; ValueError otherwise."""
    words = len(name_tokens(text))
    if words > SEARCH_WORDS_MAX:
        raise ValueError(f"at most {SEARCH_WORDS_MAX} name words in a search, not {words}")
    return text


SearchText = Annotated[
    str, StringConstraints(strip_whitespace=True, max_length=SEARCH_TEXT_MAX), AfterValidator(check_search_words)
]


class SearchQuery(_StrictDate):
    q: SearchText | None = None
    mpi_id: str | None = None
    region_code: Region | None = None
    date_of_birth: dt.date | None = None
    program: Programme | None = None
    related_to: str | None = None  # the people linked to this MPI ID (a mother's children)
    limit: Annotated[int, Field(ge=1, le=SEARCH_LIMIT_MAX)] = 20
    offset: Annotated[int, Field(ge=0, le=SEARCH_OFFSET_MAX)] = 0


class ReviewQuery(_Body):
    status: Literal["open", "decided"] = "open"
    region_code: Region | None = None
    band: Literal["certain", "probable", "possible"] | None = None
    reason: Annotated[str, StringConstraints(pattern=r"^[a-z_]{1,40}$")] | None = None
    min_age_days: Annotated[int, Field(ge=0, le=3650)] | None = None
    limit: Annotated[int, Field(ge=1, le=200)] = 50
    offset: Annotated[int, Field(ge=0, le=1_000_000)] = 0


class ReviewDecisionIn(_Body):
    decision: Literal["merge", "not_same"]
    reason: Annotated[str, StringConstraints(strip_whitespace=True, max_length=500)] = ""


class AuditQuery(_Body):
    actor: Annotated[str, StringConstraints(min_length=1, max_length=100)] | None = None
    mpi_id: Annotated[str, StringConstraints(min_length=1, max_length=40)] | None = None
    action: Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_.]{0,39}$")] | None = None
    from_: dt.datetime | None = Field(default=None, alias="from")
    to: dt.datetime | None = None
    limit: Annotated[int, Field(ge=1, le=200)] = 50
    offset: Annotated[int, Field(ge=0, le=1_000_000)] = 0

    @field_validator("from_", "to")
    @classmethod
    def _utc(cls, value: dt.datetime | None) -> dt.datetime | None:
        # A bare date or a time with no zone is taken as UTC, the zone the log is kept in.
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=dt.UTC)
        return value


class UnmergeIn(_Body):
    mpi_id: str
    reason: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=500)]


M = TypeVar("M", bound=BaseModel)

# No body of this API nests deeper than 3; 32 leaves room and keeps every walk shallow.
MAX_JSON_DEPTH = 32


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _depth(data: Any) -> int:
    deepest, stack = 0, [(data, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict):
            value = list(value.values())
        if isinstance(value, list):
            deepest = max(deepest, depth)
            if depth > MAX_JSON_DEPTH:
                break
            stack.extend((item, depth + 1) for item in value)
    return deepest


def decode_json(raw: bytes | str) -> Any:
    """Decode a JSON document, or raise one 400 ``invalid_json``: never a 500.

    Malformed bytes, nesting deep enough to exhaust the parser's recursion, integers longer
    than Python converts (over 4,300 digits), NaN and Infinity: all are the client's error.
    """
    if not raw:
        raise BadRequest("the request needs a JSON body", code="invalid_json")
    try:
        data = json.loads(raw, parse_constant=_no_constant)
    except json.JSONDecodeError as exc:
        raise BadRequest(f"the body is not valid JSON: {exc}", code="invalid_json") from None
    except RecursionError:
        raise BadRequest(f"the body nests deeper than {MAX_JSON_DEPTH} levels", code="invalid_json") from None
    except ValueError as exc:  # bad UTF-8, an integer of thousands of digits, NaN
        reason = "it is not UTF-8" if isinstance(exc, UnicodeDecodeError) else str(exc).split(";")[0]
        raise BadRequest(f"the body is not valid JSON: {reason}", code="invalid_json") from None
    if _depth(data) > MAX_JSON_DEPTH:
        raise BadRequest(f"the body nests deeper than {MAX_JSON_DEPTH} levels", code="invalid_json")
    return data


def _details(exc: ValidationError) -> list[dict[str, str]]:
    out = []
    for err in exc.errors():
        field = ".".join(str(p) for p in err["loc"]) or "body"
        message = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            message = "unknown field"
        out.append({"field": field, "message": message})
    return out


def parse_body(model: type[M], data: Any) -> M:
    """Validate a decoded JSON body, or raise one ValidationFailed listing every bad field."""
    if not isinstance(data, dict):
        raise ValidationFailed("the request body must be a JSON object")
    control = _control_details(data)
    if control:
        first = control[0]
        raise ValidationFailed(f"{first['field']}: {first['message']}", details=control)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        details = _details(exc)
        first = details[0]
        raise ValidationFailed(f"{first['field']}: {first['message']}", details=details) from None


def parse_query(model: type[M], params: Any) -> M:
    """Validate query-string parameters (each given once)."""
    data: dict[str, str] = {}
    for key in params:
        values = params.getall(key)
        if len(values) > 1:
            raise ValidationFailed(f"{key}: given more than once", details=[{"field": key, "message": "given more than once"}])
        data[key] = values[0]
    return parse_body(model, data)
