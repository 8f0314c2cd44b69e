"""GLUE task registry and loaders (hub, official GLUE TSVs, JSON lines) plus custom classification tasks.

Every loader returns a :class:`datasets.DatasetDict` with the columns of the hub dataset ``nyu-mll/glue``:
the task's text columns (``sentence``, ``sentence1``/``sentence2``, ``question1``/``question2``,
``premise``/``hypothesis``, ``question``/``sentence``), ``label`` (a ``ClassLabel`` with the hub's label
names and order, ``float32`` for STS-B, ``-1`` on unlabelled test sets) and ``idx`` (``int32``). Splits are
``train`` and ``validation`` (MNLI: ``validation_matched`` and ``validation_mismatched``), plus ``test``
(MNLI: ``test_matched``, ``test_mismatched``) when the test file is there.

Local data comes in one of two layouts:

* the official GLUE download (``download_glue_data.py``): one folder per task with ``train.tsv``,
  ``dev.tsv`` (MNLI: ``dev_matched.tsv``, ``dev_mismatched.tsv``) and optionally ``test.tsv``. The column
  layout of each file is written down in :data:`GLUE_TASKS` (``GlueTask.tsv_layouts``). Fields are
  tab-separated with quoting off (``csv.QUOTE_NONE``): GLUE sentences contain unbalanced quotes that a
  quoting reader would swallow across lines. ``data_dir`` may be the task folder or the GLUE root that
  contains it (``glue_data/`` with ``CoLA/``, ``SST-2/``...).
* JSON lines with the hub column names: ``train.jsonl`` and ``validation.jsonl`` or ``dev.jsonl`` (MNLI:
  ``validation_matched.jsonl``/``dev_matched.jsonl`` and the mismatched pair), one object per line, the
  label as an id or a label name.

A task that is not in GLUE is described by a few keys (see :func:`task_from_dict`), e.g. in YAML::

    name: tweet_sentiment
    text_columns: [text]
    label_names: [negative, neutral, positive]
    metric: accuracy
    data_files: {train: data/train.jsonl, validation: data/dev.jsonl}
"""

from __future__ import annotations

import csv
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence, Union

from nlp_ssl.errors import UserError
from nlp_ssl.data.task_names import METRIC_KINDS, canonical_task_name, metric_keys

logger = logging.getLogger(__name__)

Field = Union[str, int]


@dataclass(frozen=True)
class TsvLayout:
    """Where one split's fields sit in its official GLUE TSV file.

    ``text_fields`` and ``label_field`` are header names, or 0-based column positions for files without a
    header (CoLA train/dev). ``label_field`` is None for unlabelled files (the GLUE test sets).
    ``columns`` is the file's full column list as shipped, kept for error messages and documentation.
    """

    file: str
    header: bool
    text_fields: tuple[Field, ...]
    label_field: Field | None
    columns: tuple[str, ...]


@dataclass(frozen=True)
class GlueTask:
    """A sentence or sentence-pair classification (or regression) task.

    Attributes:
        name: task name (``sst2``; anything for a custom task).
        text_columns: one or two text column names, as in the hub dataset.
        label_names: class names in label-id order; None for a regression task (STS-B).
        metric: metric family, one of ``accuracy``, ``f1``, ``matthews_correlation``, ``pearson_spearman``
            (see :func:`nlp_ssl.eval.metrics.compute_metric`).
        eval_splits: validation split names (MNLI has two).
        test_splits: test split names, loaded when their files exist.
        glue_dir: folder name of the task in the official GLUE download (``SST-2``); None for custom tasks.
        tsv_layouts: split -> official TSV layout; empty for custom tasks.
        hub_config: configuration name of the hub dataset (``nyu-mll/glue``), None for custom tasks.
        hub_id: hub dataset id of a custom task (GLUE tasks take it from :func:`load_glue_task`).
        label_column: name of the label column in a custom task's files (the loaded column is ``label``).
        data_files: split -> file (``.jsonl``, ``.tsv`` or ``.csv`` with a header) for a custom task.
        description: free text.
    """

    name: str
    text_columns: tuple[str, ...]
    label_names: tuple[str, ...] | None
    metric: str
    eval_splits: tuple[str, ...] = ("validation",)
    test_splits: tuple[str, ...] = ("test",)
    glue_dir: str | None = None
    tsv_layouts: Mapping[str, TsvLayout] = field(default_factory=dict)
    hub_config: str | None = None
    hub_id: str | None = None
    label_column: str = "label"
    data_files: Mapping[str, str] = field(default_factory=dict)
    description: str = ""

    @property
    def is_regression(self) -> bool:
        """True when the label is a real number (STS-B)."""
        return self.label_names is None

    @property
    def num_labels(self) -> int:
        """Size of the classifier head: the number of classes, or 1 for regression."""
        return 1 if self.label_names is None else len(self.label_names)

    @property
    def is_pair(self) -> bool:
        """True for sentence-pair tasks."""
        return len(self.text_columns) == 2

    @property
    def metric_keys(self) -> tuple[str, ...]:
        """Keys of the metric dict computed for this task."""
        return metric_keys(self.metric)

    @property
    def splits(self) -> tuple[str, ...]:
        """Required splits: ``train`` and the eval splits."""
        return ("train",) + self.eval_splits

    def features(self) -> Any:
        """The :class:`datasets.Features` of a loaded split (text columns, ``label``, ``idx``)."""
        import datasets

        feats: dict[str, Any] = {col: datasets.Value("string") for col in self.text_columns}
        if self.label_names is None:
            feats["label"] = datasets.Value("float32")
        else:
            feats["label"] = datasets.ClassLabel(names=list(self.label_names))
        feats["idx"] = datasets.Value("int32")
        return datasets.Features(feats)


