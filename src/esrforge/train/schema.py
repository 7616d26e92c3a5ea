"""Typed config parsing: dataclasses in, every problem out with its field path.

`parse(cls, data)` builds a dataclass tree from plain YAML data. It rejects unknown keys, checks
types, allowed values (Literal) and bounds (field metadata lo/hi), and reports *all* problems at
once, each as `path.to.field: what is wrong (allowed: ...)`. `json_schema(cls)` describes the same
tree for editor completion; a config the parser accepts validates against it.
"""

from __future__ import annotations

import dataclasses
import math
import types
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints


class ConfigError(ValueError):
    """One or more config problems, one per line, each naming its field path."""

    def __init__(self, problems: list[str], source: str = "config") -> None:
        self.problems = problems
        head = f"{source}: {len(problems)} problem(s)" if len(problems) > 1 else source
        super().__init__(head + (":\n  " if len(problems) > 1 else ": ") + "\n  ".join(problems))


def bounded(
    default: Any = dataclasses.MISSING,
    *,
    lo: float | None = None,
    hi: float | None = None,
    open_hi: bool = False,
    doc: str = "",
    **kw: Any,
) -> Any:
    """A dataclass field with numeric bounds (`open_hi`: hi itself is excluded) and a description.

    On a list or tuple field the bounds apply to each item."""
    meta = {"lo": lo, "hi": hi, "open_hi": open_hi, "doc": doc}
    if default is dataclasses.MISSING:
        return dataclasses.field(metadata=meta, **kw)
    if isinstance(default, (list, dict)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=meta)
    return dataclasses.field(default=default, metadata=meta, **kw)


def _one_for_list(item: Any) -> bool:
    """List fields that also take a single value (`hr: path` = `hr: [path]`); json_schema says so too."""
    return item in (str, int, float)


def _type_name(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in get_args(tp))
    if origin in (list, tuple, dict):
        return f"{origin.__name__}[{', '.join(_type_name(a) for a in get_args(tp) if a is not Ellipsis)}]"
    if tp is type(None):
        return "null"
    if tp is Any:
        return "anything"
    return getattr(tp, "__name__", str(tp))


def _required(f: dataclasses.Field) -> bool:
    return f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING


def _what(tp: Any) -> str:
    """A missing value's type as a config author reads it: a section names its own required keys."""
    if dataclasses.is_dataclass(tp):
        needs = [f.name for f in dataclasses.fields(tp) if f.init and _required(f)]
        return "a section" + (f" with {', '.join(needs)}" if needs else "")
    plain = {bool: "true or false", int: "a whole number", float: "a number", str: "a string"}
    return plain.get(tp) or _type_name(tp)


class _Parser:
    def __init__(self) -> None:
        self.problems: list[str] = []

    def fail(self, path: str, msg: str) -> None:
        self.problems.append(f"{path or '(top level)'}: {msg}")

    def value(self, tp: Any, data: Any, path: str, meta: dict[str, Any] | None = None) -> Any:
        origin = get_origin(tp)
        if tp is Any:
            return data
        if tp is type(None):
            if data is not None:
                self.fail(path, f"expected null, got {data!r}")
            return None
        if dataclasses.is_dataclass(tp):
            return self.dataclass(tp, data, path)
        if origin is Literal:
            allowed = get_args(tp)
            # by type too: 2.0 == 2, but `scale: 2.0` is not the whole number the field takes
            if data not in allowed or not any(type(data) is type(a) for a in allowed):
                self.fail(path, f"{data!r} is not allowed (allowed: {', '.join(map(str, allowed))})")
            return data
        if origin in (Union, types.UnionType):
            args = get_args(tp)
            if data is None and type(None) in args:
                return None
            for arg in args:  # the first member that parses without problems wins
                trial = _Parser()
                out = trial.value(arg, data, path, meta)
                if not trial.problems:
                    return out
            non_none = [a for a in args if a is not type(None)]
            if len(non_none) == 1:  # Optional[X]: report X's own problems
                return self.value(non_none[0], data, path, meta)
            self.fail(path, f"expected {_type_name(tp)}, got {data!r}")
            return None
        if origin is list:
            (item,) = get_args(tp)
            if isinstance(data, (str, int, float)) and not isinstance(data, bool) and _one_for_list(item):
                data = [data]  # one value where a list is allowed: hr: path -> [path]
            if not isinstance(data, list):
                self.fail(path, f"expected a list of {_type_name(item)}, got {data!r}")
                return []
            return [self.value(item, v, f"{path}[{i}]", meta) for i, v in enumerate(data)]
        if origin is tuple:
            args = get_args(tp)
            if not isinstance(data, (list, tuple)) or len(data) != len(args):
                self.fail(path, f"expected [{', '.join(_type_name(a) for a in args)}], got {data!r}")
                return None
            return tuple(self.value(a, v, f"{path}[{i}]", meta) for i, (a, v) in enumerate(zip(args, data)))
        if origin is dict:
            kt, vt = get_args(tp)
            if not isinstance(data, dict):
                self.fail(path, f"expected a mapping of {_type_name(kt)} to {_type_name(vt)}, got {data!r}")
                return {}
            return {self.value(kt, k, f"{path}.{k}"): self.value(vt, v, f"{path}.{k}", meta) for k, v in data.items()}
        if tp is bool:
            if not isinstance(data, bool):
                self.fail(path, f"expected true or false, got {data!r}")
            return data
        if tp in (int, float):
            ok = isinstance(data, (int, float)) and not isinstance(data, bool)
            if ok and not math.isfinite(data):
                self.fail(path, f"expected a finite number, got {data!r}")
                return data
            if tp is int and ok and data != int(data):
                ok = False
            if not ok:
                self.fail(path, f"expected {'a whole number' if tp is int else 'a number'}, got {data!r}")
                return data
            data = tp(data)
            lo, hi, open_hi = (meta or {}).get("lo"), (meta or {}).get("hi"), (meta or {}).get("open_hi")
            if (lo is not None and data < lo) or (hi is not None and (data >= hi if open_hi else data > hi)):
                rng = f"[{'' if lo is None else lo}, {'' if hi is None else hi}{')' if open_hi else ']'}"
                self.fail(path, f"{data} is outside the allowed range {rng}")
            return data
        if tp is str:
            if not isinstance(data, str):
                self.fail(path, f"expected a string, got {data!r}")
            return data
        raise TypeError(f"schema type {tp!r} at {path} is not supported")

    def dataclass(self, cls: Any, data: Any, path: str) -> Any:
        if not isinstance(data, dict):
            self.fail(path, f"expected a mapping, got {data!r}")
            return None
        hints = get_type_hints(cls)
        fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
        for key in data:
            if key not in fields:
                self.fail(f"{path}.{key}" if path else str(key), f"unknown key (allowed: {', '.join(fields)})")
        before = len(self.problems)
        kwargs = {}
        for name, f in fields.items():
            sub = f"{path}.{name}" if path else name
            if name in data:
                kwargs[name] = self.value(hints[name], data[name], sub, dict(f.metadata))
            elif _required(f):
                doc = f.metadata.get("doc")
                self.fail(sub, f"required ({_what(hints[name])})" + (f"; {doc}" if doc else ""))
        if len(self.problems) > before:
            return None  # cross-field checks would only trip over the values already reported
        try:
            obj = cls(**kwargs)
        except (TypeError, ValueError) as e:
            self.fail(path, str(e))
            return None
        check = getattr(obj, "check", None)
        if check is not None:
            for problem in check():
                self.fail(f"{path}.{problem[0]}" if path else problem[0], problem[1])
        return obj


