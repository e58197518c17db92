"""The shipped zoo as code: ``zoo/recipes.toml`` lists every entry with its full training options.

``robench zoo build [ID ...]`` retrains any or all of them through the same path as ``robench train``
(:func:`robench.train.job_from_options`), resumable from ``runs/<id>``; an entry already in the zoo with the same
recipe is skipped unless ``force``.
"""

from __future__ import annotations

import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

from .errors import BadSpec, DataNotFound, UnknownName

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


@dataclass
class ZooRecipe:
    id: str
    options: dict  # `robench train` options, defaults merged in

    def command(self) -> str:
        """The equivalent `robench train` command line."""
        parts = ["robench", "train"]
        for k, v in self.options.items():
            flag = "-T" if k == "T" else "--" + k.replace("_", "-")
            if isinstance(v, bool):
                parts.append(flag if v else "--no-" + k.replace("_", "-"))
            elif v is not None:
                parts += [flag, str(v)]
        return " ".join(shlex.quote(p) for p in parts)


def load_recipes(path: Path | str) -> list[ZooRecipe]:
    p = Path(path)
    if not p.exists():
        raise DataNotFound(f"zoo recipes file {str(p)!r} not found")
    try:
        doc = tomllib.loads(p.read_text())
    except tomllib.TOMLDecodeError as e:
        raise BadSpec(f"{str(p)}: not valid TOML ({e})") from None
    defaults, entries = doc.get("defaults", {}), doc.get("entry", [])
    out, seen = [], set()
    for e in entries:
        if "id" not in e:
            raise BadSpec(f"{str(p)}: an [[entry]] has no id")
        if e["id"] in seen:
            raise BadSpec(f"{str(p)}: duplicate id {e['id']!r}")
        seen.add(e["id"])
        out.append(ZooRecipe(e["id"], {**defaults, **e}))
    return out


def pick(recipes: list[ZooRecipe], ids: list[str]) -> list[ZooRecipe]:
    if not ids:
        return recipes
    known = {r.id: r for r in recipes}
    missing = [i for i in ids if i not in known]
    if missing:
        raise UnknownName(f"no zoo recipe {missing[0]!r}; recipes: {', '.join(known)}")
    return [known[i] for i in ids]
