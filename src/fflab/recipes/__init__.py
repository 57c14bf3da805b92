"""Recipes: one small config function per paper result (big_vision style).

Each recipe's docstring states the claim, the command and the expected runtime. ``quick=True``
returns a tiny version that the tests run in seconds. A variant is a new recipe entry, not a
subclass. Look recipes up with ``get_recipe(name)``; list them with ``fflab recipes``.
"""
from __future__ import annotations

import dataclasses
import inspect
from dataclasses import dataclass
from typing import Any, Callable

from ..errors import ConfigError


@dataclass(frozen=True)
class Recipe:
    name: str
    claim: str               # what the paper reports (the yardstick), or what the recipe shows
    section: str             # paper / SPEC section
    make: Callable[[bool], Any]

    @property
    def doc(self) -> str:
        return inspect.getdoc(self.make) or ""

    def config(self, *, quick: bool = False) -> Any:
        return self.make(quick)


RECIPES: dict[str, Recipe] = {}


def recipe(name: str, *, claim: str, section: str):
    """Register ``fn(quick: bool) -> config`` as recipe ``name``."""
    def deco(fn: Callable[[bool], Any]) -> Callable[[bool], Any]:
        if name in RECIPES:
            raise ValueError(f"recipe {name!r} registered twice")
        RECIPES[name] = Recipe(name, claim, section, fn)
        return fn
    return deco


def quick_mode(cfg: Any, **extra: Any) -> Any:
    """Shrink any config to a seconds-long smoke run (tiny data, one epoch)."""
    small = dict(epochs=1, train_subset=500, test_subset=200, train_eval_size=200, threads=0)
    small.update(extra)
    fields = {f.name for f in dataclasses.fields(cfg)}
    return dataclasses.replace(cfg, **{k: v for k, v in small.items() if k in fields})


def _load_all() -> None:
    from . import supervised  # noqa: F401  (registers its recipes)
    for mod in ("unsupervised", "recurrent", "sequences"):
        try:
            __import__(f"{__name__}.{mod}")
        except ModuleNotFoundError as e:
            if e.name != f"{__name__}.{mod}":
                raise


def get_recipe(name: str) -> Recipe:
    _load_all()
    if name not in RECIPES:
        raise ConfigError(f"unknown recipe {name!r}; available: {', '.join(sorted(RECIPES))}")
    return RECIPES[name]


def all_recipes() -> dict[str, Recipe]:
    _load_all()
    return dict(RECIPES)
