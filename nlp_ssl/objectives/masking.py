"""BERT's masked-language-model corruption, done on the device inside the training step.

Devlin et al. 2019 (BERT), section 3.1: select 15% of the (non-special) tokens; of those, replace 80% by
[MASK], 10% by a random token and leave 10% unchanged; predict the original token at every selected
position. Whole-word masking (the later BERT release) selects whole words: all WordPiece pieces of a
chosen word are selected together.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from nlp_ssl.errors import UserError


@dataclass
class MaskingConfig:
    mlm_probability: float = 0.15
    mask_replace_prob: float = 0.8
    random_replace_prob: float = 0.1
    whole_word_masking: bool = False

    def __post_init__(self) -> None:
        if not 0.0 < self.mlm_probability < 1.0:
            raise UserError(f"config key 'mlm.mlm_probability' must be in (0, 1), got {self.mlm_probability}")
        if self.mask_replace_prob < 0 or self.random_replace_prob < 0 or self.mask_replace_prob + self.random_replace_prob > 1:
            raise UserError("config keys 'mlm.mask_replace_prob' and 'mlm.random_replace_prob' must be >= 0 and sum to <= 1")


def masking_noise(rows: int, length: int, generator: torch.Generator | None = None,
                  device: torch.device | str = "cpu") -> torch.Tensor:
    """The uniform draws :func:`mask_tokens` needs for ``rows`` sequences of ``length`` tokens.

    Returns ``[rows, 3, length + 1]``: per row, the selection coins (one per token, or per word with
    whole-word masking, hence ``length + 1``), the replacement actions and the random-token draws. Drawn as one
    tensor with one row per sequence, so an objective can draw it for the global batch and slice its rows
    (``Objective.per_example``).
    """
    return torch.rand(rows, 3, length + 1, generator=generator, device=device)


def mask_tokens(
    input_ids: torch.Tensor,
    maskable: torch.Tensor,
    mask_token_id: int,
    vocab_size: int,
    cfg: MaskingConfig,
    word_start: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    noise: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Corrupt ``input_ids`` for masked-LM training.

    Args:
        input_ids: ``[B, T]`` token ids.
        maskable: ``[B, T]`` bool, False at special tokens and padding (never selected).
        mask_token_id: id of ``[MASK]``.
        vocab_size: random replacements are drawn uniformly from ``[0, vocab_size)``.
        cfg: selection and replacement probabilities.
        word_start: ``[B, T]`` bool, True where a new word begins; enables whole-word masking.
        generator: RNG for the draws when ``noise`` is not given.
        noise: ``[B, 3, T + 1]`` uniform draws from :func:`masking_noise` (default: drawn here).

    Returns:
        ``(corrupted [B, T], selected [B, T] bool)``: the model input and where the loss is taken.
    """
    rows, length = input_ids.shape
    if noise is None:
        noise = masking_noise(rows, length, generator, input_ids.device)
    coins, action, uniform_ids = noise[:, 0], noise[:, 1, :length], noise[:, 2, :length]
    if word_start is not None:
        # Number the words of each row (a continuation piece shares its word's number), one coin per word.
        word_index = torch.cumsum(word_start.long(), dim=1)
        selected = torch.gather(coins < cfg.mlm_probability, 1, word_index) & maskable
    else:
        selected = (coins[:, :length] < cfg.mlm_probability) & maskable
    to_mask = selected & (action < cfg.mask_replace_prob)
    to_random = selected & (action >= cfg.mask_replace_prob) & (action < cfg.mask_replace_prob + cfg.random_replace_prob)
    corrupted = torch.where(to_mask, torch.full_like(input_ids, mask_token_id), input_ids)
    random_ids = (uniform_ids * vocab_size).long().clamp_(max=vocab_size - 1)
    corrupted = torch.where(to_random, random_ids, corrupted)
    return corrupted, selected
