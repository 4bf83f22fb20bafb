"""The serialized-DAG JSON schema, compiled once into plain Python checks that accept a document quickly.

Airflow checks every serialized DAG against its JSON schema with jsonschema's Draft 7
validator, which interprets the schema anew for every DAG (a third of serialization's
time here). The checks compiled here follow jsonschema's Draft 7 rules keyword by
keyword, and are only ever used to accept: a document they do not accept, or that makes
them fail, goes to Airflow's own validation, which then decides and words the error. So
what is refused, and how, is what Airflow says. A schema that uses a keyword not compiled
here, or a validator that is not Draft 7's, is left to Airflow alone.
"""

from __future__ import annotations

import numbers
import re
from collections.abc import Callable

Check = Callable[[object], bool]


class Unsupported(Exception):
    """The schema uses something these checks do not compile."""


def _integer(x: object) -> bool:
    return not isinstance(x, bool) and (isinstance(x, int) or (isinstance(x, float) and x.is_integer()))


def _number(x: object) -> bool:
    return not isinstance(x, bool) and isinstance(x, numbers.Number)


# Draft 7's type checker, as jsonschema defines it: bool is no number, 1.0 is an integer.
TYPES: dict[str, Check] = {
    "array": lambda x: isinstance(x, list),
    "boolean": lambda x: isinstance(x, bool),
    "integer": _integer,
    "null": lambda x: x is None,
    "number": _number,
    "object": lambda x: isinstance(x, dict),
    "string": lambda x: isinstance(x, str),
}


def _always(x: object) -> bool:
    return True


def _never(x: object) -> bool:
    return False


