"""SmolLM2-135M on the CPU: minitl with its 4-bit base (Q4_1 projections, Q8_0 embedding, the
dequantize-GEMM) against torch + transformers running the same GGUF dequantized to float32
(what transformers does with a GGUF), 2 threads each, timed in interleaved rounds.

    python -m benchmarks.bench_llama            # prompt 128, decode 32, LoRA batch 8 x 128
    python -m benchmarks.bench_llama --quick    # smoke run

Subjects (ratio = minitl time / torch time, below 1 means minitl is faster):
  prefill   the prompt pass of generation: T tokens through the model filling the KV cache,
            logits of the last position only (transformers: logits_to_keep=1)
  decode    one new token with the cache, averaged over N steps after a 64-token prompt
  lora step forward + backward + AdamW on a batch of 8 x 128 tokens, LoRA r=8 on q_proj and
            v_proj (peft's default for Llama), cross-entropy over every position; torch + peft
            train the same factors over the float32 model
  peak RSS  the process's maximum resident set after loading and running (a) generation of 32
            tokens, (b) one LoRA step and (c) one LoRA step with each decoder layer
            checkpointed and the loss taken 256 positions at a time (gradient_checkpointing_
            enable + causal_lm_loss; torch: gradient checkpointing, labels=), each in a fresh
            process: minitl's 4-bit base against minitl's float32 model (and torch's float32
            model for reference). In (b) the activations of 30 layers (about 2 GB) dwarf the
            weights, so the 4-bit base saves its 0.4 GB out of 2.7; (c) is where it shows
Every figure is printed with the CPU model and the load average it was measured under.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from . import common

THREADS = 2
TARGETS = ["q_proj", "v_proj"]


def _tag(info: dict[str, Any]) -> str:
    return f"[{info['cpu']}, load {os.getloadavg()[0]:.2f}]"


def _models(path: str) -> tuple[Any, Any, Any]:
    import torch
    from transformers import AutoModelForCausalLM

    from minitl.models.llama import LlamaForCausalLM

    torch.set_num_threads(THREADS)
    ours = LlamaForCausalLM.from_pretrained(path, quantized=True)
    theirs = AutoModelForCausalLM.from_pretrained(os.path.dirname(path),
                                                  gguf_file=os.path.basename(path),
                                                  dtype=torch.float32).eval()
    return ours, theirs, torch


def prefill_fns(ours: Any, theirs: Any, torch: Any, ids: np.ndarray
                ) -> dict[str, Callable[[], Any]]:
    import minitl as mt
    from minitl.models.llama import KVCache

    def minitl_prefill() -> Any:
        with mt.no_grad():
            h = ours.model(mt.tensor(ids), kv_cache=KVCache())
            return ours.lm_head(h[:, -1])

    t_ids = torch.tensor(ids)

    def torch_prefill() -> Any:
        with torch.no_grad():
            return theirs(t_ids, use_cache=True, logits_to_keep=1).logits

    return {"minitl": minitl_prefill, "torch": torch_prefill}


def decode_fns(ours: Any, theirs: Any, torch: Any, ids: np.ndarray, steps: int,
               spent: dict[str, list[float]]) -> dict[str, Callable[[], Any]]:
    """Each call fills a cache with the prompt, then takes `steps` greedy tokens one at a time;
    only those steps are timed (into `spent`), so the prompt's cost stays out."""
    import minitl as mt
    from minitl.models.llama import KVCache

    def minitl_decode() -> None:
        with mt.no_grad():
            cache = KVCache()
            h = ours.model(mt.tensor(ids), kv_cache=cache)
            nxt = ours.lm_head(h[:, -1]).numpy().argmax(-1)
            t0 = time.perf_counter()
            for _ in range(steps):
                h = ours.model(mt.tensor(nxt[:, None]), kv_cache=cache)
                nxt = ours.lm_head(h[:, -1]).numpy().argmax(-1)
            spent["minitl"].append((time.perf_counter() - t0) / steps)

    t_ids = torch.tensor(ids)

    def torch_decode() -> None:
        with torch.no_grad():
            out = theirs(t_ids, use_cache=True, logits_to_keep=1)
            past, nxt = out.past_key_values, out.logits[:, -1].argmax(-1)
            t0 = time.perf_counter()
            for _ in range(steps):
                out = theirs(nxt[:, None], past_key_values=past, use_cache=True,
                             logits_to_keep=1)
                past, nxt = out.past_key_values, out.logits[:, -1].argmax(-1)
            spent["torch"].append((time.perf_counter() - t0) / steps)

    return {"minitl": minitl_decode, "torch": torch_decode}


