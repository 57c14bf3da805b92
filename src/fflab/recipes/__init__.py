"""Recipes: one small config function per paper result, grouped by the paper's sections.

Each recipe's docstring states the claim, the command, the runtime on a named CPU and the
deviations from the paper; the numbers it produced are in RESULTS.md. ``quick=True`` returns a
tiny version that the tests run in seconds. A variant is a new recipe entry, not a subclass.
``RECIPES`` is the table, built from the modules below (nothing registers itself on import).
"""
from __future__ import annotations

from ..errors import ConfigError
from . import baselines, blocks, cifar, fast_learning, recurrent, sequences, supervised, unsupervised
from ._recipe import Recipe, quick_mode

__all__ = ["Recipe", "RECIPES", "get_recipe", "all_recipes", "quick_mode"]

RECIPES: dict[str, Recipe] = {}
for _module in (baselines, supervised, unsupervised, recurrent, cifar, blocks, sequences, fast_learning):
    for _r in _module.RECIPES:
        if _r.name in RECIPES:
            raise ValueError(f"recipe {_r.name!r} defined twice")
        RECIPES[_r.name] = _r


def get_recipe(name: str) -> Recipe:
    if name not in RECIPES:
        raise ConfigError(f"unknown recipe {name!r}; available: {', '.join(sorted(RECIPES))}")
    return RECIPES[name]


def all_recipes() -> dict[str, Recipe]:
    return dict(RECIPES)
