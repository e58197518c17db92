"""Parsing of perturbation budgets: ``8/255``, ``0.031``, lists ``2/255,4/255`` and ranges ``0:16/255:4/255``.

Every value is returned with the string it came from (``eps_str``), so reports can show ``8/255`` exactly.
"""

from __future__ import annotations

import math
import re
from fractions import Fraction

from .errors import BadSpec

ACCEPTED = "a number in [0, 1] such as 8/255 or 0.031, a list a,b,c, or a range start:stop:step"
_NUM = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*(?:/\s*([0-9]*\.?[0-9]+))?\s*$")
MAX_VALUES = 1000
MAX_CHARS = 40  # per value


def _one(text: str, what: str, limit: float = 1.0) -> tuple[float, Fraction | None]:
    """One value in [0, limit]: (float, exact fraction when given as k/n with integers)."""
    if len(text.strip()) > MAX_CHARS:  # also keeps int() below its digit limit
        raise BadSpec(f"{what} {text.strip()[:MAX_CHARS]!r}... is too long; accepted: {ACCEPTED}")
    m = _NUM.match(text)
    if not m and text.strip().startswith("-") and _NUM.match(text.strip()[1:]):
        raise BadSpec(f"{what} {text.strip()!r} is negative; accepted: {ACCEPTED}")
    if not m:
        raise BadSpec(f"{what} {text.strip()!r} is not a number; accepted: {ACCEPTED}")
    num, den = m.group(1), m.group(2)
    if den is not None and float(den) == 0:
        raise BadSpec(f"{what} {text.strip()!r} divides by zero; accepted: {ACCEPTED}")
    value = float(num) / (float(den) if den else 1.0)
    if not math.isfinite(value) or value > limit:
        accepted = ACCEPTED if limit == 1 else ACCEPTED.replace("[0, 1]", f"[0, {limit:g}]").replace(" such as "
                                                                                                "8/255 or 0.031", "")
        raise BadSpec(f"{what} {text.strip()!r} = {value:g} is out of range; accepted: {accepted}")
    exact = None
    if num.isdigit() and (den is None or den.isdigit()):
        exact = Fraction(int(num), int(den or 1))
    return value, exact


def format_eps(value: float, exact: Fraction | None = None, den: int | None = None) -> str:
    """``k/den`` where the value is exactly that (den defaults to 255), else a short decimal."""
    if value == 0:
        return "0"
    d = den or 255
    k = value * d
    if exact is not None and (exact * d).denominator == 1:
        return f"{int(exact * d)}/{d}"
    if exact is None and abs(k - round(k)) < 1e-9 and den is not None:
        return f"{round(k)}/{d}"
    return f"{value:.6g}"


def parse_eps(text: str | float, what: str = "--eps", limit: float = 1.0) -> list[tuple[float, str]]:
    """Parse a budget string into ``[(value, eps_str), ...]`` in the order given, duplicates removed; every value
    in ``[0, limit]`` (1 for L-inf budgets and noise; larger for L2 and L1 budgets).

    Examples:
        >>> parse_eps("8/255")
        [(0.03137254901960784, '8/255')]
        >>> [s for _, s in parse_eps("0:8/255:4/255")]
        ['0', '4/255', '8/255']
    """
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        text = repr(float(text))
    if not isinstance(text, str) or not text.strip():
        raise BadSpec(f"{what} {text!r} is empty; accepted: {ACCEPTED}")
    out: list[tuple[float, str]] = []
    for part in text.split(","):
        if part.count(":") == 2:
            out += _range(part, what, limit)
        elif ":" in part:
            raise BadSpec(f"{what} {part.strip()!r}: a range is start:stop:step; accepted: {ACCEPTED}")
        else:
            v, exact = _one(part, what, limit)
            out.append((v, _as_given(part, v, exact)))
    seen, unique = set(), []
    for v, s in out:
        if v not in seen:
            seen.add(v)
            unique.append((v, s))
    return unique


def _as_given(part: str, value: float, exact: Fraction | None) -> str:
    if value == 0:
        return "0"
    return "".join(part.split()) if exact is not None and "/" in part else f"{value:.6g}"


def _range(part: str, what: str, limit: float = 1.0) -> list[tuple[float, str]]:
    a, b, c = (_one(p, what, limit) for p in part.split(":"))
    if c[0] <= 0:
        raise BadSpec(f"{what} {part.strip()!r}: the step must be > 0; accepted: {ACCEPTED}")
    if b[0] < a[0]:
        raise BadSpec(f"{what} {part.strip()!r}: stop is below start; accepted: {ACCEPTED}")
    span = (b[0] - a[0]) / c[0]  # inf for a tiny step
    n = math.floor(span + 1e-9) + 1 if span < MAX_VALUES else MAX_VALUES + 1
    if n > MAX_VALUES:
        raise BadSpec(f"{what} {part.strip()!r} gives more than {MAX_VALUES} values; at most {MAX_VALUES}")
    if all(x[1] is not None for x in (a, b, c)):  # exact arithmetic keeps k/255 strings exact
        fr = [a[1] + i * c[1] for i in range(math.floor((b[1] - a[1]) / c[1]) + 1)]
        den = max(int(_NUM.match(p).group(2) or 1) for p in part.split(":"))  # as typed: 3/255, not 1/85
        return [(float(f), format_eps(float(f), f, den)) for f in fr]
    values = [min(a[0] + i * c[0], b[0]) for i in range(n)]  # the 1e-9 above must not step past stop
    return [(v, f"{v:.6g}") for v in values]


def parse_one(text: str | float, what: str, limit: float = 1.0) -> float:
    """A single budget (for training options such as --eps and --sigma), in ``[0, limit]``."""
    vals = parse_eps(text, what, limit)
    if len(vals) != 1:
        raise BadSpec(f"{what} {text!r}: give one value, not {len(vals)}")
    return vals[0][0]
