"""Train skip-gram or CBOW word vectors (torch engine or gensim backend) and evaluate them intrinsically.

    accelerate launch recipes/word2vec.py --config recipes/configs/word2vec/debug.yaml [key=value ...]
    nlp-ssl run word2vec --config recipes/configs/word2vec/default.yaml
    nlp-ssl run word2vec --config recipes/configs/word2vec/default_gensim.yaml
"""

from nlp_ssl.registry import recipe_main

main = recipe_main("word2vec")

if __name__ == "__main__":
    main()
