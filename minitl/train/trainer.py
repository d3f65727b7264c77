"""Trainer: the training loop every example and CLI command shares.

One optimizer step consumes `grad_accum_steps` batches: each batch's loss is scaled by
1/k before backward (k = the batches in this group, fewer only at the end of an epoch),
so the summed gradient is that of the mean loss over all k batches, the same as one
batch k times larger. Then come gradient clipping, `optimizer.step()`, and
`scheduler.step()` (schedules count optimizer steps, not batches). After each epoch the
model is evaluated (`model.eval()` under `no_grad`, then back to `train()`).

Batches go to the model as follows. With a `loss_fn`, a `(inputs, labels)` pair is run
as `loss_fn(model(inputs), labels)` and a dict as `loss_fn(model(**rest), batch["labels"])`.
Without one, the model gets the whole batch (`model(**batch)` / `model(*batch)`) and
returns its loss: a scalar Tensor, a dict with "loss" (and "logits"), or an object with
`.loss` (and `.logits`). Subclasses can override `compute_loss` for anything else.

Resuming is exact. `save_checkpoint` stores the model, optimizer and scheduler state,
the position (step, epoch, batches consumed in this epoch), callback state and the RNG
states (minitl's generator, which also drives dropout and the pretraining objectives,
and numpy's and Python's global ones) in one safetensors file, atomically. The data
order is a function of (loader seed, epoch) (`DataLoader.set_epoch`), so `resume` replays
the interrupted epoch's order, skips the batches already used and continues: the losses
match an uninterrupted run step for step.

Epochs count from 0, as in `for epoch in range(max_epochs)`, `DataLoader.set_epoch` and
Lightning's `current_epoch`: the console line, every metrics.jsonl record and a
checkpoint's `{epoch}` all name the first epoch 0. `fit()` returns a `FitResult`: all
records of the run in metrics.jsonl order, train and eval told apart by "type", with
`.train` and `.eval` for each kind.
"""

from __future__ import annotations

import math
import os
import random
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, TextIO

import numpy as np

from minitl import creation
from minitl.autograd_state import no_grad
from minitl.backend import array_module
from minitl.optim.clip import clip_grad_norm_
from minitl.optim.plateau import ReduceLROnPlateau
from minitl.tensor import Tensor
from minitl.train.callbacks import Callback
from minitl.train.checkpoint import load_state, save_state
from minitl.train.metrics import Metric, get_metric
from minitl.train.progress import FitResult, MetricsLog, ProgressDisplay, plot_loss

__all__ = ["NonFiniteLossError", "Trainer"]


class NonFiniteLossError(FloatingPointError):
    """Training produced a nan or infinite value (the loss, or the gradient norm); the step
    was not taken. Usually the learning rate is too high for the model or the data.

    Attributes:
        step: the optimizer step that would have been taken (1-based).
        loss: the value that was not finite (the loss unless `what` says otherwise).
        what: "loss", "gradient norm" or "weights" (found by `Trainer.check_finite_weights`
            at the end of training and before each checkpoint).
    """

    def __init__(self, step: int, loss: float, what: str = "loss") -> None:
        self.step, self.loss, self.what = step, loss, what
        super().__init__(f"{what} became {loss} at step {step}; training stopped (a learning "
                         "rate too high for this model and data is the usual cause)")

    def __reduce__(self) -> tuple[Any, ...]:  # picklable with its three arguments
        return type(self), (self.step, self.loss, self.what)


