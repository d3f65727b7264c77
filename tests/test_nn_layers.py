"""Every layer against its PyTorch twin: same weights (copied with load_state_dict from
the torch module's state dict as numpy arrays), same input, then the outputs, the
input gradients and every parameter gradient must agree. Also init statistics."""

from __future__ import annotations

import math

import numpy as np
import pytest

import minitl as mt
from minitl import nn
from tests.helpers import requires_torch, torch

pytestmark = requires_torch


def copy_weights(ours: nn.Module, theirs) -> None:
    ours.load_state_dict({k: v.detach().numpy() for k, v in theirs.state_dict().items()})


def _outs(o):
    return [x for x in (o if isinstance(o, tuple) else (o,)) if x is not None]


def compare(ours: nn.Module, theirs, arrays, call=None, atol=1e-5, rtol=1e-4, seed=0,
            grad=True):
    """Run `call(module, *inputs)` in both libraries; compare outputs and all gradients."""
    call = call or (lambda m, *xs: m(*xs))
    arrays = [np.asarray(a) for a in arrays]
    diff = [grad and a.dtype.kind == "f" for a in arrays]
    mts = [mt.tensor(a, requires_grad=d) for a, d in zip(arrays, diff)]
    tts = [torch.tensor(a, requires_grad=d) for a, d in zip(arrays, diff)]
    mo, to = _outs(call(ours, *mts)), _outs(call(theirs, *tts))
    assert len(mo) == len(to)
    for m, t in zip(mo, to):
        assert m.shape == tuple(t.shape)
        np.testing.assert_allclose(m.numpy(), t.detach().numpy(), atol=atol, rtol=rtol,
                                   err_msg="forward differs from torch")
    if not grad:
        return mo
    rng = np.random.default_rng(seed)
    ws = [rng.standard_normal(t.shape).astype(np.float32) for t in to]
    sum((m * mt.tensor(w)).sum() for m, w in zip(mo, ws)).backward()
    sum((t * torch.tensor(w)).sum() for t, w in zip(to, ws)).backward()
    for i, (m, t) in enumerate(zip(mts, tts)):
        if diff[i]:
            np.testing.assert_allclose(m.grad.numpy(), t.grad.numpy(), atol=atol, rtol=rtol,
                                       err_msg=f"gradient of input {i}")
    theirs_params = dict(theirs.named_parameters())
    for name, p in ours.named_parameters():
        tg = theirs_params[name].grad
        if tg is None:
            assert p.grad is None or np.all(p.grad.numpy() == 0), name
            continue
        np.testing.assert_allclose(p.grad.numpy(), tg.numpy(), atol=atol, rtol=rtol,
                                   err_msg=f"gradient of {name}")
    return mo


def twins(name: str, *args, **kwargs):
    theirs = getattr(torch.nn, name)(*args, **kwargs)
    ours = getattr(nn, name)(*args, **kwargs)
    if list(theirs.state_dict()):
        copy_weights(ours, theirs)
    return ours, theirs


def randn(*shape, seed=1):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


# ---- linear, conv, norm, embedding ------------------------------------------------------------


@pytest.mark.parametrize("bias", [True, False])
def test_linear(bias):
    ours, theirs = twins("Linear", 5, 3, bias=bias)
    compare(ours, theirs, [randn(2, 4, 5)])
    assert repr(ours) == repr(theirs)


@pytest.mark.parametrize("kwargs", [
    {"in_channels": 3, "out_channels": 4, "kernel_size": 3},
    {"in_channels": 4, "out_channels": 6, "kernel_size": (3, 2), "stride": 2, "padding": 1,
     "dilation": (1, 2)},
    {"in_channels": 4, "out_channels": 6, "kernel_size": 3, "padding": 1, "groups": 2,
     "bias": False},
    # depthwise: one filter pair per input channel
    {"in_channels": 4, "out_channels": 8, "kernel_size": 3, "padding": "same", "groups": 4},
    # even kernel: "same" pads one more on the bottom/right
    {"in_channels": 2, "out_channels": 3, "kernel_size": 4, "padding": "same"},
])
@pytest.mark.filterwarnings("ignore:Using padding='same'")
def test_conv2d(kwargs):
    ours, theirs = twins("Conv2d", **kwargs)
    compare(ours, theirs, [randn(2, kwargs["in_channels"], 7, 8)], atol=2e-5)
    assert repr(ours) == repr(theirs)


