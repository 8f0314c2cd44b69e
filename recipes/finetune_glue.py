"""Fine-tune a checkpoint on a GLUE task, the whole suite, the offline BBC News topics or a custom task.

    accelerate launch recipes/finetune_glue.py --config recipes/configs/glue/debug.yaml task=sst2 model=runs/mlm/final
    nlp-ssl run finetune_glue --config recipes/configs/glue/bert_base.yaml task=all

``model`` is a run's ``final/`` folder, any transformers model folder or a hub id. Prints the dev scores
(median over ``seeds``) and writes the fine-tuned model with its card to ``<output_dir>/final``
(``task=all``: one folder per task plus ``glue_results.md`` / ``glue_results.json``).
"""

from pathlib import Path

from nlp_ssl.errors import exit_on_user_error
from nlp_ssl.pipelines.finetune import GlueFinetuneConfig, end_processes, format_outcomes, run_glue
from nlp_ssl.recipe_args import parse_recipe_args

CONFIG = GlueFinetuneConfig  # read by `nlp-ssl validate / show`


@exit_on_user_error
def main(argv: list[str] | None = None) -> None:
    from accelerate import PartialState

    cfg = parse_recipe_args(CONFIG, argv, description=__doc__)
    try:
        outcomes = run_glue(cfg)
        if PartialState().is_main_process:
            print(format_outcomes(outcomes))
            if cfg.task == "all" and all(o.complete for o in outcomes):
                print((Path(cfg.output_dir) / "glue_results.md").read_text(encoding="utf-8"))
    finally:
        end_processes()


if __name__ == "__main__":
    main()