# --- the GLUE registry --------------------------------------------------------------------------------
# Layouts as the official GLUE download ships them (and as the hub's original loading script read them).
# CoLA train/dev are the only files without a header; every test set lacks the label column.

_COLA_COLUMNS = ("source", "label", "original_label", "sentence")
_STSB_COLUMNS = ("index", "genre", "filename", "year", "old_index", "source1", "source2", "sentence1", "sentence2")
_MNLI_PREFIX = (
    "index", "promptID", "pairID", "genre",
    "sentence1_binary_parse", "sentence2_binary_parse", "sentence1_parse", "sentence2_parse",
    "sentence1", "sentence2",
)  # fmt: skip
_MRPC_COLUMNS = ("Quality", "#1 ID", "#2 ID", "#1 String", "#2 String")
_PAIR_COLUMNS = ("index", "sentence1", "sentence2")


def _layout(
    file: str, columns: Sequence[str], text: Sequence[Field], label: Field | None, header: bool = True
) -> TsvLayout:
    return TsvLayout(file=file, header=header, text_fields=tuple(text), label_field=label, columns=tuple(columns))


def _std_layouts(
    train_cols: Sequence[str], test_cols: Sequence[str], text: Sequence[str], label: str
) -> dict[str, TsvLayout]:
    return {
        "train": _layout("train.tsv", train_cols, text, label),
        "validation": _layout("dev.tsv", train_cols, text, label),
        "test": _layout("test.tsv", test_cols, text, None),
    }


class _AliasDict(dict):
    """A dict of GLUE tasks that also answers to aliases (``SST-2``, ``sts-b``, ``CoLA``)."""

    def _key(self, key: object) -> object:
        if isinstance(key, str) and not dict.__contains__(self, key):
            return canonical_task_name(key) or key
        return key

    def __getitem__(self, key: object) -> GlueTask:
        return dict.__getitem__(self, self._key(key))

    def __contains__(self, key: object) -> bool:
        return dict.__contains__(self, self._key(key))

    def get(self, key: object, default: Any = None) -> Any:
        return dict.get(self, self._key(key), default)