def test_conv2d_validation():
    with pytest.raises(ValueError, match="in_channels must be divisible by groups"):
        nn.Conv2d(3, 6, 3, groups=2)
    with pytest.raises(ValueError, match="out_channels must be divisible by groups"):
        nn.Conv2d(4, 6, 3, groups=4)
    with pytest.raises(ValueError, match="strided"):
        nn.Conv2d(4, 4, 3, stride=2, padding="same")
    with pytest.raises(ValueError, match="4-D"):
        nn.Conv2d(1, 1, 1)(mt.ones(3, 3))


@pytest.mark.parametrize("shape,kwargs", [
    ((6,), {}), ((3, 6), {"eps": 1e-3}), ((6,), {"elementwise_affine": False}),
    ((6,), {"bias": False})])
def test_layernorm(shape, kwargs):
    ours, theirs = twins("LayerNorm", shape, **kwargs)
    with torch.no_grad():
        for p in theirs.parameters():
            p.copy_(torch.randn(p.shape))
    copy_weights(ours, theirs)
    compare(ours, theirs, [randn(2, 4, 3, 6) * 3 + 1])
    assert repr(ours) == repr(theirs)


@pytest.mark.parametrize("momentum", [0.1, None])
def test_batchnorm2d_train_then_eval(momentum):
    ours, theirs = twins("BatchNorm2d", 3, momentum=momentum)
    with torch.no_grad():
        theirs.weight.copy_(torch.randn(3))
        theirs.bias.copy_(torch.randn(3))
    copy_weights(ours, theirs)
    compare(ours, theirs, [randn(4, 3, 5, 5) * 2 + 1])
    compare(ours, theirs, [randn(4, 3, 5, 5, seed=2)])  # second step moves the stats again
    for name in ("running_mean", "running_var"):
        np.testing.assert_allclose(getattr(ours, name).numpy(),
                                   getattr(theirs, name).numpy(), rtol=1e-5, atol=1e-6)
    assert ours.num_batches_tracked.item() == 2 == theirs.num_batches_tracked.item()
    ours.eval(), theirs.eval()
    compare(ours, theirs, [randn(2, 3, 4, 4, seed=3)])
    assert ours.num_batches_tracked.item() == 2  # eval does not count
    assert repr(ours) == repr(theirs)


def test_batchnorm1d_and_no_running_stats():
    ours, theirs = twins("BatchNorm1d", 4)
    compare(ours, theirs, [randn(8, 4)])
    compare(ours, theirs, [randn(8, 4, 3)])
    np.testing.assert_allclose(ours.running_var.numpy(), theirs.running_var.numpy(), rtol=1e-5)
    ours, theirs = twins("BatchNorm2d", 2, affine=False, track_running_stats=False)
    assert list(ours.state_dict()) == list(theirs.state_dict()) == []
    ours.eval(), theirs.eval()  # no running stats: batch statistics even in eval
    compare(ours, theirs, [randn(3, 2, 2, 2)])
    with pytest.raises(ValueError, match="expected 4D input"):
        ours(mt.ones(2, 2))


def test_embedding_padding_idx():
    ours, theirs = twins("Embedding", 10, 4, padding_idx=0)
    assert np.all(ours.weight.numpy()[0] == 0)
    ids = np.array([[0, 3, 3, 9], [1, 0, 2, 3]])
    compare(ours, theirs, [ids])
    assert np.all(ours.weight.grad.numpy()[0] == 0)
    assert repr(ours) == repr(theirs)
    assert nn.Embedding(5, 2, padding_idx=-1).padding_idx == 4
    frozen = nn.Embedding.from_pretrained(mt.ones(3, 2))
    assert not frozen.weight.requires_grad and frozen(mt.tensor([2])).shape == (1, 2)


# ---- attention ------------------------------------------------------------------------------


def _mha(**kwargs):
    kwargs.setdefault("batch_first", True)
    theirs = torch.nn.MultiheadAttention(8, 2, **kwargs)
    with torch.no_grad():  # non-zero biases, so their gradients are tested too
        for name, p in theirs.named_parameters():
            if "bias" in name:
                p.copy_(torch.randn(p.shape) * 0.1)
    ours = nn.MultiheadAttention(8, 2, **kwargs)
    copy_weights(ours, theirs)
    return ours, theirs


def _lib(x):
    return torch if isinstance(x, torch.Tensor) else mt


def _mask(x, arr):
    return torch.tensor(arr) if isinstance(x, torch.Tensor) else mt.tensor(arr)