class Trainer:
    """Fit a model with an optimizer on batches from a loader.

    Args:
        model: an `nn.Module`.
        optimizer: an optimizer over (some of) the model's parameters.
        loss_fn: `loss_fn(outputs, labels) -> scalar Tensor`; None if the model returns
            its loss.
        train_loader: iterable of batches; `set_epoch(e)` is called when it has one.
        eval_loader: evaluated after every epoch (and at the end of a run cut by
            `max_steps` mid-epoch).
        scheduler: an `lr_scheduler`, stepped after every optimizer step; a
            `ReduceLROnPlateau` instead after every evaluation, with `plateau_metric` (it
            needs an eval_loader).
        max_epochs, max_steps: stop at whichever comes first (1 epoch if neither is given).
        grad_accum_steps: batches per optimizer step.
        clip_grad_norm: max global L2 norm of the gradients (None: no clipping).
        metrics: `Metric`s or names ("accuracy", "macro_f1", "perplexity") computed on
            the eval set; reported as `eval_<name>` next to `eval_loss`.
        callbacks: `Callback`s (EarlyStopping, Checkpoint, ...).
        log_dir: where `metrics.jsonl` and the loss plot go (`loss.png` with matplotlib,
            `loss.svg` without); None: nowhere.
        seed: passed to `minitl.manual_seed` now (dropout, init, masking draws).
        log_every: when not on a terminal, optimizer steps between plain log lines; None
            (the default) writes one every `log_interval_s` seconds instead.
        progress: False silences the progress display.
        stream: where progress goes (sys.stderr by default).
        log_interval_s: seconds between plain log lines when not on a terminal.
    """

    def __init__(self, model: Any, optimizer: Any, loss_fn: Any = None,
                 train_loader: Iterable[Any] | None = None,
                 eval_loader: Iterable[Any] | None = None, scheduler: Any = None, *,
                 max_epochs: int | None = None, max_steps: int | None = None,
                 grad_accum_steps: int = 1, clip_grad_norm: float | None = None,
                 metrics: Sequence[str | Metric] = (), callbacks: Sequence[Callback] = (),
                 log_dir: str | os.PathLike[str] | None = None, seed: int | None = None,
                 log_every: int | None = None, progress: bool = True,
                 stream: TextIO | None = None, plateau_metric: str = "eval_loss",
                 log_interval_s: float = 10.0) -> None:
        if grad_accum_steps < 1:
            raise ValueError(f"grad_accum_steps must be >= 1, got {grad_accum_steps}")
        if max_epochs is None and max_steps is None:
            max_epochs = 1
        for name, value in (("max_epochs", max_epochs), ("max_steps", max_steps)):
            if value is not None and value < 0:
                raise ValueError(f"{name} must be >= 0, got {value}")
        self.model, self.optimizer, self.loss_fn = model, optimizer, loss_fn
        self.train_loader, self.eval_loader, self.scheduler = train_loader, eval_loader, scheduler
        self._on_plateau = isinstance(scheduler, ReduceLROnPlateau)
        if self._on_plateau and eval_loader is None:
            raise ValueError("ReduceLROnPlateau steps on an evaluation metric: give the Trainer "
                             "an eval_loader")
        self.plateau_metric = plateau_metric
        self.max_epochs, self.max_steps = max_epochs, max_steps
        self.grad_accum_steps, self.clip_grad_norm = grad_accum_steps, clip_grad_norm
        self.metrics = [get_metric(m) for m in metrics]
        self.callbacks = list(callbacks)
        self.log_dir = None if log_dir is None else os.fspath(log_dir)
        self.log_every, self._show_progress, self._stream = log_every, progress, stream
        self.log_interval_s = log_interval_s
        if seed is not None:
            creation.manual_seed(seed)

        self.step = 0  # optimizer steps taken
        self.epoch = 0  # index of the current epoch, from 0 (completed epochs at the end)
        self.batch_in_epoch = 0  # batches of the current epoch already used
        self.should_stop = False
        self.history: list[dict[str, Any]] = []  # train records of this process
        self.eval_history: list[dict[str, Any]] = []
        self.records = FitResult()  # both kinds, in metrics.jsonl order
        self.progress = ProgressDisplay(enabled=False)
        self._log: MetricsLog | None = None
        self._log_lines: int | None = None  # lines of metrics.jsonl to keep on resume
        self._pending_rng: dict[str, Any] | None = None
        self._last_eval_step: int | None = None

    # ---- the loop ----------------------------------------------------------------------

    def fit(self) -> FitResult:
        """Train until `max_epochs` / `max_steps` or a callback stops. Returns the records
        of this Trainer's runs (`records`): a list of train and eval dicts told apart by
        "type", with `.train` (as `history`) and `.eval` (as `eval_history`)."""
        if self.train_loader is None:
            raise ValueError("Trainer.fit needs a train_loader")
        self.should_stop = False
        self.model.train()
        self.model.zero_grad()
        self.optimizer.zero_grad()
        if self.log_dir is not None:
            self._log = MetricsLog(self.log_dir, keep_lines=self._log_lines)
        self.progress = ProgressDisplay(self._total_steps(), stream=self._stream,
                                        log_every=self.log_every, enabled=self._show_progress,
                                        log_interval_s=self.log_interval_s)
        self.progress.start(self.step)
        self._callback("on_train_begin")
        try:
            while not self._finished():
                self.progress.skip_time()  # evaluation, callbacks, plot: not in the step rate
                if self.batch_in_epoch == 0:
                    self._callback("on_epoch_begin")
                if not self._train_epoch():
                    break  # stopped mid-epoch
                results = self._evaluate_and_log() if self.eval_loader is not None else {}
                self._callback("on_epoch_end", results)
                self.epoch += 1
                self.batch_in_epoch = 0
                self._plot()
            if (self.eval_loader is not None and self.batch_in_epoch > 0 and
                    self._reached_max_steps() and self._last_eval_step != self.step):
                self._evaluate_and_log()  # a run cut mid-epoch by max_steps ends evaluated
            self._callback("on_train_end")  # (EarlyStopping may put the best weights back)
            self.check_finite_weights()  # the last step's update is checked by no later loss
        finally:
            self.progress.close()
            if self._log is not None:  # a later fit() appends to the same file
                self._log_lines = self._log.lines
                self._log.close()
                self._log = None
            self._plot()
        return self.records

    def resume(self, path: str | os.PathLike[str]) -> FitResult:
        """Load a checkpoint written by `save_checkpoint` and continue training from it."""
        self.load_checkpoint(path)
        return self.fit()

    def _reached_max_steps(self) -> bool:
        return self.max_steps is not None and self.step >= self.max_steps

    @property
    def epoch_of_step(self) -> int:
        """The epoch (from 0) the last optimizer step belongs to: `epoch`, less one once
        an epoch has ended and the next has not begun."""
        return self.epoch - 1 if self.batch_in_epoch == 0 and self.epoch > 0 else self.epoch

    def _finished(self) -> bool:
        return (self.should_stop or self._reached_max_steps() or
                (self.max_epochs is not None and self.epoch >= self.max_epochs))

    def _total_steps(self) -> int | None:
        per_epoch = _length(self.train_loader)
        by_epochs = None
        if self.max_epochs is not None and per_epoch is not None:
            by_epochs = self.max_epochs * math.ceil(per_epoch / self.grad_accum_steps)
        if self.max_steps is None:
            return by_epochs
        return self.max_steps if by_epochs is None else min(self.max_steps, by_epochs)

    def _train_epoch(self) -> bool:
        """Train on the rest of the current epoch; False if stopped before its end."""
        loader: Any = self.train_loader
        if hasattr(loader, "set_epoch"):
            loader.set_epoch(self.epoch)
        n = _length(loader)
        batches = iter(loader)
        for _ in range(self.batch_in_epoch):  # resuming: skip what was already used
            if next(batches, _END) is _END:
                break
        if self._pending_rng is not None:  # after the skip: collate may draw random numbers
            _set_rng_state(self._pending_rng)
            self._pending_rng = None
        k = self.grad_accum_steps
        group = pending = samples = 0
        loss_sum = 0.0
        for batch in batches:
            if pending == 0:
                group = k if n is None else max(1, min(k, n - self.batch_in_epoch))
            loss, _, _ = self.compute_loss(batch)
            (loss if group == 1 else loss * (1.0 / group)).backward()
            value = float(loss.item())  # after backward: a GPU has it queued meanwhile
            if not math.isfinite(value):  # stop before a nan reaches the weights
                self.model.zero_grad()
                self.optimizer.zero_grad()
                raise NonFiniteLossError(self.step + 1, value)
            loss_sum += value / group
            samples += _count(batch, None)
            pending += 1
            self.batch_in_epoch += 1
            if pending == group:
                self._optimizer_step(loss_sum, samples)
                pending = samples = 0
                loss_sum = 0.0
                if self.should_stop or self._reached_max_steps():
                    return n is not None and self.batch_in_epoch >= n
        if self.batch_in_epoch == 0:  # else max_steps alone would loop forever
            raise ValueError("the train_loader produced no batches")
        if pending:  # loader without len(): a short last group, rescale to its mean
            for p in self._params():
                if p.grad is not None:
                    p.grad.data *= group / pending
            self._optimizer_step(loss_sum * group / pending, samples)
        return True

    def _params(self) -> list[Tensor]:
        return [p for g in self.optimizer.param_groups for p in g["params"]]

    def check_finite_weights(self) -> None:
        """Raise NonFiniteLossError if a trained parameter holds a nan or an inf (one pass
        over the weights: done when training ends and before a checkpoint is written, so
        neither saves a model that an infinite update has destroyed)."""
        for p in self._params():
            xp = array_module(p.data)
            if not bool(xp.isfinite(p.data).all()):
                bad = p.data[~xp.isfinite(p.data)].ravel()[0]
                raise NonFiniteLossError(self.step, float(bad), "weights")

    def _optimizer_step(self, loss: float, samples: int) -> None:
        record: dict[str, Any] = {"type": "train", "step": self.step + 1, "epoch": self.epoch,
                                  "loss": loss, "lr": float(self.optimizer.param_groups[0]["lr"])}
        if self.clip_grad_norm is not None:
            # the norm is computed anyway: a nan or inf in it would poison every weight
            record["grad_norm"] = float(clip_grad_norm_(self._params(), self.clip_grad_norm))
            if not math.isfinite(record["grad_norm"]):
                self.optimizer.zero_grad()
                self.model.zero_grad()
                raise NonFiniteLossError(self.step + 1, record["grad_norm"], "gradient norm")
        self.optimizer.step()
        self.optimizer.zero_grad()
        self.model.zero_grad()
        if self.scheduler is not None and not self._on_plateau:
            self.scheduler.step()
        self.step += 1
        self.progress.update(self.step, loss, samples, epoch=self.epoch, lr=record["lr"])
        record["samples"] = samples
        record["samples_per_s"] = self.progress.rates(self.step)[0]
        self.history.append(record)
        self.records.append(record)
        if self._log is not None:
            self._log.write(record)
        self._callback("on_step_end", record)

    # ---- forward and loss -------------------------------------------------------------

    def compute_loss(self, batch: Any) -> tuple[Tensor, Any, Any]:
        """(scalar loss, logits or None, labels or None) for one batch."""
        batch = self._to_model_device(batch)
        if self.loss_fn is None:
            outputs = _call(self.model, batch)
            loss = _field(outputs, "loss")
            if loss is None:
                if isinstance(outputs, Tensor) and outputs.numel() == 1:
                    loss = outputs.reshape(())
                else:
                    raise TypeError("without a loss_fn the model must return its loss (a "
                                    "scalar Tensor, a dict with 'loss', or an object with "
                                    f".loss); it returned {type(outputs).__name__}")
            labels = batch.get("labels") if isinstance(batch, Mapping) else None
            return loss, _field(outputs, "logits"), labels
        inputs, labels = _split(batch)
        outputs = _call(self.model, inputs)
        logits = outputs if isinstance(outputs, Tensor) else _field(outputs, "logits")
        return self.loss_fn(outputs if logits is None else logits, labels), logits, labels

    def _to_model_device(self, batch: Any) -> Any:
        param = next(iter(self.model.parameters()), None)
        if param is None or param.device == "cpu":
            return batch
        return _move(batch, param.device)

    # ---- evaluation ----------------------------------------------------------------------

    def evaluate(self, loader: Iterable[Any] | None = None) -> dict[str, float]:
        """Mean loss (weighted by scored labels) and every metric over `loader` (default:
        the eval loader), in eval mode without gradients; the model's mode is restored."""
        loader = self.eval_loader if loader is None else loader
        if loader is None:
            raise ValueError("Trainer.evaluate needs a loader (no eval_loader was given)")
        if hasattr(loader, "set_epoch"):  # a shuffling eval loader: same order after resume
            loader.set_epoch(self.epoch)
        was_training = self.model.training
        self.model.eval()
        for m in self.metrics:
            m.reset()
        total, count = 0.0, 0
        try:
            with no_grad():
                for batch in loader:
                    loss, logits, labels = self.compute_loss(batch)
                    value = float(loss.item())
                    n = _count(batch, labels)
                    total += value * n
                    count += n
                    for m in self.metrics:
                        m.update(logits, labels, value)
        finally:
            self.model.train(was_training)
        results = {"eval_loss": total / count if count else math.nan}
        for m in self.metrics:
            results[f"eval_{m.name}"] = float(m.compute())
        return results

    def _evaluate_and_log(self) -> dict[str, float]:
        results = self.evaluate()
        self._last_eval_step = self.step
        if self._on_plateau:
            if self.plateau_metric not in results:
                raise KeyError(f"plateau_metric {self.plateau_metric!r} is not among the "
                               f"evaluation results {sorted(results)}")
            self.scheduler.step(results[self.plateau_metric])
        record = {"type": "eval", "step": self.step, "epoch": self.epoch, **results}
        self.eval_history.append(record)
        self.records.append(record)
        if self._log is not None:
            self._log.write(record)
        self.progress.log_metrics(f"eval | epoch {self.epoch} | step {self.step}", results)
        self._callback("on_evaluate", results)
        return results

    # ---- checkpoints ---------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Everything `load_state_dict` needs to continue exactly where this run is."""
        loader: Any = self.train_loader
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": None if self.scheduler is None else self.scheduler.state_dict(),
            "trainer": {"step": self.step, "epoch": self.epoch,
                        "batch_in_epoch": self.batch_in_epoch,
                        "grad_accum_steps": self.grad_accum_steps,
                        "last_eval_step": self._last_eval_step,
                        "log_lines": self._log_lines if self._log is None else self._log.lines},
            "rng": _get_rng_state(),
            "loader": {"seed": getattr(loader, "seed", None),
                       "state": loader.state_dict() if hasattr(loader, "state_dict") else None},
            "callbacks": [{"class": type(cb).__name__, "state": cb.state_dict()}
                          for cb in self.callbacks],
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore a `state_dict()`. Its layout is checked before anything changes: a
        missing entry is named in a ValueError."""
        _check_layout(state)
        try:
            self.model.load_state_dict(state["model"])
        except RuntimeError as e:  # missing, unexpected or misshapen weights, all listed
            raise ValueError(f"the checkpoint's weights do not fit this model: {e}") from e
        self.optimizer.load_state_dict(state["optimizer"])
        if (self.scheduler is None) != (state["scheduler"] is None):
            raise ValueError("the checkpoint was written " +
                             ("without" if state["scheduler"] is None else "with") +
                             " a scheduler; build the Trainer the same way to resume")
        if self.scheduler is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        t = state["trainer"]
        if t["grad_accum_steps"] != self.grad_accum_steps:
            raise ValueError(f"the checkpoint used grad_accum_steps={t['grad_accum_steps']}, "
                             f"this Trainer {self.grad_accum_steps}")
        self.step, self.epoch = int(t["step"]), int(t["epoch"])
        self.batch_in_epoch, self._last_eval_step = int(t["batch_in_epoch"]), t["last_eval_step"]
        self._log_lines = t["log_lines"]
        if self._log is not None:  # re-open, dropping lines written after the checkpoint
            self._log.close()
            self._log = None
        loader_state = state["loader"]
        train_loader: Any = self.train_loader
        seed = getattr(train_loader, "seed", None)
        if loader_state["seed"] != seed:
            raise ValueError(f"the checkpoint's train loader had seed {loader_state['seed']}, "
                             f"this one has {seed}: the data order would differ")
        if loader_state["state"] is not None and hasattr(train_loader, "load_state_dict"):
            train_loader.load_state_dict(loader_state["state"])
        saved = state["callbacks"]
        if [c["class"] for c in saved] != [type(cb).__name__ for cb in self.callbacks]:
            raise ValueError(f"the checkpoint has callbacks {[c['class'] for c in saved]}, "
                             f"this Trainer {[type(cb).__name__ for cb in self.callbacks]}")
        for cb, entry in zip(self.callbacks, saved):
            cb.load_state_dict(entry["state"])
        _set_rng_state(state["rng"])
        self._pending_rng = state["rng"]  # set again once the used batches are skipped

    def save_checkpoint(self, path: str | os.PathLike[str]) -> None:
        """Write `state_dict()` to one safetensors file (atomically)."""
        save_state(self.state_dict(), path)

    def load_checkpoint(self, path: str | os.PathLike[str]) -> None:
        """Restore a file written by `save_checkpoint`; ValueError (naming the file) if it
        is not one, is damaged, or was written by a differently built Trainer."""
        state = load_state(path)
        try:
            self.load_state_dict(state)
        except ValueError as e:
            raise ValueError(f"{os.fspath(path)}: {e}") from e
        except (KeyError, TypeError, IndexError) as e:  # a value of the wrong kind inside
            raise ValueError(f"{os.fspath(path)}: damaged minitl training checkpoint "
                             f"({type(e).__name__}: {e})") from e

    # ---- helpers --------------------------------------------------------------------------

    def _callback(self, hook: str, *args: Any) -> None:
        for cb in self.callbacks:
            getattr(cb, hook)(self, *args)

    def _plot(self) -> None:
        """loss.png (matplotlib) or loss.svg in log_dir."""
        if self.log_dir is not None and os.path.exists(os.path.join(self.log_dir,
                                                                    "metrics.jsonl")):
            plot_loss(os.path.join(self.log_dir, "metrics.jsonl"),
                      os.path.join(self.log_dir, "loss.png"))


_END = object()


def _length(loader: Any) -> int | None:
    try:
        return len(loader)
    except TypeError:
        return None


def _call(model: Any, inputs: Any) -> Any:
    if isinstance(inputs, Mapping):
        return model(**inputs)
    if isinstance(inputs, (tuple, list)):
        return model(*inputs)
    return model(inputs)


def _split(batch: Any) -> tuple[Any, Any]:
    """(inputs, labels) of a batch: a dict's "labels", the last item of a tuple/list."""
    if isinstance(batch, Mapping):
        return {k: v for k, v in batch.items() if k != "labels"}, batch.get("labels")
    if isinstance(batch, (tuple, list)):
        if len(batch) == 1:
            return batch[0], None
        if len(batch) == 2:
            return batch[0], batch[1]
        return tuple(batch[:-1]), batch[-1]
    return batch, None


