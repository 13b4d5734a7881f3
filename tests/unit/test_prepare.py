"""The harness's data path and metric, exercised in-process on small inputs."""

import json
import math

import numpy as np
import pytest
import torch

import prepare

DOCS = [
    "In the beginning was the word, and the word was with God.",
    "Unicode too: naïve café, 你好世界, emoji 🙂 and numbers 12345.",
    "The quick brown fox jumps over the lazy dog. " * 5,
    "Pack my box with five dozen liquor jugs.\nSphinx of black quartz, judge my vow.",
] * 10


@pytest.fixture(scope="module")
def small_tokenizer():
    return prepare.train_tokenizer(DOCS, vocab_size=300)


def test_tokenizer_round_trips_text(small_tokenizer):
    enc = prepare.encoding_from_json(small_tokenizer)
    for text in DOCS[:4] + ["unseen: Zürich, ǅ, 𝔘𝔫𝔦𝔠𝔬𝔡𝔢"]:
        assert enc.decode(enc.encode_ordinary(text)) == text
    assert enc.n_vocab == 300
    assert enc.encode_single_token(prepare.BOS_TOKEN) == small_tokenizer["bos"] == 299


def test_token_byte_lengths_come_from_raw_bytes(small_tokenizer):
    enc = prepare.encoding_from_json(small_tokenizer)
    lengths = prepare.token_byte_lengths(small_tokenizer)
    # Byte 0xE4 alone (the first byte of 你) is not valid UTF-8: decode() would give U+FFFD, three bytes.
    lone = enc.encode_single_token(bytes([0xE4]))
    assert len(enc.decode([lone]).encode("utf-8")) == 3
    assert lengths[lone] == 1
    assert lengths[small_tokenizer["bos"]] == 0
    for text in DOCS[:4]:
        ids = enc.encode_ordinary(text)
        assert int(lengths[ids].sum()) == len(text.encode("utf-8"))


def test_split_is_by_document_and_deterministic():
    docs = [f"document {i}" for i in range(100)]
    train, val, test = prepare.split_documents(docs)
    assert prepare.split_documents(docs) == (train, val, test)
    assert len(val) == len(test) == 100 // prepare.VAL_EVERY
    assert not set(train) & set(val) and not set(train) & set(test) and not set(val) & set(test)
    assert sorted(train + val + test) == sorted(docs)
    _, val2, test2 = prepare.split_documents(list(reversed(docs)))
    assert set(val2) != set(val) and set(test2) != set(test)  # position decides: a function of the input order


def test_a_few_documents_still_make_three_disjoint_splits():
    train, val, test = prepare.split_documents(["a", "b", "c"])
    assert train and val and test and sorted(train + val + test) == ["a", "b", "c"]


def test_split_needs_three_documents():
    with pytest.raises(prepare.HarnessError, match="at least 3 documents"):
        prepare.split_documents(["one", "two"])


def _val_dir(tmp_path, vocab, n_tokens=prepare.SEQ_LEN * prepare.EVAL_BATCH + 1, byte_len=3, split="val"):
    val = tmp_path / split
    val.mkdir()
    rng = np.random.default_rng(0)
    rng.integers(1, vocab, n_tokens).astype(np.uint16).tofile(val / f"{split}.bin")
    lengths = np.full(vocab, byte_len, dtype=np.int32)
    lengths[0] = 0  # a BOS-like token with no bytes is left out
    np.save(val / "token_bytes.npy", lengths)
    return val


class Uniform(torch.nn.Module):
    def __init__(self, vocab):
        super().__init__()
        self.vocab = vocab

    def forward(self, idx):
        return torch.zeros(*idx.shape, self.vocab)


def test_uniform_model_scores_log2_vocab_bits_per_token(tmp_path):
    vocab = 512
    val = _val_dir(tmp_path, vocab, byte_len=3)
    result = prepare.evaluate_program(Uniform(vocab), val, "cpu")
    assert result["val_bpb"] == pytest.approx(math.log2(vocab) / 3, rel=1e-6)


