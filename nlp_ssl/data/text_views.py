"""Batched text augmentations on token ids, for two-view (contrastive) training of sentence encoders.

Three corruptions of a tokenised sentence, each applied to the whole ``[B, T]`` batch with tensor ops on its
device (no Python loop over sentences):

* **span cropping**: keep one contiguous span of the sentence's tokens, ``crop_min`` to 100% of them
  (the text counterpart of SimCLR's random crop; Giorgi et al. 2021, "DeCLUTR", sample spans the same way);
* **word deletion**: drop each word with probability ``word_deletion`` (all its WordPiece pieces together;
  Wu et al. 2020, "CLEAR: Contrastive Learning for Sentence Representation", word and span deletion);
* **local reordering**: move each token at most ``reorder_window`` places, by sorting positions plus
  uniform noise in ``[0, window + 1)`` (Lample et al. 2018, "Unsupervised Machine Translation Using
  Monolingual Corpora Only", section 2.3).

Special tokens (``[CLS]``, ``[SEP]``) and padding are never touched: the leading ones stay first, the others
follow the sentence, and every view keeps at least one real token. Random numbers are drawn separately from
their use (:func:`sample_view_params`, then :func:`apply_text_view`), so an objective draws them for the global
batch from its step generator and slices its own rows (``Objective.per_example``). The number of draws
depends only on the batch size and ``max_length``, never on the text, so a re-seeded step reproduces its
views exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch

from nlp_ssl.errors import UserError

__all__ = ["TextViewConfig", "TextViewParams", "apply_text_view", "params_from_uniform", "sample_view_params",
           "special_and_word_start_lookups", "view_draw_size"]


@dataclass
class TextViewConfig:
    """Strength of each augmentation (the defaults leave the text as it is).

    Attributes:
        word_deletion: probability of dropping each word, in ``[0, 1)``.
        crop_min: the span crop keeps a uniform fraction in ``[crop_min, 1]`` of the tokens (1: no crop).
        reorder_window: each token moves at most this many places (0: no reordering).
    """

    word_deletion: float = 0.0
    crop_min: float = 1.0
    reorder_window: int = 0

    def __post_init__(self) -> None:
        if not 0.0 <= self.word_deletion < 1.0:
            raise UserError(f"config key 'views.word_deletion' must be in [0, 1), got {self.word_deletion}")
        if not 0.0 < self.crop_min <= 1.0:
            raise UserError(f"config key 'views.crop_min' must be in (0, 1], got {self.crop_min}")
        if self.reorder_window < 0:
            raise UserError(f"config key 'views.reorder_window' must be >= 0, got {self.reorder_window}")

    @property
    def active(self) -> bool:
        return self.word_deletion > 0 or self.crop_min < 1 or self.reorder_window > 0


class TextViewParams(NamedTuple):
    """Uniform draws in ``[0, 1)`` behind one view of ``n`` sentences of at most ``L`` tokens.

    Shape: crop ``[n, 2]`` (span length, span start), deletion ``[n, L]``, reorder ``[n, L]``.
    """

    crop: torch.Tensor
    deletion: torch.Tensor
    reorder: torch.Tensor

    def rows(self, start: int, stop: int) -> TextViewParams:
        return TextViewParams(self.crop[start:stop], self.deletion[start:stop], self.reorder[start:stop])


def view_draw_size(max_length: int) -> int:
    """Uniforms behind one view of one sentence: 2 for the crop, ``max_length`` each for deletion and reordering."""
    return 2 + 2 * max_length


def params_from_uniform(u: torch.Tensor) -> TextViewParams:
    """Split ``[n, view_draw_size(L)]`` uniforms into the parameters of one view."""
    length = (u.shape[1] - 2) // 2
    return TextViewParams(u[:, :2], u[:, 2:2 + length], u[:, 2 + length:])


def sample_view_params(n: int, max_length: int, generator: torch.Generator | None = None,
                       device: torch.device | str = "cpu") -> TextViewParams:
    """Draw the parameters of one view for ``n`` sentences of up to ``max_length`` tokens.

    Always ``[n, max_length]`` whatever the batch's padded length, so that the draws of an example do not
    depend on which other examples share its batch (one process or several).
    """
    return params_from_uniform(torch.rand(n, view_draw_size(max_length), generator=generator, device=device))


def special_and_word_start_lookups(tokenizer, size: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(special [V], word_start [V])`` bool lookups by token id.

    ``word_start`` is False for WordPiece continuation pieces (``##ing``), so word deletion drops whole
    words; for other vocabularies every token counts as a word.
    """
    vocab = tokenizer.get_vocab()
    size = max(size or 0, len(tokenizer), max(vocab.values()) + 1)
    special = torch.zeros(size, dtype=torch.bool)
    special[torch.tensor(tokenizer.all_special_ids, dtype=torch.long)] = True
    word_start = torch.ones(size, dtype=torch.bool)
    for token, index in vocab.items():
        if token.startswith("##"):
            word_start[index] = False
    return special, word_start