GLUE_TASKS: dict[str, GlueTask] = _AliasDict(
    cola=GlueTask(
        name="cola",
        text_columns=("sentence",),
        label_names=("unacceptable", "acceptable"),
        metric="matthews_correlation",
        glue_dir="CoLA",
        hub_config="cola",
        tsv_layouts={
            "train": _layout("train.tsv", _COLA_COLUMNS, (3,), 1, header=False),
            "validation": _layout("dev.tsv", _COLA_COLUMNS, (3,), 1, header=False),
            "test": _layout("test.tsv", ("index", "sentence"), ("sentence",), None),
        },
        description="Corpus of Linguistic Acceptability: is the sentence grammatical?",
    ),
    sst2=GlueTask(
        name="sst2",
        text_columns=("sentence",),
        label_names=("negative", "positive"),
        metric="accuracy",
        glue_dir="SST-2",
        hub_config="sst2",
        tsv_layouts=_std_layouts(("sentence", "label"), ("index", "sentence"), ("sentence",), "label"),
        description="Stanford Sentiment Treebank, binary sentence sentiment.",
    ),
    mrpc=GlueTask(
        name="mrpc",
        text_columns=("sentence1", "sentence2"),
        label_names=("not_equivalent", "equivalent"),
        metric="f1",
        glue_dir="MRPC",
        hub_config="mrpc",
        tsv_layouts={
            # train.tsv/dev.tsv keep the header (and UTF-8 BOM) of msr_paraphrase_train.txt.
            "train": _layout("train.tsv", _MRPC_COLUMNS, ("#1 String", "#2 String"), "Quality"),
            "validation": _layout("dev.tsv", _MRPC_COLUMNS, ("#1 String", "#2 String"), "Quality"),
            "test": _layout("test.tsv", ("index",) + _MRPC_COLUMNS[1:], ("#1 String", "#2 String"), None),
        },
        description="Microsoft Research Paraphrase Corpus: are the two sentences paraphrases?",
    ),
    stsb=GlueTask(
        name="stsb",
        text_columns=("sentence1", "sentence2"),
        label_names=None,
        metric="pearson_spearman",
        glue_dir="STS-B",
        hub_config="stsb",
        tsv_layouts=_std_layouts(_STSB_COLUMNS + ("score",), _STSB_COLUMNS, ("sentence1", "sentence2"), "score"),
        description="Semantic Textual Similarity Benchmark: similarity score from 0 to 5 (regression).",
    ),
    qqp=GlueTask(
        name="qqp",
        text_columns=("question1", "question2"),
        label_names=("not_duplicate", "duplicate"),
        metric="f1",
        glue_dir="QQP",
        hub_config="qqp",
        tsv_layouts=_std_layouts(
            ("id", "qid1", "qid2", "question1", "question2", "is_duplicate"),
            ("id", "question1", "question2"),
            ("question1", "question2"),
            "is_duplicate",
        ),
        description="Quora Question Pairs: do the two questions ask the same thing?",
    ),
    mnli=GlueTask(
        name="mnli",
        text_columns=("premise", "hypothesis"),
        label_names=("entailment", "neutral", "contradiction"),
        metric="accuracy",
        eval_splits=("validation_matched", "validation_mismatched"),
        test_splits=("test_matched", "test_mismatched"),
        glue_dir="MNLI",
        hub_config="mnli",
        tsv_layouts={
            "train": _layout(
                "train.tsv", _MNLI_PREFIX + ("label1", "gold_label"), ("sentence1", "sentence2"), "gold_label"
            ),
            "validation_matched": _layout(
                "dev_matched.tsv",
                _MNLI_PREFIX + ("label1", "label2", "label3", "label4", "label5", "gold_label"),
                ("sentence1", "sentence2"),
                "gold_label",
            ),
            "validation_mismatched": _layout(
                "dev_mismatched.tsv",
                _MNLI_PREFIX + ("label1", "label2", "label3", "label4", "label5", "gold_label"),
                ("sentence1", "sentence2"),
                "gold_label",
            ),
            "test_matched": _layout("test_matched.tsv", _MNLI_PREFIX, ("sentence1", "sentence2"), None),
            "test_mismatched": _layout("test_mismatched.tsv", _MNLI_PREFIX, ("sentence1", "sentence2"), None),
        },
        description="Multi-Genre NLI: entailment, neutral or contradiction (matched and mismatched dev sets).",
    ),
    qnli=GlueTask(
        name="qnli",
        text_columns=("question", "sentence"),
        label_names=("entailment", "not_entailment"),
        metric="accuracy",
        glue_dir="QNLI",
        hub_config="qnli",
        tsv_layouts=_std_layouts(
            ("index", "question", "sentence", "label"),
            ("index", "question", "sentence"),
            ("question", "sentence"),
            "label",
        ),
        description="Question NLI (from SQuAD): does the sentence answer the question?",
    ),
    rte=GlueTask(
        name="rte",
        text_columns=("sentence1", "sentence2"),
        label_names=("entailment", "not_entailment"),
        metric="accuracy",
        glue_dir="RTE",
        hub_config="rte",
        tsv_layouts=_std_layouts(_PAIR_COLUMNS + ("label",), _PAIR_COLUMNS, ("sentence1", "sentence2"), "label"),
        description="Recognizing Textual Entailment (RTE1-3, RTE5), two classes.",
    ),
    wnli=GlueTask(
        name="wnli",
        text_columns=("sentence1", "sentence2"),
        # The hub orders WNLI's classes the other way round from RTE/QNLI: its TSVs hold 0/1 with 1 = entailment.
        label_names=("not_entailment", "entailment"),
        metric="accuracy",
        glue_dir="WNLI",
        hub_config="wnli",
        tsv_layouts=_std_layouts(_PAIR_COLUMNS + ("label",), _PAIR_COLUMNS, ("sentence1", "sentence2"), "label"),
        description="Winograd NLI: is the sentence with the pronoun substituted entailed?",
    ),
)


