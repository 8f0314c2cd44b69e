"""Command-line handling shared by the recipe scripts: ``--config FILE [key=value ...]``."""

from __future__ import annotations

import argparse
from typing import TypeVar

from nlp_ssl.config import load_config

T = TypeVar("T")


def parse_recipe_args(config_cls: type[T], argv: list[str] | None = None, description: str | None = None) -> T:
    """Parse ``--config path.yaml`` plus dotted ``key=value`` overrides into ``config_cls``."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--config", help="YAML config (see `nlp-ssl ls`)")
    parser.add_argument("overrides", nargs="*", help="dotted key=value overrides, e.g. max_steps=100 model.hidden_size=128")
    args = parser.parse_args(argv)
    return load_config(config_cls, args.config, args.overrides)