@pytest.mark.parametrize("need_weights", [True, False])
def test_mha_self_attention_with_masks(need_weights):
    ours, theirs = _mha()
    kpm = np.zeros((2, 5), bool)
    kpm[0, 3:] = True  # the first sequence has two padding positions
    blocked = np.zeros((5, 5), bool)
    blocked[1, 2] = True
    float_mask = randn(2 * 2, 5, 5, seed=4) * 0.5  # per batch and head

    def call(m, x):
        a = m(x, x, x, key_padding_mask=_mask(x, kpm), attn_mask=_mask(x, blocked),
              need_weights=need_weights)
        b = m(x, x, x, attn_mask=_mask(x, float_mask), need_weights=need_weights,
              average_attn_weights=False)
        return (*a, *b)

    compare(ours, theirs, [randn(2, 5, 8)], call=call, atol=1e-5)


@pytest.mark.parametrize("need_weights", [True, False])
def test_mha_causal(need_weights):
    ours, theirs = _mha()
    causal = np.triu(np.ones((6, 6), bool), 1)

    def call(m, x):
        if isinstance(m, nn.Module):  # minitl builds the causal mask itself
            return m(x, x, x, is_causal=True, need_weights=need_weights)
        return m(x, x, x, attn_mask=torch.tensor(causal), is_causal=True,
                 need_weights=need_weights)

    out = compare(ours, theirs, [randn(2, 6, 8)], call=call)
    if need_weights:
        assert np.all(out[1].numpy()[:, causal] == 0)


def test_mha_cross_attention_kdim_vdim_and_layouts():
    ours, theirs = _mha(kdim=4, vdim=6)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    kpm = np.array([[False, False, True], [False, False, False]])
    compare(ours, theirs, [randn(2, 5, 8), randn(2, 3, 4), randn(2, 3, 6)],
            call=lambda m, q, k, v: m(q, k, v, key_padding_mask=_mask(q, kpm)))
    ours, theirs = _mha(batch_first=False, bias=False)
    compare(ours, theirs, [randn(5, 2, 8)], call=lambda m, x: m(x, x, x))
    compare(ours, theirs, [randn(5, 8)], call=lambda m, x: m(x, x, x))  # unbatched


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_mha_fully_padded_sequence_matches_torch():
    """A query that may attend to nothing: NaN with need_weights (explicit softmax), zeros
    through scaled_dot_product_attention (then out_proj), in both libraries."""
    ours, theirs = _mha()
    x = randn(1, 3, 8)
    kpm = np.ones((1, 3), bool)
    for need_weights in (True, False):
        with torch.no_grad():
            t = theirs(torch.tensor(x), torch.tensor(x), torch.tensor(x),
                       key_padding_mask=torch.tensor(kpm), need_weights=need_weights)[0]
        with mt.no_grad():
            m = ours(mt.tensor(x), mt.tensor(x), mt.tensor(x), key_padding_mask=mt.tensor(kpm),
                     need_weights=need_weights)[0]
        np.testing.assert_allclose(m.numpy(), t.numpy(), atol=1e-6)  # NaNs compare equal


def test_mha_dropout_only_in_training():
    m = nn.MultiheadAttention(8, 2, dropout=0.5)
    x = mt.randn(2, 4, 8)
    m.eval()
    a, _ = m(x, x, x)
    b, _ = m(x, x, x)
    np.testing.assert_array_equal(a.numpy(), b.numpy())
    m.train()
    _, w = m(x, x, x, average_attn_weights=False)
    assert np.any(w.numpy() == 0)
    with pytest.raises(ValueError, match="divisible by num_heads"):
        nn.MultiheadAttention(8, 3)


@pytest.mark.parametrize("norm_first", [False, True])
@pytest.mark.parametrize("activation", ["relu", "gelu"])
def test_transformer_encoder_layer_eval(norm_first, activation):
    theirs = torch.nn.TransformerEncoderLayer(8, 2, 16, dropout=0.1, activation=activation,
                                              batch_first=True, norm_first=norm_first)
    ours = nn.TransformerEncoderLayer(8, 2, 16, dropout=0.1, activation=activation,
                                      batch_first=True, norm_first=norm_first)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    copy_weights(ours, theirs)
    ours.eval(), theirs.eval()
    kpm = np.zeros((2, 5), bool)
    kpm[1, 4] = True
    compare(ours, theirs, [randn(2, 5, 8)], atol=2e-5,
            call=lambda m, x: m(x, src_key_padding_mask=_mask(x, kpm)))
    causal = np.triu(np.ones((5, 5), bool), 1)
    compare(ours, theirs, [randn(2, 5, 8, seed=5)], atol=2e-5,
            call=lambda m, x: m(x, src_mask=_mask(x, causal)))