def get_glue_task(task: str | GlueTask) -> GlueTask:
    """Look up a GLUE task by name or alias (``SST-2``, ``sts-b``, ``CoLA``); a GlueTask passes through."""
    if isinstance(task, GlueTask):
        return task
    if isinstance(task, str) and task in GLUE_TASKS:
        return GLUE_TASKS[task]
    valid = ", ".join(GLUE_TASKS)
    raise UserError(f"unknown GLUE task {task!r}; use one of: {valid} (or describe a custom task, see task_from_dict)")


# --- custom tasks -------------------------------------------------------------------------------------

_CUSTOM_KEYS = (
    "name", "text_columns", "label_names", "regression", "metric", "label_column",
    "data_files", "eval_splits", "hub_id", "hub_config", "description",
)  # fmt: skip


def _type_name(value: Any) -> str:
    return type(value).__name__


def task_from_dict(d: Mapping[str, Any]) -> GlueTask:
    """Build a custom :class:`GlueTask` from a small dict (typically a YAML block) and validate it.

    Keys: ``name`` (required), ``text_columns`` (a name or a list of one or two names, required),
    ``label_names`` (list of class names in id order) or ``regression: true`` (exactly one of them),
    ``metric`` (``accuracy`` | ``f1`` | ``matthews_correlation`` | ``pearson_spearman``; default
    ``accuracy``, or ``pearson_spearman`` for regression), ``label_column`` (default ``label``),
    ``data_files`` (split -> ``.jsonl`` / ``.tsv`` / ``.csv`` file; needs ``train``), ``eval_splits``
    (default ``[validation]``), ``hub_id`` and ``hub_config`` (load from the hub instead), ``description``.

    Raises:
        UserError: for an unknown key, a value of the wrong type, or an inconsistent combination
            (e.g. ``metric: f1`` with three classes).
    """
    if not isinstance(d, Mapping):
        raise UserError(f"a custom task must be a mapping of keys to values, got {_type_name(d)}; see task_from_dict")
    unknown = [k for k in d if k not in _CUSTOM_KEYS]
    name = d.get("name")
    where = f"custom task {name!r}" if isinstance(name, str) else "custom task"
    if unknown:
        raise UserError(f"{where}: unknown key(s) {unknown}; allowed keys are {', '.join(_CUSTOM_KEYS)}")
    if not isinstance(name, str) or not name.strip():
        raise UserError(f"{where}: 'name' must be a non-empty string, got {name!r}")

    cols = d.get("text_columns")
    if isinstance(cols, str):
        cols = [cols]
    if (
        not isinstance(cols, (list, tuple))
        or not 1 <= len(cols) <= 2
        or not all(isinstance(c, str) and c for c in cols)
    ):
        raise UserError(f"{where}: 'text_columns' must be one column name or a list of one or two names, got {cols!r}")
    if len(set(cols)) != len(cols) or {"label", "idx"} & set(cols):
        raise UserError(f"{where}: 'text_columns' must be distinct and may not be 'label' or 'idx', got {list(cols)}")

    regression = d.get("regression", False)
    if not isinstance(regression, bool):
        raise UserError(f"{where}: 'regression' must be true or false, got {regression!r}")
    label_names = d.get("label_names")
    if regression and label_names is not None:
        raise UserError(f"{where}: give either 'label_names' or 'regression: true', not both")
    if not regression:
        if label_names is None:
            raise UserError(f"{where}: add 'label_names' (class names in id order) or 'regression: true'")
        if (
            not isinstance(label_names, (list, tuple))
            or len(label_names) < 2
            or not all(isinstance(n, (str, int)) and not isinstance(n, bool) for n in label_names)
        ):
            raise UserError(f"{where}: 'label_names' must be a list of at least two class names, got {label_names!r}")
        # YAML turns `[0, 1]` into integers; the names are strings either way.
        label_names = tuple(str(n) for n in label_names)
        if len(set(label_names)) != len(label_names) or any(not n for n in label_names):
            raise UserError(f"{where}: 'label_names' must be distinct and non-empty, got {list(label_names)}")

    metric = d.get("metric", "pearson_spearman" if regression else "accuracy")
    if metric not in METRIC_KINDS:
        raise UserError(f"{where}: 'metric' must be one of {', '.join(METRIC_KINDS)}, got {metric!r}")
    if regression != (metric == "pearson_spearman"):
        raise UserError(
            f"{where}: metric 'pearson_spearman' goes with 'regression: true' and only with it; got metric {metric!r}"
        )
    if metric == "f1" and len(label_names or ()) != 2:
        raise UserError(f"{where}: metric 'f1' is binary F1 and needs exactly two label_names; use 'accuracy'")

    label_column = d.get("label_column", "label")
    if not isinstance(label_column, str) or not label_column or label_column in cols:
        raise UserError(
            f"{where}: 'label_column' must be a column name other than the text columns, got {label_column!r}"
        )

    eval_splits = d.get("eval_splits", ["validation"])
    if isinstance(eval_splits, str):
        eval_splits = [eval_splits]
    if (
        not isinstance(eval_splits, (list, tuple))
        or not eval_splits
        or not all(isinstance(s, str) and s for s in eval_splits)
    ):
        raise UserError(f"{where}: 'eval_splits' must be a split name or a list of split names, got {eval_splits!r}")
    if "train" in eval_splits:
        raise UserError(f"{where}: 'eval_splits' may not contain 'train'")

    data_files = d.get("data_files", {}) or {}
    if not isinstance(data_files, Mapping) or not all(
        isinstance(k, str) and isinstance(v, (str, os.PathLike)) for k, v in data_files.items()
    ):
        raise UserError(f"{where}: 'data_files' must map split names to file paths, got {data_files!r}")
    data_files = {k: os.fspath(v) for k, v in data_files.items()}
    if data_files:
        missing = [s for s in ("train", *eval_splits) if s not in data_files]
        if missing:
            raise UserError(
                f"{where}: 'data_files' lacks split(s) {missing}; give a file for train and each eval split"
            )
        for split, path in data_files.items():
            if _file_format(path) is None:
                raise UserError(
                    f"{where}: data file {path!r} for split {split!r} must end in .jsonl, .json, .tsv or .csv"
                )

    for key in ("hub_id", "hub_config", "description"):
        if d.get(key) is not None and not isinstance(d[key], str):
            raise UserError(f"{where}: {key!r} must be a string, got {_type_name(d[key])}")

    return GlueTask(
        name=name.strip(),
        text_columns=tuple(cols),
        label_names=None if regression else tuple(label_names),
        metric=metric,
        eval_splits=tuple(eval_splits),
        test_splits=("test",),
        label_column=label_column,
        data_files=data_files,
        hub_id=d.get("hub_id"),
        hub_config=d.get("hub_config"),
        description=d.get("description") or "",
    )


