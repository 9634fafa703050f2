"""Per-stage broadcasting: any parameter may be one value for every stage or a list of one per stage.

``per_stage(int)`` is a pydantic type that accepts ``7`` or ``[3, 5, 7, 9]``. A list-valued parameter
(e.g. ``list[int]``) is per-stage only when written as a list of lists. The validated value is either
the scalar or a :class:`StageValues` list, and :func:`pick` selects a stage's value from either.
"""

from __future__ import annotations

import typing
from typing import Annotated, Any, Union

from pydantic import BaseModel, ConfigDict, Field, PlainValidator, TypeAdapter, ValidationError, create_model
from pydantic_core import PydanticCustomError


class StageValues(list):
    """A list that means "one value per stage" (as opposed to a list-valued parameter)."""


def _is_list_type(tp: Any) -> bool:
    origin = typing.get_origin(tp)
    if origin is Annotated:
        return _is_list_type(typing.get_args(tp)[0])
    if origin is Union:
        return any(_is_list_type(a) for a in typing.get_args(tp) if a is not type(None))
    return origin in (list, tuple) or tp in (list, tuple)


def first_message(exc: ValidationError) -> str:
    err = exc.errors(include_url=False)[0]
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] in ("int_type", "float_type") and isinstance(err.get("input"), bool):
        msg += " (YAML reads yes / no / on / off / true / false as booleans; write the number)"
    return msg[:1].lower() + msg[1:]


def per_stage(tp: Any) -> Any:
    model = isinstance(tp, type) and issubclass(tp, BaseModel)  # a model brings its own (strict) config
    # strict, as the config models are: a YAML yes / on is no integer, "7" no kernel size
    adapter = TypeAdapter(tp) if model else TypeAdapter(tp, config=ConfigDict(strict=True))
    list_typed = _is_list_type(tp)

    def validate(value: Any) -> Any:
        if isinstance(value, list) and (not list_typed or (value and all(isinstance(v, list) for v in value))):
            out = StageValues()
            for i, item in enumerate(value):
                try:
                    out.append(adapter.validate_python(item))
                except ValidationError as exc:
                    raise PydanticCustomError(
                        "per_stage", "stage {stage}: {msg}, got {value}",
                        {"stage": i, "value": repr(item), "msg": first_message(exc)}) from None
            return out
        try:
            return adapter.validate_python(value)
        except ValidationError as exc:
            raise PydanticCustomError("per_stage", "{msg}, got {value}",
                                      {"msg": first_message(exc), "value": repr(value)}) from None

    return Annotated[Any, PlainValidator(validate, json_schema_input_type=Union[tp, list[tp]])]


def pick(value: Any, stage: int) -> Any:
    return value[stage] if isinstance(value, StageValues) else value


def stage_count_problem(value: Any, num_stages: int) -> str | None:
    if isinstance(value, StageValues) and len(value) != num_stages:
        return (f"has {len(value)} per-stage values but the spec has {num_stages} stages; give one value "
                f"for every stage or a single value for all")
    return None


_PER_STAGE_MODELS: dict[type, type[BaseModel]] = {}


def per_stage_model(cls: type[BaseModel]) -> type[BaseModel]:
    """A variant of config model ``cls`` whose fields (except ``type``) are optional and per-stage."""
    if cls in _PER_STAGE_MODELS:
        return _PER_STAGE_MODELS[cls]
    fields: dict[str, Any] = {}
    for name, info in cls.model_fields.items():
        if name == "type":
            fields[name] = (info.annotation, Field(default=info.default))
            continue
        inner = Annotated[(info.annotation, *info.metadata)] if info.metadata else info.annotation
        fields[name] = (per_stage(inner), Field(default=None, description=info.description))
    model = create_model(f"{cls.__name__}Override", __config__=cls.model_config, __doc__=cls.__doc__,
                         **fields)
    model.base_config = cls  # type: ignore[attr-defined]
    _PER_STAGE_MODELS[cls] = model
    return model
