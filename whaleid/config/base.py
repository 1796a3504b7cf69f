"""What every params block shares: a frozen, strict pydantic model (:class:`Block`) whose errors become one
:class:`ConfigError` line naming the offending ``block.key`` (:func:`_message`), with a suggestion for a misspelled
key and the new place of a moved one (:data:`MOVED`)."""

from __future__ import annotations

import difflib
import re
import typing
from typing import Annotated, Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from whaleid.core.errors import ConfigError

Share = Annotated[float, Field(ge=0.0, le=1.0)]


def span(default: float, low: float, high: float) -> Any:
    """A field with a default, in [low, high]."""
    return Field(default, ge=low, le=high)


def suggest(name: str, options: typing.Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(options), n=3, cutoff=0.5)
    return f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""


# Keys that moved: the old name gets an error naming the new one.
MOVED = {
    "knn.scoring": "threshold.scoring (the prediction rule's block)",
    "knn.vote_power": "threshold.vote_power (the prediction rule's block)",
    "ensemble.folds": "ensemble.members, as names: [fold1, fold2] (each trained by its own stage member@foldN)",
    "ensemble.full_fit": "ensemble.members: [full] (with ensemble.fold_model: false to submit with the full fit alone)",
}


_FLOAT_TEXT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


def _type_name(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    if origin is Annotated:
        return _type_name(typing.get_args(annotation)[0])
    if origin is list:
        return f"a list of {_type_name(typing.get_args(annotation)[0])}"
    if origin in (typing.Union, __import__("types").UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(annotation))
    return "null" if annotation is type(None) else annotation.__name__


def _scalars(annotation: Any) -> tuple:
    """The plain types a field takes (``int | None`` -> int, NoneType)."""
    if typing.get_origin(annotation) is Annotated:
        return _scalars(typing.get_args(annotation)[0])
    if typing.get_origin(annotation) in (typing.Union, __import__("types").UnionType):
        return tuple(t for a in typing.get_args(annotation) for t in _scalars(a))
    return (annotation,)


def _bounds(field: Any) -> tuple[Any, Any]:
    low = high = None
    for m in field.metadata:
        low = getattr(m, "ge", None) if getattr(m, "ge", None) is not None else low
        high = getattr(m, "le", None) if getattr(m, "le", None) is not None else high
    return low, high


class Block(BaseModel):
    """One block of params.yaml. Building one raises :class:`ConfigError` (one line naming ``block.key``)."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True, allow_inf_nan=False)
    block: ClassVar[str] = ""

    def __init__(self, **values: Any) -> None:
        cls = type(self)
        for key, value in list(values.items()):
            if f"{cls.block}.{key}" in MOVED:
                raise ConfigError(f"{cls.block}.{key} has moved: use {MOVED[f'{cls.block}.{key}']}.")
            field = cls.model_fields.get(key)
            if field is None:
                continue
            kinds = _scalars(field.annotation)
            if isinstance(value, float) and int in kinds and float not in kinds and value.is_integer():
                values[key] = int(value)
            if isinstance(value, str) and float in kinds and _FLOAT_TEXT.fullmatch(value.strip()):
                values[key] = float(value)  # YAML 1.1 reads `3e-3` as a string; DVC and YAML 1.2 read it as a number
        try:
            super().__init__(**values)
        except ValidationError as exc:
            raise ConfigError(_message(cls, exc, values)) from None

    def check_range(self, key: str, low: float, high: float) -> None:
        """For bounds that depend on other keys (model validators)."""
        value = getattr(self, key)
        if not low <= value <= high:
            raise ConfigError(f"{self.block}.{key} must be in [{low}, {high}], got {value!r}.")


def _message(cls: type[Block], exc: ValidationError, values: dict) -> str:
    """Pydantic's first error as one line in whaleid's words."""
    err = exc.errors(include_url=False)[0]
    kind, loc = err["type"], err["loc"]
    if not loc:  # a model validator's own message
        return str(err.get("ctx", {}).get("error", err["msg"]))
    key = str(loc[0])
    name = f"{cls.block}.{key}"
    if kind == "extra_forbidden":
        names = list(cls.model_fields)
        return f"Unknown key {name}.{suggest(key, names)} Valid keys: {', '.join(names)}."
    field, value = cls.model_fields[key], values.get(key)
    if kind == "literal_error":
        options = [str(o) for o in typing.get_args(field.annotation)]
        return f"{name} must be one of {', '.join(options)}, got {value!r}.{suggest(str(value), options)}"
    if kind == "finite_number":
        return f"{name} must be a finite number, got {value!r}."
    hint = f" ({field.description})" if field.description else ""
    if kind == "string_pattern_mismatch":
        return f"{name} must be {field.description}, got {value!r}."
    if kind == "greater_than":
        return f"{name} must be > {err['ctx']['gt']}{hint}, got {value!r}."
    if kind in ("greater_than_equal", "less_than_equal"):
        low, high = _bounds(field)
        if low is not None and high is not None:
            return f"{name} must be in [{low}, {high}]{hint}, got {value!r}."
        bound = f">= {low}" if high is None else f"<= {high}"
        return f"{name} must be {bound}{hint}, got {value!r}."
    if kind == "value_error":
        return str(err["ctx"]["error"])
    return f"{name} must be {_type_name(field.annotation)}, got {type(value).__name__} {value!r}."