class Compiler:
    """Turns each schema node into one function of the instance: True when jsonschema would find no error."""

    def __init__(self, root: dict, keywords: set[str], equal: Callable[[object, object], bool]):
        self.root, self.keywords, self.equal = root, keywords, equal
        self.refs: dict[str, Check] = {}

    def node(self, schema: object) -> Check:
        if schema is True:
            return _always
        if schema is False:
            return _never
        if not isinstance(schema, dict):
            raise Unsupported(f"schema {schema!r}")
        if "$ref" in schema:  # Draft 7 ignores the siblings of $ref
            return self.ref(schema["$ref"])
        if "$id" in schema and schema is not self.root:
            raise Unsupported("$id below the root changes what references mean")
        checks = [self.keyword(key, value, schema) for key, value in schema.items() if key in self.keywords]
        checks = [c for c in checks if c is not _always]
        if not checks:
            return _always
        if len(checks) == 1:
            return checks[0]

        def every(x: object, checks: tuple[Check, ...] = tuple(checks)) -> bool:
            for check in checks:
                if not check(x):
                    return False
            return True

        return every

    def ref(self, pointer: str) -> Check:
        if pointer not in self.refs:
            self.refs[pointer] = _never  # recursion: the real check is looked up when called
            self.refs[pointer] = self.node(self.resolve(pointer))
        refs = self.refs
        return lambda x: refs[pointer](x)

    def resolve(self, pointer: str) -> object:
        if not pointer.startswith("#") or "~" in pointer or "%" in pointer:
            raise Unsupported(f"$ref {pointer!r}")
        target: object = self.root
        for part in filter(None, pointer[1:].split("/")):
            if not isinstance(target, dict) or part not in target:
                raise Unsupported(f"$ref {pointer!r}")
            target = target[part]
        return target

    def keyword(self, key: str, value, schema: dict) -> Check:
        method = getattr(self, f"k_{key}", None)
        if method is None:
            raise Unsupported(f"keyword {key!r}")
        return method(value, schema)

    def k_type(self, value, schema: dict) -> Check:
        names = [value] if isinstance(value, str) else list(value)
        if any(n not in TYPES for n in names):
            raise Unsupported(f"type {value!r}")
        kinds = tuple(TYPES[n] for n in names)
        if len(kinds) == 1:
            return kinds[0]
        return lambda x: any(kind(x) for kind in kinds)

    def k_properties(self, value: dict, schema: dict) -> Check:
        compiled = ((name, self.node(sub)) for name, sub in value.items())
        properties = tuple((name, sub) for name, sub in compiled if sub is not _always)

        def check(x: object) -> bool:
            if not isinstance(x, dict):
                return True
            for name, sub in properties:
                if name in x and not sub(x[name]):
                    return False
            return True

        return check

    def k_patternProperties(self, value: dict, schema: dict) -> Check:
        patterns = tuple((re.compile(p).search, self.node(sub)) for p, sub in value.items())
        return lambda x: (
            not isinstance(x, dict) or all(sub(v) for search, sub in patterns for k, v in x.items() if search(k))
        )

    def k_additionalProperties(self, value, schema: dict) -> Check:
        known = schema.get("properties", {})
        joined = "|".join(schema.get("patternProperties", {}))
        search = re.compile(joined).search if joined else None
        if isinstance(value, dict):
            sub = self.node(value)
            if sub is _always:
                return _always
        elif value:
            return _always
        else:
            sub = _never

        def check(x: object) -> bool:
            if not isinstance(x, dict):
                return True
            for name in x:
                if name not in known and not (search and search(name)) and not sub(x[name]):
                    return False
            return True

        return check

    def k_required(self, value: list, schema: dict) -> Check:
        names = tuple(value)
        return lambda x: not isinstance(x, dict) or all(n in x for n in names)

    def k_minProperties(self, value: int, schema: dict) -> Check:
        return lambda x: not isinstance(x, dict) or len(x) >= value

    def k_maxProperties(self, value: int, schema: dict) -> Check:
        return lambda x: not isinstance(x, dict) or len(x) <= value

    def k_dependencies(self, value: dict, schema: dict) -> Check:
        needs = tuple((name, tuple(dep) if isinstance(dep, list) else self.node(dep)) for name, dep in value.items())

        def check(x: object) -> bool:
            if not isinstance(x, dict):
                return True
            for name, need in needs:
                if name in x:
                    if isinstance(need, tuple):
                        if not all(n in x for n in need):
                            return False
                    elif not need(x):
                        return False
            return True

        return check

    def k_items(self, value, schema: dict) -> Check:
        if isinstance(value, list):
            positional = tuple(self.node(sub) for sub in value)
            return lambda x: not isinstance(x, list) or all(sub(i) for sub, i in zip(positional, x, strict=False))
        sub = self.node(value)
        return lambda x: not isinstance(x, list) or all(sub(i) for i in x)

    def k_minItems(self, value: int, schema: dict) -> Check:
        return lambda x: not isinstance(x, list) or len(x) >= value

    def k_maxItems(self, value: int, schema: dict) -> Check:
        return lambda x: not isinstance(x, list) or len(x) <= value

    def k_minimum(self, value, schema: dict) -> Check:
        return lambda x: not _number(x) or not x < value  # type: ignore[operator]

    def k_exclusiveMinimum(self, value, schema: dict) -> Check:
        return lambda x: not _number(x) or not x <= value  # type: ignore[operator]

    def k_pattern(self, value: str, schema: dict) -> Check:
        search = re.compile(value).search
        return lambda x: not isinstance(x, str) or search(x) is not None

    def k_const(self, value, schema: dict) -> Check:
        equal = self.equal
        return lambda x: equal(x, value)

    def k_anyOf(self, value: list, schema: dict) -> Check:
        subs = tuple(self.node(s) for s in value)
        return lambda x: any(sub(x) for sub in subs)

    def k_allOf(self, value: list, schema: dict) -> Check:
        subs = tuple(self.node(s) for s in value)
        return lambda x: all(sub(x) for sub in subs)


def compile_validator(validator) -> Check:
    """The accepting check of a jsonschema validator; raises Unsupported unless it is Draft 7's, as Airflow's is."""
    import jsonschema
    from jsonschema._utils import equal

    draft7 = jsonschema.Draft7Validator
    if not isinstance(validator, draft7) or validator.VALIDATORS != draft7.VALIDATORS:
        raise Unsupported("not jsonschema's Draft 7 validator")
    if validator.TYPE_CHECKER != draft7.TYPE_CHECKER or validator.format_checker is not None:
        raise Unsupported("a type or format checker of its own")
    return Compiler(validator.schema, set(draft7.VALIDATORS), equal).node(validator.schema)


def install() -> None:
    """Accept serialized DAGs with the compiled check first; Airflow's validation has the last word on the rest."""
    try:
        from airflow.serialization.serialized_objects import DagSerialization as serialization
    except ImportError:  # before Airflow 3.1
        from airflow.serialization.serialized_objects import SerializedDAG as serialization
    try:
        accepts = compile_validator(serialization._json_schema)
    except (Unsupported, ImportError, AttributeError, re.error):
        return
    original = serialization.validate_schema.__func__

    def validate_schema(cls, serialized_obj) -> None:
        if isinstance(serialized_obj, dict):
            try:
                if accepts(serialized_obj):
                    return
            except Exception:  # Airflow's own validation below decides, and words the error
                pass
        original(cls, serialized_obj)

    serialization.validate_schema = classmethod(validate_schema)