def test_transformer_encoder_stack():
    layer = torch.nn.TransformerEncoderLayer(8, 2, 16, batch_first=True)
    theirs = torch.nn.TransformerEncoder(layer, 2, norm=torch.nn.LayerNorm(8),
                                         enable_nested_tensor=False)
    ours = nn.TransformerEncoder(nn.TransformerEncoderLayer(8, 2, 16), 2, norm=nn.LayerNorm(8))
    assert list(ours.state_dict()) == list(theirs.state_dict())
    copy_weights(ours, theirs)
    ours.eval(), theirs.eval()
    compare(ours, theirs, [randn(2, 4, 8)], atol=2e-5)
    assert ours.layers[0].self_attn is not ours.layers[1].self_attn


# ---- pooling, activations, dropout, losses ---------------------------------------------------


@pytest.mark.parametrize("name,args,kwargs", [
    ("MaxPool2d", (2,), {}), ("MaxPool2d", (3,), {"stride": 2, "padding": 1}),
    ("AvgPool2d", (2,), {}), ("AvgPool2d", (3,), {"stride": 2, "padding": 1}),
    ("AdaptiveAvgPool2d", ((1, 1),), {}), ("AdaptiveAvgPool2d", (3,), {}),
    ("Flatten", (), {}), ("Flatten", (0, 2), {})])
def test_pooling_and_flatten(name, args, kwargs):
    ours, theirs = twins(name, *args, **kwargs)
    compare(ours, theirs, [randn(2, 3, 7, 6)])
    assert repr(ours) == repr(theirs)


@pytest.mark.parametrize("name,args", [
    ("ReLU", ()), ("LeakyReLU", (0.2,)), ("GELU", ()), ("GELU", ("tanh",)), ("Tanh", ()),
    ("Sigmoid", ()), ("SiLU", ()), ("Softmax", (1,)), ("LogSoftmax", (-1,)), ("Identity", ())])
def test_activations(name, args):
    ours, theirs = twins(name, *args)
    compare(ours, theirs, [randn(3, 4, 5) * 3])
    assert repr(ours) == repr(theirs)


def test_dropout_honours_training_flag():
    d = nn.Dropout(0.25)
    x = mt.ones(200, 100)
    y = d(x).numpy()
    assert abs((y == 0).mean() - 0.25) < 0.02
    assert set(np.unique(y)) <= {0.0, np.float32(1 / 0.75)}
    d.eval()
    np.testing.assert_array_equal(d(x).numpy(), x.numpy())
    assert repr(d) == repr(torch.nn.Dropout(0.25))
    with pytest.raises(ValueError, match="between 0 and 1"):
        nn.Dropout(1.5)


@pytest.mark.parametrize("kwargs", [
    {}, {"reduction": "sum"}, {"reduction": "none"}, {"ignore_index": 2},
    {"label_smoothing": 0.1}, {"weight": [1.0, 2.0, 0.5, 1.0]},
    {"weight": [1.0, 2.0, 0.5, 1.0], "ignore_index": 1, "label_smoothing": 0.2}])
def test_cross_entropy_loss(kwargs):
    w = kwargs.pop("weight", None)
    theirs = torch.nn.CrossEntropyLoss(weight=None if w is None else torch.tensor(w), **kwargs)
    ours = nn.CrossEntropyLoss(weight=None if w is None else mt.tensor(w), **kwargs)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    target = np.array([0, 2, 1, 3, 2, 2])
    compare(ours, theirs, [randn(6, 4), target])
    compare(ours, theirs, [randn(2, 4, 3), target.reshape(2, 3)])  # (N, C, d1)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_mse_loss(reduction):
    ours, theirs = twins("MSELoss", reduction=reduction)
    compare(ours, theirs, [randn(3, 4), randn(3, 4, seed=2)])
    with pytest.raises(ValueError, match="not a valid value"):
        nn.MSELoss(reduction="avg")


# ---- init -----------------------------------------------------------------------------------


def _t(*shape):
    return mt.zeros(*shape)


def test_calculate_gain_and_fans_equal_torch():
    for nl, param in [("linear", None), ("conv2d", None), ("sigmoid", None), ("tanh", None),
                      ("relu", None), ("leaky_relu", None), ("leaky_relu", 0.2), ("selu", None),
                      ("leaky_relu", math.sqrt(5))]:
        assert nn.init.calculate_gain(nl, param) == pytest.approx(
            torch.nn.init.calculate_gain(nl, param))
    for shape in [(4, 3), (8, 2, 3, 3), (5, 7, 2)]:
        assert (nn.init._calculate_fan_in_and_fan_out(_t(*shape))
                == torch.nn.init._calculate_fan_in_and_fan_out(torch.zeros(shape)))
    with pytest.raises(ValueError, match="fewer than 2 dimensions"):
        nn.init.xavier_uniform_(_t(5))
    with pytest.raises(ValueError, match="Unsupported nonlinearity"):
        nn.init.calculate_gain("swish")