def _field(outputs: Any, name: str) -> Any:
    if isinstance(outputs, Mapping):
        return outputs.get(name)
    return getattr(outputs, name, None) if not isinstance(outputs, Tensor) else None


def _move(batch: Any, device: str) -> Any:
    if isinstance(batch, Tensor):
        return batch.to(device)
    if isinstance(batch, Mapping):
        return {k: _move(v, device) for k, v in batch.items()}
    if isinstance(batch, (tuple, list)):
        return type(batch)(_move(v, device) for v in batch)
    return batch


def _count(batch: Any, labels: Any) -> int:
    """Examples in a batch; with integer labels, the labels that are scored (not -100)."""
    if labels is not None:
        arr = labels.data if isinstance(labels, Tensor) else labels
        if getattr(arr, "dtype", None) is not None and arr.dtype.kind in "iu":
            return int((arr != -100).sum())
        return int(arr.shape[0]) if getattr(arr, "ndim", 0) else 1
    first = batch
    while isinstance(first, (Mapping, tuple, list)) and len(first):
        first = next(iter(first.values())) if isinstance(first, Mapping) else first[0]
    shape: tuple[int, ...] = tuple(getattr(first, "shape", ()))
    return int(shape[0]) if len(shape) else 1


# Entries `state_dict` writes and `load_state_dict` reads: (key, kind, nested keys).
_LAYOUT: tuple[tuple[str, type | tuple[type, ...], tuple[str, ...]], ...] = (
    ("model", Mapping, ()), ("optimizer", Mapping, ("state", "param_groups")),
    ("scheduler", (Mapping, type(None)), ()),
    ("trainer", Mapping, ("step", "epoch", "batch_in_epoch", "grad_accum_steps",
                          "last_eval_step", "log_lines")),
    ("rng", Mapping, ("minitl", "numpy", "python")), ("loader", Mapping, ("seed", "state")),
    ("callbacks", list, ()),
)


