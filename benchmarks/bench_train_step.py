"""One full training step (forward, loss, backward, optimizer) of the same model in minitl and
in PyTorch: a 4-layer d=256 BERT-style encoder with its masked-LM head (bert-mini, AdamW),
resnet-mini (SGD with momentum) and a plain 3-conv + BatchNorm CNN (SGD with momentum).

    python -m benchmarks.bench_train_step              # all models, batch 16 x seq 128 / 64 / 128
    python -m benchmarks.bench_train_step --quick      # smoke run: small batches, 2 rounds
    python -m benchmarks.bench_train_step --model bert --rounds 7

The PyTorch models are re-implementations with the same shapes, parameter counts and
dropout sites (asserted), so both sides do the same FLOPs:
- BERT: word + position + segment embeddings, LayerNorm, dropout;
  `nn.TransformerEncoderLayer(norm_first=False, activation="gelu")` x 4 (its extra dropout
  between the FFN layers removed, as BERT has none there); dense + GELU + LayerNorm head;
  decoder tied to the word embeddings; cross-entropy on ~15% masked positions.
- ResNet: torchvision's BasicBlock layout with the minitl config's widths and depths.
- CNN: conv 3x3 (1 -> 16) / (16 -> 32, stride 2) / (32 -> 64, stride 2), each + BatchNorm + ReLU,
  global average pooling, linear 64 -> 10; the same layers in both libraries.

Napkin math (bert-mini, B=16, T=128, V=30522): forward GEMMs 2 N (12 L D^2 + D^2 + D V)
with N = B T tokens, plus attention 4 B L T^2 D; backward twice the forward: ~140 GFLOP a
step, two thirds of it in the tied MLM decoder (N x D x V).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from . import common

# ---- BERT ------------------------------------------------------------------------------


def bert_flops(cfg: Any, batch: int, seq: int) -> float:
    """GEMM flops of one training step (forward + backward = 3x forward)."""
    n, d, f, v, layers = batch * seq, cfg.hidden_size, cfg.intermediate_size, \
        cfg.vocab_size, cfg.num_hidden_layers
    per_layer = 2 * n * (4 * d * d + 2 * d * f) + 4 * batch * seq * seq * d
    head = 2 * n * (d * d + d * v)
    return 3.0 * (layers * per_layer + head)


def bert_data(cfg: Any, batch: int, seq: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, cfg.vocab_size, (batch, seq))
    labels = np.where(rng.random((batch, seq)) < 0.15, ids, -100)  # MLM: ~15% positions
    return ids, labels


def bert_minitl(cfg: Any, ids: np.ndarray, labels: np.ndarray) -> tuple[Callable[[], Any], int]:
    import minitl as mt
    import minitl.nn.functional as F
    from minitl.models import BertForMaskedLM

    mt.manual_seed(0)
    model = BertForMaskedLM(cfg)
    model.train()
    opt = mt.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.01)
    ids_t, labels_t = mt.tensor(ids), mt.tensor(labels.reshape(-1))

    def step() -> float:
        logits = model(ids_t)  # (B, T, V)
        loss = F.cross_entropy(logits.reshape(-1, cfg.vocab_size), labels_t)
        opt.zero_grad()
        loss.backward()
        opt.step()
        return float(loss.item())

    return step, sum(p.numel() for p in model.parameters())


def bert_torch(cfg: Any, ids: np.ndarray, labels: np.ndarray) -> tuple[Callable[[], Any], int]:
    import torch
    from torch import nn

    torch.manual_seed(0)
    d, eps, p = cfg.hidden_size, cfg.layer_norm_eps, cfg.hidden_dropout_prob

    class TorchBert(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.word = nn.Embedding(cfg.vocab_size, d, padding_idx=cfg.pad_token_id)
            self.position = nn.Embedding(cfg.max_position_embeddings, d)
            self.segment = nn.Embedding(cfg.type_vocab_size, d)
            self.ln = nn.LayerNorm(d, eps=eps)
            self.drop = nn.Dropout(p)
            layers = []
            for _ in range(cfg.num_hidden_layers):
                layer = nn.TransformerEncoderLayer(
                    d, cfg.num_attention_heads, cfg.intermediate_size, dropout=p,
                    activation="gelu", layer_norm_eps=eps, batch_first=True, norm_first=False)
                layer.self_attn.dropout = cfg.attention_probs_dropout_prob
                layer.dropout = nn.Identity()  # type: ignore[assignment]  # BERT: no FFN dropout
                layers.append(layer)
            self.layers = nn.ModuleList(layers)
            self.head = nn.Linear(d, d)
            self.head_ln = nn.LayerNorm(d, eps=eps)
            self.bias = nn.Parameter(torch.zeros(cfg.vocab_size))

        def forward(self, x: Any) -> Any:
            t = x.shape[1]
            h = (self.word(x) + self.segment(torch.zeros_like(x))
                 + self.position(torch.arange(t)[None]))
            h = self.drop(self.ln(h))
            for layer in self.layers:
                h = layer(h)
            h = self.head_ln(nn.functional.gelu(self.head(h)))
            return h @ self.word.weight.T + self.bias  # tied decoder

    model = TorchBert()
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.01)
    ids_t, labels_t = torch.from_numpy(ids), torch.from_numpy(labels.reshape(-1))

    def step() -> float:
        logits = model(ids_t)
        loss = nn.functional.cross_entropy(logits.reshape(-1, cfg.vocab_size), labels_t)
        opt.zero_grad()
        loss.backward()
        opt.step()
        return float(loss.item())

    return step, sum(p.numel() for p in model.parameters())


# ---- ResNet ----------------------------------------------------------------------------


def resnet_flops(cfg: Any, batch: int, hw: int) -> float:
    """Convolution + fc flops of one training step (3x forward)."""
    total, size, cin = 0.0, hw, cfg.in_channels
    total += 2 * batch * size * size * cin * cfg.widths[0] * 9  # stem
    cin = cfg.widths[0]
    for i, (width, depth) in enumerate(zip(cfg.widths, cfg.depths)):
        for j in range(depth):
            stride = 2 if i > 0 and j == 0 else 1
            size = -(-size // stride)
            total += 2 * batch * size * size * (cin * width * 9 + width * width * 9)
            if stride != 1 or cin != width:
                total += 2 * batch * size * size * cin * width
            cin = width
    total += 2 * batch * cin * cfg.num_classes
    return 3.0 * total


def resnet_data(cfg: Any, batch: int, hw: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, cfg.in_channels, hw, hw)).astype(np.float32)
    return x, rng.integers(0, cfg.num_classes, batch)


def resnet_minitl(cfg: Any, x: np.ndarray, y: np.ndarray) -> tuple[Callable[[], Any], int]:
    import minitl as mt
    import minitl.nn.functional as F
    from minitl.models import ResNet

    mt.manual_seed(0)
    model = ResNet(cfg)
    model.train()
    opt = mt.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    xt, yt = mt.tensor(x), mt.tensor(y)

    def step() -> float:
        loss = F.cross_entropy(model(xt), yt)
        opt.zero_grad()
        loss.backward()
        opt.step()
        return float(loss.item())

    return step, sum(p.numel() for p in model.parameters())


def resnet_torch(cfg: Any, x: np.ndarray, y: np.ndarray) -> tuple[Callable[[], Any], int]:
    import torch
    from torch import nn

    torch.manual_seed(0)

    class Block(nn.Module):
        def __init__(self, cin: int, cout: int, stride: int) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(cout)
            self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(cout)
            self.down = None
            if stride != 1 or cin != cout:
                self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                          nn.BatchNorm2d(cout))

        def forward(self, h: Any) -> Any:
            out = torch.relu(self.bn1(self.conv1(h)))
            out = self.bn2(self.conv2(out))
            return torch.relu(out + (h if self.down is None else self.down(h)))

    layers: list[nn.Module] = [nn.Conv2d(cfg.in_channels, cfg.widths[0], 3, 1, 1, bias=False),
                               nn.BatchNorm2d(cfg.widths[0]), nn.ReLU()]
    cin = cfg.widths[0]
    for i, (width, depth) in enumerate(zip(cfg.widths, cfg.depths)):
        for j in range(depth):
            layers.append(Block(cin, width, 2 if i > 0 and j == 0 else 1))
            cin = width
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, cfg.num_classes)]
    model = nn.Sequential(*layers)
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)

    def step() -> float:
        loss = nn.functional.cross_entropy(model(xt), yt)
        opt.zero_grad()
        loss.backward()
        opt.step()
        return float(loss.item())

    return step, sum(p.numel() for p in model.parameters())


# ---- 3-conv + BatchNorm CNN ------------------------------------------------------------

CNN_LAYERS = ((1, 16, 1), (16, 32, 2), (32, 64, 2))  # (in, out, stride), 3x3, padding 1


def cnn_flops(batch: int, hw: int) -> float:
    """Convolution + fc flops of one training step (3x forward)."""
    total, size = 0.0, hw
    for cin, cout, stride in CNN_LAYERS:
        size = -(-size // stride)
        total += 2 * batch * size * size * cin * cout * 9
    return 3.0 * (total + 2 * batch * CNN_LAYERS[-1][1] * 10)


def cnn_step(lib: str, x: np.ndarray, y: np.ndarray) -> tuple[Callable[[], Any], int]:
    """The CNN and its SGD step in `lib` ("minitl" or "torch"): the same modules by name."""
    xt: Any
    yt: Any
    opt_cls: Any
    loss_fn: Any
    if lib == "minitl":
        import minitl as mt
        import minitl.nn.functional as F
        from minitl import nn

        mt.manual_seed(0)
        xt, yt, opt_cls, loss_fn = mt.tensor(x), mt.tensor(y), mt.optim.SGD, F.cross_entropy
    else:
        import torch
        from torch import nn  # type: ignore[no-redef]

        torch.manual_seed(0)
        xt, yt = torch.from_numpy(x), torch.from_numpy(y)
        opt_cls, loss_fn = torch.optim.SGD, nn.functional.cross_entropy
    layers: list[Any] = []
    for cin, cout, stride in CNN_LAYERS:
        layers += [nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
                   nn.BatchNorm2d(cout), nn.ReLU()]
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(CNN_LAYERS[-1][1], 10)]
    model = nn.Sequential(*layers)
    model.train()
    opt = opt_cls(model.parameters(), lr=0.05, momentum=0.9)

    def step() -> float:
        loss = loss_fn(model(xt), yt)
        opt.zero_grad()
        loss.backward()
        opt.step()
        return float(loss.item())

    return step, sum(p.numel() for p in model.parameters())


# ---- driver ----------------------------------------------------------------------------


def bench(name: str, shape: str, make: Callable[[str], tuple[Callable[[], Any], int]],
          flop: float, rounds: int, calls: int) -> common.Row:
    mine, n_mine = make("minitl")
    candidates = {"minitl": mine}
    extra: dict[str, Any] = {"params": n_mine}
    try:
        theirs, n_theirs = make("torch")
    except ImportError:
        theirs = None
    if theirs is not None:
        if n_theirs != n_mine:
            raise AssertionError(f"{name}: torch model has {n_theirs} parameters, minitl "
                                 f"{n_mine}: the two would not do the same work")
        candidates["torch"] = theirs
    t0 = time.perf_counter()
    t = common.interleaved(candidates, rounds=rounds, calls=calls)
    extra["wall_s"] = round(time.perf_counter() - t0, 1)
    return common.Row(f"step {name}", shape, t["minitl"], t.get("torch", float("nan")),
                      "torch", flop / 1e9, extra, spread=t.spreads())


def main(argv: Sequence[str] | None = None) -> None:
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--model", choices=["bert", "resnet", "cnn", "all"], default="all")
    p.add_argument("--batch", type=int, default=None, help="override the batch size")
    p.add_argument("--seq", type=int, default=None, help="override the BERT sequence length")
    args = p.parse_args(argv)
    from minitl.models import BertConfig, ResNetConfig

    info = common.machine_info()
    common.print_machine(info)
    rounds = args.rounds or (2 if args.quick else 5)
    calls = args.calls or 1
    rows = []
    if args.model in ("bert", "all"):
        cfg = BertConfig.named("bert-mini")
        b, t = args.batch or (4 if args.quick else 16), args.seq or (64 if args.quick else 128)
        ids, labels = bert_data(cfg, b, t)

        def make_bert(lib: str) -> tuple[Callable[[], Any], int]:
            return (bert_minitl if lib == "minitl" else bert_torch)(cfg, ids, labels)

        rows.append(bench("bert-mini AdamW", f"B={b} T={t} V={cfg.vocab_size}",
                          make_bert, bert_flops(cfg, b, t), rounds, calls))
        common.print_rows(rows[-1:])
    if args.model in ("resnet", "all"):
        cfg_r = ResNetConfig.named("resnet-mini")
        b = args.batch or (16 if args.quick else 64)
        x, y = resnet_data(cfg_r, b, 28)

        def make_resnet(lib: str) -> tuple[Callable[[], Any], int]:
            return (resnet_minitl if lib == "minitl" else resnet_torch)(cfg_r, x, y)

        rows.append(bench("resnet-mini SGD", f"N={b} 1x28x28", make_resnet,
                          resnet_flops(cfg_r, b, 28), rounds, calls))
        common.print_rows(rows[-1:])
    if args.model in ("cnn", "all"):
        b = args.batch or (32 if args.quick else 128)
        x, y = resnet_data(ResNetConfig.named("resnet-mini"), b, 28, seed=1)

        def make_cnn(lib: str) -> tuple[Callable[[], Any], int]:
            return cnn_step(lib, x, y)

        rows.append(bench("3-conv+BN CNN SGD", f"N={b} 1x28x28", make_cnn, cnn_flops(b, 28),
                          rounds, calls))
        common.print_rows(rows[-1:])
    print("summary (ratio = minitl time / torch time; below 1 means minitl is faster):")
    common.print_rows(rows)
    if not args.no_save:
        common.save_rows("train_step", rows, info, args)


if __name__ == "__main__":
    main()
