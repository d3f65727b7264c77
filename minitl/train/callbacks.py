"""Trainer callbacks: hooks called at fixed points of the loop, plus their resumable state.

The Trainer calls, in order:

    on_train_begin
      on_epoch_begin
        on_step_end(record)        after every optimizer step (record: step, loss, lr, ...)
      on_evaluate(metrics)         after each evaluation (metrics: eval_loss, eval_<metric>)
      on_epoch_end(metrics)        metrics of this epoch's evaluation, {} without eval_loader
    on_train_end

A callback stops training by setting `trainer.should_stop = True`. Whatever a callback
must remember across a checkpoint goes in `state_dict()` (JSON-able values and numpy
arrays); the Trainer stores it in its checkpoint and hands it back to
`load_state_dict()` on resume.
"""

from __future__ import annotations

import math
import os
import re
import string
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from minitl.train.trainer import Trainer

__all__ = ["Callback", "Checkpoint", "EarlyStopping", "LambdaCallback"]


class Callback:
    """Base class; every hook does nothing."""

    def on_train_begin(self, trainer: Trainer) -> None:
        pass

    def on_epoch_begin(self, trainer: Trainer) -> None:
        pass

    def on_step_end(self, trainer: Trainer, record: Mapping[str, Any]) -> None:
        pass

    def on_evaluate(self, trainer: Trainer, metrics: Mapping[str, float]) -> None:
        pass

    def on_epoch_end(self, trainer: Trainer, metrics: Mapping[str, float]) -> None:
        pass

    def on_train_end(self, trainer: Trainer) -> None:
        pass

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        pass


class LambdaCallback(Callback):
    """A callback from plain functions: `LambdaCallback(on_step_end=lambda t, r: ...)`."""

    _HOOKS = ("on_train_begin", "on_epoch_begin", "on_step_end", "on_evaluate",
              "on_epoch_end", "on_train_end")

    def __init__(self, **hooks: Callable[..., Any]) -> None:
        unknown = sorted(set(hooks) - set(self._HOOKS))
        if unknown:
            raise TypeError(f"LambdaCallback: unknown hooks {unknown}; known: {self._HOOKS}")
        for name, fn in hooks.items():
            setattr(self, name, fn)


class EarlyStopping(Callback):
    """Stop when the monitored evaluation value has not improved for `patience`
    evaluations; with `restore_best`, put the best weights back into the model when
    training ends (if the last evaluation was not the best).

    Args:
        monitor: key of the evaluation results ("eval_loss", "eval_accuracy", ...).
        mode: "min" (loss, perplexity) or "max" (accuracy, F1).
        patience: evaluations without improvement before stopping.
        min_delta: an improvement must beat the best by more than this.
        restore_best: keep a copy of the best weights and restore it at the end.
    """

    def __init__(self, monitor: str = "eval_loss", mode: str = "min", patience: int = 3,
                 min_delta: float = 0.0, restore_best: bool = True) -> None:
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
        if patience < 0:
            raise ValueError(f"patience must be >= 0, got {patience}")
        self.monitor, self.mode, self.patience = monitor, mode, patience
        self.min_delta, self.restore_best = abs(min_delta), restore_best
        self.best: float | None = None
        self.best_step: int | None = None
        self.wait = 0
        self.stopped_step: int | None = None
        self.best_weights: dict[str, Any] | None = None

    def _improved(self, value: float) -> bool:
        if math.isnan(value):
            return False
        if self.best is None:
            return True
        if self.mode == "min":
            return value < self.best - self.min_delta
        return value > self.best + self.min_delta

    def on_evaluate(self, trainer: Trainer, metrics: Mapping[str, float]) -> None:
        if self.monitor not in metrics:
            raise KeyError(f"EarlyStopping monitors {self.monitor!r}, but the evaluation "
                           f"produced only {sorted(metrics)}")
        value = float(metrics[self.monitor])
        if self._improved(value):
            self.best, self.best_step, self.wait = value, trainer.step, 0
            if self.restore_best:
                self.best_weights = {k: v.data.copy()
                                     for k, v in trainer.model.state_dict().items()}
            return
        self.wait += 1
        if self.wait >= self.patience:
            self.stopped_step = trainer.step
            trainer.should_stop = True
            trainer.progress.log(f"early stopping at step {trainer.step}: {self.monitor} has "
                                 f"not improved on {self.best:.6g} (step {self.best_step}) "
                                 f"for {self.wait} evaluations")

    def on_train_end(self, trainer: Trainer) -> None:
        if self.restore_best and self.best_weights is not None and self.wait > 0:
            trainer.model.load_state_dict(self.best_weights)
            trainer.progress.log(f"restored the weights of step {self.best_step} "
                                 f"({self.monitor} {self.best:.6g})")

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "best_step": self.best_step, "wait": self.wait,
                "stopped_step": self.stopped_step, "best_weights": self.best_weights}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        for key in ("best", "best_step", "wait", "stopped_step", "best_weights"):
            setattr(self, key, state.get(key))
        self.wait = int(self.wait or 0)


