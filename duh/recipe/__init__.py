"""Project recipes: every build of a project, declared in ``duh.toml`` and run by ``duh build -c``.

``duh build MODEL --flags`` compiles to the same one-entry recipe, so the file and the command
line reach the compiler by one path.
"""

from __future__ import annotations

from duh.recipe._model import (
    BUILD_KEYS,
    BuildEntry,
    Recipe,
    entry_from_options,
    load_recipe_file,
)
from duh.recipe._run import build_entry, build_kwargs

__all__ = [
    "BUILD_KEYS",
    "BuildEntry",
    "Recipe",
    "build_entry",
    "build_kwargs",
    "entry_from_options",
    "load_recipe_file",
]