def apply_text_view(input_ids: torch.Tensor, attention_mask: torch.Tensor, params: TextViewParams,
                    cfg: TextViewConfig, special: torch.Tensor, word_start: torch.Tensor, pad_token_id: int
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """One augmented view of a padded batch: crop, then delete words, then reorder locally, then re-pack.

    Args:
        input_ids: right-padded token ids.
        attention_mask: 1 at real tokens.
        params: draws from :func:`sample_view_params` for these rows (``L >= T``).
        cfg: augmentation strengths.
        special: ``[V]`` True at special-token ids.
        word_start: ``[V]`` False at continuation pieces.
        pad_token_id: id written into freed positions.

    Shape:
        - input_ids, attention_mask: ``[B, T]``
        - output: ``(ids [B, T], mask [B, T])``, the kept tokens packed to the left, the rest padding.
    """
    b, t = input_ids.shape
    if params.deletion.shape[0] != b or params.deletion.shape[1] < t:
        raise UserError(f"text view parameters cover [{params.deletion.shape[0]}, {params.deletion.shape[1]}] "
                        f"tokens but the batch is [{b}, {t}]; raise the view's max_length")
    real = attention_mask.bool()
    content = real & ~special[input_ids]  # [B, T] the sentence's own tokens
    index = torch.cumsum(content.long(), 1) - 1  # rank of each content token in its sentence
    count = content.sum(1, keepdim=True)  # [B, 1]
    keep = content

    if cfg.crop_min < 1.0:
        fraction = cfg.crop_min + (1.0 - cfg.crop_min) * params.crop[:, :1]
        length = torch.clamp(torch.round(count * fraction), min=1).long()  # [B, 1]
        start = torch.minimum(torch.floor(params.crop[:, 1:] * (count - length + 1)).long(), count - length)
        keep = keep & (index >= start) & (index < start + length)

    if cfg.word_deletion > 0:
        positions = torch.arange(t, device=input_ids.device).expand(b, t)
        # A sentence (or a crop) may open on a continuation piece: its first content token starts a word.
        starts = content & (word_start[input_ids] | (index == 0))
        # Position of the word each token belongs to: the last word start at or before it.
        word_of = torch.cummax(torch.where(starts, positions, 0), dim=1).values
        drop = params.deletion[:, :t].gather(1, word_of) < cfg.word_deletion
        survivors = keep & ~drop
        # A view is never emptied: a sentence that would lose every token keeps what the crop left.
        keep = torch.where(survivors.any(1, keepdim=True), survivors, keep)

    rank = (torch.cumsum(keep.long(), 1) - 1).float()
    if cfg.reorder_window > 0:
        rank = rank + params.reorder[:, :t] * (cfg.reorder_window + 1)
    # Sort keys: leading specials (before the first content token), kept content by (noisy) rank, other real
    # specials, then everything dropped or padding. Each band is offset past the previous one.
    positions = torch.arange(t, device=input_ids.device, dtype=rank.dtype).expand(b, t)
    leading = real & ~content & (torch.cumsum(content.long(), 1) == 0)
    band = float(4 * t + 4)
    key = torch.where(keep, rank, band * 2 + positions)
    key = torch.where(leading, positions - band, key)
    key = torch.where(real & ~content & ~leading, band + positions, key)
    order = torch.argsort(key, dim=1, stable=True)
    kept = (keep | (real & ~content)).gather(1, order)
    ids = torch.where(kept, input_ids.gather(1, order), pad_token_id)
    return ids, kept.to(attention_mask.dtype)
