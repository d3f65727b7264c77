"""Training: the Trainer loop, callbacks (early stopping, checkpoints), metrics,
progress display / logging, and checks of output paths before a run."""

from minitl.train.callbacks import Callback, Checkpoint, EarlyStopping, LambdaCallback
from minitl.train.checkpoint import load_state, model_state_dict, save_state
from minitl.train.metrics import (
                                  Accuracy,
                                  MacroF1,
                                  Metric,
                                  Perplexity,
                                  accuracy,
                                  confusion_matrix,
                                  get_metric,
                                  macro_f1,
                                  perplexity,
)
from minitl.train.paths import OutputPathError, check_output_dir, check_output_file
from minitl.train.progress import (
    FitResult,
    MetricsLog,
    ProgressDisplay,
    plot_loss,
    read_jsonl,
)
from minitl.train.trainer import NonFiniteLossError, Trainer

__all__ = [
    "Accuracy", "Callback", "Checkpoint", "EarlyStopping", "FitResult", "LambdaCallback",
    "MacroF1", "Metric", "MetricsLog", "NonFiniteLossError", "OutputPathError", "Perplexity",
    "ProgressDisplay", "Trainer", "accuracy", "check_output_dir", "check_output_file",
    "confusion_matrix", "get_metric", "load_state", "macro_f1", "model_state_dict",
    "perplexity", "plot_loss", "read_jsonl", "save_state",
]
