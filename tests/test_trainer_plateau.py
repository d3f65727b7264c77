"""ReduceLROnPlateau inside the Trainer: stepped after each evaluation on the monitored metric,
never after optimizer steps; refused without an eval loader or with an unknown metric."""

from __future__ import annotations

import pytest
from test_trainer import dataset, mlp, quiet

import minitl.nn.functional as F
from minitl.data import DataLoader
from minitl.optim import SGD, lr_scheduler
from minitl.train import Trainer


def _trainer(lr: float, **kw: object) -> tuple[Trainer, SGD]:
    model = mlp()
    opt = SGD(model.parameters(), lr=lr)
    sched = lr_scheduler.ReduceLROnPlateau(opt, factor=0.5, patience=1)
    return Trainer(model, opt, F.cross_entropy, DataLoader(dataset(64), 32),
                   DataLoader(dataset(64), 64), sched, max_epochs=4,
                   **quiet(**kw)), opt


def test_a_flat_metric_lowers_the_lr_after_patience() -> None:
    # an lr this small leaves the eval loss flat within the scheduler's 1e-4 threshold (and
    # its halving stays above the scheduler's eps of 1e-8, below which a cut is skipped)
    trainer, opt = _trainer(1e-6)
    trainer.fit()
    assert len(trainer.eval_history) == 4
    # evaluation 1 sets the best, 2 is one bad epoch (= patience), 3 cuts, 4 is in the new count
    assert opt.param_groups[0]["lr"] == pytest.approx(0.5e-6)


def test_an_improving_metric_keeps_the_lr() -> None:
    trainer, opt = _trainer(0.1)
    trainer.fit()
    losses = [r["eval_loss"] for r in trainer.eval_history]
    assert losses[-1] < losses[0]
    assert opt.param_groups[0]["lr"] == 0.1


def test_refusals() -> None:
    model = mlp()
    opt = SGD(model.parameters(), lr=0.1)
    sched = lr_scheduler.ReduceLROnPlateau(opt)
    with pytest.raises(ValueError, match="eval_loader"):
        Trainer(model, opt, F.cross_entropy, DataLoader(dataset(64), 32), None, sched)
    trainer, _ = _trainer(0.1, plateau_metric="eval_accuracy")
    with pytest.raises(KeyError, match="eval_accuracy"):
        trainer.fit()
