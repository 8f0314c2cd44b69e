"""Fine-tune a checkpoint for named-entity recognition (CoNLL-2003, WNUT-2016 offline, any CoNLL/IOB2 data).

    accelerate launch recipes/finetune_ner.py --config recipes/configs/ner/wnut16.yaml model=runs/mlm/final
    nlp-ssl run finetune_ner --config recipes/configs/ner/conll2003.yaml model=bert-base-cased

Tags go to the first sub-token of each word; scores are entity-level precision / recall / F1 (seqeval,
conlleval rules), overall and per entity type, on validation (selection) and test when there is one.
"""

from nlp_ssl.registry import recipe_main

main = recipe_main("finetune_ner")

if __name__ == "__main__":
    main()