# --- reading files ------------------------------------------------------------------------------------


def _file_format(path: str) -> str | None:
    lower = path.lower()
    for ext, fmt in ((".jsonl", "jsonl"), (".json", "jsonl"), (".tsv", "tsv"), (".csv", "csv")):
        if lower.endswith(ext):
            return fmt
    return None


class _Columns:
    """Accumulates the rows of one split in hub column order."""

    def __init__(self, task: GlueTask) -> None:
        self.task = task
        self.data: dict[str, list[Any]] = {c: [] for c in task.text_columns}
        self.data["label"] = []
        self.data["idx"] = []

    def add(self, texts: Sequence[str], label: Any, idx: int) -> None:
        for col, text in zip(self.task.text_columns, texts):
            self.data[col].append(text)
        self.data["label"].append(label)
        self.data["idx"].append(idx)


def _parse_label(task: GlueTask, raw: Any, where: str) -> Any:
    """Turn a label from a file into the hub's value: a class id, or a float for regression."""
    if task.label_names is None:
        try:
            value = float(raw)
        except (TypeError, ValueError):
            raise UserError(f"{where}: label {raw!r} is not a number; {task.name} is a regression task") from None
        if value != value:  # NaN
            raise UserError(f"{where}: label is NaN; {task.name} needs a numeric score")
        return value
    names = task.label_names
    if isinstance(raw, str):
        text = raw.strip()
        if text in names:
            return names.index(text)
        # GLUE stores most binary labels as "0"/"1" ids rather than names.
        if text.lstrip("-").isdigit() and 0 <= int(text) < len(names):
            return int(text)
    elif isinstance(raw, int) and not isinstance(raw, bool) and 0 <= raw < len(names):
        return raw
    allowed = ", ".join(f"{i}={n}" for i, n in enumerate(names))
    raise UserError(f"{where}: label {raw!r} is not in the label set of {task.name} ({allowed}); fix the label")


