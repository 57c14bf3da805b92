"""What a recipe is: a named config function for one paper result (big_vision style)."""
from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Recipe:
    name: str
    claim: str               # what the paper reports (the yardstick), or what the recipe shows
    section: str             # the paper's section
    make: Callable[[bool], Any]

    @property
    def doc(self) -> str:
        return inspect.getdoc(self.make) or ""

    def config(self, *, quick: bool = False) -> Any:
        return self.make(quick)


def quick_mode(cfg: Any, **extra: Any) -> Any:
    """Shrink any config to a seconds-long smoke run (tiny data, one epoch, nothing compiled)."""
    small = dict(epochs=1, train_subset=500, test_subset=200, train_eval_size=200, threads=0, compile="false")
    small.update(extra)
    fields = {f.name for f in dataclasses.fields(cfg)}
    return dataclasses.replace(cfg, **{k: v for k, v in small.items() if k in fields})