def parse(cls: type, data: Any, source: str = "config") -> Any:
    """Build `cls` from YAML data or raise ConfigError listing every problem."""
    p = _Parser()
    obj = p.dataclass(cls, data if data is not None else {}, "")
    if p.problems:
        raise ConfigError(p.problems, source)
    return obj


def to_dict(obj: Any) -> Any:
    """A parsed config back to plain data (what --print-config shows and checkpoints store)."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def json_schema(cls: type) -> dict[str, Any]:
    """JSON Schema (draft 2020-12) of a config dataclass, for YAML editor completion."""

    def of(tp: Any, meta: dict[str, Any] | None = None) -> dict[str, Any]:
        origin = get_origin(tp)
        if dataclasses.is_dataclass(tp):
            hints = get_type_hints(tp)
            fields = [f for f in dataclasses.fields(tp) if f.init]
            props = {}
            for f in fields:
                s = of(hints[f.name], dict(f.metadata))
                if f.metadata.get("doc"):
                    s["description"] = f.metadata["doc"]
                if f.default is not dataclasses.MISSING and not dataclasses.is_dataclass(f.default):
                    s["default"] = f.default
                props[f.name] = s
            required = [f.name for f in fields if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
            out: dict[str, Any] = {"type": "object", "properties": props, "additionalProperties": False}
            if required:
                out["required"] = required
            if tp.__doc__:
                out["description"] = tp.__doc__.strip().splitlines()[0]
            return out
        if origin is Literal:
            return {"enum": list(get_args(tp))}
        if origin in (Union, types.UnionType):
            members = [of(a, meta) for a in get_args(tp)]  # nested anyOf (X | None, X a list) spliced in
            return {"anyOf": [m for s in members for m in (s["anyOf"] if list(s) == ["anyOf"] else [s])]}
        if origin is list:
            (item,) = get_args(tp)
            array = {"type": "array", "items": of(item, meta)}
            return {"anyOf": [of(item, meta), array]} if _one_for_list(item) else array
        if origin is tuple:
            args = get_args(tp)
            return {"type": "array", "prefixItems": [of(a, meta) for a in args], "minItems": len(args), "maxItems": len(args)}
        if origin is dict:
            return {"type": "object", "additionalProperties": of(get_args(tp)[1], meta)}
        if tp is Any:
            return {}
        if tp is type(None):
            return {"type": "null"}
        simple = {bool: "boolean", int: "integer", float: "number", str: "string"}[tp]
        out = {"type": simple}
        if meta and tp in (int, float):
            if meta.get("lo") is not None:
                out["minimum"] = meta["lo"]
            if meta.get("hi") is not None:
                out["exclusiveMaximum" if meta.get("open_hi") else "maximum"] = meta["hi"]
        return out

    schema = of(cls)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    return schema


__all__ = ["ConfigError", "bounded", "json_schema", "parse", "to_dict"]