def _open_text(path: Path):
    # utf-8-sig drops the BOM that MRPC's train/dev files carry in front of their "Quality" header.
    return open(path, encoding="utf-8-sig", newline="")


def _read_delimited(
    path: Path,
    task: GlueTask,
    text_fields: Sequence[Field],
    label_field: Field | None,
    header: bool,
    delimiter: str,
    quoting: int,
    expected_columns: Sequence[str] = (),
    label_optional: bool = False,
) -> dict[str, list[Any]]:
    """Read a TSV/CSV split; fields are header names or (headerless files) column positions."""
    out = _Columns(task)
    skipped: list[int] = []
    layout_hint = f" (expected columns: {' | '.join(expected_columns)})" if expected_columns else ""
    try:
        with _open_text(path) as f:
            reader = csv.reader(f, delimiter=delimiter, quoting=quoting)
            positions: dict[Field, int] = {}
            if header:
                head = next(reader, None)
                if head is None:
                    raise UserError(f"{path} is empty; it needs a header line{layout_hint}")
                head = [h.strip() for h in head]
                wanted = list(text_fields) + ([label_field] if label_field is not None else [])
                missing = [w for w in wanted if w not in head]
                if label_optional and label_field in missing and len(missing) == 1:
                    label_field, missing = None, []
                if missing:
                    raise UserError(f"{path}: header lacks column(s) {missing}; found {head}{layout_hint}")
                positions = {w: head.index(w) for w in wanted if w is not None}
            else:
                positions = {w: int(w) for w in list(text_fields) + [label_field] if w is not None}
            need = max(positions.values()) + 1
            width = len(head) if header else len(expected_columns)
            n = 0
            for row in reader:
                if not row or row == [""]:
                    continue  # blank line (csv.DictReader skips these too)
                idx, n = n, n + 1
                line = reader.line_num
                if width and len(row) > width:
                    sep = "tab" if delimiter == "\t" else "comma"
                    raise UserError(f"{path}, line {line} has {len(row)} fields but the file has {width} columns"
                                    f"{layout_hint}; a stray {sep} inside a text? remove it or quote the field")
                label_raw = row[positions[label_field]] if label_field is not None and len(row) >= need else None
                # The hub's GLUE builder dropped rows with a missing field or an empty label; do the same so
                # the example counts match, and report them.
                if len(row) < need or (label_field is not None and not label_raw.strip()):
                    skipped.append(line)
                    continue
                texts = [row[positions[t]] for t in text_fields]
                if label_field is None:
                    label: Any = -1.0 if task.is_regression else -1
                else:
                    label = _parse_label(task, label_raw, f"{path}, line {line}")
                out.add(texts, label, idx)
    except UnicodeDecodeError as err:
        raise UserError(f"{path} is not valid UTF-8 ({err.reason} at byte {err.start}); re-save it as UTF-8") from None
    except csv.Error as err:
        raise UserError(
            f"{path}: cannot parse as {'TSV' if delimiter == chr(9) else 'CSV'} ({err}){layout_hint}"
        ) from None
    if skipped:
        shown = ", ".join(map(str, skipped[:5])) + (" ..." if len(skipped) > 5 else "")
        logger.warning(
            "%s: skipped %d row(s) with a missing field or empty label (lines %s)", path, len(skipped), shown
        )
    return out.data


