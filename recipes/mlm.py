"""Pretrain a BERT-style encoder with masked language modelling.

    accelerate launch recipes/mlm.py --config recipes/configs/mlm/debug.yaml [key=value ...]
    nlp-ssl run mlm --config recipes/configs/mlm/default.yaml
"""

from nlp_ssl.registry import recipe_main

main = recipe_main("mlm")

if __name__ == "__main__":
    main()
