// csrc/bindings_batchnorm.cpp — argument checks and m.def lines for BatchNorm's passes
// (csrc/cpu/batchnorm.cpp). Activations are C-contiguous float32 (N, C, L); per-channel
// vectors are float32 (C,).
#include <string>
#include <vector>

#include "bind_checks.h"
#include "cpu/batchnorm.h"

namespace minitl::bind {
namespace {

using minitl::cpu::index_t;

void check_activations(const char* op, const char* name, const py::array& a,
                       const py::array* like) {
    check_operand(op, name, a, 3);
    if (like != nullptr && !std::equal(a.shape(), a.shape() + 3, like->shape()))
        throw py::value_error(std::string(op) + ": " + name + " of shape " + shape_str(a) +
                              " does not match x of shape " + shape_str(*like));
}

void check_channels(const char* op, const char* name, const py::array& v, py::ssize_t c) {
    check_operand(op, name, v, 1);
    if (v.shape(0) != c)
        throw py::value_error(std::string(op) + ": " + name + " of shape " + shape_str(v) +
                              " does not match " + std::to_string(c) + " channels");
}

py::array_t<double> doubles(py::ssize_t c) { return py::array_t<double>(std::vector{c}); }

py::tuple stats(const py::array& x) {
    check_activations("batchnorm_stats", "x", x, nullptr);
    const index_t n = x.shape(0), c = x.shape(1), l = x.shape(2);
    auto mean = doubles(c), var = doubles(c);
    double *pm = mean.mutable_data(), *pv = var.mutable_data();
    {
        py::gil_scoped_release release;
        minitl::cpu::batchnorm_stats(fdata(x), n, c, l, pm, pv);
    }
    return py::make_tuple(mean, var);
}

py::array affine(const py::array& x, const py::array& s, const py::array& t) {
    const char* op = "batchnorm_affine";
    check_activations(op, "x", x, nullptr);
    check_channels(op, "s", s, x.shape(1));
    check_channels(op, "t", t, x.shape(1));
    py::array_t<float> y(std::vector<py::ssize_t>(x.shape(), x.shape() + 3));
    float* py_ = y.mutable_data();
    {
        py::gil_scoped_release release;
        minitl::cpu::batchnorm_affine(fdata(x), fdata(s), fdata(t), x.shape(0), x.shape(1),
                                      x.shape(2), py_);
    }
    return std::move(y);
}

py::tuple bwd_sums(const py::array& g, const py::array& x, const py::array& mean) {
    const char* op = "batchnorm_bwd_sums";
    check_activations(op, "x", x, nullptr);
    check_activations(op, "g", g, &x);
    check_channels(op, "mean", mean, x.shape(1));
    const index_t c = x.shape(1);
    auto sum_g = doubles(c), sum_gxc = doubles(c);
    double *ps = sum_g.mutable_data(), *psx = sum_gxc.mutable_data();
    {
        py::gil_scoped_release release;
        minitl::cpu::batchnorm_bwd_sums(fdata(g), fdata(x), fdata(mean), x.shape(0), c,
                                        x.shape(2), ps, psx);
    }
    return py::make_tuple(sum_g, sum_gxc);
}

py::array bwd_dx(const py::array& g, const py::array& x, const py::array& mean,
                 const py::array& a, const py::array& b, const py::array& d) {
    const char* op = "batchnorm_bwd_dx";
    check_activations(op, "x", x, nullptr);
    check_activations(op, "g", g, &x);
    for (const auto& [name, v] : {std::pair<const char*, const py::array&>{"mean", mean},
                                  {"a", a}, {"b", b}, {"d", d}})
        check_channels(op, name, v, x.shape(1));
    py::array_t<float> dx(std::vector<py::ssize_t>(x.shape(), x.shape() + 3));
    float* out = dx.mutable_data();
    {
        py::gil_scoped_release release;
        minitl::cpu::batchnorm_bwd_dx(fdata(g), fdata(x), fdata(mean), fdata(a), fdata(b),
                                      fdata(d), x.shape(0), x.shape(1), x.shape(2), out);
    }
    return std::move(dx);
}

}  // namespace

void def_batchnorm(py::module_& m) {
    m.def("batchnorm_stats", &stats, py::arg("x"),
          "(mean, var) float64 (C,) of float32 x (N, C, L) per channel; var biased, from the "
          "centred values.");
    m.def("batchnorm_affine", &affine, py::arg("x"), py::arg("s"), py::arg("t"),
          "y = x s[c] + t[c] for float32 x (N, C, L), s and t (C,).");
    m.def("batchnorm_bwd_sums", &bwd_sums, py::arg("g"), py::arg("x"), py::arg("mean"),
          "(sum g, sum g (x - mean)) float64 (C,) per channel for float32 g, x (N, C, L).");
    m.def("batchnorm_bwd_dx", &bwd_dx, py::arg("g"), py::arg("x"), py::arg("mean"), py::arg("a"),
          py::arg("b"), py::arg("d"),
          "dx = a[c] g + b[c] (x - mean[c]) + d[c] for float32 g, x (N, C, L) and mean, a, b, "
          "d (C,).");
}

}  // namespace minitl::bind
