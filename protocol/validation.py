"""Validation errors said in plain English, the same by the server and the CLI.

pydantic words its errors for programmers ("String should have at least 12
characters"); people get "The password must have at least 12 characters."
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

# Wording per pydantic error type; {field} is the field's name, the rest comes from the error's context.
_WORDING: Mapping[str, str] = {
    "missing": "The {field} is missing.",
    "string_too_short": "The {field} must have at least {min_length} {characters}.",
    "string_too_long": "The {field} must have at most {max_length} {characters}.",
    "too_short": "The {field} must have at least {min_length} {items}.",
    "too_long": "The {field} must have at most {max_length} {items}.",
    "string_pattern_mismatch": "The {field} has characters or a form it may not have.",
    "string_type": "The {field} must be text.",
    "greater_than_equal": "The {field} must be at least {ge}.",
    "greater_than": "The {field} must be more than {gt}.",
    "less_than_equal": "The {field} must be at most {le}.",
    "less_than": "The {field} must be less than {lt}.",
    "int_parsing": "The {field} must be a whole number.",
    "int_type": "The {field} must be a whole number.",
    "int_from_float": "The {field} must be a whole number.",
    "float_parsing": "The {field} must be a number.",
    "float_type": "The {field} must be a number.",
    "bool_parsing": "The {field} must be true or false.",
    "bool_type": "The {field} must be true or false.",
    "enum": "The {field} must be one of {expected}.",
    "literal_error": "The {field} must be one of {expected}.",
    "extra_forbidden": "The {field} is not something this request takes.",
    "datetime_parsing": "The {field} must be a date and time.",
    "datetime_from_date_parsing": "The {field} must be a date and time.",
    "uuid_parsing": "The {field} must be an id like 5d0c7a3e-9b1f-4c2a-8e6d-0f3a1b2c4d5e.",
    "json_invalid": "The request is not valid JSON.",
    "model_type": "The {field} must be an object with named fields.",
    "dict_type": "The {field} must be an object with named fields.",
    "list_type": "The {field} must be a list.",
}


def field_name(location: Sequence[Any]) -> str:
    """The field an error is about, as a person calls it: ``("body", "expires_in_hours")`` -> "expires in hours"."""
    names = [str(part) for part in location if isinstance(part, str) and part not in ("body", "query", "path", "header")]
    if not names:
        return "request"
    return " ".join(names[-1].replace("_", " ").replace("-", " ").split()) or "request"


def _plural(count: Any, one: str, many: str) -> str:
    return one if str(count) == "1" else many


def plain_problem(error: Mapping[str, Any]) -> str:
    """One pydantic error (an item of ``errors()``) as one plain sentence."""
    kind = str(error.get("type", ""))
    context = dict(error.get("ctx") or {})
    field = field_name(error.get("loc", ()))
    if kind == "value_error":  # our own validators' messages are already written for people
        message = str(error.get("msg", "")).removeprefix("Value error, ").strip()
        return message if message.endswith(".") else f"{message}."
    wording = _WORDING.get(kind)
    if wording is None:
        message = str(error.get("msg", "is not valid")).rstrip(".")
        return f"The {field} is not valid: {message[:1].lower()}{message[1:]}."
    if kind in ("string_too_short", "too_short") and str(context.get("min_length")) == "1":
        return f"The {field} is empty."
    context = {k: int(v) if isinstance(v, float) and v.is_integer() else v for k, v in context.items()}
    limit = context.get("min_length", context.get("max_length", ""))
    context.setdefault("characters", _plural(limit, "character", "characters"))
    context.setdefault("items", _plural(limit, "item", "items"))
    try:
        return wording.format(field=field, **context)
    except (KeyError, IndexError, ValueError):
        return f"The {field} is not valid."


def describe(errors: Sequence[Mapping[str, Any]]) -> str:
    """One line naming the first problem of a validation error list, and how many more there are."""
    if not errors:
        return "The request is not valid."
    more = len(errors) - 1
    tail = "" if more == 0 else f" (and {more} more {'problem' if more == 1 else 'problems'})"
    sentence = plain_problem(errors[0])
    return f"{sentence[:-1]}{tail}." if tail else sentence
