"""Word-level LSTM language model (Zaremba, Sutskever & Vinyals 2014, "Recurrent Neural Network Regularization").

A stack of LSTM layers between a word embedding and a softmax over the vocabulary, with dropout on the
non-recurrent connections only: on the embeddings, between layers and before the softmax (the paper's
section 3.1; the recurrent h -> h path is left untouched so that memory is not erased at every step).
With ``tie_word_embeddings`` the softmax reuses the embedding matrix (Press & Wolf 2017, "Using the Output
Embedding to Improve Language Models"; Inan et al. 2017), which the 2014 paper did not do. With
``softmax="adaptive"`` the output layer is an adaptive softmax (Grave et al. 2017, "Efficient softmax
approximation for GPUs"): frequent words in a full head, rarer words in clusters with smaller projections, an
exact distribution at a fraction of the cost (on a CPU the full 10k-word softmax is most of a small LSTM's step).

The model is a transformers ``PreTrainedModel``: ``save_pretrained`` writes ``config.json`` (model type
``nlp_ssl_lstm``) and the weights, and after ``import nlp_ssl.models.lstm_lm``
``AutoModelForCausalLM.from_pretrained(folder)`` loads it back (the import registers the classes).

Truncated back-propagation through time (TBPTT), as in the paper: the training stream is cut into ``B``
parallel streams (:func:`nlp_ssl.data.streams.contiguous_stream_batches`), and step ``k`` trains on window ``k`` of every stream.
Row ``b`` of window ``k + 1`` continues row ``b`` of window ``k``, so the trainer carries the final LSTM
state from one step to the next, detached so that gradients stop at the window boundary::

    windows = contiguous_stream_batches(train_ids, batch_size=20, bptt=35)   # [S, 20, 36]
    state = None
    for window in windows:                                # in order: never shuffle the windows
        out = model(window[:, :-1], state=state)          # logits [20, 35, V]
        loss = F.cross_entropy(out.logits.flatten(0, 1), window[:, 1:].flatten())
        loss.backward(); clip; optimizer.step(); optimizer.zero_grad()
        state = tuple(s.detach() for s in out.state)      # carry the memory, cut the graph

At an epoch boundary the state is reset (``state = None``). :func:`evaluate_stream` scores every token of a
held-out stream the same way, which is how the literature's per-word perplexities on Mikolov's PTB are
measured.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM, GenerationMixin, PreTrainedConfig, PreTrainedModel
from transformers import initialization as init
from transformers.utils import ModelOutput

from nlp_ssl.errors import UserError

__all__ = ["LSTMCausalLMOutput", "LSTMForCausalLM", "LSTMLMConfig", "evaluate_stream",
           "stream_nll"]

LSTMState = tuple[torch.Tensor, torch.Tensor]


class LSTMLMConfig(PreTrainedConfig):
    """Shape of an :class:`LSTMForCausalLM`.

    Zaremba et al.'s sizes: small 2 x 200 (no dropout, init_range 0.1), medium 2 x 650 (dropout 0.5, 0.05),
    large 2 x 1500 (dropout 0.65, 0.04), vocabulary 10,000.

    Attributes:
        vocab_size: rows of the embedding and of the softmax.
        embedding_size: word vector size; must equal ``hidden_size`` when the embeddings are tied.
        hidden_size: LSTM state size of every layer.
        num_layers: stacked LSTM layers (also readable as ``num_hidden_layers``).
        dropout: drop probability on the embeddings, between layers and before the softmax.
        tie_word_embeddings: the softmax weight is the embedding matrix (full softmax only).
        init_range: every weight starts uniform in ``[-init_range, init_range]`` (the paper's scheme).
        softmax: ``full`` (a linear layer over the vocabulary) or ``adaptive`` (Grave et al. 2017).
        adaptive_cutoffs: frequency-rank boundaries of the adaptive softmax clusters (ids are frequency ranks
            with a word-level tokenizer, most frequent first); the head holds ids below the first cutoff.
        adaptive_div_value: each further cluster's projection is this many times smaller.
    """

    model_type = "nlp_ssl_lstm"
    attribute_map = {"num_hidden_layers": "num_layers"}

    vocab_size: int = 10000
    embedding_size: int = 200
    hidden_size: int = 200
    num_layers: int = 2
    dropout: float = 0.0
    tie_word_embeddings: bool = True
    init_range: float = 0.1
    softmax: str = "full"
    adaptive_cutoffs: list[int] | None = None
    adaptive_div_value: float = 4.0
    bos_token_id: int | None = None
    eos_token_id: int | None = None
    pad_token_id: int | None = None

    def __post_init__(self, **kwargs) -> None:
        for key in ("vocab_size", "embedding_size", "hidden_size", "num_layers"):
            if getattr(self, key) < 1:
                raise UserError(f"LSTM config '{key}' must be >= 1, got {getattr(self, key)}")
        if not 0.0 <= self.dropout < 1.0:
            raise UserError(f"LSTM config 'dropout' must be in [0, 1), got {self.dropout}")
        if self.init_range <= 0:
            raise UserError(f"LSTM config 'init_range' must be > 0, got {self.init_range}")
        if self.softmax not in ("full", "adaptive"):
            raise UserError(f"LSTM config 'softmax' must be 'full' or 'adaptive', got {self.softmax!r}")
        if self.softmax == "adaptive":
            if self.tie_word_embeddings:
                raise UserError("an adaptive softmax has its own output weights; set tie_word_embeddings to false")
            cutoffs = list(self.adaptive_cutoffs or [])
            if not cutoffs or cutoffs != sorted(set(cutoffs)) or cutoffs[0] < 1 or cutoffs[-1] >= self.vocab_size:
                raise UserError(f"LSTM config 'adaptive_cutoffs' must be increasing ids between 1 and vocab_size - 1 "
                                f"({self.vocab_size - 1}), got {self.adaptive_cutoffs}")
            if self.adaptive_div_value < 1:
                raise UserError(f"LSTM config 'adaptive_div_value' must be >= 1, got {self.adaptive_div_value}")
            if self.hidden_size // self.adaptive_div_value ** len(cutoffs) < 1:
                raise UserError(f"the last adaptive-softmax cluster would project {self.hidden_size} units to "
                                f"{self.hidden_size} // {self.adaptive_div_value:g}^{len(cutoffs)} = 0; use fewer "
                                "cutoffs or a smaller adaptive_div_value")
        if self.tie_word_embeddings and self.embedding_size != self.hidden_size:
            raise UserError(f"tied embeddings need embedding_size == hidden_size (got {self.embedding_size} and "
                            f"{self.hidden_size}); make them equal or set tie_word_embeddings to false")
        super().__post_init__(**kwargs)


@dataclass
class LSTMCausalLMOutput(ModelOutput):
    """What :meth:`LSTMForCausalLM.forward` returns.

    Attributes:
        loss: mean next-token cross-entropy when ``labels`` were given.
        logits: ``[B, T, V]``; position t scores token t+1 (with an adaptive softmax: log-probabilities, which
            are valid logits).
        state: ``(h, c)``, each ``[num_layers, B, H]``: the memory after the last position, to pass as
            ``state`` with the next window of the same streams.
        hidden_states: with ``output_hidden_states``: the embeddings and each layer's outputs, ``[B, T, H]``.
    """

    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    state: LSTMState | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None


class LSTMPreTrainedModel(PreTrainedModel):
    config_class = LSTMLMConfig
    config: LSTMLMConfig
    base_model_prefix = "lstm"
    main_input_name = "input_ids"
    _is_stateful = True

    def _init_weights(self, module: nn.Module) -> None:
        """Uniform in ``[-init_range, init_range]`` for every weight and bias (Zaremba et al. 2014, section 4)."""
        bound = self.config.init_range
        if isinstance(module, (nn.Embedding, nn.Linear, nn.LSTM)):
            for param in module.parameters(recurse=False):
                init.uniform_(param, -bound, bound)


class LSTMForCausalLM(LSTMPreTrainedModel, GenerationMixin):
    """Embedding -> dropout -> [LSTM -> dropout] x num_layers -> linear softmax.

    One ``nn.LSTM`` per layer (rather than one multi-layer module) so that every layer's output sequence is
    available as a hidden state, for representation diagnostics; the arithmetic is the same.
    """

    _tied_weights_keys = {"decoder.weight": "embeddings.weight"}

    def __init__(self, config: LSTMLMConfig) -> None:
        super().__init__(config)
        self.embeddings = nn.Embedding(config.vocab_size, config.embedding_size)
        sizes = [config.embedding_size] + [config.hidden_size] * config.num_layers
        self.layers = nn.ModuleList(nn.LSTM(sizes[i], sizes[i + 1], batch_first=True) for i in range(config.num_layers))
        self.dropout = nn.Dropout(config.dropout)
        if config.softmax == "adaptive":
            # Its head and cluster projections are nn.Linear modules, initialised like every other weight.
            self.adaptive = nn.AdaptiveLogSoftmaxWithLoss(config.hidden_size, config.vocab_size,
                                                          cutoffs=list(config.adaptive_cutoffs),
                                                          div_value=config.adaptive_div_value)
            self.decoder = None
        else:
            self.decoder = nn.Linear(config.hidden_size, config.vocab_size)
            self.adaptive = None
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embeddings

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.embeddings = value

    def get_output_embeddings(self) -> nn.Linear | None:
        return self.decoder

    def set_output_embeddings(self, value: nn.Linear) -> None:
        self.decoder = value

    def initial_state(self, batch_size: int, device: torch.device | None = None) -> LSTMState:
        """Zero memory ``(h, c)``, each ``[num_layers, B, H]``."""
        shape = (self.config.num_layers, batch_size, self.config.hidden_size)
        weight = self.embeddings.weight
        device = device or weight.device
        return (torch.zeros(shape, device=device, dtype=weight.dtype),
                torch.zeros(shape, device=device, dtype=weight.dtype))

    def forward(self, input_ids: torch.LongTensor, state: LSTMState | None = None,
                labels: torch.LongTensor | None = None, attention_mask: torch.Tensor | None = None,
                output_hidden_states: bool | None = None, return_dict: bool | None = None,
                **kwargs) -> LSTMCausalLMOutput:
        """Scores of the next token at every position.

        Args:
            input_ids: ``[B, T]``.
            state: ``(h, c)`` from the previous window of the same streams, each ``[num_layers, B, H]``;
                None starts from zero memory.
            labels: ``[B, T]``, transformers' convention: the model shifts them (position t is scored against
                ``labels[:, t + 1]``) and ignores ``-100``.
            attention_mask: accepted for API compatibility and ignored: a left-to-right recurrence never looks
                at later positions, so right padding cannot change earlier outputs. Left padding would, so
                batch prompts of equal length when generating.
            output_hidden_states: also return the embeddings and every layer's outputs.

        Returns:
            :class:`LSTMCausalLMOutput` with ``logits [B, T, V]`` and the new ``state``.
        """
        features, new_state, hidden = self.features(input_ids, state, output_hidden_states=bool(output_hidden_states))
        logits = self.output_scores(features)  # [B, T, V]
        loss = None
        if labels is not None:
            targets = labels[:, 1:].flatten()
            keep = targets != -100
            loss = self.token_nll(features[:, :-1].flatten(0, 1)[keep], targets[keep]).mean()
        return LSTMCausalLMOutput(loss=loss, logits=logits, state=new_state, hidden_states=hidden)

    def features(self, input_ids: torch.LongTensor, state: LSTMState | None = None,
                 output_hidden_states: bool = False) -> tuple[torch.Tensor, LSTMState, tuple[torch.Tensor, ...] | None]:
        """The last layer's outputs after dropout, ready for the softmax.

        Args:
            input_ids: ``[B, T]``.
            state: ``(h, c)``, each ``[num_layers, B, H]``, or None for zero memory.
            output_hidden_states: also return the embeddings and every layer's outputs (before dropout).

        Returns:
            ``(features [B, T, H], new state, hidden states or None)``.
        """
        if input_ids.dim() != 2:
            raise UserError(f"input_ids must be [batch, time], got shape {tuple(input_ids.shape)}")
        if state is None:
            state = self.initial_state(input_ids.shape[0], input_ids.device)
        h0, c0 = state
        x = self.embeddings(input_ids)  # [B, T, E]
        hidden: list[torch.Tensor] = [x]
        x = self.dropout(x)
        h_out, c_out = [], []
        for index, layer in enumerate(self.layers):
            x, (h, c) = layer(x, (h0[index:index + 1].contiguous(), c0[index:index + 1].contiguous()))  # [B, T, H]
            hidden.append(x)
            h_out.append(h)
            c_out.append(c)
            x = self.dropout(x)
        return x, (torch.cat(h_out), torch.cat(c_out)), tuple(hidden) if output_hidden_states else None

    def output_scores(self, features: torch.Tensor) -> torch.Tensor:
        """``[..., H]`` features -> ``[..., V]`` logits (log-probabilities with an adaptive softmax)."""
        if self.adaptive is None:
            return self.decoder(features)
        flat = self.adaptive.log_prob(features.reshape(-1, features.shape[-1]))
        return flat.view(*features.shape[:-1], -1)

    def token_nll(self, features: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Negative log-likelihood of each target, ``[N]`` in nats, from ``[N, H]`` features.

        The full softmax is computed in fp32; the adaptive softmax scores only each target's head entry and
        its cluster (Grave et al. 2017), never the whole vocabulary.
        """
        if self.adaptive is None:
            return F.cross_entropy(self.decoder(features).float(), targets, reduction="none")
        return -self.adaptive(features.float(), targets).output

    # --- generation: GenerationMixin drives the loop; the LSTM state plays the role of the KV cache ---------
    # ``model.generate(ids, max_new_tokens=..., do_sample=...)`` works for greedy search and sampling (top-k,
    # top-p, temperature). Beam search would have to reorder the state with the beams and is not supported.

    def prepare_inputs_for_generation(self, input_ids: torch.LongTensor, state: LSTMState | None = None,
                                      **kwargs) -> dict:
        # With a carried state only the newest token is new input; the state already holds the prefix.
        if state is not None:
            input_ids = input_ids[:, -1:]
        return {"input_ids": input_ids, "state": state}

    def _update_model_kwargs_for_generation(self, outputs: LSTMCausalLMOutput, model_kwargs: dict,
                                            is_encoder_decoder: bool = False, num_new_tokens: int = 1) -> dict:
        model_kwargs["state"] = outputs.state
        if model_kwargs.get("attention_mask") is not None:
            mask = model_kwargs["attention_mask"]
            model_kwargs["attention_mask"] = torch.cat([mask, mask.new_ones((mask.shape[0], num_new_tokens))], dim=-1)
        return model_kwargs

    @classmethod
    def _supports_default_dynamic_cache(cls) -> bool:
        # The (h, c) state is the cache; transformers must not build a key/value cache for this model.
        return False



