"""`minitl generate`: run a GGUF LLaMA-architecture model (SmolLM2-135M-Instruct by default)
on a prompt and stream the reply as it is generated.

    minitl generate --model smollm2-135m --prompt "Write a haiku about the sea."
    minitl generate --model model.gguf --prompt "Once upon a time" --raw --temperature 0.8

The prompt goes through the model's chat template (a user turn, then the assistant's turn
begins) unless --raw passes it as plain text; generation stops at the end-of-turn token or
after --max-new-tokens. --temperature 0 is greedy; otherwise --top-k / --top-p restrict the
draw and --seed makes it repeat. The base runs in its file's 4/8-bit blocks (--float32 loads
it dequantized). Nothing is fetched after the first run (the asset is cached).
"""

from __future__ import annotations

import argparse
import sys
import time

from minitl.cli.args import (
    UsageError,
    float_range,
    nonnegative_float,
    nonnegative_int,
    positive_int,
    user_errors,
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="smollm2-135m",
                   help="an asset name (minitl.assets), a .gguf file or a folder holding one")
    p.add_argument("--prompt", required=True, help="what to ask or the text to continue")
    p.add_argument("--system", default=None,
                   help="a system turn for the chat template (unset: the template's own)")
    p.add_argument("--raw", action="store_true",
                   help="feed the prompt as plain text, without the chat template")
    p.add_argument("--max-new-tokens", type=positive_int, default=256)
    p.add_argument("--temperature", type=nonnegative_float, default=0.7,
                   help="0 picks the most likely token every time (greedy)")
    p.add_argument("--top-k", type=positive_int, default=50)
    p.add_argument("--top-p", type=float_range(0.0, 1.0, lo_open=True), default=0.9)
    p.add_argument("--seed", type=nonnegative_int, default=0)
    p.add_argument("--float32", action="store_true",
                   help="dequantize the weights to float32 instead of keeping the blocks")


def _prompt_ids(tok: object, args: argparse.Namespace) -> list[int]:
    if args.raw:
        return tok.encode(args.prompt)  # type: ignore[attr-defined]
    turns = [] if args.system is None else [{"role": "system", "content": args.system}]
    turns.append({"role": "user", "content": args.prompt})
    try:
        return tok.apply_chat_template(turns, add_generation_prompt=True)  # type: ignore
    except NotImplementedError as e:
        raise UsageError(f"{e}; pass --raw to use the prompt as plain text") from None


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from minitl.creation import manual_seed
    from minitl.data.tokenizers import BPETokenizer
    from minitl.io.gguf import resolve_gguf
    from minitl.models.llama import LlamaForCausalLM

    with user_errors(FileNotFoundError, IsADirectoryError, ValueError, KeyError, usage=False):
        path = resolve_gguf(args.model)
        tok = BPETokenizer.from_pretrained(path)
        lm = LlamaForCausalLM.from_pretrained(path, quantized=not args.float32)
    ids = _prompt_ids(tok, args)
    limit = lm.config.max_position_embeddings
    if len(ids) + args.max_new_tokens > limit:
        raise UsageError(f"the prompt ({len(ids)} tokens) plus --max-new-tokens "
                         f"{args.max_new_tokens} exceed the model's context of {limit} tokens")
    if len(ids) == 0:
        raise UsageError("the prompt is empty")
    manual_seed(args.seed)
    new: list[int] = []
    shown = 0
    t0 = time.perf_counter()
    for token in lm.stream(np.array([ids]), args.max_new_tokens, args.temperature, args.top_k,
                           args.top_p, eos_token_id=tok.eos_token_id):
        if tok.eos_token_id is not None and int(token[0]) == tok.eos_token_id:
            break
        new.append(int(token[0]))
        text = tok.decode(new, skip_special_tokens=True)
        if text.endswith("\ufffd"):  # a character cut between tokens: wait for its rest
            continue
        sys.stdout.write(text[shown:])
        sys.stdout.flush()
        shown = len(text)
    text = tok.decode(new, skip_special_tokens=True)
    sys.stdout.write(text[shown:] + "\n")
    seconds = time.perf_counter() - t0
    print(f"[{len(new)} tokens in {seconds:.1f} s, {len(new) / max(seconds, 1e-9):.1f} tokens/s "
          f"including the {len(ids)}-token prompt]", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    from minitl.cli import run_command

    parser = argparse.ArgumentParser(prog="minitl generate", description=__doc__)
    add_arguments(parser)
    return run_command("minitl generate", run, parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