def lora_fns(path: str, ours: Any, theirs: Any, torch: Any, ids: np.ndarray
             ) -> dict[str, Callable[[], Any]]:
    import peft

    import minitl as mt
    import minitl.nn.functional as F
    from minitl import transfer as tl

    tl.apply_lora(ours, tl.LoRAConfig(r=8, alpha=16, target=tuple(TARGETS)))
    params = [p for p in ours.parameters() if p.requires_grad]
    opt = mt.optim.AdamW(params, lr=1e-4)
    v = ours.config.vocab_size

    def minitl_step() -> None:
        logits = ours(mt.tensor(ids[:, :-1]))
        loss = F.cross_entropy(logits.reshape(-1, v), mt.tensor(ids[:, 1:].reshape(-1)))
        opt.zero_grad()
        loss.backward()
        opt.step()

    model = peft.get_peft_model(theirs, peft.LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0,
                                                        target_modules=TARGETS))
    t_opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    t_in, t_lab = torch.tensor(ids[:, :-1]), torch.tensor(ids[:, 1:])

    def torch_step() -> None:
        logits = model(input_ids=t_in).logits
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, v), t_lab.reshape(-1))
        t_opt.zero_grad()
        loss.backward()
        t_opt.step()

    return {"minitl": minitl_step, "torch": torch_step}


# ---- peak resident memory, each case in a fresh process --------------------------------------

_RSS_CHILD = r"""
import json, os, resource, sys
import numpy as np
which, task, path, quick = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4] == "1"
ids = np.random.default_rng(0).integers(100, 40000, (8, 33 if quick else 129))
if which == "torch":
    import torch
    from transformers import AutoModelForCausalLM
    torch.set_num_threads(2)
    m = AutoModelForCausalLM.from_pretrained(os.path.dirname(path),
        gguf_file=os.path.basename(path), dtype=torch.float32)
    if task == "generate":
        with torch.no_grad():
            m.generate(torch.tensor(ids[:1, :16]), max_new_tokens=32, min_new_tokens=32,
                       do_sample=False)
    else:
        import peft
        if task == "lora_step_lean":
            m.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        m = peft.get_peft_model(m, peft.LoraConfig(r=8, lora_alpha=16,
                                                   target_modules=["q_proj", "v_proj"]))
        m.train()
        out = m(input_ids=torch.tensor(ids[:, :-1]), labels=torch.tensor(ids[:, :-1]))
        out.loss.backward()
else:
    import minitl as mt
    import minitl.nn.functional as F
    from minitl import transfer as tl
    from minitl.models.llama import LlamaForCausalLM
    lm = LlamaForCausalLM.from_pretrained(path, quantized=which == "minitl-4bit")
    if task == "generate":
        lm.generate(ids[:1, :16], 32, temperature=0.0)
    elif task == "lora_step_lean":  # each layer recomputed in backward, the loss in chunks
        tl.apply_lora(lm, tl.LoRAConfig(r=8, alpha=16, target=("q_proj", "v_proj")))
        lm.train()
        lm.gradient_checkpointing_enable()
        lm.causal_lm_loss(ids[:, :-1]).backward()
    else:
        tl.apply_lora(lm, tl.LoRAConfig(r=8, alpha=16, target=("q_proj", "v_proj")))
        lm.train()
        logits = lm(mt.tensor(ids[:, :-1]))
        v = logits.shape[-1]
        F.cross_entropy(logits.reshape(-1, v), mt.tensor(ids[:, 1:].reshape(-1))).backward()
# VmHWM, not ru_maxrss: Linux carries ru_maxrss across exec, so a child of a big parent would
# report the parent's size
hwm = [ln for ln in open("/proc/self/status") if ln.startswith("VmHWM:")]
kb = int(hwm[0].split()[1]) if hwm else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"maxrss_mb": kb / 1024}))
"""


def peak_rss(path: str, quick: bool) -> dict[str, dict[str, float]]:
    env = {**os.environ, "OMP_NUM_THREADS": str(THREADS),
           "PYTHONPATH": os.pathsep.join(filter(None, [os.getcwd(),
                                                       os.environ.get("PYTHONPATH")]))}
    out: dict[str, dict[str, float]] = {}
    for task in ("generate", "lora_step", "lora_step_lean"):
        for which in ("minitl-4bit", "minitl-float32", "torch"):
            proc = subprocess.run([sys.executable, "-c", _RSS_CHILD, which, task, path,
                                   "1" if quick else "0"], capture_output=True, text=True,
                                  env=env, check=False)
            if proc.returncode != 0:
                print(f"peak RSS {which} {task} failed:\n{proc.stderr[-2000:]}")
                continue
            line = proc.stdout.strip().splitlines()[-1]
            out.setdefault(task, {})[which] = json.loads(line)["maxrss_mb"]
    return out