@torch.no_grad()
def evaluate_stream(model: LSTMForCausalLM, token_ids: torch.Tensor, batch_size: int = 1,
                    bptt: int = 35) -> tuple[float, int]:
    """Mean next-token cross-entropy over a held-out stream, carrying the state across windows.

    Every target of the (``B``-divisible prefix of the) stream is scored once, including the last partial
    window, so ``exp(loss)`` is the per-token perplexity of the literature when tokens are words
    (Mikolov's PTB: one ``<eos>`` per sentence counts as a word). Zaremba et al. evaluate with ``B = 1``.

    Args:
        model: the LM (set to eval mode here and restored afterwards).
        token_ids: ``[N]``.
        batch_size: parallel streams; ``B > 1`` is faster and drops the last ``N mod B`` tokens.
        bptt: window length; it changes nothing but speed and memory, since the state is carried.

    Returns:
        ``(mean loss in nats, number of targets scored)``.
    """
    if batch_size < 1 or bptt < 1:
        raise UserError(f"batch_size and bptt must be >= 1, got {batch_size} and {bptt}")
    columns = token_ids.numel() // batch_size
    if columns < 2:
        raise UserError(f"a stream of {token_ids.numel()} tokens has nothing to score with {batch_size} streams")
    was_training = model.training
    model.eval()
    device = model.embeddings.weight.device
    rows = token_ids[: batch_size * columns].view(batch_size, columns).to(device)
    total, count = stream_nll(model, rows, bptt)
    model.train(was_training)
    return float(total) / count, count