def test_the_test_split_is_scored_by_the_same_metric_under_its_own_name(tmp_path):
    test = _val_dir(tmp_path, 512, byte_len=4, split="test")
    assert prepare.evaluate_test(Uniform(512), test, "cpu") == {"test_bpb": pytest.approx(9 / 4, rel=1e-6)}
    with pytest.raises(prepare.HarnessError, match="val.bin"):      # a split folder holds its own split only
        prepare.evaluate_program(Uniform(512), test, "cpu")


def test_metric_ignores_everything_but_the_logits(tmp_path):
    """A model whose own loss code reports a tiny loss is still scored from its logits."""

    class LiesAboutLoss(Uniform):
        def forward(self, idx, targets=None, reduction="mean"):
            logits = super().forward(idx)
            if targets is not None:
                return torch.zeros(()) if reduction == "mean" else torch.zeros(targets.shape)
            return logits

    val = _val_dir(tmp_path, 256)
    assert prepare.evaluate_program(LiesAboutLoss(256), val, "cpu")["val_bpb"] == pytest.approx(8 / 3)


def test_future_peeking_model_is_refused(tmp_path):
    class PeeksAhead(torch.nn.Module):
        def forward(self, idx):
            nxt = torch.roll(idx, -1, dims=1)  # the token at t+1, seen at t
            return torch.nn.functional.one_hot(nxt, 256).float() * 30

    val = _val_dir(tmp_path, 256)
    with pytest.raises(prepare.ModelRefused, match="causality check failed"):
        prepare.evaluate_program(PeeksAhead(), val, "cpu")


class FarApart(Uniform):
    """Finite logits, +-3.3e38: log_softmax overflows to -inf in float32 wherever one is below the other; at the
    last position only (which the causality check never compares), or everywhere, BOS (no bytes) included."""

    def __init__(self, vocab, last_only):
        super().__init__(vocab)
        self.last_only = last_only

    def forward(self, idx):
        g = torch.Generator().manual_seed(0)
        logits = torch.where(torch.rand(*idx.shape, self.vocab, generator=g) < 0.5, -3.3e38, 3.3e38)
        if self.last_only:
            logits[:, :-1] = 0.0
        return logits


@pytest.mark.parametrize("last_only", [True, False], ids=["infinite", "nan"])
def test_a_loss_that_is_not_finite_is_refused_as_non_finite_whatever_the_logits(tmp_path, last_only):
    val = _val_dir(tmp_path, 256)
    with pytest.raises(prepare.ModelRefused, match="^non-finite loss"):
        prepare.evaluate_program(FarApart(256, last_only), val, "cpu")

    class Diverged(Uniform):
        def forward(self, idx):
            return super().forward(idx) * float("nan")

    with pytest.raises(prepare.ModelRefused, match="^non-finite logits"):
        prepare.evaluate_program(Diverged(256), val, "cpu")


def test_wrong_logits_shape_is_refused(tmp_path):
    val = _val_dir(tmp_path, 256)
    with pytest.raises(prepare.ModelRefused, match="shape"):
        prepare.evaluate_program(Uniform(100), val, "cpu")


def test_text_dir_reads_txt_jsonl_and_parquet(tmp_path):
    import duckdb

    (tmp_path / "a.txt").write_text("first story<|endoftext|>second story<|endoftext|>")
    (tmp_path / "b.txt").write_text("para one\n\npara two\n\n\npara three")
    (tmp_path / "c.jsonl").write_text(json.dumps({"text": "json doc"}) + "\n\n" + json.dumps({"text": "other"}))
    duckdb.sql(f"COPY (SELECT 'parquet doc' AS text) TO '{tmp_path / 'd.parquet'}' (FORMAT parquet)")
    (tmp_path / "ignored.csv").write_text("x")
    source = prepare.text_dir_source(str(tmp_path))
    assert source.documents() == ["first story", "second story", "para one", "para two", "para three",
                                  "json doc", "other", "parquet doc"]


