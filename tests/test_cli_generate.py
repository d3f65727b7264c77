"""`minitl generate` on a tiny model and tokenizer written into one GGUF here: streaming,
greedy repeatability, the chat template, and one-line errors with the documented exit
statuses."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
from test_llama import random_model, write_llama_gguf
from test_llama_tokenizer import tiny_gguf

from minitl.cli import main
from minitl.io.gguf import read_gguf
from minitl.models.llama import LlamaConfig


@pytest.fixture(scope="module")
def model_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("gen")
    tok_meta = read_gguf(tiny_gguf(tmp / "tok.gguf")).metadata
    extra = {k: (("ARRAY", ("STRING", v)) if isinstance(v, list) else
                 ("ARRAY", ("INT32", v.tolist())) if hasattr(v, "tolist") else v)
             for k, v in tok_meta.items() if k.startswith("tokenizer.")}
    n = len(tok_meta["tokenizer.ggml.tokens"])
    cfg = LlamaConfig.named("llama-tiny", vocab_size=n)
    return write_llama_gguf(tmp / "tiny.gguf", random_model(cfg), "Q8_0", "Q8_0", extra)


def test_greedy_reply_streams_and_repeats(model_file: Path, capsys: pytest.CaptureFixture[str]
                                          ) -> None:
    argv = ["generate", "--model", str(model_file), "--prompt", "the cat", "--temperature", "0",
            "--max-new-tokens", "6"]
    assert main(argv) == 0
    first = capsys.readouterr()
    assert "tokens in" in first.err and first.out.endswith("\n")
    assert main(argv) == 0
    assert capsys.readouterr().out == first.out
    assert main([*argv, "--raw", "--float32"]) == 0
    assert main(["generate", "--model", str(model_file), "--prompt", "hi", "--seed", "3",
                 "--max-new-tokens", "4", "--top-k", "5", "--top-p", "0.5"]) == 0


@pytest.mark.parametrize("args,code,says", [
    (["--prompt", "x", "--temperature", "-1"], 2, "--temperature"),
    (["--prompt", "x", "--top-p", "0"], 2, "--top-p"),
    (["--prompt", "x", "--max-new-tokens", "0"], 2, "--max-new-tokens"),
    (["--prompt", "x", "--max-new-tokens", "100000"], 2, "context of 256 tokens"),
    (["--prompt", "", "--raw"], 2, "the prompt is empty"),
])
def test_bad_values_are_one_line(model_file: Path, capsys: pytest.CaptureFixture[str],
                                 args: list[str], code: int, says: str) -> None:
    parse_error = says.startswith("--")  # argparse exits itself on a bad value
    with pytest.raises(SystemExit) if parse_error else contextlib.nullcontext():
        assert main(["generate", "--model", str(model_file), *args]) == code
    err = capsys.readouterr().err
    assert says in err


def test_missing_or_damaged_model_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                          ) -> None:
    assert main(["generate", "--model", str(tmp_path / "none.gguf"), "--prompt", "x"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "neither a minitl asset nor a GGUF file" in err
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF" + b"\x03\x00\x00\x00" + b"\xff" * 16)
    assert main(["generate", "--model", str(bad), "--prompt", "x"]) == 1
    assert "bad.gguf" in capsys.readouterr().err