def _read_jsonl(path: Path, task: GlueTask, label_optional: bool) -> dict[str, list[Any]]:
    """Read JSON lines with the hub column names (``label_column`` for custom tasks)."""
    out = _Columns(task)
    label_key = task.label_column
    try:
        with _open_text(path) as f:
            n = 0
            for line_no, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                where = f"{path}, line {line_no}"
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as err:
                    raise UserError(f"{where}: not valid JSON ({err.msg}); write one JSON object per line") from None
                if not isinstance(obj, dict):
                    raise UserError(
                        f"{where}: expected a JSON object with keys {list(task.text_columns) + [label_key]}"
                    )
                missing = [c for c in task.text_columns if not isinstance(obj.get(c), str)]
                if missing:
                    raise UserError(
                        f"{where}: missing text field(s) {missing} (need strings under {list(task.text_columns)})"
                    )
                if label_key in obj and obj[label_key] is not None:
                    label: Any = _parse_label(task, obj[label_key], where)
                elif label_optional:
                    label = -1.0 if task.is_regression else -1
                else:
                    raise UserError(
                        f"{where}: missing {label_key!r}; every training and validation example needs a label"
                    )
                idx = obj.get("idx", n)
                out.add([obj[c] for c in task.text_columns], label, int(idx) if isinstance(idx, int) else n)
                n += 1
    except UnicodeDecodeError as err:
        raise UserError(f"{path} is not valid UTF-8 ({err.reason} at byte {err.start}); re-save it as UTF-8") from None
    return out.data


def _read_file(path: Path, task: GlueTask, split: str) -> dict[str, list[Any]]:
    label_optional = split in task.test_splits or split.startswith("test")
    fmt = _file_format(str(path))
    if fmt == "jsonl":
        return _read_jsonl(path, task, label_optional)
    if fmt in ("tsv", "csv"):
        return _read_delimited(
            path,
            task,
            task.text_columns,
            task.label_column,
            header=True,
            delimiter="\t" if fmt == "tsv" else ",",
            # TSVs follow the GLUE convention (no quoting); .csv files are ordinary quoted CSV.
            quoting=csv.QUOTE_NONE if fmt == "tsv" else csv.QUOTE_MINIMAL,
            expected_columns=list(task.text_columns) + [task.label_column],
            label_optional=label_optional,
        )
    raise UserError(f"{path}: unsupported file type; use .jsonl, .tsv or .csv")


def _read_official_tsv(path: Path, task: GlueTask, layout: TsvLayout) -> dict[str, list[Any]]:
    return _read_delimited(
        path,
        task,
        layout.text_fields,
        layout.label_field,
        header=layout.header,
        delimiter="\t",
        quoting=csv.QUOTE_NONE,
        expected_columns=layout.columns if layout.header else (),
    )


def _expected_layout(task: GlueTask) -> str:
    if task.tsv_layouts:
        parts = []
        for split, lay in task.tsv_layouts.items():
            if split in task.splits:
                cols = " | ".join(lay.columns)
                parts.append(f"{lay.file} ({cols}{'' if lay.header else ', no header'})")
        jsonl = ", ".join(f"{s}.jsonl" for s in task.splits)
        keys = list(task.text_columns) + ["label"]
        return f"official GLUE TSVs {'; '.join(parts)}; or JSON lines {jsonl} with keys {keys}"
    files = ", ".join(f"{s}.{{jsonl,tsv,csv}}" for s in task.splits)
    return f"files {files} with columns {list(task.text_columns) + [task.label_column]}"


def _jsonl_candidates(split: str) -> list[str]:
    # The GLUE folders call the validation split "dev"; accept both spellings.
    names = [split]
    if split.startswith("validation"):
        names.append("dev" + split[len("validation") :])
    return names


def _find_split_file(folder: Path, split: str, exts: Iterable[str]) -> Path | None:
    for stem in _jsonl_candidates(split):
        for ext in exts:
            candidate = folder / f"{stem}.{ext}"
            if candidate.is_file():
                return candidate
    return None


