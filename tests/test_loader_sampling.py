"""DataLoader order: drawn from minitl's default generator (so `mt.manual_seed` fixes it),
from `generator=`, from an explicit `seed=`, or given outright by `sampler=`."""

from __future__ import annotations

import numpy as np
import pytest

import minitl as mt
from minitl.data import DataLoader, TensorDataset

N = 40


def order(loader: DataLoader) -> list[int]:
    return [int(v) for (b,) in loader for v in b.tolist()]


def shuffled(**kw: object) -> DataLoader:
    return DataLoader(TensorDataset(np.arange(N)), batch_size=6, shuffle=True, **kw)


def test_manual_seed_fixes_the_shuffled_order() -> None:
    mt.manual_seed(11)
    first = order(shuffled())
    mt.manual_seed(11)
    again = order(shuffled())
    mt.manual_seed(12)
    other = order(shuffled())
    assert first == again
    assert first != other
    assert sorted(first) == sorted(other) == list(range(N))
    assert first != list(range(N))


def test_without_reseeding_two_loaders_differ() -> None:
    mt.manual_seed(3)
    assert order(shuffled()) != order(shuffled())


def test_drawn_seed_still_replays_epochs() -> None:
    mt.manual_seed(5)
    loader = shuffled()
    e0, e1 = order(loader), order(loader)
    assert e0 != e1
    loader.set_epoch(1)
    assert order(loader) == e1


def test_generator_overrides_the_default_generator() -> None:
    mt.manual_seed(1)
    a = order(shuffled(generator=np.random.default_rng(42)))
    mt.manual_seed(2)
    b = order(shuffled(generator=np.random.default_rng(42)))
    c = order(shuffled(generator=np.random.default_rng(43)))
    assert a == b and a != c
    # the generator is consumed, not the global one
    mt.manual_seed(9)
    before = mt.creation.default_generator().bit_generator.state
    shuffled(generator=np.random.default_rng(0))
    assert mt.creation.default_generator().bit_generator.state == before


def test_explicit_seed_ignores_manual_seed() -> None:
    mt.manual_seed(1)
    a = order(shuffled(seed=7))
    mt.manual_seed(2)
    assert order(shuffled(seed=7)) == a


def test_generator_must_be_a_numpy_generator() -> None:
    with pytest.raises(TypeError, match="numpy.random.Generator"):
        shuffled(generator=123)


@pytest.mark.parametrize("drop_last", [False, True])
def test_sampler_order_is_followed(drop_last: bool) -> None:
    ds = TensorDataset(np.arange(N))
    wanted = [int(i) for i in np.random.default_rng(0).permutation(N)[:N - 3]]
    loader = DataLoader(ds, batch_size=4, sampler=wanted, drop_last=drop_last)
    got = order(loader)
    kept = len(wanted) // 4 * 4 if drop_last else len(wanted)
    assert got == wanted[:kept]
    assert len(loader) == (len(wanted) // 4 if drop_last else -(-len(wanted) // 4))
    assert order(loader) == got  # a list sampler gives the same order every pass


def test_a_sampler_with_set_epoch_follows_the_epoch() -> None:
    class EpochSampler:
        def __init__(self) -> None:
            self.epoch = 0

        def set_epoch(self, epoch: int) -> None:
            self.epoch = epoch

        def __iter__(self):  # type: ignore[no-untyped-def]
            return iter(np.roll(np.arange(N), self.epoch).tolist())

        def __len__(self) -> int:
            return N

    loader = DataLoader(TensorDataset(np.arange(N)), batch_size=5, sampler=EpochSampler())
    loader.set_epoch(3)
    assert order(loader) == np.roll(np.arange(N), 3).tolist()


def test_shuffle_with_sampler_is_an_error() -> None:
    with pytest.raises(ValueError, match="mutually exclusive"):
        DataLoader(TensorDataset(np.arange(N)), batch_size=4, shuffle=True, sampler=range(N))
    with pytest.raises(ValueError, match="bucket_by_length"):
        DataLoader(TensorDataset(np.arange(N)), batch_size=4, bucket_by_length=True,
                   lengths=[1] * N, sampler=range(N))


def test_a_loader_that_does_not_shuffle_leaves_the_global_generator_alone() -> None:
    mt.manual_seed(4)
    before = mt.creation.default_generator().bit_generator.state
    DataLoader(TensorDataset(np.arange(N)), batch_size=4)
    DataLoader(TensorDataset(np.arange(N)), batch_size=4, sampler=range(N))
    assert mt.creation.default_generator().bit_generator.state == before