def stream_nll(model: LSTMForCausalLM, rows: torch.Tensor, bptt: int) -> tuple[torch.Tensor, int]:
    """Summed next-token NLL over ``rows`` ``[B, L]``, each row one stream read from zero memory.

    The state is carried from window to window, so the result does not depend on ``bptt``. Runs in whatever
    mode (train / eval) and grad mode the caller set.

    Returns:
        ``(sum of the B * (L - 1) losses as a 0-d tensor, B * (L - 1))``.
    """
    state, total, count = None, rows.new_zeros((), dtype=torch.float64), 0
    for start in range(0, rows.shape[1] - 1, bptt):
        window = rows[:, start:start + bptt + 1]
        features, state, _ = model.features(window[:, :-1], state)
        total = total + model.token_nll(features.flatten(0, 1), window[:, 1:].flatten()).double().sum()
        count += window[:, 1:].numel()
    return total, count


def perplexity(mean_loss: float) -> float:
    """``exp(loss)``, capped so that an untrained model prints a number instead of overflowing."""
    return math.exp(min(mean_loss, 50.0))


AutoConfig.register(LSTMLMConfig.model_type, LSTMLMConfig, exist_ok=True)
AutoModelForCausalLM.register(LSTMLMConfig, LSTMForCausalLM, exist_ok=True)
