"""Train skip-gram or CBOW word vectors (torch engine or gensim backend) and evaluate them intrinsically.

    accelerate launch recipes/word2vec.py --config recipes/configs/word2vec/debug.yaml [key=value ...]
    nlp-ssl run word2vec --config recipes/configs/word2vec/default.yaml
    nlp-ssl run word2vec --config recipes/configs/word2vec/default_gensim.yaml
"""

from nlp_ssl.errors import exit_on_user_error
from nlp_ssl.pipelines.word2vec import Word2VecConfig, format_summary, train_word2vec
from nlp_ssl.recipe_args import parse_recipe_args

CONFIG = Word2VecConfig


@exit_on_user_error
def main(argv: list[str] | None = None) -> None:
    cfg = parse_recipe_args(CONFIG, argv, description=__doc__)
    summary = train_word2vec(cfg)
    if summary.is_main_process:
        print(format_summary(summary))


if __name__ == "__main__":
    main()
