"""`sample(n, seed, stratified)` on the labelled containers `load_dataset` returns: the
right size, every class present, shares close to the data's, seeded, and clear errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from minitl.data import (
    ImageClassificationData,
    TextClassificationData,
    load_dataset,
    stratified_sample,
)

NAMES = ("a", "b", "c")


def texts(labels: np.ndarray) -> TextClassificationData:
    return TextClassificationData([f"text {i}" for i in range(len(labels))],
                                  labels.astype(np.int64), NAMES, name="toy")


def images(labels: np.ndarray) -> ImageClassificationData:
    rng = np.random.default_rng(0)
    x = rng.random((len(labels), 1, 4, 4)).astype(np.float32)
    return ImageClassificationData(x, labels.astype(np.int64), NAMES, name="toy")


def skewed(rng: np.random.Generator, n: int = 300) -> np.ndarray:
    # class 2 is rare: a naive slice of a few examples would usually miss it
    return rng.choice(3, size=n, p=[0.7, 0.27, 0.03])


@pytest.mark.parametrize("make", [texts, images])
@pytest.mark.parametrize("n", [3, 10, 57])
def test_stratified_sample_size_classes_and_shares(make, n: int) -> None:  # type: ignore[no-untyped-def]
    labels = skewed(np.random.default_rng(1))
    ds = make(labels)
    sub = ds.sample(n, seed=4)
    assert len(sub) == n and type(sub) is type(ds)
    got = np.bincount(sub.labels, minlength=3)
    assert (got >= 1).all()
    share = n * np.bincount(labels, minlength=3) / len(labels)
    # within one example of its share, plus what raising small classes to 1 had to take back
    raised = np.maximum(0, 1 - share).sum()
    assert (np.abs(got - share) <= 1 + raised).all()


def test_sample_rows_are_real_rows_without_repeats() -> None:
    labels = skewed(np.random.default_rng(2))
    ds = texts(labels)
    sub = ds.sample(40, seed=1)
    rows = [int(t.split()[1]) for t in sub.texts]
    assert len(set(rows)) == len(rows) and rows == sorted(rows)  # source order kept
    assert (labels[rows] == sub.labels).all()


@pytest.mark.parametrize("stratified", [True, False])
def test_sample_is_fixed_by_the_seed(stratified: bool) -> None:
    ds = texts(skewed(np.random.default_rng(3)))
    a = ds.sample(30, seed=5, stratified=stratified).texts
    assert a == ds.sample(30, seed=5, stratified=stratified).texts
    assert a != ds.sample(30, seed=6, stratified=stratified).texts


def test_unstratified_sample_may_skip_a_class_and_allows_small_n() -> None:
    ds = texts(skewed(np.random.default_rng(4)))
    assert len(ds.sample(1, stratified=False)) == 1
    counts = [np.bincount(ds.sample(5, seed=s, stratified=False).labels, minlength=3)[2]
              for s in range(20)]
    assert min(counts) == 0  # without stratifying, the rare class is often left out


def test_whole_dataset_sample_is_everything() -> None:
    labels = skewed(np.random.default_rng(5), 50)
    assert stratified_sample(labels, 50).tolist() == list(range(50))


def test_sample_errors() -> None:
    ds = texts(skewed(np.random.default_rng(6), 40))
    with pytest.raises(ValueError, match="3 classes"):
        ds.sample(2)
    with pytest.raises(ValueError, match="more than the 40"):
        ds.sample(41)
    with pytest.raises(ValueError, match="more than the 40"):
        ds.sample(41, stratified=False)
    with pytest.raises(ValueError, match="positive"):
        ds.sample(0, stratified=False)


def test_load_dataset_splits_keep_source_order_and_sample_draws(tmp_path: Path) -> None:
    rows = "".join(f"{i},{int(i % 4 == 0)},message number {i}\n" for i in range(200))
    (tmp_path / "sms-spam.csv").write_text(",spam,text\n" + rows)
    train = load_dataset("sms-spam", split="train", root=tmp_path, seed=0)
    order = [int(t.split()[-1]) for t in train.texts]
    assert order == sorted(order)  # what the docstring warns about: subset(range(k)) is a head
    head = train.subset(range(16))
    drawn = train.sample(16, seed=0)
    assert [int(t.split()[-1]) for t in head.texts] == order[:16]
    assert drawn.texts != head.texts
    assert set(drawn.labels.tolist()) == {0, 1}