def main() -> None:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--prompt", type=int, default=None, help="prefill tokens (default 128)")
    p.add_argument("--decode", type=int, default=None, help="decode steps (default 32)")
    p.add_argument("--skip-rss", action="store_true", help="leave out the peak RSS runs")
    args = p.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", str(THREADS))
    from minitl import assets

    path = str(assets.path("smollm2-135m"))
    t_prompt = args.prompt or (32 if args.quick else 128)
    steps = args.decode or (8 if args.quick else 32)
    seq = 32 if args.quick else 128
    rounds = args.rounds or (2 if args.quick else 4)
    calls = args.calls or (1 if args.quick else 2)
    info = common.machine_info()
    common.print_machine(info)
    ours, theirs, torch = _models(path)
    rng = np.random.default_rng(0)
    rows: list[common.Row] = []

    ids = rng.integers(100, 40000, (1, t_prompt))
    t = common.interleaved(prefill_fns(ours, theirs, torch, ids), rounds, calls)
    rows.append(common.Row("prefill", f"1 x {t_prompt} tokens", t["minitl"], t["torch"],
                           spread=t.spreads(),
                           extra={"tokens_per_s": {k: t_prompt / s for k, s in t.items()}}))
    print(f"prefill {t_prompt} tokens: minitl {t_prompt / t['minitl']:.1f} tok/s, torch "
          f"{t_prompt / t['torch']:.1f} tok/s, ratio (time) {t['minitl'] / t['torch']:.2f} "
          f"{_tag(info)}", flush=True)

    ids = rng.integers(100, 40000, (1, 64))
    spent: dict[str, list[float]] = {"minitl": [], "torch": []}
    common.interleaved(decode_fns(ours, theirs, torch, ids, steps, spent), rounds, 1)
    per = {k: statistics.median(v[1:] if len(v) > 1 else v) for k, v in spent.items()}
    rows.append(common.Row("decode (per token)", f"after 64, {steps} steps", per["minitl"],
                           per["torch"], extra={"tokens_per_s": {k: 1 / s for k, s in
                                                                 per.items()}},
                           spread=(common.spread_of(spent["minitl"][1:]),
                                   common.spread_of(spent["torch"][1:]))))
    print(f"decode: minitl {1 / per['minitl']:.1f} tok/s, torch {1 / per['torch']:.1f} tok/s, "
          f"ratio (time) {per['minitl'] / per['torch']:.2f} {_tag(info)}", flush=True)

    ids = rng.integers(100, 40000, (8, seq + 1))
    t = common.interleaved(lora_fns(path, ours, theirs, torch, ids), rounds=max(2, rounds - 1),
                           calls=1)
    rows.append(common.Row("lora step (q,v r=8)", f"8 x {seq} tokens", t["minitl"], t["torch"],
                           "peft", spread=t.spreads()))
    print(f"LoRA step 8 x {seq}: minitl {t['minitl']:.2f} s, torch + peft {t['torch']:.2f} s, "
          f"ratio {t['minitl'] / t['torch']:.2f} {_tag(info)}", flush=True)
    del ours, theirs

    if not args.skip_rss:
        rss = peak_rss(path, args.quick)
        for task, by in rss.items():
            if "minitl-4bit" in by and "minitl-float32" in by:
                ratio = by["minitl-4bit"] / by["minitl-float32"]
                rows.append(common.Row(f"peak RSS {task} (MB)", "4-bit vs float32",
                                       by["minitl-4bit"] / 1e3, by["minitl-float32"] / 1e3,
                                       "f32", extra={"mb": by}))
                print(f"peak RSS {task}: minitl 4-bit {by['minitl-4bit']:.0f} MB, minitl "
                      f"float32 {by['minitl-float32']:.0f} MB (ratio {ratio:.2f}), torch "
                      f"float32 {by.get('torch', float('nan')):.0f} MB {_tag(info)}",
                      flush=True)
    print("\nsummary (times in ms; peak RSS rows in GB):", _tag(info))
    common.print_rows(rows)
    if not args.no_save:
        common.save_rows("llama", rows, info, args)


if __name__ == "__main__":
    main()