def _check_layout(state: Any) -> None:
    """ValueError naming the first entry a Trainer checkpoint state lacks."""
    what = "not a minitl training checkpoint, or a damaged one"
    if not isinstance(state, Mapping):
        raise ValueError(f"the state is a {type(state).__name__}, not a dict ({what})")
    for key, kind, inner in _LAYOUT:
        if key not in state:
            raise ValueError(f"the state has no {key!r} entry ({what})")
        if not isinstance(state[key], kind):
            raise ValueError(f"the state's {key!r} entry is a {type(state[key]).__name__} "
                             f"({what})")
        missing = [k for k in inner if k not in state[key]]
        if missing:
            raise ValueError(f"the state's {key!r} entry has no {missing[0]!r} ({what})")
    for i, entry in enumerate(state["callbacks"]):
        if not isinstance(entry, Mapping) or not {"class", "state"} <= set(entry):
            raise ValueError(f"the state's callback entry {i} has no 'class' and 'state' "
                             f"({what})")


# ---- RNG state ------------------------------------------------------------------------------


def _get_rng_state() -> dict[str, Any]:
    return {"minitl": creation.default_generator().bit_generator.state,
            "numpy": np.random.get_state(legacy=False),
            "python": random.getstate()}


def _set_rng_state(state: Mapping[str, Any]) -> None:
    gen = creation.default_generator()
    saved = state["minitl"]
    if saved["bit_generator"] != type(gen.bit_generator).__name__:
        creation.manual_seed(0)  # replace the generator with a fresh PCG64 ...
        gen = creation.default_generator()
    gen.bit_generator.state = saved  # ... then set its exact state
    np.random.set_state(state["numpy"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))  # type: ignore[arg-type]
