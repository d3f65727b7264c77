"""word2vec (SGNS): the pair loss against central differences, the numba update against the
numpy reference, the sampling distributions, a small corpus that has to learn something,
save/load and the errors."""

from __future__ import annotations

import numpy as np
import pytest

from minitl.backend import get_backend, numba_kernels, reference, reset_backends
from minitl.backend.numba_common import numba
from minitl.models.word2vec import (
    Vocabulary,
    Word2Vec,
    keep_probabilities,
    negative_table,
    tokenize,
)
from minitl.pretrain.word2vec import TrainStats, skipgram_pairs, train_word2vec

needs_numba = pytest.mark.skipif(numba is None, reason="numba is not installed")


def _rows(rng: np.random.Generator, k: int, d: int, scale: float):
    return (rng.normal(0, scale, d), rng.normal(0, scale, d), rng.normal(0, scale, (k, d)))


# ---- the pair loss and its gradient -------------------------------------------------------

@pytest.mark.parametrize("scale", [0.3, 3.0])  # 3.0: scores of +-20, far into the flat tails
@pytest.mark.parametrize("k", [0, 1, 4])
def test_sgns_gradient_matches_central_differences(scale: float, k: int) -> None:
    rng = np.random.default_rng(k)
    v, u_pos, u_neg = _rows(rng, k, 7, scale)
    _, g_v, g_pos, g_neg = reference.sgns_loss_grad(v, u_pos, u_neg)
    h = 1e-6

    def numeric(which: int, shape: tuple[int, ...]) -> np.ndarray:
        out = np.zeros(shape)
        for idx in np.ndindex(*shape):
            args = [v.copy(), u_pos.copy(), u_neg.copy()]
            args[which][idx] += h
            up = reference.sgns_loss_grad(*args)[0]
            args[which][idx] -= 2 * h
            down = reference.sgns_loss_grad(*args)[0]
            out[idx] = (up - down) / (2 * h)
        return out

    np.testing.assert_allclose(g_v, numeric(0, v.shape), rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(g_pos, numeric(1, u_pos.shape), rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(g_neg, numeric(2, u_neg.shape), rtol=1e-6, atol=1e-8)


def test_sgns_loss_is_finite_for_extreme_scores() -> None:
    v, u = np.full(4, 30.0), np.full(4, 30.0)  # scores of 3600: exp would overflow
    loss, g_v, _, _ = reference.sgns_loss_grad(v, -u, u[None])
    assert np.isfinite(loss) and loss == pytest.approx(2 * 3600.0)
    assert np.isfinite(g_v).all()


def test_reference_step_lowers_the_pair_loss() -> None:
    rng = np.random.default_rng(1)
    w_in, w_out = rng.normal(0, 0.5, (5, 6)), rng.normal(0, 0.5, (5, 6))
    ids = np.array([2]), np.array([3]), np.array([[0, 4]])

    def loss() -> float:
        return reference.sgns_loss_grad(w_in[2], w_out[3], w_out[[0, 4]])[0]

    before = loss()
    reported = reference.sgns_update(w_in, w_out, *ids, lr=0.05)
    assert reported == pytest.approx(before)  # the loss at the rows before the step
    assert loss() < before


# ---- the numba kernel against the reference -----------------------------------------------

def _batch(rng: np.random.Generator, v: int, d: int, p: int, k: int, dtype: type):
    w_in = rng.normal(0, 0.4, (v, d)).astype(dtype)
    w_out = rng.normal(0, 0.4, (v, d)).astype(dtype)
    centers, contexts = rng.integers(0, v, p), rng.integers(0, v, p)
    negatives = rng.integers(0, v, (p, k))
    negatives[0, 0] = contexts[0]   # skipped: equals the context
    negatives[1, :2] = 3            # drawn twice: both steps taken
    centers[2:6] = centers[1]       # one row updated by consecutive pairs
    return w_in, w_out, centers, contexts, negatives


@needs_numba
@pytest.mark.parametrize("dtype,tol", [(np.float64, 1e-12), (np.float32, 2e-5)])
@pytest.mark.parametrize("v,d,p,k", [(7, 1, 40, 1), (50, 17, 300, 5), (9, 129, 60, 3)])
def test_numba_update_matches_reference(dtype: type, tol: float, v: int, d: int, p: int,
                                        k: int) -> None:
    rng = np.random.default_rng(d)
    w_in, w_out, c, o, n = _batch(rng, v, d, p, k, dtype)
    ref_in, ref_out = w_in.copy(), w_out.copy()
    ref_loss = reference.sgns_update(ref_in, ref_out, c, o, n, 0.1)
    loss = numba_kernels.sgns_update(w_in, w_out, c, o, n, 0.1)
    assert loss == pytest.approx(ref_loss, rel=tol * 10)
    np.testing.assert_allclose(w_in, ref_in, rtol=tol, atol=tol)
    np.testing.assert_allclose(w_out, ref_out, rtol=tol, atol=tol)
    assert not np.allclose(w_in, _batch(np.random.default_rng(d), v, d, p, k, dtype)[0])


@needs_numba
def test_hogwild_kernel_on_one_thread_equals_serial() -> None:
    from minitl.backend import numba_sgns

    rng = np.random.default_rng(5)
    w_in, w_out, c, o, n = _batch(rng, 30, 12, 1000, 4, np.float64)  # several 256-pair blocks
    a_in, a_out = w_in.copy(), w_out.copy()
    numba_sgns._sgns_serial(a_in, a_out, c, o, n, 0.05)
    prev = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        numba_sgns._sgns_hogwild(w_in, w_out, c, o, n, 0.05)
    finally:
        numba.set_num_threads(prev)
    np.testing.assert_allclose(w_in, a_in, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(w_out, a_out, rtol=1e-12, atol=1e-14)


def test_backend_picks_numba_for_sgns_unless_forced_to_reference(monkeypatch) -> None:
    reset_backends()
    try:
        monkeypatch.setenv("MINITL_KERNELS", "reference")
        assert get_backend("cpu").paths["sgns_update"] == "reference"
        reset_backends()
        monkeypatch.delenv("MINITL_KERNELS")
        assert get_backend("cpu").paths["sgns_update"] == ("numba" if numba else "reference")
    finally:
        reset_backends()


@pytest.mark.parametrize("impl", ["reference", "numba"])
def test_update_rejects_bad_ids_and_shapes(impl: str) -> None:
    if impl == "numba" and numba is None:
        pytest.skip("numba is not installed")
    update = reference.sgns_update if impl == "reference" else numba_kernels.sgns_update
    w = np.zeros((4, 3))
    ok = np.array([0, 1]), np.array([1, 2]), np.array([[3], [0]])
    with pytest.raises(IndexError, match="index 4"):
        update(w.copy(), w.copy(), ok[0], ok[1], np.array([[4], [0]]), 0.1)
    with pytest.raises(IndexError, match="index -1"):
        update(w.copy(), w.copy(), np.array([0, -1]), ok[1], ok[2], 0.1)
    with pytest.raises(ValueError, match="one width"):
        update(w.copy(), np.zeros((4, 2)), *ok, 0.1)
    with pytest.raises(ValueError, match=r"\(P,\), \(P,\), \(P, K\)"):
        update(w.copy(), w.copy(), ok[0], ok[1][:1], ok[2], 0.1)


# ---- sampling ---------------------------------------------------------------------------

def test_keep_probabilities_follow_word2vec_formula() -> None:
    counts = np.array([50_000, 5_000, 500, 50, 5, 1])
    t = 1e-3
    f = counts / counts.sum()
    # the same formula written the other way round: sqrt(t/f) + t/f
    expected = np.minimum(1.0, np.sqrt(t / f) + t / f)
    np.testing.assert_allclose(keep_probabilities(counts, t), expected, rtol=1e-12)
    p = keep_probabilities(counts, t)
    assert p[-1] == 1.0 and p[0] < 0.2 and np.all(np.diff(p) >= 0)
    np.testing.assert_array_equal(keep_probabilities(counts, 0.0), np.ones(6))


def test_negative_table_draws_follow_unigram_to_the_three_quarters() -> None:
    counts = np.array([1000, 300, 120, 40, 7, 1])
    q = counts**0.75 / (counts**0.75).sum()
    size = 100_000
    table = negative_table(counts, size)
    assert len(table) == size
    np.testing.assert_allclose(np.bincount(table, minlength=6), q * size, atol=1.0)
    draws = table[np.random.default_rng(0).integers(0, size, 200_000)]
    freq = np.bincount(draws, minlength=6) / len(draws)
    sd = np.sqrt(q * (1 - q) / len(draws))
    assert np.all(np.abs(freq - q) < 5 * sd + 1 / size)
    with pytest.raises(ValueError, match="positive counts"):
        negative_table(np.array([3, 0]), 10)


def test_skipgram_pairs_dynamic_window_and_line_boundaries() -> None:
    n, window = 60_000, 4
    ids = np.arange(n)
    line_of = np.arange(n) // 50
    rng = np.random.default_rng(0)
    centers, contexts = skipgram_pairs(ids, line_of, window, rng)
    assert np.all(line_of[centers] == line_of[contexts])
    assert np.all(np.diff(centers) >= 0)  # ordered by center
    offset = np.abs(contexts - centers)
    assert offset.min() == 1 and offset.max() == window
    # away from line ends, offset d is taken with probability (window - d + 1) / window
    inner = (ids[centers] % 50 >= window) & (ids[centers] % 50 < 50 - window)
    n_inner = (np.arange(n) % 50 >= window).sum() - (np.arange(n) % 50 >= 50 - window).sum()
    for d in range(1, window + 1):
        share = np.sum(inner & (offset == d)) / (2 * n_inner)
        assert share == pytest.approx((window - d + 1) / window, abs=0.02)


# ---- the model --------------------------------------------------------------------------

def _topic_corpus(seed: int, lines: int = 3000) -> list[str]:
    """Two topics: words a0..a5 appear among x-words, b0..b5 among y-words, never mixed."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(lines):
        t = "ab"[i % 2]
        ctx = "xy"[i % 2]
        words = [f"{ctx}{j}" for j in rng.integers(0, 8, 4)]
        words.insert(int(rng.integers(0, 5)), f"{t}{rng.integers(0, 6)}")
        out.append(" ".join(words))
    return out


def test_words_with_shared_contexts_end_up_nearer() -> None:
    model = train_word2vec(_topic_corpus(0), dim=16, window=3, negative=4, epochs=3,
                           min_count=1, sample=0.0, lr=0.05, seed=0, log=None)
    within = [model.similarity(f"{t}{i}", f"{t}{j}") for t in "ab"
              for i in range(6) for j in range(i + 1, 6)]
    across = [model.similarity(f"a{i}", f"b{j}") for i in range(6) for j in range(6)]
    assert np.mean(within) > np.mean(across) + 0.3
    assert min(within) > max(across)
    neighbours = [w for w, _ in model.most_similar("a0", k=5)]
    assert all(w.startswith(("a", "x")) for w in neighbours)


def test_training_is_reproducible_and_reports_stats() -> None:
    corpus = _topic_corpus(1, lines=400)
    stats = TrainStats()
    a = train_word2vec(corpus, dim=8, epochs=2, min_count=1, seed=3, log=None, stats=stats)
    b = train_word2vec(corpus, dim=8, epochs=2, min_count=1, seed=3, log=None)
    np.testing.assert_array_equal(a.w_in, b.w_in)
    assert stats.corpus_words == 400 * 5 and len(stats.epoch_loss) == 2
    assert 0 < stats.trained_words <= 2 * stats.corpus_words and stats.pairs > 0
    assert stats.words_per_second > 0


def test_vocabulary_counts_order_and_limits() -> None:
    vocab = Vocabulary.build(["b a b", "c b a", "Don't stop", "don't"], min_count=2)
    assert vocab.words == ["b", "a", "don't"]  # count 3, 2, 2 (ties alphabetical)
    np.testing.assert_array_equal(vocab.counts, [3, 2, 2])
    assert Vocabulary.build(["b a b", "c b a"], min_count=1, max_size=2).words == ["b", "a"]
    np.testing.assert_array_equal(vocab.encode("A zzz b"), [1, 0])
    assert tokenize("He's ''great''-ish, 2 TIMES_") == ["he's", "great", "ish", "2", "times"]


def test_queries_and_sentence_vectors() -> None:
    vocab = Vocabulary(["x", "y", "z"], np.array([3, 2, 1]))
    w = np.array([[1.0, 0.0], [2.0, 0.1], [0.0, 1.0]], dtype=np.float32)
    model = Word2Vec(vocab, w, np.zeros_like(w))
    assert model.similarity("x", "z") == pytest.approx(0.0)
    assert [word for word, _ in model.most_similar("x", k=5)] == ["y", "z"]
    np.testing.assert_array_equal(model.vector("y"), w[1])
    feats, known = model.sentence_vectors(["X y unknown", "nothing here"])
    np.testing.assert_allclose(feats[0], w[:2].mean(axis=0), rtol=1e-6)
    np.testing.assert_array_equal(feats[1], 0.0)
    np.testing.assert_array_equal(known, [2, 0])


def test_save_load_round_trip(tmp_path) -> None:
    model = train_word2vec(_topic_corpus(2, lines=200), dim=6, epochs=1, min_count=1, log=None)
    path = tmp_path / "w2v.safetensors"
    model.save(path)
    back = Word2Vec.load(path)
    assert back.vocab.words == model.vocab.words
    np.testing.assert_array_equal(back.vocab.counts, model.vocab.counts)
    np.testing.assert_array_equal(back.w_in, model.w_in)
    np.testing.assert_array_equal(back.w_out, model.w_out)
    assert back.most_similar("a1", 3) == model.most_similar("a1", 3)


def test_errors_name_the_problem(tmp_path) -> None:
    with pytest.raises(ValueError, match="empty corpus"):
        train_word2vec(["", "  ", "!!"], log=None)
    with pytest.raises(ValueError, match="min_count=9"):
        Vocabulary.build(["a b a"], min_count=9)
    with pytest.raises(TypeError, match="must be str"):
        Vocabulary.build(["a", 3])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="window must be >= 1"):
        train_word2vec(["a b"], window=0, min_count=1, log=None)
    with pytest.raises(ValueError, match="lr must be > 0"):
        train_word2vec(["a b"], lr=0.0, min_count=1, log=None)
    model = Word2Vec.init(Vocabulary(["cat", "dog"], np.array([2, 1])), dim=4)
    with pytest.raises(KeyError, match="'Cat'.*lowercased"):
        model.vector("Cat")
    with pytest.raises(KeyError, match="'emu' is not in the vocabulary of 2 words"):
        model.most_similar("emu")
    with pytest.raises(ValueError, match="dim must be >= 1"):
        Word2Vec.init(model.vocab, dim=0)
    from minitl.io import save

    other = tmp_path / "other.safetensors"
    save({"w": np.zeros(2)}, other)
    with pytest.raises(ValueError, match="not a minitl word2vec file"):
        Word2Vec.load(other)


# ---- the logistic regression the features go into ------------------------------------------

def test_dense_logistic_regression_matches_the_bow_classifier() -> None:
    from minitl.recipes.bow import BowClassifier, BowConfig, fit_logistic_regression

    texts = ["good fun film", "bad dull film", "great fun", "dull and bad", "fun fun good",
             "awful bad plot", "good plot", "bad acting"]
    labels = np.array([1, 0, 1, 0, 1, 0, 1, 0])
    config = BowConfig(steps=60, l2=0.5, seed=4)
    clf = BowClassifier(config).fit(texts, labels, num_labels=2)
    dense = clf.vectorizer.transform(texts)
    lin = fit_logistic_regression(dense, labels, 2, l2=config.l2, steps=config.steps,
                                  lr=config.lr, seed=config.seed)
    assert clf.linear is not None
    np.testing.assert_allclose(lin.weight.numpy(), clf.linear.weight.numpy(), atol=1e-4)
    np.testing.assert_allclose(lin.bias.numpy(), clf.linear.bias.numpy(), atol=1e-4)
    with pytest.raises(ValueError, match=r"\(N, F\)"):
        fit_logistic_regression(np.zeros((0, 3)), [], 2)


def test_backend_kernel_sends_other_dtypes_to_the_reference() -> None:
    update = get_backend("cpu").sgns_update
    rng = np.random.default_rng(2)
    w_in, w_out, c, o, n = _batch(rng, 10, 4, 20, 2, np.float32)
    half_in, half_out = w_in.astype(np.float16), w_out.astype(np.float16)
    ref_in, ref_out = half_in.copy(), half_out.copy()
    reference.sgns_update(ref_in, ref_out, c, o, n, 0.1)
    update(half_in, half_out, c, o, n, 0.1)
    assert half_in.dtype == np.float16
    np.testing.assert_array_equal(half_in, ref_in)
    np.testing.assert_array_equal(half_out, ref_out)
    with pytest.raises(TypeError, match="floating point"):
        update(np.zeros((3, 2), np.int64), np.zeros((3, 2), np.int64), c[:1] % 3, o[:1] % 3,
               n[:1] % 3, 0.1)


def test_text_lines_reads_a_file_and_rejects_unknown_names(tmp_path) -> None:
    from minitl.pretrain.word2vec import text_lines

    path = tmp_path / "corpus.txt"
    path.write_text("first line\n\n  second  \n", encoding="utf-8")
    assert text_lines(str(path)) == ["first line", "second"]
    with pytest.raises(KeyError, match="unknown dataset 'no-such-corpus'"):
        text_lines("no-such-corpus")
