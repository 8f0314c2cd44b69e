"""Fine-tune a checkpoint on a GLUE task, the whole suite, the offline BBC News topics or a custom task.

    accelerate launch recipes/finetune_glue.py --config recipes/configs/glue/debug.yaml task=sst2 model=runs/mlm/final
    nlp-ssl run finetune_glue --config recipes/configs/glue/bert_base.yaml task=all

``model`` is a run's ``final/`` folder, any transformers model folder or a hub id. Prints the dev scores
(median over ``seeds``) and writes the fine-tuned model with its card to ``<output_dir>/final``
(``task=all``: one folder per task plus ``glue_results.md`` / ``glue_results.json``).
"""

from nlp_ssl.registry import recipe_main

main = recipe_main("finetune_glue")

if __name__ == "__main__":
    main()