def test_init_statistics():
    init = nn.init
    shape = (256, 512)
    fan_in, fan_out = 512, 256
    w = init.uniform_(_t(*shape), -2.0, 3.0).numpy()
    assert w.min() >= -2 and w.max() <= 3 and abs(w.mean() - 0.5) < 0.02
    w = init.normal_(_t(*shape), 1.0, 2.0).numpy()
    assert abs(w.mean() - 1) < 0.02 and abs(w.std() - 2) < 0.02
    bound = math.sqrt(6 / (fan_in + fan_out))
    w = init.xavier_uniform_(_t(*shape)).numpy()
    assert np.abs(w).max() <= bound and abs(w.std() - bound / math.sqrt(3)) < 0.01 * bound
    w = init.xavier_normal_(_t(*shape), gain=2.0).numpy()
    assert abs(w.std() - 2 * math.sqrt(2 / (fan_in + fan_out))) < 0.002
    w = init.kaiming_normal_(_t(*shape), mode="fan_out", nonlinearity="relu").numpy()
    assert abs(w.std() - math.sqrt(2 / fan_out)) < 0.01 * math.sqrt(2 / fan_out)
    w = init.kaiming_uniform_(_t(*shape), nonlinearity="relu").numpy()
    assert np.abs(w).max() <= math.sqrt(6 / fan_in)
    assert abs(w.std() - math.sqrt(2 / fan_in)) < 0.01 * math.sqrt(2 / fan_in)
    w = init.trunc_normal_(_t(*shape), mean=0.5, std=1.0, a=0.0, b=1.5).numpy()
    assert w.min() >= 0 and w.max() <= 1.5
    def pdf(z: float) -> float:
        return math.exp(-z * z / 2) / math.sqrt(2 * math.pi)

    def cdf(z: float) -> float:
        return 0.5 * (1 + math.erf(z / math.sqrt(2)))

    # Mean of N(0.5, 1) truncated to [0, 1.5]: mu + (pdf(alpha) - pdf(beta)) / Z.
    expected = 0.5 + (pdf(-0.5) - pdf(1.0)) / (cdf(1.0) - cdf(-0.5))
    assert abs(w.mean() - expected) < 0.01
    assert np.all(init.constant_(_t(3), 0.3).numpy() == np.float32(0.3))
    assert np.all(init.ones_(_t(2, 2)).numpy() == 1)
    assert np.all(init.zeros_(mt.ones(2)).numpy() == 0)
    np.testing.assert_array_equal(init.eye_(_t(2, 3)).numpy(), np.eye(2, 3))
    assert init.normal_(mt.zeros(4, dtype=mt.float64)).dtype == np.float64


def test_default_layer_init_matches_torch_bounds():
    lin = nn.Linear(400, 300)
    b = 1 / math.sqrt(400)
    w = lin.weight.numpy()
    assert np.abs(w).max() <= b and abs(w.std() - b / math.sqrt(3)) < 0.02 * b
    assert np.abs(lin.bias.numpy()).max() <= b
    conv = nn.Conv2d(8, 16, 3, groups=2)
    b = 1 / math.sqrt(4 * 9)
    assert np.abs(conv.weight.numpy()).max() <= b and np.abs(conv.bias.numpy()).max() <= b
    mha = nn.MultiheadAttention(64, 4)
    assert np.abs(mha.in_proj_weight.numpy()).max() <= math.sqrt(6 / (64 + 192))
    assert np.all(mha.in_proj_bias.numpy() == 0) and np.all(mha.out_proj.bias.numpy() == 0)
    emb = nn.Embedding(1000, 64).weight.numpy()
    assert abs(emb.std() - 1) < 0.02


def test_seed_makes_init_reproducible():
    mt.manual_seed(7)
    a = nn.Linear(4, 4)
    mt.manual_seed(7)
    b = nn.Linear(4, 4)
    c = nn.Linear(4, 4)
    np.testing.assert_array_equal(a.weight.numpy(), b.weight.numpy())
    assert not np.array_equal(b.weight.numpy(), c.weight.numpy())
