"""The shipped zoo as code: ``zoo/recipes.toml`` lists every entry with its full training options.

``robench zoo build [ID ...]`` retrains any or all of them through the same path as ``robench train``
(:func:`robench.train.job.job_from_options`), resumable from ``runs/<id>``; an entry already in the zoo with the same
recipe is skipped unless ``force``.

An entry (or ``[defaults]``) may ask for several training seeds, ``seeds = [0, 1, 2]``: seed 0 keeps the entry's
id and seed ``k > 0`` becomes the entry ``<id>-s<k>``, the suffix the seeds report reads as "the same recipe"
(:mod:`robench.results.seeds`).
"""

from __future__ import annotations

import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

from ..errors import BadSpec, DataNotFound, UnknownName

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
        for r in expand_seeds(defaults, e, str(p)):
            if r.id in seen:
                raise BadSpec(f"{str(p)}: duplicate id {r.id!r}")
            seen.add(r.id)
            out.append(r)
    return out


def seed_id(entry_id: str, seed: int) -> str:
    """The zoo id of one seed of an entry: the entry's id for seed 0, ``<id>-s<seed>`` otherwise."""
    return entry_id if seed == 0 else f"{entry_id}-s{seed}"


def expand_seeds(defaults: dict, entry: dict, where: str = "recipes") -> list[ZooRecipe]:
    """One recipe per seed of ``entry`` (its ``seeds``, else the defaults', else its single ``seed``); the
    options put ``seed`` and ``id`` between the defaults and the entry's own keys, as a command line would."""
    if "seeds" in entry and "seed" in entry:
        raise BadSpec(f"{where}: entry {entry['id']!r} gives both seed and seeds; keep one")
    base = {k: v for k, v in defaults.items() if k not in ("seed", "seeds")}
    own = {k: v for k, v in entry.items() if k not in ("id", "seed", "seeds")}
    seeds = entry.get("seeds", defaults.get("seeds") if "seed" not in entry else None)
    if seeds is None:  # one seed: the id stays as written, whatever the seed
        seed = entry.get("seed", defaults.get("seed", 0))
        return [ZooRecipe(entry["id"], {**base, "seed": seed, "id": entry["id"], **own})]
    ok = isinstance(seeds, list) and seeds and all(type(s) is int and 0 <= s < 2**32 for s in seeds)
    if not ok or len(set(seeds)) != len(seeds):
        raise BadSpec(f"{where}: entry {entry['id']!r}: seeds {seeds!r}; give distinct integers >= 0, e.g. [0, 1, 2]")
    return [ZooRecipe(seed_id(entry["id"], s), {**base, "seed": s, "id": seed_id(entry["id"], s), **own})
            for s in seeds]


def pick(recipes: list[ZooRecipe], ids: list[str]) -> list[ZooRecipe]:
    if not ids:
        return recipes
    known = {r.id: r for r in recipes}
    missing = [i for i in ids if i not in known]
    if missing:
        raise UnknownName(f"no zoo recipe {missing[0]!r}; recipes: {', '.join(known)}")
    return [known[i] for i in ids]
