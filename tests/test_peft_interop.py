"""LoRA adapters in PEFT layout (minitl.io.peft) and `minitl export`: the minitl round trip,
bad adapter directories, and, where peft and transformers are installed, the same outputs
(1e-4) from minitl and from PEFT / transformers on the same adapter, both ways, and from the
merged checkpoint loaded by transformers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import minitl as mt
from minitl import transfer as tl
from minitl.cli import main
from minitl.io.peft import ADAPTER_CONFIG, load_peft_adapter, read_peft_config, save_peft_adapter
from minitl.models import BertConfig
from minitl.models.bert import BertForSequenceClassification

CFG = {"vocab_size": 97, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
           "intermediate_size": 64, "max_position_embeddings": 40, "hidden_dropout_prob": 0.0,
           "attention_probs_dropout_prob": 0.0}
IDS = np.random.default_rng(0).integers(1, 97, size=(3, 11))
MASK = np.ones((3, 11), np.int64)
MASK[1, 7:] = 0


def logits(model: mt.nn.Module) -> np.ndarray:
    model.eval()
    with mt.no_grad():
        return model(mt.tensor(IDS), attention_mask=mt.tensor(MASK)).numpy()


def randomise_lora(model: mt.nn.Module, seed: int = 1) -> None:
    """B starts at zero (an identity adapter); give every factor values so a wrong name,
    transpose or scale shows in the outputs."""
    rng = np.random.default_rng(seed)
    with mt.no_grad():
        for name, p in model.named_parameters():
            if ".lora_" in name or name.startswith("classifier."):
                p.data[...] = rng.normal(0, 0.3, p.shape).astype(p.data.dtype)


@pytest.fixture
def base_dir(tmp_path: Path) -> Path:
    mt.manual_seed(0)
    BertForSequenceClassification(BertConfig(**CFG), num_labels=3).save_pretrained(
        tmp_path / "base")
    return tmp_path / "base"


def lora_model(base_dir: Path) -> BertForSequenceClassification:
    model = BertForSequenceClassification.from_pretrained(base_dir, num_labels=3)
    tl.apply_lora(model, tl.LoRAConfig(r=4, alpha=8, target=("query", "value"),
                                       modules_to_save=("classifier",)))
    randomise_lora(model)
    return model


# ---- minitl <-> minitl ----------------------------------------------------------------------

def test_save_then_load_gives_the_same_model(base_dir: Path, tmp_path: Path) -> None:
    model = lora_model(base_dir)
    want = logits(model)
    save_peft_adapter(model, tmp_path / "adapter")
    config = json.loads((tmp_path / "adapter" / ADAPTER_CONFIG).read_text())
    assert config["peft_type"] == "LORA" and config["task_type"] == "SEQ_CLS"
    assert (config["r"], config["lora_alpha"]) == (4, 8)
    assert config["target_modules"] == ["query", "value"]
    assert config["modules_to_save"] == ["classifier"]
    keys = set(mt.load(tmp_path / "adapter" / "adapter_model.safetensors"))
    assert "base_model.model.bert.encoder.layer.1.attention.self.value.lora_B.weight" in keys
    assert "base_model.model.classifier.weight" in keys and len(keys) == 2 * 2 * 2 + 2

    fresh = BertForSequenceClassification.from_pretrained(base_dir, num_labels=3)
    assert not np.allclose(logits(fresh), want)
    load_peft_adapter(fresh, tmp_path / "adapter")
    np.testing.assert_array_equal(logits(fresh), want)
    assert {n for n, p in fresh.named_parameters() if p.requires_grad} == \
        {n for n, p in model.named_parameters() if p.requires_grad}


def test_full_names_when_suffixes_would_select_more(base_dir: Path, tmp_path: Path) -> None:
    model = BertForSequenceClassification.from_pretrained(base_dir, num_labels=3)
    tl.apply_lora(model, tl.LoRAConfig(r=2, target=("bert.encoder.layer.0.attention.self.query",)))
    save_peft_adapter(model, tmp_path / "a")
    assert read_peft_config(tmp_path / "a")["target_modules"] == \
        ["bert.encoder.layer.0.attention.self.query"]


@pytest.mark.parametrize("field, value", [("use_dora", True), ("use_rslora", True),
                                          ("rank_pattern", {"query": 8}), ("bias", "all"),
                                          ("peft_type", "IA3")])
def test_unsupported_options_are_refused_by_name(base_dir: Path, tmp_path: Path, field: str,
                                                 value: object) -> None:
    save_peft_adapter(lora_model(base_dir), tmp_path / "a")
    path = tmp_path / "a" / ADAPTER_CONFIG
    config = json.loads(path.read_text())
    config[field] = value
    path.write_text(json.dumps(config))
    with pytest.raises(ValueError, match=field):
        load_peft_adapter(BertForSequenceClassification.from_pretrained(base_dir, num_labels=3),
                          tmp_path / "a")


def test_bad_directories_name_the_problem(base_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="adapter_config.json"):
        read_peft_config(tmp_path)
    save_peft_adapter(lora_model(base_dir), tmp_path / "a")
    # an adapter with a 3-label head does not fit a 5-label model
    with pytest.raises((ValueError, RuntimeError), match="classifier"):
        load_peft_adapter(BertForSequenceClassification.from_pretrained(base_dir, num_labels=5),
                          tmp_path / "a")
    (tmp_path / "a" / ADAPTER_CONFIG).write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        read_peft_config(tmp_path / "a")
    with pytest.raises(ValueError, match="no LoRA adapter"):
        save_peft_adapter(BertForSequenceClassification(BertConfig(**CFG)), tmp_path / "b")


def test_export_merge_gives_a_plain_checkpoint_with_the_same_outputs(base_dir: Path,
                                                                     tmp_path: Path) -> None:
    model = lora_model(base_dir)
    want = logits(model)
    save_peft_adapter(model, tmp_path / "adapter")
    assert main(["export", "--backbone", str(base_dir), "--adapter", str(tmp_path / "adapter"),
                 "--merge", "--out", str(tmp_path / "merged")]) == 0
    merged = BertForSequenceClassification.from_pretrained(tmp_path / "merged", num_labels=3)
    assert not any("lora" in k for k in mt.load(tmp_path / "merged" / "model.safetensors"))
    np.testing.assert_allclose(logits(merged), want, rtol=1e-5, atol=1e-5)
    # without --merge: the adapter again, checked and rewritten
    assert main(["export", "--backbone", str(base_dir), "--adapter", str(tmp_path / "adapter"),
                 "--out", str(tmp_path / "again")]) == 0
    assert read_peft_config(tmp_path / "again")["target_modules"] == ["query", "value"]


def test_export_reports_a_bad_adapter(base_dir: Path, tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["export", "--backbone", str(base_dir), "--adapter", str(tmp_path),
                 "--merge", "--out", str(tmp_path / "m")]) == 1
    assert "adapter_config.json is missing" in capsys.readouterr().err


# ---- minitl <-> PEFT / transformers ---------------------------------------------------------

def _hf(base_dir: Path):  # type: ignore[no-untyped-def]
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("peft")
    model = transformers.BertForSequenceClassification.from_pretrained(base_dir)
    return model.eval()


def _torch_logits(model) -> np.ndarray:  # type: ignore[no-untyped-def]
    import torch

    with torch.no_grad():
        out = model(input_ids=torch.tensor(IDS), attention_mask=torch.tensor(MASK))
    return out.logits.numpy()


def test_minitl_adapter_runs_in_peft(base_dir: Path, tmp_path: Path) -> None:
    hf = _hf(base_dir)
    from peft import PeftModel

    model = lora_model(base_dir)
    save_peft_adapter(model, tmp_path / "adapter")
    peft_model = PeftModel.from_pretrained(hf, tmp_path / "adapter").eval()
    np.testing.assert_allclose(_torch_logits(peft_model), logits(model), rtol=1e-4, atol=1e-4)


def test_peft_adapter_runs_in_minitl(base_dir: Path, tmp_path: Path) -> None:
    hf = _hf(base_dir)
    import torch
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    peft_model = get_peft_model(hf, LoraConfig(r=4, lora_alpha=8, target_modules=["query",
                                               "key", "dense"], init_lora_weights=False,
                                               modules_to_save=["classifier"],
                                               task_type="SEQ_CLS")).eval()
    peft_model.save_pretrained(tmp_path / "from_peft")
    model = BertForSequenceClassification.from_pretrained(base_dir, num_labels=3)
    load_peft_adapter(model, tmp_path / "from_peft")
    np.testing.assert_allclose(logits(model), _torch_logits(peft_model), rtol=1e-4, atol=1e-4)


def test_merged_export_loads_in_transformers(base_dir: Path, tmp_path: Path) -> None:
    _hf(base_dir)
    import transformers

    model = lora_model(base_dir)
    save_peft_adapter(model, tmp_path / "adapter")
    assert main(["export", "--backbone", str(base_dir), "--adapter", str(tmp_path / "adapter"),
                 "--merge", "--out", str(tmp_path / "merged")]) == 0
    hf = transformers.BertForSequenceClassification.from_pretrained(tmp_path / "merged").eval()
    np.testing.assert_allclose(_torch_logits(hf), logits(model), rtol=1e-4, atol=1e-4)
