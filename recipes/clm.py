"""Pretrain a GPT-style decoder with causal (next-token) language modelling.

    accelerate launch recipes/clm.py --config recipes/configs/clm/debug.yaml [key=value ...]
    nlp-ssl run clm --config recipes/configs/clm/default.yaml
"""

from nlp_ssl.registry import recipe_main

main = recipe_main("clm")

if __name__ == "__main__":
    main()