def test_text_dir_errors_are_one_line(tmp_path):
    with pytest.raises(prepare.HarnessError, match="no such directory"):
        prepare.text_dir_source(str(tmp_path / "missing"))
    with pytest.raises(prepare.HarnessError, match="no .txt, .jsonl or .parquet"):
        prepare.text_dir_source(str(tmp_path))
    (tmp_path / "bad.jsonl").write_text('{"title": "no text field"}\n')
    with pytest.raises(prepare.HarnessError, match=r"bad.jsonl:1: .* \"text\""):
        prepare.text_dir_source(str(tmp_path)).documents()


def test_prepare_is_idempotent_and_keyed_on_inputs(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("EVO_CACHE_DIR", str(tmp_path / "cache"))
    texts = tmp_path / "texts"
    texts.mkdir()
    (texts / "a.txt").write_text("\n\n".join(f"Paragraph {i}: " + "lorem ipsum dolor sit amet " * 40
                                             for i in range(60)))
    first = prepare.prepare(prepare.text_dir_source(str(texts)))
    stamp = (first / "train" / "train.bin").stat().st_mtime_ns
    capsys.readouterr()
    again = prepare.prepare(prepare.text_dir_source(str(texts)))
    assert again == first
    assert "nothing to do" in capsys.readouterr().out
    assert (first / "train" / "train.bin").stat().st_mtime_ns == stamp

    other = tmp_path / "other"
    other.mkdir()
    (other / "b.txt").write_text((texts / "a.txt").read_text().replace("lorem", "LOREM"))
    second = prepare.prepare(prepare.text_dir_source(str(other)))
    assert second != first
    assert prepare.active_dataset() == second
    assert prepare.fingerprint(second) != prepare.fingerprint(first)
    meta = json.loads((first / "meta.json").read_text())
    assert set(meta["fingerprint"]) == {"tokenizer", "val", "test"} and meta["tokens"]["test"] > prepare.SEQ_LEN
    assert (first / "test" / "test.bin").stat().st_size == 2 * meta["tokens"]["test"]


def test_damaged_cache_is_reported_then_rebuilt(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("EVO_CACHE_DIR", str(tmp_path / "cache"))
    texts = tmp_path / "texts"
    texts.mkdir()
    (texts / "a.txt").write_text("\n\n".join(f"Doc {i} " + "words and more words " * 30 for i in range(80)))
    root = prepare.prepare(prepare.text_dir_source(str(texts)))
    fp = prepare.fingerprint(root)
    with open(root / "train" / "train.bin", "ab") as f:
        f.write(b"\0\0")
    with pytest.raises(prepare.HarnessError, match="damaged .*train.bin.* run `python prepare.py`"):
        prepare.active_dataset()
    capsys.readouterr()
    prepare.prepare(prepare.text_dir_source(str(texts)))
    assert "damaged" in capsys.readouterr().out
    assert prepare.active_dataset() == root
    assert prepare.fingerprint(root) == fp

    (root / "meta.json").write_text("{not json")
    with pytest.raises(prepare.HarnessError, match="meta.json is corrupt"):
        prepare.active_dataset()


def test_data_prepared_under_an_older_layout_is_refused_until_prepared_again(tmp_path, monkeypatch):
    monkeypatch.setenv("EVO_CACHE_DIR", str(tmp_path / "cache"))
    texts = tmp_path / "texts"
    texts.mkdir()
    (texts / "a.txt").write_text("\n\n".join(f"Doc {i} " + "words and more words " * 30 for i in range(80)))
    root = prepare.prepare(prepare.text_dir_source(str(texts)))
    meta = json.loads((root / "meta.json").read_text())
    (root / "meta.json").write_text(json.dumps({**meta, "version": prepare.PREPARE_VERSION - 1}))
    with pytest.raises(prepare.DataOutdated, match="layout version .* run `python prepare.py` again") as e:
        prepare.active_dataset()
    assert not e.value.from_default                      # a text folder: only the user knows which one

