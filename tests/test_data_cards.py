"""Every dataset a shipped config names has a data card."""

from __future__ import annotations

from pathlib import Path

import yaml

from conftest import REPO

CARDS = REPO / "data_cards"


def named_datasets() -> set[str]:
    names: set[str] = set()
    for path in (REPO / "recipes" / "configs").glob("*/*.yaml"):
        if path.parent.name == "accelerate":
            continue
        config = yaml.safe_load(path.read_text()) or {}
        for section in ("data", "task"):
            value = config.get(section)
            if isinstance(value, dict) and isinstance(value.get("corpus"), str):
                names.add(value["corpus"])
    return names


def test_every_named_dataset_has_a_card():
    cards = {p.name: p.read_text() for p in CARDS.glob("*.md")}
    assert "README.md" in cards
    missing = [name for name in sorted(named_datasets())
               if not any(f"`{name}`" in text for card, text in cards.items() if card != "README.md")]
    assert not missing, f"datasets without a data card: {missing}"


def test_cards_state_source_license_size_and_loading():
    for card in CARDS.glob("*.md"):
        if card.name == "README.md":
            continue
        text = card.read_text().lower()
        for heading in ("source", "license", "size"):
            assert heading in text, f"{card.name} says nothing about {heading}"
        assert "load" in text, f"{card.name} does not say how it loads"
