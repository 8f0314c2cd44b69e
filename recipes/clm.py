"""Pretrain a GPT-style decoder with causal (next-token) language modelling.

    accelerate launch recipes/clm.py --config recipes/configs/clm/debug.yaml [key=value ...]
    nlp-ssl run clm --config recipes/configs/clm/default.yaml
"""

from nlp_ssl.errors import exit_on_user_error
from nlp_ssl.pipelines.language_model import CausalLMConfig, format_summary, pretrain_language_model
from nlp_ssl.recipe_args import parse_recipe_args

CONFIG = CausalLMConfig


@exit_on_user_error
def main(argv: list[str] | None = None) -> None:
    cfg = parse_recipe_args(CONFIG, argv, description=__doc__)
    summary = pretrain_language_model(cfg, "causal")
    if summary.is_main_process:
        print(format_summary(summary, "causal"))


if __name__ == "__main__":
    main()
