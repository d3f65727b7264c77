"""minitl.recipes.bow: the TF-IDF vectorizer against scikit-learn's, and the bag-of-words
logistic regression on toy problems."""

import json

import numpy as np
import pytest

import minitl as mt
from minitl.recipes.bow import BowClassifier, BowConfig, TfidfVectorizer

SENTENCES = [
    "The movie was good, really GOOD fun.",
    "A bad, bad film: the acting was bad and the plot thin.",
    "Good acting; a thin plot. I liked it!",
    "It's not good -- it's not bad either.",
    "Fun fun fun and more fun",
    "a b c",  # no token of two characters: an empty row
]

GOOD = ["a good movie", "good fun", "really good acting", "good good plot", "so good"]
BAD = ["a bad movie", "bad fun", "really bad acting", "bad bad plot", "so bad"]


@pytest.mark.parametrize("ngram_range,sublinear_tf,lowercase", [
    ((1, 2), True, True), ((1, 1), False, True), ((1, 2), False, False), ((2, 2), True, True)])
def test_matches_sklearn(ngram_range, sublinear_tf, lowercase):
    sk = pytest.importorskip("sklearn.feature_extraction.text")
    ref = sk.TfidfVectorizer(ngram_range=ngram_range, sublinear_tf=sublinear_tf,
                             lowercase=lowercase)
    expected = ref.fit_transform(SENTENCES).toarray()
    ours = TfidfVectorizer(ngram_range, sublinear_tf=sublinear_tf, lowercase=lowercase)
    got = ours.fit_transform(SENTENCES)
    assert ours.vocabulary_ == {t: int(j) for t, j in ref.vocabulary_.items()}
    np.testing.assert_allclose(ours.idf_, ref.idf_, rtol=0, atol=1e-6)
    assert got.dtype == np.float32 and got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)
    other = ["good plot, bad acting", "unseen words only", ""]
    np.testing.assert_allclose(ours.transform(other), ref.transform(other).toarray(), atol=1e-6)


def test_min_df_and_max_features_match_sklearn():
    sk = pytest.importorskip("sklearn.feature_extraction.text")
    ref = sk.TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=2)
    ours = TfidfVectorizer(min_df=2)
    np.testing.assert_allclose(ours.fit_transform(SENTENCES),
                               ref.fit_transform(SENTENCES).toarray(), atol=1e-6)
    assert ours.vocabulary_ == {t: int(j) for t, j in ref.vocabulary_.items()}
    # max_features keeps the most frequent terms; compare where the cut splits no tie
    counts = sk.CountVectorizer(ngram_range=(1, 2)).fit(SENTENCES)
    freq = np.sort(np.asarray(counts.transform(SENTENCES).sum(axis=0)).ravel())[::-1]
    cuts = [k for k in range(1, len(freq)) if freq[k - 1] != freq[k]]
    assert cuts
    for k in cuts:
        ref = sk.TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, max_features=k)
        ours = TfidfVectorizer(max_features=k)
        np.testing.assert_allclose(ours.fit_transform(SENTENCES),
                                   ref.fit_transform(SENTENCES).toarray(), atol=1e-6)
        assert ours.vocabulary_ == {t: int(j) for t, j in ref.vocabulary_.items()}


def test_unseen_words_ignored_and_empty_text_zero_row():
    v = TfidfVectorizer().fit(["good movie", "bad movie"])
    x = v.transform(["good zebra", "good", "", "zebra crossing", "good movie"])
    np.testing.assert_array_equal(x[0], x[1])
    assert not x[2].any() and not x[3].any()
    np.testing.assert_allclose(np.linalg.norm(x[[0, 1, 4]], axis=1), 1.0, atol=1e-6)


def test_state_round_trip():
    v = TfidfVectorizer(max_features=20).fit(SENTENCES)
    state = v.state_dict()
    meta = json.loads(json.dumps({k: x for k, x in state.items() if k != "idf"}))
    again = TfidfVectorizer.from_state({**meta, "idf": np.array(state["idf"])})
    texts = SENTENCES + ["good plot, bad acting", ""]
    np.testing.assert_array_equal(again.transform(texts), v.transform(texts))
    assert again.vocabulary_ == v.vocabulary_
    with pytest.raises(ValueError, match="idf"):
        TfidfVectorizer.from_state({**meta, "idf": state["idf"][:-1]})


def test_classifier_learns_a_separable_toy_problem():
    texts, labels = GOOD + BAD, [1] * len(GOOD) + [0] * len(BAD)
    clf = BowClassifier().fit(texts, labels, num_labels=2)
    assert clf.score(texts, labels) == 1.0
    assert clf.losses[-1] < clf.losses[0]
    assert list(clf.predict(["good stuff", "bad stuff"])) == [1, 0]
    p = clf.predict_proba(texts + ["", "unknown words"])
    assert p.shape == (12, 2)
    np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-6)
    # the product over nonzeros is the dense nn.Linear on `transform`'s rows
    with mt.no_grad():
        dense = clf.linear(mt.Tensor(clf.vectorizer.transform(texts + ["", "unknown words"])))
    np.testing.assert_allclose(p, mt.softmax(dense, dim=-1).numpy(), atol=1e-6)
    # three classes, labels given as a numpy array
    texts3 = texts + ["an okay movie", "okay fun", "okay acting"]
    labels3 = np.array(labels + [2, 2, 2])
    clf3 = BowClassifier(BowConfig(steps=100)).fit(texts3, labels3, num_labels=3)
    assert clf3.score(texts3, labels3) == 1.0 and clf3.predict_proba(texts3).shape == (13, 3)


def test_clear_errors():
    clf = BowClassifier()
    with pytest.raises(ValueError, match="labels of shape"):
        clf.fit(["good", "bad"], [1], num_labels=2)
    with pytest.raises(ValueError, match="empty training set"):
        clf.fit([], [], num_labels=2)
    with pytest.raises(ValueError, match=r"\[0, 2\)"):
        clf.fit(["good", "bad"], [1, 2], num_labels=2)
    with pytest.raises(ValueError, match=r"\[0, 2\)"):
        clf.fit(["good", "bad"], [1, -1], num_labels=2)
    with pytest.raises(ValueError, match="fit before"):
        clf.predict(["good"])
    with pytest.raises(ValueError, match="fit before"):
        TfidfVectorizer().transform(["good"])
    with pytest.raises(ValueError, match="empty vocabulary"):
        TfidfVectorizer().fit(["a b", "!"])
    with pytest.raises(ValueError, match="integers"):
        clf.fit(["good", "bad"], [0.5, 1.0], num_labels=2)
    clf = BowClassifier(BowConfig(steps=5)).fit(GOOD + BAD, [1] * 5 + [0] * 5, num_labels=2)
    with pytest.raises(ValueError, match="labels of shape"):
        clf.score(["good"], [1, 0])
