"""Fine-tune a checkpoint for named-entity recognition (CoNLL-2003, WNUT-2016 offline, any CoNLL/IOB2 data).

    accelerate launch recipes/finetune_ner.py --config recipes/configs/ner/wnut16.yaml model=runs/mlm/final
    nlp-ssl run finetune_ner --config recipes/configs/ner/conll2003.yaml model=bert-base-cased

Tags go to the first sub-token of each word; scores are entity-level precision / recall / F1 (seqeval,
conlleval rules), overall and per entity type, on validation (selection) and test when there is one.
"""

from nlp_ssl.errors import exit_on_user_error
from nlp_ssl.pipelines.finetune import NerFinetuneConfig, end_processes, format_outcomes, run_ner
from nlp_ssl.recipe_args import parse_recipe_args

CONFIG = NerFinetuneConfig  # read by `nlp-ssl validate / show`


@exit_on_user_error
def main(argv: list[str] | None = None) -> None:
    from accelerate import PartialState

    cfg = parse_recipe_args(CONFIG, argv, description=__doc__)
    try:
        outcome = run_ner(cfg)
        if PartialState().is_main_process:
            print(format_outcomes([outcome]))
    finally:
        end_processes()


if __name__ == "__main__":
    main()
