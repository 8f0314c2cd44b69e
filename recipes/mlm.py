"""Pretrain a BERT-style encoder with masked language modelling.

    accelerate launch recipes/mlm.py --config recipes/configs/mlm/debug.yaml [key=value ...]
    nlp-ssl run mlm --config recipes/configs/mlm/default.yaml
"""

from nlp_ssl.errors import exit_on_user_error
from nlp_ssl.pipelines.language_model import MaskedLMConfig, format_summary, pretrain_language_model
from nlp_ssl.recipe_args import parse_recipe_args

CONFIG = MaskedLMConfig


@exit_on_user_error
def main(argv: list[str] | None = None) -> None:
    cfg = parse_recipe_args(CONFIG, argv, description=__doc__)
    summary = pretrain_language_model(cfg, "masked")
    if summary.is_main_process:
        print(format_summary(summary, "masked"))


if __name__ == "__main__":
    main()
