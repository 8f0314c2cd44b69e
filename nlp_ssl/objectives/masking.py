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


def mask_tokens(
    input_ids: torch.Tensor,
    maskable: torch.Tensor,
    mask_token_id: int,
    vocab_size: int,
    cfg: MaskingConfig,
    word_start: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Corrupt ``input_ids`` for masked-LM training.

    Args:
        input_ids: ``[B, T]`` token ids.
        maskable: ``[B, T]`` bool, False at special tokens and padding (never selected).
        mask_token_id: id of ``[MASK]``.
        vocab_size: random replacements are drawn uniformly from ``[0, vocab_size)``.
        cfg: selection and replacement probabilities.
        word_start: ``[B, T]`` bool, True where a new word begins; enables whole-word masking.
        generator: optional RNG (the engine seeds the global one per step).

    Returns:
        ``(corrupted [B, T], selected [B, T] bool)``: the model input and where the loss is taken.
    """
    device = input_ids.device
    if word_start is not None:
        # Number the words of each row (a continuation piece shares its word's number), draw one coin per word.
        word_index = torch.cumsum(word_start.long(), dim=1)
        word_coin = torch.rand(input_ids.shape[0], input_ids.shape[1] + 1, device=device, generator=generator)
        selected = torch.gather(word_coin < cfg.mlm_probability, 1, word_index) & maskable
    else:
        selected = (torch.rand(input_ids.shape, device=device, generator=generator) < cfg.mlm_probability) & maskable
    action = torch.rand(input_ids.shape, device=device, generator=generator)
    to_mask = selected & (action < cfg.mask_replace_prob)
    to_random = selected & (action >= cfg.mask_replace_prob) & (action < cfg.mask_replace_prob + cfg.random_replace_prob)
    corrupted = torch.where(to_mask, torch.full_like(input_ids, mask_token_id), input_ids)
    random_ids = torch.randint(vocab_size, input_ids.shape, device=device, generator=generator)
    corrupted = torch.where(to_random, random_ids, corrupted)
    return corrupted, selected
