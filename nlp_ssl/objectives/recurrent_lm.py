"""Truncated back-propagation through time for a recurrent LM whose memory is carried from step to step.

Zaremba, Sutskever & Vinyals (2014), "Recurrent Neural Network Regularization", section 4: the training
stream is cut into ``B`` parallel streams and every step trains on the next window of ``T`` tokens of each;
the LSTM state at the end of a window is the initial state of the next one (gradients stop at the window
boundary), and it starts from zero at every epoch. The loss is the mean next-token cross-entropy over the
``B x T`` targets of the step, so ``exp`` of it is the per-word perplexity with a word-level vocabulary.

The carried state is training state: it is checkpointed through :meth:`extra_state` (gathered from every
process, so a checkpoint holds the memory of all ``B x processes`` streams) and restored on resume, which
makes a killed and resumed run take exactly the steps of an uninterrupted one. Evaluation reads each held-out
row from zero memory with its own state and never touches the training state.

Batches (see :class:`nlp_ssl.data.streams.StreamWindows`):

* training: ``{"input_ids": [B, T + 1], "window": [B]}``; ``window`` is the window's index within the epoch
  (0 resets the memory); inputs are ``[:, :-1]``, targets ``[:, 1:]``;
* evaluation: ``{"input_ids": [R, L]}``, ``R`` contiguous rows of the held-out stream, each scored from zero
  memory in windows of ``T``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedTokenizerBase

from nlp_ssl.models.lstm_lm import LSTMForCausalLM, LSTMState, stream_nll
from nlp_ssl.objectives.base import Objective, StepOutput, model_state


class TruncatedBPTTObjective(Objective):
    """Next-token prediction with carried memory (TBPTT) for :class:`~nlp_ssl.models.lstm_lm.LSTMForCausalLM`.

    Args:
        model: the recurrent LM.
        tokenizer: saved next to the model on export.
        bptt: window length ``T`` used to score the held-out rows (training windows come from the data).
    """

    throughput_unit = "tokens"

    def __init__(self, model: LSTMForCausalLM, tokenizer: PreTrainedTokenizerBase, bptt: int) -> None:
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer
        self.bptt = bptt
        #: ``(h, c)``, each ``[num_layers, B, H]``: this process's streams after the last training window.
        self.carried: LSTMState | None = None

    def forward(self, batch: dict[str, torch.Tensor]) -> StepOutput:
        window = batch["input_ids"]  # [B, T + 1]
        inputs, targets = window[:, :-1], window[:, 1:]
        state = self.carried
        starts_epoch = bool(batch["window"][0] == 0) if "window" in batch else True
        if starts_epoch or state is None or state[0].shape[1] != inputs.shape[0]:
            state = None  # zero memory: a new epoch reads every stream from its beginning
        features, new_state, _ = self.model.features(inputs, state)
        nll = self.model.token_nll(features.flatten(0, 1), targets.flatten())  # [B * T]
        if self.training:
            # Detached: the next window continues these streams, but gradients stop at the boundary.
            self.carried = (new_state[0].detach(), new_state[1].detach())
        return StepOutput(loss=nll.mean(), num_items=nll.numel(), num_inputs=nll.numel())

    def evaluate_batch(self, batch: dict[str, torch.Tensor]) -> StepOutput:
        rows = batch["input_ids"]  # [R, L]
        total, count = stream_nll(self.model, rows, self.bptt)
        return StepOutput(loss=(total / max(count, 1)).float(), num_items=count, num_inputs=count)

    def eval_summary(self, totals: dict[str, float]) -> dict[str, float]:
        return {"perplexity": float(torch.exp(torch.tensor(min(totals["loss"], 50.0))))}

    def flops_per_input(self) -> float | None:
        """Training FLOPs per token: ``6 x`` the multiply-adds of the LSTM layers and the softmax.

        An LSTM layer does ``4 H (I + H)`` multiply-adds per token (Hochreiter & Schmidhuber 1997, four
        gates); a full softmax ``H V``; an adaptive softmax its head plus, for the share of tokens that fall
        in each cluster, that cluster's projection and output (counted here as if every cluster were always
        used: an upper bound).
        """
        cfg = self.model.config
        sizes = [cfg.embedding_size] + [cfg.hidden_size] * cfg.num_layers
        lstm = sum(4 * sizes[i + 1] * (sizes[i] + sizes[i + 1]) for i in range(cfg.num_layers))
        if self.model.adaptive is None:
            softmax = cfg.hidden_size * cfg.vocab_size
        else:
            softmax = sum(p.numel() for p in self.model.adaptive.parameters() if p.ndim == 2)
        return 6.0 * (lstm + softmax)

    # --- the carried memory is training state --------------------------------------------------------
    def extra_state(self) -> dict[str, Any]:
        if self.carried is None:
            # Every process reaches a checkpoint at the same step, so all skip the gather together.
            return {}
        # [L, B, H] -> [B, L, H] so streams are rows, gathered from every process in rank order.
        h, c = (self.dist.all_gather_no_grad(s.transpose(0, 1).contiguous()) for s in self.carried)
        return {"carried_h": h.cpu(), "carried_c": c.cpu()}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        if "carried_h" not in state:
            self.carried = None
            return
        device = self.model.embeddings.weight.device
        rows = state["carried_h"].shape[0] // self.dist.world_size
        start = self.dist.offset(rows)
        self.carried = tuple(state[key][start:start + rows].transpose(0, 1).contiguous().to(device)
                             for key in ("carried_h", "carried_c"))  # type: ignore[assignment]

    def export(self, output_dir: Path, state_dict: dict[str, torch.Tensor] | None = None) -> None:
        self.model.save_pretrained(output_dir, state_dict=model_state(state_dict))
        self.tokenizer.save_pretrained(output_dir)
