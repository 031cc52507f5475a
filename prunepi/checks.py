"""One way to check a config field, one message style: "`scope.field` must be RULE, got VALUE".

A config's `validate()` is a table {field: Rule} handed to `check_fields`, plus the few
checks that relate two fields (written with `check`). A rule is a predicate and the words
the message uses, so the test and its explanation can never drift apart.

    check_fields("train", cfg, {"steps": int_at_least(1), "precision": one_of(PRECISIONS)})
    # ValueError: train.steps must be an integer >= 1, got 0
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, get_args


@dataclass(frozen=True)
class Rule:
    ok: Callable[[Any], bool]
    text: str  # what a valid value is, completing "FIELD must be ..."


def is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def is_real(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


def int_at_least(lo: int) -> Rule:
    return Rule(lambda v: is_int(v) and v >= lo, f"an integer >= {lo}")


def real_at_least(lo: float) -> Rule:
    return Rule(lambda v: is_real(v) and v >= lo, f">= {lo:g}")


def real_above(lo: float) -> Rule:
    return Rule(lambda v: is_real(v) and v > lo, f"> {lo:g}")


def real_in(lo: float, hi: float, *, lo_open: bool = False, hi_open: bool = False) -> Rule:
    """A finite number in the interval, its ends open or closed as given."""

    def ok(v: Any) -> bool:
        if not is_real(v):
            return False
        return (v > lo if lo_open else v >= lo) and (v < hi if hi_open else v <= hi)

    text = f"in {'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"
    return Rule(ok, text)


def one_of(choices: Iterable[Any]) -> Rule:
    """One of the choices: a tuple, or a `Literal[...]` type (its arguments)."""
    options = tuple(get_args(choices) or choices)
    return Rule(lambda v: v in options, f"one of {options}")


BOOL = Rule(lambda v: isinstance(v, bool), "a bool")


def nonempty(what: str) -> Rule:
    return Rule(lambda v: bool(v), what)


def optional(rule: Rule) -> Rule:
    return Rule(lambda v: v is None or rule.ok(v), f"{rule.text} or None")


def check(scope: str, name: str, value: Any, rule: Rule) -> None:
    """ValueError "`scope.name` must be RULE, got VALUE" unless the value passes."""
    if not rule.ok(value):
        where = f"{scope}.{name}" if scope else name
        raise ValueError(f"{where} must be {rule.text}, got {value!r}")


def check_fields(scope: str, obj: Any, rules: Mapping[str, Rule]) -> None:
    """`check` every field of `obj` named in the table, in the table's order."""
    for name, rule in rules.items():
        check(scope, name, getattr(obj, name), rule)
