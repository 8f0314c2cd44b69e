"""Skip-gram and CBOW (Mikolov et al. 2013) as an objective of the shared engine, built for throughput.

A step is a slice of the corpus, not a list of pairs: the batch is ``B`` chunks of the token stream
(:class:`~nlp_ssl.data.word2vec_data.ChunkDataset`). The objective draws everything random from the step's
generator (which the engine re-seeds at every step, so a resumed run draws the same numbers): the
subsampling mask, one dynamic window radius per kept word, and the negatives. It then trains the step in
one of two ways (``Word2VecObjectiveConfig.fused``):

**Fused** (one CPU process): the compiled kernel of :mod:`nlp_ssl.objectives.word2vec_kernel` trains word
by word straight into the tables inside ``forward``, as word2vec.c does, with torch's threads splitting
the stream. ``forward`` returns the loss with ``StepOutput.updated`` set, so the engine skips backward; the
optimizer (:class:`ScheduledRate`) only carries the learning-rate schedule.

**Batched** (any device, any number of processes):

* **Pairs are a band, not a list.** The kept tokens form a stream of ``N`` positions; all (centre, context)
  pairs are the entries of an ``(N, 2W+1)`` mask. The input and output vectors are gathered once per
  *token* (not once per pair), the ``N (2W+1)`` dot products are one sampled matrix product
  (``torch.sparse.sampled_addmm``) and the weighted sums over windows are ``embedding_bag`` calls
  (:mod:`nlp_ssl.objectives.word2vec_losses`). No Python loop per word or per pair.
* **Shared negatives** (Ji et al. 2016; BlazingText, Gupta & Khare 2017): each group of ``g`` consecutive
  positions shares ``K`` negatives drawn on the device from unigram^0.75, weighted ``negative / K``, so the
  negative term is a batched matrix product and every pair still sees ``K`` distinct negatives.
* **Closed-form gradients, sparse rows.** The loss functions return the gradient rows in closed form (no
  autograd graph through the band). :class:`_AttachGradients` hands them to autograd as the gradient of
  the returned loss, as sparse COO tensors over the touched rows (dense on request, e.g. for NCCL), so
  the engine's ``backward`` / gradient scaling / ``optimizer.step`` run unchanged.
* **Row-wise SGD** (:class:`RowSGD`, via ``Objective.configure_optimizer``): word2vec's plain SGD on the
  touched rows with ``scatter_add_``, with word2vec's meaning of the learning rate (per pair, summed; the
  engine averages gradients over items, the optimizer multiplies the step's item count back), the linear
  decay to ``min_learning_rate``, and a per-row step cap that keeps large steps stable (:class:`RowSGD`).

Both keep the engine contract for what ``forward`` reports: the mean loss over pairs (skip-gram) or centres
(CBOW) with ``num_items``, and the raw corpus words behind the step as ``num_inputs`` (so
``train/words_per_sec`` counts raw words like gensim). In the batched path ``backward`` produces the
gradients and ``optimizer.step`` applies them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Literal

import numpy as np
import torch
import torch.nn.functional as F

from nlp_ssl.data.word2vec_data import NoiseDistribution, keep_probabilities, radii_from_uniform, window_mask
from nlp_ssl.models.word_vectors import WordVectors
from nlp_ssl.objectives import word2vec_kernel
from nlp_ssl.objectives.base import Objective, StepOutput
from nlp_ssl.objectives.word2vec_losses import NegSamplingOutput, cbow_ns, skipgram_ns


@dataclass
class Word2VecObjectiveConfig:
    """The hyper-parameters the objective needs (a view of the recipe's ``word2vec`` section)."""

    architecture: Literal["skipgram", "cbow"] = "skipgram"
    window: int = 5
    dynamic_window: bool = True
    negative: int = 5
    sample: float = 1e-3
    ns_exponent: float = 0.75
    shared_negatives: int = 32
    negative_group: int = 128
    cbow_word2vec_update: bool = True
    sparse_gradients: bool = True
    min_learning_rate: float = 1e-4
    row_step_cap: float | None = 4.0
    pairs_per_noise_draw: int = 3
    fused: bool = False


@dataclass
class KeptStream:
    """The words a step trains on after subsampling (:meth:`Word2VecObjective.kept_stream`).

    Attributes:
        ids, sentence, radius: ``(N,)`` int64 kept word ids in stream order, their sentence ids (unique per
            chunk) and dynamic window radii.
        raw_words: corpus words behind the step.
        kept_fraction: share of in-vocabulary tokens kept by subsampling.
    """

    ids: torch.Tensor
    sentence: torch.Tensor
    radius: torch.Tensor
    raw_words: int
    kept_fraction: torch.Tensor


@dataclass
class StepSample:
    """The random choices of one step (drawn by :meth:`Word2VecObjective.draw`).

    Attributes:
        ids: ``(N_pad,)`` word ids of the kept tokens in stream order, padded to whole negative groups.
        length: ``N``, the number of real (kept) tokens: rows ``start .. start + N``; the rest is padding.
        mask: ``(N_pad, 2W+1)`` bool band of (centre, context) pairs.
        negatives: ``(G, K)`` negative word ids of each group of ``negative_group`` positions.
        raw_words: corpus words behind the step.
        kept_fraction: share of in-vocabulary tokens kept by subsampling.
        start: padding rows before the real ones (aligning this process's groups with the global stream's).
    """

    ids: torch.Tensor
    length: int
    mask: torch.Tensor
    negatives: torch.Tensor
    raw_words: int
    kept_fraction: torch.Tensor
    start: int = 0


class _RowStats:
    """Per-step bookkeeping shared by the objective and :class:`RowSGD`.

    ``items`` counts the pairs (or centres) of the current optimizer step; ``curvature`` maps each
    embedding table to a ``(V,)`` sum of the Gauss-Newton curvature of the step's loss per row.
    """

    def __init__(self) -> None:
        self.items = 0.0
        self.curvature: dict[int, torch.Tensor] = {}

    def add(self, param: torch.Tensor, rows: torch.Tensor, values: torch.Tensor) -> None:
        buf = self.curvature.get(id(param))
        if buf is None or buf.shape[0] != param.shape[0] or buf.device != param.device:
            buf = self.curvature[id(param)] = torch.zeros(param.shape[0], dtype=torch.float32, device=param.device)
        buf.index_add_(0, rows, values.to(torch.float32))

    def reset(self) -> None:
        self.items = 0.0
        for buf in self.curvature.values():
            buf.zero_()


class _AttachGradients(torch.autograd.Function):
    """Return ``loss`` and make its gradient w.r.t. the two tables the precomputed rows, scaled by upstream.

    The rows are exact gradients of ``loss``, computed in closed form by the loss functions (no autograd
    graph through the band). The gradient of a table is built in ``backward`` as a sparse COO tensor over
    the touched rows (duplicates left uncoalesced: the update adds them anyway), or dense on request;
    the upstream scale is folded into the one pass that writes the values.
    """

    @staticmethod
    def forward(ctx: Any, loss: torch.Tensor, w_in: torch.Tensor, w_out: torch.Tensor,  # type: ignore[override]
                scale: float, rows_in: torch.Tensor, grads_in: list[torch.Tensor], rows_out: torch.Tensor,
                grads_out: list[torch.Tensor], sparse: bool) -> torch.Tensor:
        ctx.saved = (w_in.shape, rows_in, grads_in, w_out.shape, rows_out, grads_out, sparse, scale)
        return loss.detach().clone()

    @staticmethod
    def backward(ctx: Any, upstream: torch.Tensor):  # type: ignore[override]
        shape_in, rows_in, grads_in, shape_out, rows_out, grads_out, sparse, scale = ctx.saved
        del ctx.saved
        factor = upstream * scale
        grad_in = _table_gradient(shape_in, rows_in, grads_in, factor, sparse)
        grad_out = _table_gradient(shape_out, rows_out, grads_out, factor, sparse)
        return None, grad_in, grad_out, None, None, None, None, None, None


def _table_gradient(shape: torch.Size, rows: torch.Tensor, parts: list[torch.Tensor], scale: torch.Tensor,
                    sparse: bool) -> torch.Tensor:
    """``sum_r scale * parts[r] at rows[r]`` as a sparse COO ``shape`` tensor (or dense)."""
    d = shape[1]
    values = parts[0].new_empty((rows.shape[0], d))
    start = 0
    for part in parts:
        part = part.reshape(-1, d)
        torch.mul(part, scale, out=values[start:start + part.shape[0]])
        start += part.shape[0]
    if sparse:
        return torch.sparse_coo_tensor(rows[None], values, shape, is_coalesced=False, check_invariants=False)
    return values.new_zeros(shape).index_add_(0, rows, values)


class Word2VecObjective(Objective):
    """Skip-gram or CBOW with negative sampling over chunks of a token stream.

    Args:
        vectors: the two embedding tables.
        counts: ``(V,)`` corpus counts (for subsampling and the noise distribution).
        cfg: hyper-parameters.

    Batch (from :func:`~nlp_ssl.data.word2vec_data.collate_chunks`): ``ids`` ``(B, L)`` int64 with -1 padding,
    ``sentence`` ``(B, L)`` sentence ids, ``raw_words`` ``(B,)`` corpus words behind each chunk.
    """

    throughput_unit = "words"

    def __init__(self, vectors: WordVectors, counts: np.ndarray, cfg: Word2VecObjectiveConfig,
                 export_fn: Callable[[WordVectors, Path], None] | None = None) -> None:
        super().__init__()
        self.vectors = vectors
        self.cfg = cfg
        self.export_fn = export_fn
        # Derived from the counts, so not saved in checkpoints (persistent=False).
        self.register_buffer("keep_prob", keep_probabilities(counts, cfg.sample), persistent=False)
        noise = NoiseDistribution(counts, cfg.ns_exponent)
        self.register_buffer("noise_cdf", noise.cdf, persistent=False)
        self.stats = _RowStats()
        self.loss_fn: Callable[..., NegSamplingOutput] = skipgram_ns if cfg.architecture == "skipgram" else cbow_ns
        # The fused kernel draws its negatives from an alias table; its rate comes from configure_optimizer.
        self._alias = word2vec_kernel.alias_table(noise.probs) if cfg.fused else None
        self._schedule: ScheduledRate | None = None

    # ---------------------------------------------------------------------------------------------- step
    def kept_stream(self, batch: dict[str, torch.Tensor]) -> KeptStream:
        """Subsampling and one dynamic window radius per kept word, drawn for the global batch (``per_example``)."""
        cfg = self.cfg
        rows, length = batch["ids"].shape
        device = batch["ids"].device
        ids = batch["ids"].reshape(-1)
        # Windows never cross chunks: chunks of a batch are not neighbours in the corpus.
        chunk = torch.arange(rows, device=device)[:, None]
        sentence = (batch["sentence"] * rows + chunk).reshape(-1)
        valid = ids >= 0
        coins = self.per_example(lambda n: torch.rand(n, 2, length, generator=self.rng, device=device), rows)
        # Subsampling (word2vec.c): keep an occurrence with probability keep_prob[word].
        keep = valid & (coins[:, 0].reshape(-1) < self.keep_prob.index_select(0, ids.clamp(min=0)))
        kept_at = keep.nonzero().squeeze(1)  # one nonzero for the three selections below
        radius = (radii_from_uniform(coins[:, 1].reshape(-1).index_select(0, kept_at), cfg.window)
                  if cfg.dynamic_window else torch.full_like(kept_at, cfg.window))
        kept = kept_at.shape[0] / valid.sum().clamp(min=1).float()
        return KeptStream(ids.index_select(0, kept_at), sentence.index_select(0, kept_at), radius,
                          int(batch["raw_words"].sum()), kept)

    def draw(self, batch: dict[str, torch.Tensor]) -> StepSample:
        """The batched path's random choices: subsampling, window radii, shared negatives.

        Drawn from the step's generator for the global batch (``per_example``), and the negative groups are
        groups of the global kept stream (this process's part starts at the kept-token count of the
        processes before it): one process with batch 2B draws exactly what two processes with batch B draw.
        """
        cfg = self.cfg
        stream = self.kept_stream(batch)
        ids, sentence, radius = stream.ids, stream.sentence, stream.radius
        device = ids.device
        n = ids.shape[0]
        offset, total = self._stream_position(n, device)
        # Pad in front to where this part's first group starts, and behind to whole groups; padding rows
        # have sentence -1 and take part in no pair.
        lead = offset % cfg.negative_group
        groups = max(1, math.ceil((lead + n) / cfg.negative_group))
        n_pad = groups * cfg.negative_group
        ids = F.pad(ids, (lead, n_pad - n - lead))
        sentence = F.pad(sentence, (lead, n_pad - n - lead), value=-1)
        radius = F.pad(radius, (lead, n_pad - n - lead), value=1)
        mask = window_mask(sentence, radius, cfg.window) & (sentence >= 0)[:, None]
        first = offset // cfg.negative_group
        drawn = max(math.ceil(total / cfg.negative_group), first + groups)
        u = torch.rand((drawn, cfg.shared_negatives), dtype=torch.float64, device=device, generator=self.rng)
        negatives = torch.searchsorted(self.noise_cdf, u[first:first + groups]).clamp_(max=self.noise_cdf.shape[0] - 1)
        return StepSample(ids, n, mask, negatives, stream.raw_words, stream.kept_fraction, start=lead)

    def _stream_position(self, kept: int, device: torch.device) -> tuple[int, int]:
        """``(offset of this process's kept tokens in the global stream, global kept count)``."""
        if not self.dist.distributed:
            return 0, kept
        counts = self.dist.all_gather_no_grad(torch.tensor([kept], device=device)).tolist()
        return int(sum(counts[:self.dist.rank])), int(sum(counts))

    def forward(self, batch: dict[str, torch.Tensor]) -> StepOutput:
        if self.cfg.fused:
            return self.fused_step(self.kept_stream(batch))
        return self.step_loss(self.draw(batch))

    def fused_step(self, stream: KeptStream) -> StepOutput:
        """Train on the stream with the fused CPU kernel: the update happens here, word by word.

        In training mode (with gradients enabled) the kernel steps the tables at the scheduled rate and the
        output says so (``updated``: no backward, the optimizer only keeps the schedule); otherwise it only
        scores the stream. The loss of each word is taken just before its own update, as word2vec.c does.
        """
        cfg = self.cfg
        seed = int(torch.randint(0, 2**62, (), generator=self.rng))
        update = torch.is_grad_enabled() and self.training
        rate = self._schedule.rate() if update and self._schedule is not None else 0.0
        w_in, w_out = self.vectors.input.detach(), self.vectors.output.detach()
        if cfg.architecture == "cbow":
            loss, items = word2vec_kernel.cbow_step(
                stream.ids, stream.sentence, stream.radius, w_in, w_out, self._alias, cfg.negative, rate, seed,
                full_context_update=cfg.cbow_word2vec_update, update=update)
        else:
            loss, items = word2vec_kernel.skipgram_step(
                stream.ids, stream.sentence, stream.radius, w_in, w_out, self._alias, cfg.negative, cfg.window,
                cfg.pairs_per_noise_draw, rate, seed, update=update)
        return StepOutput(loss=torch.tensor(loss / max(items, 1)), num_items=items, num_inputs=stream.raw_words,
                          metrics={"kept_fraction": stream.kept_fraction}, updated=update)

    def step_loss(self, sample: StepSample) -> StepOutput:
        """Loss and gradients of one drawn step (see the module docstring)."""
        cfg = self.cfg
        w_in, w_out = self.vectors.input, self.vectors.output
        ids, n = sample.ids, sample.length
        with torch.no_grad(), torch.autocast(ids.device.type, enabled=False):
            u_pad, v_pad = self._gather_padded(w_in, ids), self._gather_padded(w_out, ids)
            neg = F.embedding(sample.negatives, w_out)
            extra = {"word2vec_context_update": cfg.cbow_word2vec_update} if cfg.architecture == "cbow" else {}
            # sigma' <= 1/4: with the floor at 1/4 the curvature outputs are the rows' Lipschitz bounds.
            out = self.loss_fn(u_pad, v_pad, sample.mask.to(w_in.dtype), neg, cfg.window, float(cfg.negative),
                               curvature_floor=0.25, **extra)
        items = float(out.items)
        if items == 0:
            # Nothing to learn from (e.g. every word subsampled away): a zero loss that keeps the graph.
            zero = (w_in[:0].sum() + w_out[:0].sum()) * 0.0
            return StepOutput(loss=zero, num_items=0, num_inputs=sample.raw_words)

        real = slice(sample.start, sample.start + n)
        ids = ids[real]  # the padding rows' gradients are zero
        rows_out = torch.cat([ids, sample.negatives.reshape(-1)])
        if torch.is_grad_enabled() and self.training:
            self.stats.items += items
            self.stats.add(w_in, ids, out.curv_in[real])
            self.stats.add(w_out, rows_out, torch.cat([out.curv_out[real], out.curv_neg.reshape(-1)]))
        # The loss is the mean over items, and so are its gradients (the 1/items is folded into backward).
        loss = _AttachGradients.apply(out.loss / items, w_in, w_out, 1.0 / items, ids, [out.grad_in[real]],
                                      rows_out, [out.grad_out[real], out.grad_neg], cfg.sparse_gradients)
        return StepOutput(loss=loss, num_items=int(items), num_inputs=sample.raw_words,
                          metrics={"kept_fraction": sample.kept_fraction})

    def _gather_padded(self, table: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """``(N + 2W, d)``: the rows ``table[ids]`` between ``W`` zero rows, gathered straight into place."""
        window = self.cfg.window
        out = table.new_empty((ids.shape[0] + 2 * window, table.shape[1]))
        out[:window].zero_()
        out[ids.shape[0] + window:].zero_()
        torch.index_select(table, 0, ids, out=out[window:window + ids.shape[0]])
        return out

    @torch.no_grad()
    def evaluate_batch(self, batch: Any) -> StepOutput:
        return self.forward(batch)

    # ------------------------------------------------------------------------------------------ engine
    def configure_optimizer(self, config: Any) -> torch.optim.Optimizer:
        if self.cfg.fused:
            self._schedule = ScheduledRate(self.vectors.parameters(), lr=config.learning_rate,
                                           min_lr=self.cfg.min_learning_rate)
            return self._schedule
        return RowSGD(self.vectors.parameters(), lr=config.learning_rate, min_lr=self.cfg.min_learning_rate,
                      stats=self.stats, row_step_cap=self.cfg.row_step_cap)

    def export(self, output_dir: Path) -> None:
        if self.export_fn is not None:
            self.export_fn(self.vectors, output_dir)


def word2vec_rate(group: dict[str, Any], min_lr: float) -> float:
    """The learning rate of the current step: ``min_lr + (1 - min_lr / lr_0) * lr_t``.

    ``lr_t`` is what the engine's scheduler set (linear to 0 by default), so this is gensim's linear decay
    from ``alpha`` to ``min_alpha``.
    """
    base = group.get("initial_lr", group["lr"])
    return min_lr + (1.0 - min_lr / base) * group["lr"] if base > 0 else group["lr"]


class ScheduledRate(torch.optim.Optimizer):
    """The fused kernel's optimizer: it keeps the schedule and applies nothing.

    The fused kernel updates the tables inside the forward pass, word by word (there are no gradients to
    apply); the engine's scheduler still sets ``lr`` on this optimizer every step, and the objective reads
    the rate it trains at from :meth:`rate`, with word2vec's per-pair meaning as in :class:`RowSGD`.
    """

    def __init__(self, params, lr: float, min_lr: float) -> None:
        super().__init__(params, {"lr": lr})
        self.min_lr = float(min_lr)

    def rate(self) -> float:
        return word2vec_rate(self.param_groups[0], self.min_lr)

    def step(self, closure=None):  # type: ignore[override]
        return None


class RowSGD(torch.optim.Optimizer):
    """Plain SGD on the touched rows of the embedding tables, with word2vec's learning-rate semantics.

    * **Sum, not mean.** word2vec applies ``lr * gradient`` for every pair. The engine divides the step's
      gradient by its item count, so the step multiplies by that count again (taken from the objective's
      :class:`_RowStats`, summed over processes when distributed): ``learning_rate`` means what it means
      in word2vec.c and gensim (0.025 for skip-gram, 0.05 for CBOW) whatever the batch size.
    * **Decay to a floor.** The engine's scheduler sets ``lr_t`` (linear to 0 by default); the step uses
      ``min_lr + (1 - min_lr / lr_0) * lr_t``, i.e. gensim's linear decay from ``alpha`` to ``min_alpha``.
    * **Capped steps for crowded rows** (``row_step_cap=c``). A large step sums the updates of many pairs
      for the frequent rows, all computed from the same stale vectors, which word2vec's one-pair-at-a-time
      SGD never does; at ``lr=0.025`` plain sums diverge beyond a few thousand pairs per step. The loss of
      one row ``r`` (the others fixed) is a sum of logistic terms, so its gradient is Lipschitz with
      ``L_r = 1/4 * sum over the row's terms of weight * |partner vector|^2`` (``sigma' <= 1/4``), which the loss
      functions return. Each row takes the step ``min(lr, c / L_r) * G_r``: exactly word2vec's SGD step for
      the rows a step touches a few times (``lr * L_r < c``, nearly all of them), and at most ``c`` times the
      safe gradient step ``1 / L_r`` (descent lemma) for the few rows thousands of pairs pull at once.
      ``c = 4`` was measured to keep the quality of small steps (``sigma'`` is far below 1/4 once trained,
      so ``1 / L_r`` itself is needlessly short). ``None`` gives plain summed SGD.
    """

    def __init__(self, params, lr: float, min_lr: float, stats: _RowStats, row_step_cap: float | None = 4.0) -> None:
        super().__init__(params, {"lr": lr})
        self.min_lr = float(min_lr)
        self.stats = stats
        self.row_step_cap = row_step_cap

    @torch.no_grad()
    def step(self, closure=None):  # type: ignore[override]
        for group in self.param_groups:
            lr = word2vec_rate(group, self.min_lr)
            for p in group["params"]:
                if p.grad is None:
                    continue
                items = self._global(torch.tensor(float(self.stats.items), device=p.device))
                lipschitz = self.stats.curvature.get(id(p)) if self.row_step_cap is not None else None
                if p.grad.is_sparse:
                    rows, values = p.grad._indices()[0], p.grad._values()
                    # Scaled in place: the gradient is dropped after the step anyway (zero_grad).
                    if lipschitz is not None:
                        steps = self._row_steps(lr, self._global(lipschitz).index_select(0, rows))
                        values.mul_((steps * items)[:, None])
                    else:
                        values.mul_(-lr * items)
                    p.index_add_(0, rows, values)  # repeated rows add up, as the sparse gradient means
                elif lipschitz is not None:
                    p.add_(p.grad * (self._row_steps(lr, self._global(lipschitz)) * items)[:, None])
                else:
                    p.add_(p.grad * (-lr * items))
        self.stats.reset()
        return None

    def _row_steps(self, lr: float, lipschitz: torch.Tensor) -> torch.Tensor:
        """``-min(lr, cap / L_r)`` per row."""
        cap = torch.as_tensor(self.row_step_cap, dtype=lipschitz.dtype, device=lipschitz.device)
        return -torch.minimum(torch.full_like(lipschitz, lr), cap / lipschitz.clamp(min=1e-12))

    @staticmethod
    def _global(tensor: torch.Tensor) -> torch.Tensor:
        """Sum over processes (the engine's gradient is averaged over all of them)."""
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            tensor = tensor.clone()
            torch.distributed.all_reduce(tensor)
        return tensor