def _load_local(task: GlueTask, data_dir: Path | None) -> dict[str, dict[str, list[Any]]]:
    """Read every available split of ``task`` from disk into column dicts."""
    splits: dict[str, dict[str, list[Any]]] = {}

    if task.data_files:
        for split, file in task.data_files.items():
            path = Path(file)
            if not path.is_absolute() and data_dir is not None:
                path = data_dir / path
            if not path.is_file():
                raise UserError(
                    f"data file for split {split!r} of task {task.name!r} not found: {path}; fix 'data_files'"
                )
            splits[split] = _read_file(path, task, split)
        return splits

    assert data_dir is not None
    if not data_dir.is_dir():
        raise UserError(f"data_dir {data_dir} is not a directory; point it at the folder with {_expected_layout(task)}")

    folder = data_dir
    # Accept the GLUE root (glue_data/) as well as the task folder inside it.
    if task.glue_dir and not (folder / "train.tsv").is_file() and not _find_split_file(folder, "train", ("jsonl",)):
        for sub in (task.glue_dir, task.glue_dir.lower(), task.name):
            if (folder / sub).is_dir():
                folder = folder / sub
                break

    if task.tsv_layouts and (folder / task.tsv_layouts["train"].file).is_file():
        for split, layout in task.tsv_layouts.items():
            path = folder / layout.file
            if not path.is_file():
                if split in task.splits:
                    raise UserError(
                        f"missing {path} for split {split!r} of {task.name}; expected {_expected_layout(task)}"
                    )
                continue  # test files are optional
            splits[split] = _read_official_tsv(path, task, layout)
        return splits

    exts = ("jsonl", "json") if task.tsv_layouts else ("jsonl", "json", "tsv", "csv")
    train = _find_split_file(folder, "train", exts)
    if train is None:
        raise UserError(f"no training file in {folder} for task {task.name}; expected {_expected_layout(task)}")
    for split in task.splits + task.test_splits:
        path = _find_split_file(folder, split, exts)
        if path is None:
            if split in task.splits:
                stems = " or ".join(f"{s}.{exts[0]}" for s in _jsonl_candidates(split))
                raise UserError(
                    f"missing {folder / stems} for split {split!r} of {task.name}; expected {_expected_layout(task)}"
                )
            continue
        splits[split] = _read_file(path, task, split)
    return splits


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split()) or type(err).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def _cap(dsd: Any, max_samples: int | None) -> Any:
    if max_samples is None:
        return dsd
    import datasets

    return datasets.DatasetDict({name: ds.select(range(min(max_samples, len(ds)))) for name, ds in dsd.items()})


def load_glue_task(
    task: str | GlueTask,
    data_dir: str | os.PathLike[str] | None = None,
    hub_id: str = "nyu-mll/glue",
    max_samples: int | None = None,
) -> Any:
    """Load a GLUE (or custom) task as a :class:`datasets.DatasetDict`.

    Args:
        task: a GLUE task name or alias (``sst2``, ``SST-2``, ``sts-b``, ``CoLA``...) or a
            :class:`GlueTask` (e.g. from :func:`task_from_dict`).
        data_dir: folder with local files: the official GLUE TSVs (the task folder or the GLUE root) or
            JSON lines with the hub column names. None loads from the Hugging Face Hub.
        hub_id: hub dataset id for GLUE tasks (the task name is the configuration).
        max_samples: keep at most this many examples of each split (the first ones, deterministically).

    Returns:
        A DatasetDict with the task's text columns, ``label`` (ClassLabel ids; float32 for STS-B) and
        ``idx``; splits ``train`` and the task's eval splits, plus test splits when present.

    Raises:
        UserError: unknown task, missing file (with the expected layout), a label outside the label set
            (with file and line number), invalid UTF-8, or a hub download that failed.
    """
    import datasets

    spec = get_glue_task(task)
    if max_samples is not None and (
        not isinstance(max_samples, int) or isinstance(max_samples, bool) or max_samples < 1
    ):
        raise UserError(f"max_samples must be a positive integer or None, got {max_samples!r}")

    local_dir = Path(data_dir).expanduser() if data_dir is not None else None
    if local_dir is None and not spec.data_files:
        repo = spec.hub_id or hub_id
        if spec.hub_config is None and spec.hub_id is None:
            raise UserError(
                f"custom task {spec.name!r} has no data: add 'data_files' or 'hub_id', "
                f"or pass data_dir with {_expected_layout(spec)}"
            )
        try:
            if spec.hub_config is not None:
                dsd = datasets.load_dataset(repo, spec.hub_config)
            else:
                dsd = datasets.load_dataset(repo)
        except Exception as err:  # noqa: BLE001 - any hub/network failure becomes one actionable line
            raise UserError(
                f"could not load {spec.name} from the Hugging Face Hub ({repo}): {_one_line(err)}; "
                f"for offline use pass data_dir with {_expected_layout(spec)}"
            ) from None
        if not spec.tsv_layouts and spec.label_column != "label":
            dsd = dsd.rename_column(spec.label_column, "label")
        return _cap(dsd, max_samples)

    columns = _load_local(spec, local_dir)
    features = spec.features()
    out = datasets.DatasetDict()
    for split, data in columns.items():
        if not data["label"] and split in spec.splits:
            raise UserError(f"split {split!r} of {spec.name} has no examples; check the file for that split")
        out[split] = datasets.Dataset.from_dict(data, features=features)
    return _cap(out, max_samples)