class Checkpoint(Callback):
    """Write `trainer.save_checkpoint` every `every_n_steps` optimizer steps into `dirpath`.

    Args:
        dirpath: directory for the files (created if missing).
        every_n_steps: save when `trainer.step` is a multiple of this.
        keep_last: keep only this many of the newest files (None keeps all).
        filename: format string with `{step}` (and `{epoch}`: the epoch of the last step,
            from 0 as in metrics.jsonl and on the console).
        save_on_train_end: also save when training ends, whatever the step.

    Rotation (`keep_last`) deletes only files inside `dirpath` whose names `filename` could
    have produced. The list it works from travels in the checkpoint, so a resumed run keeps
    rotating the files of the run it continues; but a restored entry outside `dirpath`
    (symbolic links resolved) or named otherwise is dropped, never deleted. A run resumed
    from another run's checkpoint into its own directory leaves that run's files alone, and
    a crafted checkpoint cannot name a file to delete.
    """

    def __init__(self, dirpath: str | os.PathLike[str], every_n_steps: int,
                 keep_last: int | None = None,
                 filename: str = "checkpoint-{step:07d}.safetensors",
                 save_on_train_end: bool = False) -> None:
        if every_n_steps < 1:
            raise ValueError(f"every_n_steps must be >= 1, got {every_n_steps}")
        if keep_last is not None and keep_last < 1:
            raise ValueError(f"keep_last must be >= 1 or None, got {keep_last}")
        self.dirpath, self.every_n_steps, self.keep_last = os.fspath(dirpath), every_n_steps, \
            keep_last
        self.filename, self.save_on_train_end = filename, save_on_train_end
        self._pattern = _filename_pattern(filename)
        self.saved: list[str] = []  # paths of the files to rotate, oldest first

    @property
    def last_path(self) -> str | None:
        return self.saved[-1] if self.saved else None

    def _save(self, trainer: Trainer) -> None:
        os.makedirs(self.dirpath, exist_ok=True)
        path = os.path.join(self.dirpath,
                            self.filename.format(step=trainer.step, epoch=trainer.epoch_of_step))
        if path in self.saved:
            return  # this step is already on disk (end of training right after a save)
        trainer.check_finite_weights()  # a nan model must not push a good file out
        self.saved.append(path)  # before saving, so the file's own state lists it
        try:
            trainer.save_checkpoint(path)
        except BaseException:
            self.saved.pop()
            raise
        if self.keep_last is not None:
            while len(self.saved) > self.keep_last:
                self._remove(self.saved.pop(0))

    def _own_name(self, path: Any) -> str | None:
        """`path`'s name relative to dirpath if it lies inside dirpath (directories
        resolved through symbolic links, the file itself not) and matches `filename`;
        otherwise None."""
        if not isinstance(path, str) or not path or "\0" in path:
            return None
        folder = os.path.realpath(os.path.dirname(os.path.abspath(path)))
        rel = os.path.relpath(os.path.join(folder, os.path.basename(path)),
                              os.path.realpath(self.dirpath))
        if rel == os.pardir or rel.startswith(os.pardir + os.sep) or os.path.isabs(rel):
            return None
        return rel if self._pattern.fullmatch(rel.replace(os.sep, "/")) else None

    def _remove(self, path: str) -> None:
        rel = self._own_name(path)
        if rel is None:
            return  # not one of ours: never delete it
        target = os.path.join(self.dirpath, rel)
        if os.path.isdir(target) and not os.path.islink(target):
            return
        try:
            os.remove(target)  # a symbolic link goes, not the file it points to
        except FileNotFoundError:
            pass

    def on_step_end(self, trainer: Trainer, record: Mapping[str, Any]) -> None:
        if trainer.step % self.every_n_steps == 0:
            self._save(trainer)

    def on_train_end(self, trainer: Trainer) -> None:
        if self.save_on_train_end:
            self._save(trainer)

    def state_dict(self) -> dict[str, Any]:
        return {"saved": list(self.saved)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore the files to rotate, keeping only this callback's own (`_own_name`):
        any other path in the state is dropped, never deleted."""
        entries = state.get("saved", [])
        names = [self._own_name(p) for p in (entries if isinstance(entries, list) else [])]
        self.saved = [os.path.join(self.dirpath, n) for n in names if n is not None]


def _filename_pattern(filename: str) -> re.Pattern[str]:
    """A regex for the names `filename.format(step=..., epoch=...)` produces: the literal
    text escaped, each field a run of digits, `/` as the separator."""
    parts = []
    for literal, field, _, _ in string.Formatter().parse(filename):
        parts.append(re.escape(literal))
        if field is not None:
            if field not in ("step", "epoch"):
                raise ValueError(f"Checkpoint filename {filename!r}: unknown field {{{field}}} "
                                 "(only {step} and {epoch})")
            parts.append(r"[0-9]+")
    return re.compile("".join(parts).replace(re.escape(os.sep), "/"))
