"""Train skip-gram / CBOW word vectors with the torch engine or gensim: the flow ``recipes/word2vec.py`` runs.

Both backends share everything but the training loop: the corpus (``data``), tokenisation and vocabulary
(``vocab``), the hyper-parameters (``word2vec``), the output folder contract (``RunDirectory``) and the
exported artifacts (``final/``: ``vectors.kv``, ``vectors.txt``, ``vectors.bin``, ``vocab.tsv``,
``eval_results.json``, ``intrinsic.json``, ``README.md``). Every input check (corpus, vocabulary, output
folder) happens before the first byte is written.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Iterator, Literal

import datasets
import numpy as np
import torch

from nlp_ssl.config import TrainingConfig, dump_yaml
from nlp_ssl.data.corpus import CorpusConfig, load_corpus
from nlp_ssl.data.word2vec_data import (
    ChunkDataset,
    VocabConfig,
    Vocabulary,
    build_vocabulary,
    collate_chunks,
    encode_corpus,
)
from nlp_ssl.atomic import atomic_write_text
from nlp_ssl.engine.run import Pipeline, RunContext, RunData, RunOutcome, finish_export, run
from nlp_ssl.engine.trainer import TrainResult, write_final
from nlp_ssl.errors import UserError
from nlp_ssl.hub.model_card import CardInfo
from nlp_ssl.hub.publish import Publisher
from nlp_ssl.models.word_vectors import WordVectors, export_word_vectors, keyed_vectors
from nlp_ssl.objectives import word2vec_kernel
from nlp_ssl.objectives.word2vec import Word2VecObjective, Word2VecObjectiveConfig
from nlp_ssl.registry import register


@dataclass
class Word2VecCorpusConfig(CorpusConfig):
    """The ``data`` section: as for the LM recipes, but no held-out split (word2vec is evaluated intrinsically)."""

    eval_split: str | None = None
    eval_fraction: float = 0.0


@dataclass
class Word2VecSection:
    """The ``word2vec`` section: model and training hyper-parameters shared by both backends.

    Attributes:
        backend: ``torch`` (the shared engine; CPU, one GPU or many) or ``gensim`` (multi-threaded CPU).
        architecture: ``skipgram`` or ``cbow``.
        vector_size, window, negative, sample, ns_exponent: as in word2vec.c / gensim (``-size``, ``-window``,
            ``-negative``, ``-sample``; ``ns_exponent`` is the noise-distribution power, 0.75).
        dynamic_window: shrink each centre word's window to a uniform radius in ``1..window`` (word2vec's default).
        min_learning_rate: the learning rate decays linearly from ``learning_rate`` to this (gensim's ``min_alpha``).
        words_per_chunk: tokens per dataset item (torch); a step is ``per_device_train_batch_size`` chunks.
        shared_negatives: ``K`` distinct negatives each group of positions shares (torch).
        negative_group: ``g`` positions per group sharing negatives (torch).
        row_step_cap: damping of crowded rows (torch): a row's step is ``min(lr, cap / L_r)`` with ``L_r`` the
            Lipschitz bound of the step's loss for that row; null disables it (plain summed SGD, which
            diverges for large steps).
        cbow_word2vec_update: CBOW adds the hidden-layer gradient to every context vector, as word2vec.c and
            gensim do (false: the exact gradient of the mean).
        sparse_gradients: sparse COO gradients (default on one CPU process) or dense ones (default on GPU and
            with several processes: DDP's buckets and NCCL take dense gradients only).
        workers: gensim threads (null: all CPUs).
        kernel: how the torch backend trains. ``fused``: a compiled C++ kernel that trains word by word
            straight into the tables, threaded (Hogwild) like word2vec.c, on one CPU process
            (:mod:`nlp_ssl.objectives.word2vec_kernel`; built on first use, a C++ compiler needed).
            ``torch``: batched steps of torch operations with sparse gradients and :class:`RowSGD`, on any
            device and any number of processes (``shared_negatives``, ``negative_group``, ``row_step_cap``
            and ``sparse_gradients`` apply to it only). ``auto`` (default): ``fused`` on one CPU process when
            it builds, else ``torch``.
        pairs_per_noise_draw: fused skip-gram: an input word draws ``negative`` noise words for every this
            many of its (centre, context) pairs, weighted to keep word2vec's loss in expectation. 1 draws
            as many as word2vec.c (one set per pair); 3 (default) measured about 1.8x faster than 1, with
            analogy accuracy at gensim's on the benchmark corpus but 1.4 points under 1 there and 0.9 under
            it on GCIDE (README, Performance); larger is faster and noisier.
    """

    backend: Literal["torch", "gensim"] = "torch"
    architecture: Literal["skipgram", "cbow"] = "skipgram"
    vector_size: int = 100
    window: int = 5
    dynamic_window: bool = True
    negative: int = 5
    sample: float = 1e-3
    ns_exponent: float = 0.75
    min_learning_rate: float = 1e-4
    words_per_chunk: int = 1024
    shared_negatives: int = 32
    negative_group: int = 128
    row_step_cap: float | None = 4.0
    cbow_word2vec_update: bool = True
    sparse_gradients: bool | None = None
    workers: int | None = None
    kernel: Literal["auto", "fused", "torch"] = "auto"
    pairs_per_noise_draw: int = 3

    def __post_init__(self) -> None:
        for name in ("vector_size", "window", "negative", "words_per_chunk", "shared_negatives", "negative_group",
                     "pairs_per_noise_draw"):
            if getattr(self, name) < 1:
                raise UserError(f"config key 'word2vec.{name}' must be >= 1, got {getattr(self, name)}")
        if self.sample < 0:
            raise UserError(f"config key 'word2vec.sample' must be >= 0 (0 disables subsampling), got {self.sample}")
        if self.min_learning_rate < 0:
            raise UserError(f"config key 'word2vec.min_learning_rate' must be >= 0, got {self.min_learning_rate}")
        if self.row_step_cap is not None and self.row_step_cap <= 0:
            raise UserError("config key 'word2vec.row_step_cap' must be > 0 (or null for plain SGD)")
        if self.workers is not None and self.workers < 1:
            raise UserError(f"config key 'word2vec.workers' must be >= 1 (or null for all CPUs), got {self.workers}")


def use_fused_kernel(kernel: str, single_cpu_process: bool, say: Callable[[str], None] = print) -> bool:
    """Resolve ``word2vec.kernel`` (see :class:`Word2VecSection`) for a run on one CPU process or not.

    Raises:
        UserError: ``fused`` asked for where it cannot run or cannot be built.
    """
    if kernel == "torch":
        return False
    if kernel == "fused" and not single_cpu_process:
        raise UserError("word2vec.kernel=fused trains in place on one CPU process; on GPUs and with several "
                        "processes set word2vec.kernel=torch (or auto)")
    if not single_cpu_process:
        return False
    if word2vec_kernel.needs_build():
        say("building the fused word2vec kernel for this machine (once, about 10 s)")
    try:
        word2vec_kernel.load_kernel()
    except word2vec_kernel.KernelUnavailable as err:
        if kernel == "fused":
            raise UserError(f"word2vec.kernel=fused: {err}; install a C++ compiler (e.g. apt-get install g++) "
                            "or set word2vec.kernel=torch") from None
        say(f"warning: {err}; training with batched torch steps instead (word2vec.kernel=torch skips the attempt)")
        return False
    return True


@dataclass
class IntrinsicEvalConfig:
    """The ``evaluation`` section: what is measured on the final vectors (see :mod:`nlp_ssl.eval.intrinsic`)."""

    enabled: bool = True
    similarity_files: list[str] = field(default_factory=list)
    analogy_files: list[str] = field(default_factory=list)
    neighbours: list[str] = field(default_factory=lambda: ["king", "france", "computer", "good", "run"])
    restrict_vocab: int = 300000
    plots: bool = True  # final/plots/: PCA and t-SNE of countries and capitals, analogy accuracy per section


@dataclass
class Word2VecConfig(TrainingConfig):
    """``recipes/word2vec.py``: engine keys at the top level, then ``data``, ``vocab``, ``word2vec``, ``evaluation``.

    ``num_train_epochs`` (default 5) decides ``max_steps`` from the corpus size (passes over the corpus);
    set it to null to give ``max_steps`` yourself (torch backend). ``per_device_train_batch_size`` counts
    chunks of ``word2vec.words_per_chunk`` words. ``learning_rate`` has word2vec's per-pair meaning.
    """

    output_dir: str = "runs/word2vec"
    num_train_epochs: float | None = 5.0
    learning_rate: float = 0.025
    per_device_train_batch_size: int = 16
    weight_decay: float = 0.0
    max_grad_norm: float = 0.0
    logging_steps: int = 50
    save_steps: int = 1000
    data: Word2VecCorpusConfig = field(default_factory=Word2VecCorpusConfig)
    vocab: VocabConfig = field(default_factory=VocabConfig)
    word2vec: Word2VecSection = field(default_factory=Word2VecSection)
    evaluation: IntrinsicEvalConfig = field(default_factory=IntrinsicEvalConfig)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.num_train_epochs is not None and not self.num_train_epochs > 0:
            raise UserError(f"config key 'num_train_epochs' must be > 0 (or null to use max_steps), got {self.num_train_epochs}")
        if self.weight_decay != 0:
            raise UserError("config key 'weight_decay' must be 0 for word2vec (plain SGD on embedding rows)")
        if self.max_grad_norm != 0:
            raise UserError("config key 'max_grad_norm' must be 0 for word2vec (gradients are per row; "
                            "large steps are damped per row instead, see word2vec.row_step_cap)")
        if self.word2vec.backend == "gensim":
            epochs = self.num_train_epochs
            if epochs is None or float(epochs) != int(epochs):
                raise UserError("the gensim backend trains whole epochs: set num_train_epochs to an integer "
                                f"(got {epochs})")


@dataclass
class Word2VecRunSummary:
    backend: str
    final_dir: Path
    steps: int
    epochs: float
    raw_words: int
    train_seconds: float
    words_per_sec: float
    intrinsic: dict[str, Any] | None
    stopped_by_time: bool
    is_main_process: bool = True


# --------------------------------------------------------------------------------------------- the flow


@dataclass
class Word2VecInputs:
    """The corpus as the vocabulary's ids, read before the run folder is touched."""

    vocab: Vocabulary
    encoded: Any  # nlp_ssl.data.word2vec_data.EncodedCorpus
    dataset: ChunkDataset | None  # torch backend only


class Word2VecPipeline(Pipeline[Word2VecConfig]):
    """Corpus -> vocabulary -> id stream -> skip-gram / CBOW (engine or gensim) -> vectors + intrinsic eval."""

    def prepare_inputs(self, cfg: Word2VecConfig) -> Word2VecInputs:
        # The launcher's WORLD_SIZE is read here because max_steps must be known before the run folder is checked.
        world = max(1, int(os.environ.get("WORLD_SIZE", "1") or 1))
        if cfg.word2vec.backend == "gensim" and world > 1:
            # Every process would train, write final/ and publish on its own.
            raise UserError(f"word2vec.backend=gensim trains in one process (with word2vec.workers threads), but "
                            f"{world} processes were launched; launch it as one process (plain python or "
                            f"accelerate launch --num_processes 1), or set word2vec.backend=torch for several")
        corpus = load_corpus(cfg.data)
        train = corpus["train"]
        vocab = build_vocabulary(_texts(train), cfg.vocab, source=f"corpus {cfg.data.corpus}")
        encoded = encode_corpus(_texts(train), vocab, cfg.vocab)
        if cfg.word2vec.backend == "gensim":
            # For gensim a "step" is an epoch: what trainer_state.json and reruns count.
            cfg.max_steps = int(cfg.num_train_epochs)  # type: ignore[arg-type]  (validated: an integer)
            return Word2VecInputs(vocab, encoded, None)
        # Every process takes its own batches, so an epoch is a multiple of the global batch.
        dataset = ChunkDataset(encoded, cfg.word2vec.words_per_chunk, cfg.per_device_train_batch_size * world)
        if cfg.num_train_epochs is not None:
            # Derived before the run folder is checked, so config.yaml records the steps the run takes.
            cfg.max_steps = max(1, math.ceil(cfg.num_train_epochs * dataset.steps_per_epoch))
        return Word2VecInputs(vocab, encoded, dataset)

    def build_data(self, ctx: RunContext[Word2VecConfig]) -> RunData:
        cfg, inputs = ctx.config, ctx.inputs
        words = (f"data: {cfg.data.corpus}: {inputs.encoded.raw_words:,} words ({len(inputs.encoded):,} in "
                 f"vocabulary), vocabulary {len(inputs.vocab):,}")
        if inputs.dataset is None:
            workers = cfg.word2vec.workers or os.cpu_count() or 1
            return RunData(None, description=f"{words}; gensim {cfg.word2vec.architecture}, {workers} workers, "
                                             f"{cfg.max_steps} epochs")
        return RunData(inputs.dataset, None, collate_chunks,
                       description=f"{words}; {inputs.dataset.steps_per_epoch} steps of "
                                   f"{cfg.per_device_train_batch_size} x {inputs.dataset.chunk_len} words per epoch, "
                                   f"{cfg.max_steps} steps")

    def build_objective(self, ctx: RunContext[Word2VecConfig], data: RunData) -> Word2VecObjective:
        w2v, vocab = ctx.config.word2vec, ctx.inputs.vocab
        vectors = WordVectors(len(vocab), w2v.vector_size)
        # DDP's gradient buckets cannot hold sparse tensors (and NCCL cannot all-reduce them): dense when distributed.
        distributed = ctx.accelerator.num_processes > 1
        if w2v.sparse_gradients and distributed:
            raise UserError("word2vec.sparse_gradients=true does not work with several processes (DDP all-reduces "
                            "dense gradients); leave it null")
        sparse = w2v.sparse_gradients if w2v.sparse_gradients is not None else (
            ctx.accelerator.device.type == "cpu" and not distributed)
        fused = use_fused_kernel(w2v.kernel, ctx.accelerator.device.type == "cpu" and not distributed,
                                 ctx.accelerator.print)
        # The objective's settings are the section's keys of the same name, with the kernel and
        # sparse_gradients resolved.
        resolved = {"sparse_gradients": sparse, "fused": fused}
        objective_cfg = Word2VecObjectiveConfig(**{
            f.name: getattr(w2v, f.name) for f in fields(Word2VecObjectiveConfig) if f.name not in resolved},
            **resolved)

        def export_vectors(model: WordVectors, folder: Path) -> None:
            export_word_vectors(keyed_vectors(vocab.words, model.input, vocab.counts), vocab, folder)

        return Word2VecObjective(vectors, vocab.counts, objective_cfg, export_fn=export_vectors)

    def describe_objective(self, objective: Word2VecObjective) -> str:  # type: ignore[override]
        rows, dim = objective.vectors.input.shape
        how = (f"fused CPU kernel, {torch.get_num_threads()} threads" if objective.cfg.fused
               else "batched torch steps")
        return f"model: {objective.cfg.architecture} word vectors, {rows:,} x {dim}; {how}"

    def train(self, ctx: RunContext[Word2VecConfig], data: RunData) -> TrainResult:
        if ctx.config.word2vec.backend == "gensim":
            return _train_gensim(self, ctx)
        return super().train(ctx, data)

    def on_export(self, ctx: RunContext[Word2VecConfig], folder: Path, metrics: dict[str, float]) -> dict[str, float]:
        """Intrinsic evaluation of the exported vectors (``intrinsic.json``, plots); its headline numbers
        become the run's evaluation results."""
        cfg = ctx.config
        if not cfg.evaluation.enabled:
            return {}
        from gensim.models import KeyedVectors

        from nlp_ssl.eval.intrinsic import run_intrinsic

        kv = KeyedVectors.load(str(folder / "vectors.kv"))
        intrinsic = run_intrinsic(kv, similarity_files=cfg.evaluation.similarity_files,
                                  analogy_files=cfg.evaluation.analogy_files, neighbours=cfg.evaluation.neighbours,
                                  restrict_vocab=cfg.evaluation.restrict_vocab)
        intrinsic["source"] = "final"
        if cfg.evaluation.plots:
            from nlp_ssl.eval.intrinsic_cli import write_plots

            intrinsic["plots"] = [{k: (Path(v).relative_to(folder).as_posix() if k == "path" else v)
                                   for k, v in item.items()} for item in write_plots(kv, intrinsic, folder / "plots")]
        atomic_write_text(folder / "intrinsic.json", json.dumps(intrinsic, indent=2, default=_json_default) + "\n")
        return flat_metrics(intrinsic)

    def card(self, ctx: RunContext[Word2VecConfig], folder: Path, metrics: dict[str, float]) -> CardInfo:
        cfg, vocab = ctx.config, ctx.inputs.vocab
        w2v = cfg.word2vec
        state = json.loads((folder / "trainer_state.json").read_text(encoding="utf-8"))
        epochs = _epochs(ctx.inputs, state["step"])
        name = "skip-gram" if w2v.architecture == "skipgram" else "CBOW"
        return CardInfo(
            model_name=Path(cfg.output_dir).name,
            objective=(f"word2vec {name} with negative sampling ({w2v.negative} negatives, window {w2v.window}, "
                       f"subsampling {w2v.sample:g}), {w2v.backend} backend"),
            task_type="feature-extraction", dataset_name=cfg.data.corpus, dataset_type=cfg.data.corpus,
            steps=state["step"], command=ctx.command, config_yaml=dump_yaml(cfg),
            usage=("from gensim.models import KeyedVectors\n\n"
                   "vectors = KeyedVectors.load('vectors.kv')  # or load_word2vec_format('vectors.bin', binary=True)\n"
                   "print(vectors.most_similar('king', topn=5))"),
            metrics=metrics, tags=["word2vec", "word-embeddings", w2v.architecture], dataset_split="train",
            description=(f"{w2v.vector_size}-dimensional word2vec {name} vectors for {len(vocab):,} words, trained "
                         f"from scratch on {cfg.data.corpus} for {epochs:.2f} epochs. Evaluation: WordSim353 / "
                         "SimLex-999 Spearman and Google analogy accuracy (3CosAdd, over covered questions; "
                         "coverage alongside)."),
        )

    def outcome_extra(self, ctx: RunContext[Word2VecConfig], final_dir: Path) -> dict[str, Any]:
        path = final_dir / "intrinsic.json"
        return {"intrinsic": json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None}

    def summary(self, ctx: RunContext[Word2VecConfig], outcome: RunOutcome) -> str:
        return format_summary(to_summary(ctx.config, ctx.inputs, outcome))


def _epochs(inputs: Word2VecInputs, step: int) -> float:
    return float(step) if inputs.dataset is None else step / inputs.dataset.steps_per_epoch


def to_summary(cfg: Word2VecConfig, inputs: Word2VecInputs, outcome: RunOutcome) -> Word2VecRunSummary:
    raw = inputs.encoded.raw_words
    epochs = _epochs(inputs, outcome.step)
    seconds = outcome.train_seconds
    return Word2VecRunSummary(cfg.word2vec.backend, outcome.final_dir, outcome.step, epochs, raw, seconds,
                              raw * epochs / seconds if seconds > 0 else 0.0, outcome.extra.get("intrinsic"),
                              outcome.stopped_by_time, outcome.is_main_process)


def train_word2vec(cfg: Word2VecConfig) -> Word2VecRunSummary:
    """Run the word2vec recipe on ``cfg`` (prints its report) and return the run's summary."""
    outcome = run(Word2VecPipeline(), cfg)
    return to_summary(cfg, outcome.inputs, outcome)


def _texts(split: datasets.Dataset | datasets.IterableDataset) -> Iterator[str]:
    """The ``text`` column, read in Arrow batches (row-by-row access is much slower)."""
    for batch in split.iter(batch_size=1000):
        yield from batch["text"]


def _train_gensim(pipeline: Word2VecPipeline, ctx: RunContext[Word2VecConfig]) -> TrainResult:
    """gensim's multi-threaded Word2Vec on exactly the same token stream and vocabulary."""
    from gensim.models import Word2Vec
    from gensim.models.callbacks import CallbackAny2Vec

    cfg, vocab, encoded = ctx.config, ctx.inputs.vocab, ctx.inputs.encoded
    w2v = cfg.word2vec
    epochs = cfg.max_steps
    sentences = gensim_sentences(encoded, vocab)
    workers = w2v.workers or os.cpu_count() or 1
    model = Word2Vec(vector_size=w2v.vector_size, window=w2v.window, negative=w2v.negative, hs=0,
                     sg=int(w2v.architecture == "skipgram"), sample=w2v.sample, ns_exponent=w2v.ns_exponent,
                     alpha=cfg.learning_rate, min_alpha=w2v.min_learning_rate, min_count=1,
                     shrink_windows=w2v.dynamic_window, cbow_mean=1, workers=workers, seed=cfg.seed, epochs=epochs)
    # The vocabulary (and so subsampling and the noise table) comes from our counts, in our order.
    model.build_vocab_from_freq(dict(zip(vocab.words, vocab.counts.tolist())))

    log = _GensimLog(ctx.run_dir.metrics_file, encoded.raw_words, CallbackAny2Vec)
    start = time.perf_counter()
    model.train(sentences, total_examples=len(sentences), total_words=len(encoded), epochs=epochs,
                callbacks=[log.callback], compute_loss=True)
    seconds = time.perf_counter() - start

    def write_vectors(folder: Path) -> None:
        words = list(vocab.words)
        export_word_vectors(keyed_vectors(words, model.wv[words], vocab.counts), vocab, folder)

    state = {"step": epochs, "max_steps": epochs, "complete": True, "epoch": epochs,
             "train_seconds": round(seconds, 4), "backend": "gensim"}
    publisher = Publisher(cfg, ctx.run_dir.root)
    try:
        write_final(ctx.run_dir.final, write_vectors, state, {},
                    on_export=lambda folder, metrics: finish_export(pipeline, ctx, folder, metrics))
        publisher.on_final(ctx.run_dir.final)
    finally:
        publisher.close()
    return TrainResult(epochs, ctx.run_dir.final, {}, False)


def gensim_sentences(encoded, vocab: Vocabulary, max_words: int = 10_000) -> list[list[str]]:
    """The in-vocabulary token stream as gensim sentences (lists of words), cut at sentence boundaries.

    gensim silently truncates sentences longer than 10,000 words (``MAX_WORDS_IN_BATCH``), so longer
    sentences are split into pieces of at most ``max_words`` (the torch backend cuts at chunk edges alike).
    """
    words = np.asarray(vocab.words, dtype=object)
    sentence = encoded.sentence
    starts = np.flatnonzero(np.r_[True, sentence[1:] != sentence[:-1]])
    ends = np.r_[starts[1:], len(sentence)]
    tokens = words[encoded.ids]
    out: list[list[str]] = []
    for start, end in zip(starts.tolist(), ends.tolist()):
        for piece in range(start, end, max_words):
            out.append(tokens[piece:min(end, piece + max_words)].tolist())
    return out


class _GensimLog:
    """Writes one ``metrics.jsonl`` record per gensim epoch (loss, words/s), like the engine's log lines."""

    def __init__(self, path: Path, raw_words: int, base: type) -> None:
        log = self

        class _Callback(base):  # type: ignore[misc, valid-type]
            def on_epoch_begin(self, model) -> None:
                log.started = time.perf_counter()

            def on_epoch_end(self, model) -> None:
                log.epoch += 1
                loss = model.get_latest_training_loss()
                model.running_training_loss = 0.0  # gensim accumulates it over the whole run otherwise
                seconds = time.perf_counter() - log.started
                record = {"step": log.epoch, "train/epoch": log.epoch, "train/loss_sum": float(loss),
                          "train/words_per_sec": raw_words / seconds if seconds > 0 else 0.0}
                with path.open("a", encoding="utf-8") as handle:
                    handle.write(json.dumps(record) + "\n")

        self.epoch = 0
        self.started = time.perf_counter()
        self.callback = _Callback()


# ---------------------------------------------------------------------------------- export + evaluation


def flat_metrics(intrinsic: dict[str, Any]) -> dict[str, float]:
    """The headline numbers of :func:`~nlp_ssl.eval.intrinsic.run_intrinsic` as ``{name: float}``."""
    out: dict[str, float] = {}
    for r in intrinsic.get("similarity") or []:
        for key in ("spearman", "pearson", "coverage"):
            if r.get(key) is not None:
                out[f"{r['name']}/{key}"] = float(r[key])
    for a in intrinsic.get("analogy") or []:
        overall = a["overall"]
        for method in a["methods"]:
            for subset in ("overall", "semantic", "syntactic"):
                acc = a[subset][method]["accuracy"]
                if acc is not None:
                    out[f"{a['name']}/{method}/{subset}_accuracy"] = float(acc)
        out[f"{a['name']}/covered"] = float(overall["covered"])
        out[f"{a['name']}/total"] = float(overall["total"])
        out[f"{a['name']}/coverage"] = float(overall["covered"]) / max(1.0, float(overall["total"]))
    return out


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def format_summary(summary: Word2VecRunSummary) -> str:
    """What the recipe prints at the end: the intrinsic report, throughput and where the vectors are."""
    lines = []
    if summary.intrinsic is not None:
        from nlp_ssl.eval.intrinsic import format_report

        lines.append(format_report(summary.intrinsic))
        lines.append("")
    state = " (stopped by max_time_minutes; rerun the same command to continue)" if summary.stopped_by_time else ""
    lines.append(f"Trained {summary.backend} word2vec: {summary.epochs:.2f} epochs over {summary.raw_words:,} words in "
                 f"{summary.train_seconds:.1f} s ({summary.words_per_sec:,.0f} words/s){state}")
    lines.append(f"Exported vectors: {Path(summary.final_dir).resolve()}")
    lines.append("  load them with gensim.models.KeyedVectors.load('<folder>/vectors.kv')")
    return "\n".join(lines)


register("word2vec", "skip-gram / CBOW word embeddings (torch or gensim backend)", Word2VecConfig,
         lambda cfg: run(Word2VecPipeline(), cfg))
