"""YAML as config authors write it: safe loading, `2e-4` read as a number, errors with a line.

PyYAML follows YAML 1.1, where a float needs a dot: `lr: 2e-4` is the *string* "2e-4", and the
config would then refuse a learning rate written the way papers and BasicSR's configs write it.
YAML 1.2 (and every JSON parser) reads it as a number; so does this loader.
"""

from __future__ import annotations

import re
from typing import Any

import yaml


class YamlError(ValueError):
    """Text that is not valid YAML; the message gives the line and column."""


class _Loader(yaml.SafeLoader):
    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        # PyYAML keeps the last of two equal keys without a word: `quality: 30` then `quality: 90`
        # in one step would silently be 90. A config with a doubled key is a mistake; say where.
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # `<<: *base` merges a mapping in; its keys may be overridden here
            key = self.construct_object(key_node, deep=True)
            try:
                hash(key)
            except TypeError:
                continue  # PyYAML's own check names an unhashable key
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


# Only the forms YAML 1.1 misses: an exponent without a dot (2e-4) or without a sign (1.5e3).
# Its own float forms stay as they are.
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?(?:\.[0-9]+|[0-9][0-9_]*(?:\.[0-9_]*)?)[eE][-+]?[0-9]+$"), list("-+.0123456789")
)


_MAX_VALUES = 100_000  # a config or pipeline holds hundreds


def _too_big(value: Any) -> bool:
    """Whether a loaded document holds more than _MAX_VALUES values once its aliases are
    expanded: nine aliases nested eight deep are 43 million ("billion laughs"), and checking or
    printing them would never end. Stops counting at the limit."""
    budget, stack = _MAX_VALUES, [value]
    while stack:
        budget -= 1
        if budget < 0:
            return True
        v = stack.pop()
        if isinstance(v, dict):
            stack.extend(v.keys())
            stack.extend(v.values())
        elif isinstance(v, list):
            stack.extend(v)
    return False


def load_yaml(text: str) -> Any:
    """Parse one YAML document with safe types only; raise YamlError naming the line of a mistake."""
    try:
        value = yaml.load(text, Loader=_Loader)  # noqa: S506 - _Loader is a SafeLoader
    except RecursionError:
        raise YamlError("not valid YAML (nested too deeply)") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        raise YamlError(f"not valid YAML ({where}{problem})") from None
    if _too_big(value):
        raise YamlError(f"more than {_MAX_VALUES} values once its aliases (*name) are expanded; a config holds far fewer")
    return value
