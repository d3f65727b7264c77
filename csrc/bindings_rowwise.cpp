// csrc/bindings_rowwise.cpp — argument checks and m.def lines for softmax, layer_norm and
// softmax cross-entropy (csrc/cpu/rowwise.cpp).
//
// Every operand is checked (dtype, contiguity, rank, shape agreement) and every class target
// is range-checked before a kernel runs: the kernels index x and the weights by target.
#include <pybind11/stl.h>  // std::optional: weight=None

#include <algorithm>
#include <cstdint>
#include <optional>
#include <vector>

#include "bind_checks.h"
#include "cpu/rowwise.h"

namespace minitl::bind {
namespace {

using minitl::cpu::index_t;

std::vector<py::ssize_t> shape_of(const py::array& x) {
    return std::vector<py::ssize_t>(x.shape(), x.shape() + x.ndim());
}

// x as (rows, n): its last axis against all the others.
void rows_of(const char* op, const py::array& x, index_t& rows, index_t& n) {
    if (x.ndim() < 1)
        throw py::value_error(std::string(op) + ": expected x with at least 1 dimension, got "
                              "shape " + shape_str(x));
    n = x.shape(x.ndim() - 1);
    rows = n == 0 ? 0 : static_cast<index_t>(x.size()) / n;
}

void check_same_shape(const char* op, const char* a_name, const py::array& a,
                      const char* b_name, const py::array& b) {
    if (a.ndim() != b.ndim() || !std::equal(a.shape(), a.shape() + a.ndim(), b.shape()))
        throw py::value_error(std::string(op) + ": " + a_name + " of shape " + shape_str(a) +
                              " does not match " + b_name + " of shape " + shape_str(b));
}

// A per-row vector (mean, rstd, lse, grad): float32, contiguous, `rows` elements.
void check_per_row(const char* op, const char* name, const py::array& v, index_t rows,
                   const py::array& x) {
    check_float32(op, name, v);
    check_c_contiguous(op, name, v);
    if (static_cast<index_t>(v.size()) != rows)
        throw py::value_error(std::string(op) + ": " + name + " of shape " + shape_str(v) +
                              " does not fit x of shape " + shape_str(x) + " (one per row)");
}

// An optional (n,) parameter (weight, bias); its pointer, or null for None.
const float* per_column(const char* op, const char* name, const std::optional<py::array>& p,
                        index_t n) {
    if (!p) return nullptr;
    check_operand(op, name, *p, 1);
    if (p->shape(0) != n)
        throw py::value_error(std::string(op) + ": " + name + " of shape " + shape_str(*p) +
                              " does not fit rows of " + std::to_string(n));
    return fdata(*p);
}

// The targets as int64 (rows,), each in [0, classes) or equal to ignore_index.
const std::int64_t* checked_targets(const char* op, const py::array& target, index_t rows,
                                    index_t classes, std::int64_t ignore_index) {
    if (!target.dtype().equal(py::dtype::of<std::int64_t>()))
        throw py::value_error(std::string(op) + ": expected int64 targets, got " +
                              dtype_str(target) + " with shape " + shape_str(target));
    check_c_contiguous(op, "target", target);
    if (target.ndim() != 1 || target.shape(0) != rows)
        throw py::value_error(std::string(op) + ": target of shape " + shape_str(target) +
                              " does not fit " + std::to_string(rows) + " rows (one per row)");
    const auto* t = static_cast<const std::int64_t*>(target.data());
    for (index_t i = 0; i < rows; ++i) {
        if ((t[i] < 0 || t[i] >= classes) && t[i] != ignore_index)
            throw py::index_error(std::string(op) + ": index " + std::to_string(t[i]) +
                                  " at position " + std::to_string(i) + " is out of range for " +
                                  std::to_string(classes) + " classes (ignore_index=" +
                                  std::to_string(ignore_index) + ")");
    }
    return t;
}

// ---------------------------------------------------------------------------------------------
// softmax

py::array softmax_fwd(const py::array& x, bool safe) {
    const char* op = "softmax_fwd";
    check_float32(op, "x", x);
    check_c_contiguous(op, "x", x);
    index_t rows, n;
    rows_of(op, x, rows, n);
    py::array_t<float> y(shape_of(x));
    float* out = y.mutable_data();
    {
        py::gil_scoped_release release;
        minitl::cpu::softmax_fwd(fdata(x), out, rows, n, safe);
    }
    return std::move(y);
}

py::array softmax_bwd(const py::array& g, const py::array& y) {
    const char* op = "softmax_bwd";
    for (const auto& [name, a] : {std::pair<const char*, const py::array&>{"g", g}, {"y", y}}) {
        check_float32(op, name, a);
        check_c_contiguous(op, name, a);
    }
    check_same_shape(op, "g", g, "y", y);
    index_t rows, n;
    rows_of(op, y, rows, n);
    py::array_t<float> dx(shape_of(y));
    float* out = dx.mutable_data();
    {
        py::gil_scoped_release release;
        minitl::cpu::softmax_bwd(fdata(g), fdata(y), out, rows, n);
    }
    return std::move(dx);
}

// ---------------------------------------------------------------------------------------------
// layer_norm

py::tuple layernorm_fwd(const py::array& x, const std::optional<py::array>& weight,
                        const std::optional<py::array>& bias, double eps) {
    const char* op = "layernorm_fwd";
    check_operand(op, "x", x, 2);
    const index_t rows = x.shape(0), d = x.shape(1);
    const float* w = per_column(op, "weight", weight, d);
    const float* b = per_column(op, "bias", bias, d);
    py::array_t<float> y({rows, d}), mean({rows, index_t{1}}), rstd({rows, index_t{1}});
    float *py = y.mutable_data(), *pm = mean.mutable_data(), *pr = rstd.mutable_data();
    {
        py::gil_scoped_release release;
        minitl::cpu::layernorm_fwd(fdata(x), w, b, static_cast<float>(eps), py, pm, pr, rows,
                                   d);
    }
    return py::make_tuple(std::move(y), std::move(mean), std::move(rstd));
}

py::tuple layernorm_bwd(const py::array& g, const py::array& x, const py::array& mean,
                        const py::array& rstd, const std::optional<py::array>& weight,
                        const py::sequence& needs) {
    const char* op = "layernorm_bwd";
    check_operand(op, "x", x, 2);
    check_operand(op, "g", g, 2);
    check_same_shape(op, "g", g, "x", x);
    const index_t rows = x.shape(0), d = x.shape(1);
    check_per_row(op, "mean", mean, rows, x);
    check_per_row(op, "rstd", rstd, rows, x);
    const float* w = per_column(op, "weight", weight, d);
    if (py::len(needs) != 3)
        throw py::value_error(std::string(op) + ": needs must hold 3 flags (dx, dweight, "
                              "dbias), got " + std::to_string(py::len(needs)));
    bool need[3];
    for (int i = 0; i < 3; ++i) need[i] = py::bool_(needs[i]);
    std::optional<py::array_t<float>> dx, dw, db;
    float* pdx = need[0] ? dx.emplace(std::vector<py::ssize_t>{rows, d}).mutable_data() : nullptr;
    float* pdw = need[1] ? dw.emplace(std::vector<py::ssize_t>{d}).mutable_data() : nullptr;
    float* pdb = need[2] ? db.emplace(std::vector<py::ssize_t>{d}).mutable_data() : nullptr;
    {
        py::gil_scoped_release release;
        minitl::cpu::layernorm_bwd(fdata(g), fdata(x), fdata(mean), fdata(rstd), w, pdx, pdw,
                                   pdb, rows, d);
    }
    auto or_none = [](std::optional<py::array_t<float>>& v) -> py::object {
        return v ? py::object(std::move(*v)) : py::none();
    };
    return py::make_tuple(or_none(dx), or_none(dw), or_none(db));
}

// ---------------------------------------------------------------------------------------------
// softmax cross-entropy

py::tuple softmax_xent_fwd(const py::array& x, const py::array& target,
                           const std::optional<py::array>& weight, std::int64_t ignore_index,
                           double label_smoothing) {
    const char* op = "softmax_xent_fwd";
    check_operand(op, "x", x, 2);
    const index_t rows = x.shape(0), classes = x.shape(1);
    const minitl::cpu::XentSpec spec{
        checked_targets(op, target, rows, classes, ignore_index),
        per_column(op, "weight", weight, classes), ignore_index,
        static_cast<float>(label_smoothing)};
    py::array_t<float> loss(std::vector<py::ssize_t>{rows}), lse(std::vector<py::ssize_t>{rows});
    float *pl = loss.mutable_data(), *ps = lse.mutable_data();
    {
        py::gil_scoped_release release;
        minitl::cpu::softmax_xent_fwd(fdata(x), spec, pl, ps, rows, classes);
    }
    return py::make_tuple(std::move(loss), std::move(lse));
}

py::array softmax_xent_bwd(const py::array& x, const py::array& lse, const py::array& target,
                           const std::optional<py::array>& weight, std::int64_t ignore_index,
                           double label_smoothing, const py::object& grad_arg) {
    const char* op = "softmax_xent_bwd";
    const py::array grad = py::array::ensure(grad_arg);  // a numpy scalar as a 0-d array
    if (!grad) throw py::value_error(std::string(op) + ": grad must be an array or a scalar");
    check_operand(op, "x", x, 2);
    const index_t rows = x.shape(0), classes = x.shape(1);
    check_per_row(op, "lse", lse, rows, x);
    // a scalar upstream gradient (one for every row) is spread over the rows
    py::array_t<float> grad_rows;
    if (grad.size() == 1 && rows != 1) {
        check_float32(op, "grad", grad);
        grad_rows = py::array_t<float>(std::vector<py::ssize_t>{rows});
        std::fill_n(grad_rows.mutable_data(), rows, *fdata(grad));
    } else {
        check_per_row(op, "grad", grad, rows, x);
        grad_rows = py::reinterpret_borrow<py::array_t<float>>(grad);
    }
    const minitl::cpu::XentSpec spec{
        checked_targets(op, target, rows, classes, ignore_index),
        per_column(op, "weight", weight, classes), ignore_index,
        static_cast<float>(label_smoothing)};
    // numpy.zeros: calloc'd pages that numpy also asks to be huge pages (MADV_HUGEPAGE), so the
    // kernel can skip the ignored rows (most of an MLM batch) without their pages costing a
    // fault each when autograd reads them later (4 KB zero pages did: 61k faults a call)
    py::array dx = py::module_::import("numpy").attr("zeros")(py::make_tuple(rows, classes),
                                                              "float32");
    float* out = static_cast<float*>(dx.mutable_data());
    {
        py::gil_scoped_release release;
        minitl::cpu::softmax_xent_bwd(fdata(x), fdata(lse), spec, grad_rows.data(), out, rows,
                                      classes);
    }
    return dx;
}

}  // namespace

void def_rowwise(py::module_& m) {
    m.def("softmax_fwd", &softmax_fwd, py::arg("x"), py::arg("safe"),
          "softmax over the last axis of a C-contiguous float32 array (safe: an all -inf row "
          "gives zeros)");
    m.def("softmax_bwd", &softmax_bwd, py::arg("g"), py::arg("y"),
          "dx = g y - y sum(g y) over the last axis, for g and y of one shape");
    m.def("layernorm_fwd", &layernorm_fwd, py::arg("x"), py::arg("weight"), py::arg("bias"),
          py::arg("eps"),
          "(y, mean (M, 1), rstd (M, 1)) of layer_norm over the rows of x (M, D)");
    m.def("layernorm_bwd", &layernorm_bwd, py::arg("g"), py::arg("x"), py::arg("mean"),
          py::arg("rstd"), py::arg("weight"), py::arg("needs"),
          "(dx, dweight, dbias) of layernorm_fwd; one that needs does not ask for is None");
    m.def("softmax_xent_fwd", &softmax_xent_fwd, py::arg("x"), py::arg("target"),
          py::arg("weight"), py::arg("ignore_index"), py::arg("label_smoothing"),
          "(loss (M,), lse (M,)) of softmax cross-entropy over logits x (M, C), int64 targets");
    m.def("softmax_xent_bwd", &softmax_xent_bwd, py::arg("x"), py::arg("lse"),
          py::arg("target"), py::arg("weight"), py::arg("ignore_index"),
          py::arg("label_smoothing"), py::arg("grad"),
          "dx (M, C) of softmax_xent_fwd for the upstream gradient of each row, grad (M,), "
          "or one scalar for all rows");
}

}  // namespace minitl::bind
