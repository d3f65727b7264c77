"""Module machinery: registration, traversal, state dicts, modes, dtype moves, containers.

Where PyTorch has the same concept the expected answer is PyTorch's own: the same
architecture is built twice from one function, once with `minitl.nn` and once
with `torch.nn`, and names, order and shapes are compared.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest

import minitl as mt
from minitl import nn
from tests.helpers import requires_torch, torch


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3, 4)
        self.register_buffer("steps", mt.tensor(0))
        self.register_buffer("cache", mt.zeros(2), persistent=False)
        self.scale = nn.Parameter(mt.ones(1))

    def forward(self, x: mt.Tensor) -> mt.Tensor:
        return self.fc(x) * self.scale


def build_cnn(lib):
    """The same small network in either library (their APIs agree)."""
    n = lib.nn
    return n.Sequential(
        n.Conv2d(3, 8, 3, padding=1), n.BatchNorm2d(8), n.ReLU(), n.MaxPool2d(2),
        n.Conv2d(8, 8, 3, padding=1, groups=8, bias=False), n.AdaptiveAvgPool2d(1),
        n.Flatten(), n.Dropout(0.1), n.Linear(8, 5), n.LayerNorm(5), n.GELU())


class Zoo:
    """Everything with state, nested through every container kind."""

    @staticmethod
    def build(lib):
        n = lib.nn

        class Net(n.Module):
            def __init__(self) -> None:
                super().__init__()
                self.emb = n.Embedding(10, 8, padding_idx=0)
                self.blocks = n.ModuleList([
                    n.TransformerEncoderLayer(8, 2, 16, batch_first=True) for _ in range(2)])
                self.heads = n.ModuleDict({"cls": n.Linear(8, 3), "reg": n.Linear(8, 1)})
                self.cnn = build_cnn(lib)
                self.bn1 = n.BatchNorm1d(8)
                self.attn = n.MultiheadAttention(8, 2, kdim=4, vdim=6, batch_first=True)
                self.loss = n.CrossEntropyLoss(weight=lib.ones(3))

        return Net()


def _shapes(sd):
    return [(k, tuple(v.shape)) for k, v in sd.items()]


# ---- registration -----------------------------------------------------------------------


def test_setattr_registers_parameters_buffers_and_modules():
    m = Tiny()
    assert list(m._parameters) == ["scale"]
    assert list(m._modules) == ["fc"]
    assert list(m._buffers) == ["steps", "cache"]
    assert [n for n, _ in m.named_parameters()] == ["scale", "fc.weight", "fc.bias"]
    assert [n for n, _ in m.named_buffers()] == ["steps", "cache"]
    # "cache" is not persistent: a buffer, but not part of the state dict.
    assert list(m.state_dict()) == ["scale", "steps", "fc.weight", "fc.bias"]
    assert m.fc.weight is m.get_parameter("fc.weight")
    assert m.get_buffer("steps") is m.steps
    assert "fc" in dir(m) and "scale" in dir(m)


def test_setattr_moves_between_registries_and_delattr():
    m = Tiny()
    m.fc = nn.Parameter(mt.zeros(2))  # a module name re-used for a parameter
    assert "fc" not in m._modules and "fc" in m._parameters
    m.fc = None  # None keeps the slot, as in PyTorch
    assert m._parameters["fc"] is None and [n for n, _ in m.named_parameters()] == ["scale"]
    del m.scale
    assert "scale" not in m._parameters
    with pytest.raises(AttributeError, match="has no attribute 'scale'"):
        _ = m.scale
    m.plain = 3
    assert m.plain == 3 and "plain" not in m._parameters


def test_reassignment_keeps_position():
    m = nn.Sequential(nn.Linear(2, 3), nn.Linear(3, 1))
    m[0].weight = nn.Parameter(mt.zeros(3, 2))  # e.g. swapping in pretrained weights
    m[0] = nn.Linear(2, 3, bias=False)
    assert list(m.state_dict()) == ["0.weight", "1.weight", "1.bias"]
    lin = nn.Linear(2, 2)
    lin.weight = nn.Parameter(mt.ones(2, 2))
    assert list(lin.state_dict()) == ["weight", "bias"]


def test_dtype_argument_and_utils_exports():
    lin = nn.Linear(3, 2, dtype=mt.float64)
    assert lin.weight.dtype == np.float64 and lin.bias.dtype == np.float64
    assert lin(mt.ones(1, 3, dtype=mt.float64)).dtype == np.float64
    lin(mt.ones(1, 3, dtype=mt.float64)).sum().backward()
    total = nn.utils.clip_grad_norm_(lin.parameters(), max_norm=1e-3)
    assert total.item() > 1e-3
    norm = np.sqrt(sum((p.grad.numpy() ** 2).sum() for p in lin.parameters()))
    assert norm == pytest.approx(1e-3, rel=1e-3)
    assert callable(nn.utils.clip_grad_value_)


def test_registration_errors():
    m = Tiny()
    with pytest.raises(TypeError, match="Parameter or None expected"):
        m.scale = mt.ones(1)  # a plain Tensor is not a Parameter
    with pytest.raises(TypeError, match="Tensor or None expected"):
        m.steps = np.zeros(1)
    with pytest.raises(KeyError, match="contain"):
        m.register_buffer("a.b", mt.zeros(1))
    with pytest.raises(KeyError, match="already exists"):
        m.register_buffer("scale", mt.zeros(1))
    with pytest.raises(TypeError, match="nn.Parameter or None required"):
        m.register_parameter("w", mt.zeros(1))
    with pytest.raises(ValueError, match="non-leaf"):
        m.register_parameter("w", _non_leaf_param())

    class Early(nn.Module):
        def __init__(self) -> None:
            self.w = nn.Parameter(mt.ones(1))

    with pytest.raises(AttributeError, match="before Module.__init__"):
        Early()
    with pytest.raises(NotImplementedError, match='missing the required "forward"'):
        nn.Module()(1)


def _non_leaf_param() -> nn.Parameter:
    p = nn.Parameter(mt.ones(2))
    p._ctx = object()  # what an op result looks like to the registry
    return p


def test_hooks_capture_and_replace():
    m = nn.Sequential(nn.Identity(), nn.Identity())
    seen = []
    h = m[0].register_forward_hook(lambda mod, args, out: seen.append(out.shape))
    pre = m[1].register_forward_pre_hook(lambda mod, args: (args[0] * 2,))
    out = m(mt.ones(2, 3))
    assert seen == [(2, 3)] and np.all(out.numpy() == 2)
    h.remove()
    pre.remove()
    m(mt.ones(1))
    assert seen == [(2, 3)]
    with m[0].register_forward_hook(lambda mod, args, out: out + 1):
        assert m(mt.zeros(1)).item() == 1
    assert m(mt.zeros(1)).item() == 0


# ---- traversal and PyTorch parity -----------------------------------------------------------


def test_tied_weights_are_listed_once():
    m = nn.Module()
    m.emb = nn.Embedding(5, 3)
    m.head = nn.Linear(3, 5, bias=False)
    m.head.weight = m.emb.weight
    assert [n for n, _ in m.named_parameters()] == ["emb.weight"]
    assert len(list(m.parameters())) == 1
    assert len(list(m.named_parameters(remove_duplicate=False))) == 2
    assert list(m.state_dict()) == ["emb.weight", "head.weight"]  # like PyTorch: both names


def test_shared_module_is_visited_once():
    shared = nn.Linear(2, 2)
    m = nn.Sequential(shared, nn.ReLU(), shared)
    assert [n for n, _ in m.named_modules()] == ["", "0", "1"]
    assert [n for n, _ in m.named_modules(remove_duplicate=False)] == ["", "0", "1", "2"]
    assert len(list(m.parameters())) == 2
    assert len(list(m.children())) == 2


@requires_torch
def test_names_order_and_shapes_equal_torch():
    ours, theirs = Zoo.build(mt), Zoo.build(torch)
    assert _shapes(ours.state_dict()) == _shapes(theirs.state_dict())
    assert ([n for n, _ in ours.named_parameters()]
            == [n for n, _ in theirs.named_parameters()])
    assert [n for n, _ in ours.named_buffers()] == [n for n, _ in theirs.named_buffers()]
    assert [n for n, _ in ours.named_modules()] == [n for n, _ in theirs.named_modules()]
    assert [n for n, _ in ours.named_children()] == [n for n, _ in theirs.named_children()]
    for k, v in ours.state_dict().items():
        assert v.dtype == theirs.state_dict()[k].numpy().dtype, k


@requires_torch
def test_repr_equals_torch():
    assert repr(build_cnn(mt)) == repr(build_cnn(torch))
    stack = [torch.nn.ModuleList([torch.nn.Linear(2, 2)] * 3 + [torch.nn.ReLU()]),
             nn.ModuleList([nn.Linear(2, 2) for _ in range(3)] + [nn.ReLU()])]
    assert repr(stack[1]) == repr(stack[0])
    assert repr(nn.ModuleList()) == "ModuleList()"


@requires_torch
def test_load_torch_state_dict_and_back():
    ours, theirs = Zoo.build(mt), Zoo.build(torch)
    result = ours.load_state_dict({k: v.numpy() for k, v in theirs.state_dict().items()})
    assert result.missing_keys == [] and result.unexpected_keys == []
    assert repr(result) == "<All keys matched successfully>"
    for k, v in ours.state_dict().items():
        np.testing.assert_array_equal(v.numpy(), theirs.state_dict()[k].numpy(), err_msg=k)
    back = theirs.load_state_dict({k: torch.from_numpy(v.numpy().copy())
                                   for k, v in ours.state_dict().items()})
    assert not back.missing_keys and not back.unexpected_keys


# ---- state dicts ----------------------------------------------------------------------------


def test_state_dict_is_detached_and_shares_memory():
    m = Tiny()
    sd = m.state_dict()
    assert not sd["fc.weight"].requires_grad and not isinstance(sd["fc.weight"], nn.Parameter)
    assert np.shares_memory(sd["fc.weight"].numpy(), m.fc.weight.numpy())
    assert m.state_dict(keep_vars=True)["fc.weight"] is m.fc.weight
    assert list(m.state_dict(prefix="model.")) == ["model.scale", "model.steps",
                                                   "model.fc.weight", "model.fc.bias"]


def test_load_state_dict_strict_error_lists_everything_and_copies_nothing():
    m = Tiny()
    before = {k: v.numpy().copy() for k, v in m.state_dict().items()}
    bad = {k: np.full(v.shape, 7.0, np.float32) for k, v in m.state_dict().items()}
    del bad["fc.bias"]
    bad["extra.weight"] = np.zeros(3, np.float32)
    bad["fc.weight"] = np.zeros((4, 5), np.float32)
    with pytest.raises(RuntimeError) as err:
        m.load_state_dict(bad)
    msg = str(err.value)
    assert 'Missing key(s) in state_dict: "fc.bias"' in msg
    assert 'Unexpected key(s) in state_dict: "extra.weight"' in msg
    assert "size mismatch for fc.weight" in msg and "(4, 5)" in msg and "(4, 3)" in msg
    assert "Tiny" in msg
    for k, v in m.state_dict().items():
        np.testing.assert_array_equal(v.numpy(), before[k], err_msg=f"{k} changed")


def test_load_state_dict_non_strict():
    m = Tiny()
    sd = {"fc.weight": np.ones((4, 3)), "other": np.zeros(1)}
    missing, unexpected = m.load_state_dict(sd, strict=False)
    assert missing == ["scale", "steps", "fc.bias"] and unexpected == ["other"]
    assert np.all(m.fc.weight.numpy() == 1) and m.fc.weight.dtype == np.float32  # cast
    with pytest.raises(RuntimeError, match="size mismatch for fc.weight"):
        m.load_state_dict({"fc.weight": np.ones((3, 3))}, strict=False)


def test_load_state_dict_copies_in_place_so_optimizers_keep_working():
    m = Tiny()
    w = m.fc.weight
    arr = w.data
    src = Tiny()
    m.load_state_dict(src.state_dict())
    assert m.fc.weight is w and m.fc.weight.data is arr
    np.testing.assert_array_equal(arr, src.fc.weight.numpy())
    assert not np.shares_memory(arr, src.fc.weight.numpy())
    m.load_state_dict({**src.state_dict(), "steps": 5})  # python scalars are fine
    assert m.steps.item() == 5 and m.steps.dtype == np.int64


def test_save_load_round_trip(tmp_path):
    pytest.importorskip("minitl.io")
    if not hasattr(mt, "save"):
        pytest.skip("minitl.save not available")
    m = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    m[1].running_mean.data[...] = 0.5
    path = tmp_path / "m.safetensors"
    mt.save(m.state_dict(), path)
    fresh = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    fresh.load_state_dict(mt.load(path))
    for k, v in m.state_dict().items():
        np.testing.assert_array_equal(fresh.state_dict()[k].numpy(), v.numpy(), err_msg=k)
        assert fresh.state_dict()[k].dtype == v.dtype


# ---- modes and bulk changes -----------------------------------------------------------------


def test_train_eval_propagate():
    m = build_cnn(mt)
    assert all(x.training for x in m.modules())
    assert m.eval() is m
    assert not any(x.training for x in m.modules())
    m.train()
    assert all(x.training for x in m.modules())
    with pytest.raises(ValueError):
        m.train("no")


def test_requires_grad_and_zero_grad():
    m = Tiny()
    m.fc(mt.ones(2, 3)).sum().backward()
    assert m.fc.weight.grad is not None
    m.zero_grad(set_to_none=False)
    assert np.all(m.fc.weight.grad.numpy() == 0)
    m.zero_grad()
    assert m.fc.weight.grad is None
    m.requires_grad_(False)
    assert not any(p.requires_grad for p in m.parameters())
    m.fc.requires_grad_()
    assert [n for n, p in m.named_parameters() if p.requires_grad] == ["fc.weight", "fc.bias"]


def test_to_double_keeps_identity_and_int_buffers():
    m = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    w = m[0].weight
    m[0](mt.ones(1, 3)).sum().backward()
    assert m.to(mt.float64) is m
    assert m[0].weight is w and w.dtype == np.float64 and w.grad.dtype == np.float64
    assert m[1].running_var.dtype == np.float64
    assert m[1].num_batches_tracked.dtype == np.int64
    assert m[0](mt.ones(2, 3, dtype=mt.float64)).dtype == np.float64
    m.float()
    assert all(p.dtype == np.float32 for p in m.parameters())
    assert m.to("cpu") is m
    with pytest.raises(TypeError):
        m.to(mt.int64)


def test_apply_visits_children_first():
    m = nn.Sequential(nn.Linear(2, 3), nn.Sequential(nn.Linear(3, 3)))
    order = []
    m.apply(lambda mod: order.append(type(mod).__name__))
    assert order == ["Linear", "Linear", "Sequential", "Sequential"]

    def zero_bias(mod):
        if isinstance(mod, nn.Linear):
            nn.init.zeros_(mod.bias)

    m.apply(zero_bias)
    assert all(np.all(p.numpy() == 0) for n, p in m.named_parameters() if n.endswith("bias"))


def test_deepcopy_is_independent():
    m = Tiny()
    c = copy.deepcopy(m)
    assert isinstance(c.fc.weight, nn.Parameter) and c.fc.weight is not m.fc.weight
    c.fc.weight.data[...] = 0
    assert not np.all(m.fc.weight.numpy() == 0)
    assert list(c.state_dict()) == list(m.state_dict())


def test_get_submodule_errors():
    m = nn.Sequential(nn.Sequential(nn.Linear(2, 2)))
    assert isinstance(m.get_submodule("0.0"), nn.Linear)
    assert m.get_submodule("") is m
    with pytest.raises(AttributeError, match="has no attribute `1`"):
        m.get_submodule("0.1")
    with pytest.raises(AttributeError, match="no parameter `nope`"):
        m.get_parameter("0.0.nope")


# ---- containers -----------------------------------------------------------------------------


def test_sequential_api():
    a, b, c = nn.Linear(2, 2), nn.ReLU(), nn.Linear(2, 3)
    s = nn.Sequential(a, b, c)
    assert len(s) == 3 and s[0] is a and s[-1] is c and list(s) == [a, b, c]
    head = s[:2]
    assert isinstance(head, nn.Sequential) and list(head) == [a, b]
    assert list(head._modules) == ["0", "1"]
    assert s(mt.ones(4, 2)).shape == (4, 3)
    s.append(nn.Identity())
    assert len(s) == 4
    del s[1]
    assert list(s._modules) == ["0", "1", "2"] and s[1] is c
    s.insert(0, nn.Identity())
    assert isinstance(s[0], nn.Identity) and s[1] is a
    s[0] = nn.Tanh()
    assert isinstance(s[0], nn.Tanh)
    with pytest.raises(IndexError):
        s[10]
    named = nn.Sequential(__import__("collections").OrderedDict(enc=a, act=b))
    assert list(named.state_dict()) == ["enc.weight", "enc.bias"]


def test_modulelist_api():
    layers = nn.ModuleList([nn.Linear(2, 2) for _ in range(2)])
    layers.append(nn.ReLU())
    layers.extend([nn.Tanh()])
    layers.insert(1, nn.Identity())
    assert len(layers) == 5
    assert [type(x).__name__ for x in layers] == ["Linear", "Identity", "Linear", "ReLU", "Tanh"]
    assert isinstance(layers[-1], nn.Tanh) and isinstance(layers[1:3], nn.ModuleList)
    del layers[1]
    assert list(layers._modules) == ["0", "1", "2", "3"]
    assert [n for n, _ in layers.named_parameters()] == ["0.weight", "0.bias", "1.weight",
                                                         "1.bias"]
    layers += [nn.Identity()]
    assert len(layers) == 5
    with pytest.raises(TypeError):
        layers.extend(nn.Linear(1, 1))


def test_moduledict_api():
    d = nn.ModuleDict({"a": nn.Linear(1, 1)})
    d["b"] = nn.ReLU()
    d.update([("c", nn.Tanh())])
    assert list(d) == ["a", "b", "c"] and len(d) == 3 and "b" in d
    assert list(d.keys()) == ["a", "b", "c"]
    assert [type(v).__name__ for v in d.values()] == ["Linear", "ReLU", "Tanh"]
    assert isinstance(d.pop("b"), nn.ReLU) and "b" not in d
    assert [k for k, _ in d.items()] == ["a", "c"]
    assert list(d.state_dict()) == ["a.weight", "a.bias"]
    d.clear()
    assert len(d) == 0
