"""End to end: small networks built from minitl.nn learn tasks generated in the test.

Each test trains from a fixed seed in a few seconds and must reach >= 95% training
accuracy; they exercise Module, the layers, the losses, autograd and the optimizers
together, the way a user does.
"""

from __future__ import annotations

import time

import numpy as np

import minitl as mt
from minitl import nn
from minitl.optim import SGD, Adam, AdamW


def spirals(n_per_class: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two interleaved spirals (1.5 turns each) with a little noise."""
    rng = np.random.default_rng(seed)
    t = np.sqrt(rng.random(n_per_class)) * 3 * np.pi
    xs, ys = [], []
    for label, phase in ((0, 0.0), (1, np.pi)):
        pts = np.stack([t * np.cos(t + phase), t * np.sin(t + phase)], axis=1) / (3 * np.pi)
        xs.append(pts + rng.normal(0, 0.02, pts.shape))
        ys.append(np.full(n_per_class, label))
    return np.concatenate(xs).astype(np.float32), np.concatenate(ys).astype(np.int64)


def bars(n_per_class: int, size: int = 8, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(N, 1, size, size) images with one horizontal (class 0) or vertical (class 1) bar of
    random position, length and brightness on Gaussian noise."""
    rng = np.random.default_rng(seed)
    n = 2 * n_per_class
    imgs = rng.normal(0, 0.3, (n, 1, size, size)).astype(np.float32)
    labels = np.repeat([0, 1], n_per_class)
    for i, label in enumerate(labels):
        pos, start = rng.integers(0, size), rng.integers(0, size // 2)
        length = rng.integers(size // 2, size - start + 1)
        value = rng.uniform(0.8, 1.5)
        if label == 0:
            imgs[i, 0, pos, start:start + length] += value
        else:
            imgs[i, 0, start:start + length, pos] += value
    perm = rng.permutation(n)
    return imgs[perm], labels[perm].astype(np.int64)


def accuracy(model: nn.Module, x: np.ndarray, y: np.ndarray) -> float:
    model.eval()
    with mt.no_grad():
        pred = model(mt.tensor(x)).numpy().argmax(axis=1)
    model.train()
    return float((pred == y).mean())


def test_mlp_learns_two_spirals():
    start = time.perf_counter()
    x, y = spirals(150)
    model = nn.Sequential(nn.Linear(2, 64), nn.Tanh(), nn.Linear(64, 64), nn.ReLU(),
                          nn.Linear(64, 2))
    opt = Adam(model.parameters(), lr=0.02)
    loss_fn = nn.CrossEntropyLoss()
    xt, yt = mt.tensor(x), mt.tensor(y)
    first = None
    for _ in range(600):
        loss = loss_fn(model(xt), yt)
        first = loss.item() if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
        if loss.item() < 0.02:
            break
    assert loss.item() < first
    assert accuracy(model, x, y) >= 0.95
    assert time.perf_counter() - start < 20


def test_cnn_learns_bars():
    start = time.perf_counter()
    x, y = bars(96)
    model = nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 2))
    opt = AdamW(model.parameters(), lr=0.01, weight_decay=1e-4)
    loss_fn = nn.CrossEntropyLoss()
    rng = np.random.default_rng(0)
    for _ in range(15):
        order = rng.permutation(len(x))
        for i in range(0, len(x), 32):
            idx = order[i:i + 32]
            loss = loss_fn(model(mt.tensor(x[idx])), mt.tensor(y[idx]))
            opt.zero_grad()
            loss.backward()
            opt.step()
        if accuracy(model, x, y) >= 0.99:
            break
    # Evaluated in eval mode: the BatchNorm running statistics must be right too.
    assert accuracy(model, x, y) >= 0.95
    assert model[1].num_batches_tracked.item() > 0
    assert time.perf_counter() - start < 20


def test_regression_with_sgd_momentum_and_mse():
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (256, 3)).astype(np.float32)
    y = (np.sin(2 * x[:, :1]) + x[:, 1:2] * x[:, 2:3]).astype(np.float32)
    model = nn.Sequential(nn.Linear(3, 32), nn.GELU(), nn.Linear(32, 1))
    opt = SGD(model.parameters(), lr=0.1, momentum=0.9)
    loss_fn = nn.MSELoss()
    xt, yt = mt.tensor(x), mt.tensor(y)
    base = float(((y - y.mean()) ** 2).mean())
    for _ in range(300):
        loss = loss_fn(model(xt), yt)
        model.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.05 * base  # explains > 95% of the variance
