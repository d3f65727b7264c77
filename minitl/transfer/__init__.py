"""minitl.transfer: every common way of re-using a pretrained network.

    from minitl import transfer as tl
    tl.freeze(model, except_=("classifier.*",))            # glob patterns on parameter names
    tl.count_parameters(model)                              # (trainable, total)
    groups = tl.layerwise_lr_groups(model, lr=1e-3, decay=0.8)
    unfreezer = tl.GradualUnfreezing(model, tl.bert_unfreezing_stages(model))
    tl.apply_lora(model, tl.LoRAConfig(r=8, alpha=16, target=("*.query", "*.value")))
    tl.apply_adapters(model, bottleneck=64)                 # Houlsby / Pfeiffer adapters
    tl.apply_prompt_tuning(model, n_tokens=20)              # soft prompt
    loss = loss + tl.EWC(model, source_batches, lam=100.0).penalty()
    loader = tl.ReplayBuffer(source_data, ratio=0.1).wrap(target_loader)
    ens = tl.AdapterEnsemble(lora_model, [state0, state1, state2])  # k adapters, one base
    sd = tl.model_soup([m.state_dict() for m in fine_tuned])  # mean weights

Files: freeze (freezing, heads, cached features), schedules (gradual unfreezing,
layer-wise lr), lora, adapters, prompt, ensemble (logit and adapter ensembles, model
soups), ewc (EWC, L2-SP), replay, ledger (forgetting ledger), multitask. Early stopping with
restore-best is `minitl.train.EarlyStopping`.
"""

from minitl.transfer.adapters import Adapter, adapter_parameters, apply_adapters, remove_adapters
from minitl.transfer.ensemble import AdapterEnsemble, LogitEnsemble, model_soup
from minitl.transfer.ewc import EWC, L2SP
from minitl.transfer.freeze import (
                                    FeatureCache,
                                    FeatureSet,
                                    count_parameters,
                                    default_feature_cache,
                                    extract_features,
                                    freeze,
                                    reinit_head,
                                    replace_head,
                                    trainable_parameters,
                                    unfreeze,
)
from minitl.transfer.ledger import ForgettingLedger
from minitl.transfer.lora import (
                                    LoRAConfig,
                                    LoRAConv2d,
                                    LoRALayer,
                                    LoRALinear,
                                    LoRAQuantLinear,
                                    adapter_state_dict,
                                    apply_lora,
                                    load_adapter_state_dict,
                                    lora_parameters,
                                    merge_and_unload,
                                    merge_lora,
                                    set_adapter,
                                    unmerge_lora,
)
from minitl.transfer.multitask import (
                                    MultiTaskLoader,
                                    MultiTaskModel,
                                    TaskSampler,
                                    task_probabilities,
)
from minitl.transfer.prompt import SoftPrompt, apply_prompt_tuning, remove_prompt_tuning
from minitl.transfer.replay import ReplayBuffer, ReplayLoader
from minitl.transfer.schedules import (
                                    GradualUnfreezing,
                                    bert_unfreezing_stages,
                                    layerwise_lr_groups,
                                    slanted_triangular,
                                    warmup_cosine,
)

__all__ = [
    "EWC", "L2SP", "Adapter", "AdapterEnsemble", "FeatureCache", "FeatureSet",
    "ForgettingLedger",
    "GradualUnfreezing", "LoRAConfig", "LoRAConv2d", "LoRALayer", "LoRALinear",
    "LoRAQuantLinear", "LogitEnsemble", "MultiTaskLoader", "MultiTaskModel", "ReplayBuffer",
    "ReplayLoader", "SoftPrompt", "TaskSampler", "adapter_parameters", "adapter_state_dict",
    "apply_adapters", "apply_lora", "apply_prompt_tuning", "bert_unfreezing_stages",
    "count_parameters", "default_feature_cache", "extract_features", "freeze",
    "layerwise_lr_groups", "load_adapter_state_dict", "lora_parameters", "merge_and_unload",
    "merge_lora", "model_soup", "reinit_head", "remove_adapters", "remove_prompt_tuning",
    "replace_head",
    "set_adapter", "slanted_triangular", "task_probabilities",
    "trainable_parameters", "unfreeze", "unmerge_lora",
    "warmup_cosine",
]
