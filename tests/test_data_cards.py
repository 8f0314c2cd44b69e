"""Every dataset a shipped config uses has a data card, found the way exports and uploads find them."""

from __future__ import annotations

import pytest

from conftest import REPO
from nlp_ssl.cli import recipe_for_config, shipped_configs
from nlp_ssl.config import load_config, to_dict
from nlp_ssl.data.cards import CARD_OF, cards_dir, cards_for_config

CARDS = REPO / "data_cards"


@pytest.mark.parametrize("path", [p for _, p in shipped_configs()], ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_dataset_a_config_uses_has_a_card(path):
    recipe = recipe_for_config(path)
    assert recipe is not None, path
    config = to_dict(load_config(recipe.config_class, path))
    cards = cards_for_config(config)
    assert cards, f"{path} names no dataset with a card"
    missing = [c for c in cards if not (CARDS / f"{c}.md").is_file()]
    assert not missing, f"{path}: no card {missing}"


def test_cards_resolve_parts_tasks_and_evaluation_sets():
    assert cards_for_config({"data": {"corpus": "mixed"}}) == ["ptb", "bbc_news", "shakespeare"]
    assert cards_for_config({"task": "SST-2"}) == ["glue"] and cards_for_config({"task": "all"}) == ["glue"]
    assert cards_for_config({"task": "bbc_news"}) == ["bbc_news"]
    assert cards_for_config({"dataset": "wnut16"}) == ["wnut_16"]
    assert cards_for_config({"data": {"corpus": "/my/files/*.txt"}}) == []
    vectors = cards_for_config({"data": {"corpus": "ptb"}, "evaluation": {"enabled": True, "similarity_files": []}})
    assert vectors == ["ptb", "wordsim353", "simlex999", "google_analogy"]
    assert cards_dir() == CARDS


def test_every_card_the_toolkit_names_exists_and_is_listed():
    listed = (CARDS / "README.md").read_text()
    for card in set(CARD_OF.values()):
        if (CARDS / f"{card}.md").is_file():
            assert f"({card}.md)" in listed, f"{card}.md is not in data_cards/README.md"


def test_cards_state_source_license_size_and_loading():
    for card in CARDS.glob("*.md"):
        if card.name == "README.md":
            continue
        text = card.read_text().lower()
        for heading in ("source", "license", "size"):
            assert heading in text, f"{card.name} says nothing about {heading}"
        assert "load" in text, f"{card.name} does not say how it loads"
