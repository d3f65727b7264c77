// csrc/bindings_attention.cpp — argument checks and m.def lines for scaled dot-product
// attention (csrc/cpu/attention.cpp).
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <pybind11/stl.h>  // std::optional: mask=None, drop=None

#include "bind_checks.h"
#include "cpu/attention.h"

namespace minitl::bind {
namespace {

using minitl::cpu::AttentionMask;
using minitl::cpu::AttentionShape;

[[noreturn]] void shape_error(const char* op, const std::string& shapes) {
    throw py::value_error(std::string(op) + ": shapes do not fit: " + shapes +
                          " (need q (H, L, E), k (H, S, E), v (H, S, Ev), weights and drop "
                          "(H, L, S), mask (M, L or 1, S) with M dividing H, g (H, L, Ev))");
}

AttentionShape checked_shape(const char* op, const py::array& q, const py::array& k,
                             const py::array& v) {
    check_operand(op, "q", q, 3);
    check_operand(op, "k", k, 3);
    check_operand(op, "v", v, 3);
    const AttentionShape sh{q.shape(0), q.shape(1), k.shape(1), q.shape(2), v.shape(2)};
    if (k.shape(0) != sh.heads || v.shape(0) != sh.heads || k.shape(2) != sh.e ||
        v.shape(1) != sh.s)
        shape_error(op, "q " + shape_str(q) + ", k " + shape_str(k) + ", v " + shape_str(v));
    return sh;
}

bool is_lxs(const py::array& x, const AttentionShape& sh) {
    return x.ndim() == 3 && x.shape(0) == sh.heads && x.shape(1) == sh.l && x.shape(2) == sh.s;
}

// The drop scale: float32 (H, L, S) or None.
const float* checked_drop(const char* op, const std::optional<py::array>& drop,
                          const AttentionShape& sh) {
    if (!drop) return nullptr;
    check_operand(op, "drop", *drop, 3);
    if (!is_lxs(*drop, sh)) shape_error(op, "drop " + shape_str(*drop));
    return fdata(*drop);
}

py::tuple attention_fwd(const py::array& q, const py::array& k, const py::array& v,
                        const std::optional<py::array>& mask,
                        const std::optional<py::array>& drop, double scale,
                        bool need_weights) {
    const char* op = "attention_fwd";
    const AttentionShape sh = checked_shape(op, q, k, v);
    AttentionMask am;
    if (mask) {
        const py::array& mk = *mask;
        const bool is_bool = mk.dtype().equal(py::dtype::of<bool>());
        if (!is_bool) check_float32(op, "mask", mk);
        check_c_contiguous(op, "mask", mk);
        // (M, rows, S): M slices shared by heads / M heads each, one row or L of them
        if (mk.ndim() != 3 || mk.shape(2) != sh.s || (mk.shape(1) != 1 && mk.shape(1) != sh.l) ||
            (mk.shape(0) == 0 ? sh.heads != 0 : sh.heads % mk.shape(0) != 0))
            shape_error(op, "mask " + shape_str(mk));
        am.slice_heads = mk.shape(0) == 0 ? 1 : sh.heads / mk.shape(0);
        am.row_stride = mk.shape(1) == sh.l ? sh.s : 0;
        if (is_bool)
            am.keep = static_cast<const std::uint8_t*>(mk.data());
        else
            am.add = fdata(mk);
    }
    am.drop = checked_drop(op, drop, sh);
    std::optional<py::array_t<float>> p;
    float* pp = need_weights
                    ? p.emplace(std::vector<py::ssize_t>{sh.heads, sh.l, sh.s}).mutable_data()
                    : nullptr;
    py::array_t<float> o({sh.heads, sh.l, sh.ev});
    {
        py::gil_scoped_release release;
        minitl::cpu::attention_fwd(fdata(q), fdata(k), fdata(v), am, float(scale), sh, pp,
                                   o.mutable_data());
    }
    return py::make_tuple(std::move(o), p ? py::object(std::move(*p)) : py::none());
}

py::tuple attention_bwd(const py::array& g, const py::array& q, const py::array& k,
                        const py::array& v, const py::array& p,
                        const std::optional<py::array>& drop, double scale,
                        const py::sequence& needs) {
    const char* op = "attention_bwd";
    const AttentionShape sh = checked_shape(op, q, k, v);
    check_operand(op, "g", g, 3);
    check_operand(op, "p", p, 3);
    if (g.shape(0) != sh.heads || g.shape(1) != sh.l || g.shape(2) != sh.ev || !is_lxs(p, sh))
        shape_error(op, "g " + shape_str(g) + ", p " + shape_str(p) + " for q " + shape_str(q) +
                            ", k " + shape_str(k) + ", v " + shape_str(v));
    const float* pdrop = checked_drop(op, drop, sh);
    if (py::len(needs) != 4)
        throw py::value_error(std::string(op) + ": needs must hold 4 flags (dq, dk, dv, "
                              "dmask), got " + std::to_string(py::len(needs)));
    bool need[4];
    for (int i = 0; i < 4; ++i) need[i] = py::bool_(needs[i]);
    std::optional<py::array_t<float>> out[4];
    const std::vector<py::ssize_t> shapes[4] = {
        {sh.heads, sh.l, sh.e}, {sh.heads, sh.s, sh.e}, {sh.heads, sh.s, sh.ev},
        {sh.heads, sh.l, sh.s}};
    float* ptr[4] = {nullptr, nullptr, nullptr, nullptr};
    for (int i = 0; i < 4; ++i)
        if (need[i]) ptr[i] = out[i].emplace(shapes[i]).mutable_data();
    {
        py::gil_scoped_release release;
        minitl::cpu::attention_bwd(fdata(g), fdata(q), fdata(k), fdata(v), fdata(p), pdrop,
                                   float(scale), sh, ptr[0], ptr[1], ptr[2], ptr[3]);
    }
    py::tuple result(4);
    for (int i = 0; i < 4; ++i)
        result[i] = out[i] ? py::object(std::move(*out[i])) : py::none();
    return result;
}

}  // namespace

void def_attention(py::module_& m) {
    m.def("attention_fwd", &attention_fwd, py::arg("q"), py::arg("k"), py::arg("v"),
          py::arg("mask"), py::arg("drop"), py::arg("scale"), py::arg("need_weights") = true,
          "(o, p): p = softmax(scale q k^T + mask) (H, L, S), o = (p drop) v (H, L, Ev); mask "
          "bool (True = attend) or float32 (M, L or 1, S), each of its M slices serving H / M "
          "consecutive heads; drop float32 (H, L, S). p is None unless need_weights.");
    m.def("attention_bwd", &attention_bwd, py::arg("g"), py::arg("q"), py::arg("k"),
          py::arg("v"), py::arg("p"), py::arg("drop"), py::arg("scale"), py::arg("needs"),
          "(dq, dk, dv, dmask) of attention_fwd; one that `needs` does not ask for is None.");
}

}  // namespace minitl::bind
