"""Train a sentence encoder contrastively from any masked-LM checkpoint (SimCSE, MoCo, supervised, CPC).

    accelerate launch recipes/contrastive_text.py --config recipes/configs/contrastive/debug.yaml [key=value ...]
    nlp-ssl run contrastive_text --config recipes/configs/contrastive/simcse.yaml
"""

from nlp_ssl.registry import recipe_main

main = recipe_main("contrastive_text")

if __name__ == "__main__":
    main()
