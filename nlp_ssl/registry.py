"""Recipes register themselves here; the CLI and the scripts in ``recipes/`` find them by name.

A recipe is a name, a one-line summary, its config dataclass and the function that runs a config. The
pipeline modules of this package register theirs when imported; another package adds recipes through the
``nlp_ssl.recipes`` entry-point group (each entry point names a module that calls :func:`register`).
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any

from nlp_ssl.errors import UserError, exit_on_user_error


@dataclass(frozen=True)
class Recipe:
    """A runnable recipe.

    Attributes:
        name: what ``nlp-ssl run <name>`` and ``recipes/<name>.py`` use.
        summary: one line for ``nlp-ssl ls``.
        config_class: the typed config its YAML files load into.
        run: runs one resolved config (prints its own summary).
        config_folder: the folder under ``recipes/configs/`` that holds its YAML files.
    """

    name: str
    summary: str
    config_class: type
    run: Callable[[Any], Any]
    config_folder: str


_RECIPES: dict[str, Recipe] = {}
_discovered = False


def register(name: str, summary: str, config_class: type, run: Callable[[Any], Any],
             config_folder: str | None = None) -> Recipe:
    """Add a recipe (re-registering the same name replaces it)."""
    recipe = Recipe(name, summary, config_class, run, config_folder or name)
    _RECIPES[name] = recipe
    return recipe


def recipes() -> dict[str, Recipe]:
    """Every registered recipe, after importing this package's pipelines and the entry points."""
    global _discovered
    if not _discovered:
        import nlp_ssl.pipelines as package

        for module in pkgutil.iter_modules(package.__path__):
            importlib.import_module(f"{package.__name__}.{module.name}")
        for entry in entry_points(group="nlp_ssl.recipes"):
            entry.load()
        _discovered = True
    return dict(sorted(_RECIPES.items()))


def get_recipe(name: str) -> Recipe:
    known = recipes()
    if name not in known:
        raise UserError(f"unknown recipe '{name}'; available: {', '.join(known)} (see `nlp-ssl ls`)")
    return known[name]


def run_recipe(name: str, argv: list[str] | None = None) -> Any:
    """Parse ``--config FILE [key=value ...]`` for recipe ``name`` and run it."""
    from nlp_ssl.recipe_args import parse_recipe_args

    recipe = get_recipe(name)
    cfg = parse_recipe_args(recipe.config_class, argv, description=f"{recipe.name}: {recipe.summary}")
    return recipe.run(cfg)


def recipe_main(name: str) -> Callable[[list[str] | None], None]:
    """The ``main`` of a ``recipes/<name>.py`` script: user errors exit with one line, status 2."""

    @exit_on_user_error
    def main(argv: list[str] | None = None) -> None:
        run_recipe(name, argv)

    return main
