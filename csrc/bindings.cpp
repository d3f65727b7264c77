// csrc/bindings.cpp — the pybind11 module minitl._C: argument checks and m.def only.
//
// Every argument is checked here (ndim, dtype, contiguity, shape agreement) and a ValueError
// naming the shapes is raised before any pointer reaches a kernel. Arrays are taken as plain
// py::array, never py::array_t with forcecast, so a float64 or strided array is refused
// instead of being copied and converted behind the caller's back. Kernels run without the GIL.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>  // std::optional: b=None

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "bind_checks.h"
#include "cpu/blas_pool.h"
#include "cpu/conv.h"
#include "cpu/conv_direct.h"
#include "cpu/gelu.h"
#include "cpu/gemm.h"
#include "cpu/isa.h"
#include "cpu/lora.h"
#include "cpu/qgemm.h"

namespace py = pybind11;

namespace {

using namespace minitl::bind;  // NOLINT: the checks are this file's vocabulary

// ---------------------------------------------------------------------------------------------
// gemm

py::array gemm(const py::array& a, const py::array& b, bool trans_a, bool trans_b) {
    if (a.ndim() != 2 || b.ndim() != 2)
        throw py::value_error("gemm: expected 2-D arrays, got shapes " + shape_str(a) + " and " +
                              shape_str(b));
    check_float32("gemm", "a", a);
    check_float32("gemm", "b", b);
    check_c_contiguous("gemm", "a", a);
    check_c_contiguous("gemm", "b", b);

    const py::ssize_t m = trans_a ? a.shape(1) : a.shape(0);
    const py::ssize_t k = trans_a ? a.shape(0) : a.shape(1);
    const py::ssize_t k_b = trans_b ? b.shape(1) : b.shape(0);
    const py::ssize_t n = trans_b ? b.shape(0) : b.shape(1);
    if (k != k_b)
        throw py::value_error("gemm: shapes " + shape_str(a) + " and " + shape_str(b) +
                              " do not align (trans_a=" + bool_str(trans_a) +
                              ", trans_b=" + bool_str(trans_b) + ")");

    py::array_t<float> c({m, n});
    const float* pa = static_cast<const float*>(a.data());
    const float* pb = static_cast<const float*>(b.data());
    float* pc = c.mutable_data();
    {
        py::gil_scoped_release release;
        minitl::cpu::gemm(pa, pb, pc, m, n, k, trans_a, trans_b);
    }
    return std::move(c);
}

py::array gemm_batched(const py::array& a, const py::array& b, bool trans_a, bool trans_b) {
    const char* op = "gemm_batched";
    if (a.ndim() != 3 || b.ndim() != 3 || a.shape(0) != b.shape(0))
        throw py::value_error(std::string(op) + ": expected 3-D arrays with the same batch size, "
                              "got shapes " + shape_str(a) + " and " + shape_str(b));
    check_float32(op, "a", a);
    check_float32(op, "b", b);
    check_c_contiguous(op, "a", a);
    check_c_contiguous(op, "b", b);
    const py::ssize_t m = trans_a ? a.shape(2) : a.shape(1);
    const py::ssize_t k = trans_a ? a.shape(1) : a.shape(2);
    const py::ssize_t k_b = trans_b ? b.shape(2) : b.shape(1);
    const py::ssize_t n = trans_b ? b.shape(1) : b.shape(2);
    if (k != k_b)
        throw py::value_error(std::string(op) + ": shapes " + shape_str(a) + " and " +
                              shape_str(b) + " do not align (trans_a=" + bool_str(trans_a) +
                              ", trans_b=" + bool_str(trans_b) + ")");
    py::array_t<float> c({a.shape(0), m, n});
    const float* pa = static_cast<const float*>(a.data());
    const float* pb = static_cast<const float*>(b.data());
    float* pc = c.mutable_data();
    {
        py::gil_scoped_release release;
        minitl::cpu::gemm_batched(pa, pb, pc, a.shape(0), m, n, k, trans_a, trans_b);
    }
    return std::move(c);
}

// ---------------------------------------------------------------------------------------------
// lora_linear


// Every shape in one message, so a caller sees at once which operand disagrees.
[[noreturn]] void lora_shape_error(const char* op, const std::string& shapes) {
    throw py::value_error(std::string(op) + ": shapes do not fit: " + shapes +
                          " (need x (N, Din), w (Dout, Din), b (Dout,), a (r, Din), "
                          "bm (Dout, r), g (N, Dout), xa (N, r))");
}

py::tuple lora_linear_fwd(const py::array& x, const py::array& w,
                          const std::optional<py::array>& b, const py::array& a,
                          const py::array& bm, double scale) {
    const char* op = "lora_linear_fwd";
    check_operand(op, "x", x, 2);
    check_operand(op, "w", w, 2);
    if (b) check_operand(op, "b", *b, 1);
    check_operand(op, "a", a, 2);
    check_operand(op, "bm", bm, 2);
    const py::ssize_t n = x.shape(0), din = x.shape(1), dout = w.shape(0), r = a.shape(0);
    if (w.shape(1) != din || a.shape(1) != din || bm.shape(0) != dout || bm.shape(1) != r ||
        (b && b->shape(0) != dout))
        lora_shape_error(op, "x " + shape_str(x) + ", w " + shape_str(w) + ", b " +
                                 (b ? shape_str(*b) : std::string("None")) + ", a " +
                                 shape_str(a) + ", bm " + shape_str(bm));

    py::array_t<float> y({n, dout});
    py::array_t<float> xa({n, r});
    const float* pb = b ? fdata(*b) : nullptr;
    {
        py::gil_scoped_release release;
        minitl::cpu::lora_linear_fwd(fdata(x), fdata(w), pb, fdata(a), fdata(bm), float(scale),
                                     n, din, dout, r, y.mutable_data(), xa.mutable_data());
    }
    return py::make_tuple(std::move(y), std::move(xa));
}

py::tuple lora_linear_bwd(const py::array& g, const py::array& x, const py::array& w,
                          const py::array& a, const py::array& bm, const py::array& xa,
                          double scale, const py::sequence& needs) {
    const char* op = "lora_linear_bwd";
    check_operand(op, "g", g, 2);
    check_operand(op, "x", x, 2);
    check_operand(op, "w", w, 2);
    check_operand(op, "a", a, 2);
    check_operand(op, "bm", bm, 2);
    check_operand(op, "xa", xa, 2);
    if (py::len(needs) != 5)
        throw py::value_error(std::string(op) + ": needs must hold 5 flags (dx, dw, db, da, "
                              "dbm), got " + std::to_string(py::len(needs)));
    bool need[5];
    for (int i = 0; i < 5; ++i) need[i] = py::bool_(needs[i]);
    const py::ssize_t n = x.shape(0), din = x.shape(1), dout = w.shape(0), r = a.shape(0);
    if (w.shape(1) != din || a.shape(1) != din || bm.shape(0) != dout || bm.shape(1) != r ||
        g.shape(0) != n || g.shape(1) != dout || xa.shape(0) != n || xa.shape(1) != r)
        lora_shape_error(op, "g " + shape_str(g) + ", x " + shape_str(x) + ", w " +
                                 shape_str(w) + ", a " + shape_str(a) + ", bm " + shape_str(bm) +
                                 ", xa " + shape_str(xa));

    std::optional<py::array_t<float>> dx, dw, db, da, dbm;
    minitl::cpu::LoraGrads out;
    if (need[0]) out.dx = dx.emplace(std::vector<py::ssize_t>{n, din}).mutable_data();
    if (need[1]) out.dw = dw.emplace(std::vector<py::ssize_t>{dout, din}).mutable_data();
    if (need[2]) out.db = db.emplace(std::vector<py::ssize_t>{dout}).mutable_data();
    if (need[3]) out.da = da.emplace(std::vector<py::ssize_t>{r, din}).mutable_data();
    if (need[4]) out.dbm = dbm.emplace(std::vector<py::ssize_t>{dout, r}).mutable_data();
    {
        py::gil_scoped_release release;
        minitl::cpu::lora_linear_bwd(fdata(g), fdata(x), fdata(w), fdata(a), fdata(bm),
                                     fdata(xa), float(scale), n, din, dout, r, out);
    }
    auto or_none = [](std::optional<py::array_t<float>>& v) -> py::object {
        return v ? py::object(std::move(*v)) : py::none();
    };
    return py::make_tuple(or_none(dx), or_none(dw), or_none(db), or_none(da), or_none(dbm));
}

// ---------------------------------------------------------------------------------------------
// quantized linear (ggml blocks)

// The block matrix q (rows, row_bytes) uint8 of ggml type qtype, checked.
minitl::cpu::QuantMatrix quant_matrix(const char* op, const py::array& q, int qtype) {
    const py::ssize_t bytes = minitl::cpu::quant_block_bytes(qtype);
    if (bytes == 0)
        throw py::value_error(std::string(op) + ": ggml type " + std::to_string(qtype) +
                              " is not one the kernels take (2 Q4_0, 3 Q4_1, 8 Q8_0)");
    if (!q.dtype().equal(py::dtype::of<std::uint8_t>()))
        throw py::value_error(std::string(op) + ": expected uint8 blocks, got " + dtype_str(q) +
                              " with shape " + shape_str(q));
    check_c_contiguous(op, "q", q);
    if (q.ndim() != 2 || q.shape(1) % bytes != 0)
        throw py::value_error(std::string(op) + ": q must be (rows, k * " +
                              std::to_string(bytes) + ") for ggml type " +
                              std::to_string(qtype) + ", got shape " + shape_str(q));
    return {static_cast<const std::uint8_t*>(q.data()), q.shape(0), q.shape(1) / bytes * 32,
            qtype};
}

py::array quant_linear_fwd(const py::array& x, const py::array& q, int qtype,
                           const std::optional<py::array>& bias) {
    const char* op = "quant_linear_fwd";
    const minitl::cpu::QuantMatrix w = quant_matrix(op, q, qtype);
    check_operand(op, "x", x, 2);
    if (bias) check_operand(op, "bias", *bias, 1);
    if (x.shape(1) != w.cols || (bias && bias->shape(0) != w.rows))
        throw py::value_error(std::string(op) + ": shapes do not fit: x " + shape_str(x) +
                              ", q " + shape_str(q) + " (" + std::to_string(w.rows) + " x " +
                              std::to_string(w.cols) + " weights), bias " +
                              (bias ? shape_str(*bias) : std::string("None")));
    py::array_t<float> y({x.shape(0), w.rows});
    const float* pb = bias ? fdata(*bias) : nullptr;
    {
        py::gil_scoped_release release;
        minitl::cpu::quant_linear_fwd(fdata(x), w, pb, y.mutable_data(), x.shape(0));
    }
    return std::move(y);
}

py::array quant_linear_bwd(const py::array& g, const py::array& q, int qtype) {
    const char* op = "quant_linear_bwd";
    const minitl::cpu::QuantMatrix w = quant_matrix(op, q, qtype);
    check_operand(op, "g", g, 2);
    if (g.shape(1) != w.rows)
        throw py::value_error(std::string(op) + ": shapes do not fit: g " + shape_str(g) +
                              ", q " + shape_str(q) + " (" + std::to_string(w.rows) + " x " +
                              std::to_string(w.cols) + " weights)");
    py::array_t<float> dx({g.shape(0), w.cols});
    {
        py::gil_scoped_release release;
        minitl::cpu::quant_linear_bwd(fdata(g), w, dx.mutable_data(), g.shape(0));
    }
    return std::move(dx);
}

py::array dequantize_rows(const py::array& q, int qtype, const py::array& ids) {
    const char* op = "dequantize_rows";
    const minitl::cpu::QuantMatrix w = quant_matrix(op, q, qtype);
    if (!ids.dtype().equal(py::dtype::of<std::int64_t>()) || ids.ndim() != 1)
        throw py::value_error(std::string(op) + ": ids must be 1-D int64, got " +
                              dtype_str(ids) + " with shape " + shape_str(ids));
    check_c_contiguous(op, "ids", ids);
    const auto* pid = static_cast<const std::int64_t*>(ids.data());
    for (py::ssize_t i = 0; i < ids.shape(0); ++i)
        if (pid[i] < 0 || pid[i] >= w.rows)
            throw py::index_error(std::string(op) + ": index " + std::to_string(pid[i]) +
                                  " at position " + std::to_string(i) + " is out of range for " +
                                  std::to_string(w.rows) + " rows");
    py::array_t<float> out({ids.shape(0), w.cols});
    {
        py::gil_scoped_release release;
        minitl::cpu::dequantize_rows(w, pid, ids.shape(0), out.mutable_data());
    }
    return std::move(out);
}

py::tuple quant_lora_linear_fwd(const py::array& x, const py::array& q, int qtype,
                                const std::optional<py::array>& b, const py::array& a,
                                const py::array& bm, double scale) {
    const char* op = "quant_lora_linear_fwd";
    const minitl::cpu::QuantMatrix w = quant_matrix(op, q, qtype);
    check_operand(op, "x", x, 2);
    if (b) check_operand(op, "b", *b, 1);
    check_operand(op, "a", a, 2);
    check_operand(op, "bm", bm, 2);
    const py::ssize_t n = x.shape(0), r = a.shape(0);
    if (x.shape(1) != w.cols || a.shape(1) != w.cols || bm.shape(0) != w.rows ||
        bm.shape(1) != r || (b && b->shape(0) != w.rows))
        lora_shape_error(op, "x " + shape_str(x) + ", q " + shape_str(q) + " (" +
                                 std::to_string(w.rows) + " x " + std::to_string(w.cols) +
                                 " weights), b " + (b ? shape_str(*b) : std::string("None")) +
                                 ", a " + shape_str(a) + ", bm " + shape_str(bm));
    py::array_t<float> y({n, w.rows});
    py::array_t<float> xa({n, r});
    const float* pb = b ? fdata(*b) : nullptr;
    {
        py::gil_scoped_release release;
        minitl::cpu::quant_lora_linear_fwd(fdata(x), w, pb, fdata(a), fdata(bm), float(scale), n,
                                           r, y.mutable_data(), xa.mutable_data());
    }
    return py::make_tuple(std::move(y), std::move(xa));
}

py::tuple quant_lora_linear_bwd(const py::array& g, const py::array& x, const py::array& q,
                                int qtype, const py::array& a, const py::array& bm,
                                const py::array& xa, double scale, const py::sequence& needs) {
    const char* op = "quant_lora_linear_bwd";
    const minitl::cpu::QuantMatrix w = quant_matrix(op, q, qtype);
    check_operand(op, "g", g, 2);
    check_operand(op, "x", x, 2);
    check_operand(op, "a", a, 2);
    check_operand(op, "bm", bm, 2);
    check_operand(op, "xa", xa, 2);
    if (py::len(needs) != 4)
        throw py::value_error(std::string(op) + ": needs must hold 4 flags (dx, db, da, dbm), "
                              "got " + std::to_string(py::len(needs)));
    bool need[4];
    for (int i = 0; i < 4; ++i) need[i] = py::bool_(needs[i]);
    const py::ssize_t n = x.shape(0), r = a.shape(0);
    if (x.shape(1) != w.cols || a.shape(1) != w.cols || bm.shape(0) != w.rows ||
        bm.shape(1) != r || g.shape(0) != n || g.shape(1) != w.rows || xa.shape(0) != n ||
        xa.shape(1) != r)
        lora_shape_error(op, "g " + shape_str(g) + ", x " + shape_str(x) + ", q " +
                                 shape_str(q) + " (" + std::to_string(w.rows) + " x " +
                                 std::to_string(w.cols) + " weights), a " + shape_str(a) +
                                 ", bm " + shape_str(bm) + ", xa " + shape_str(xa));
    std::optional<py::array_t<float>> dx, db, da, dbm;
    minitl::cpu::LoraGrads out;
    if (need[0]) out.dx = dx.emplace(std::vector<py::ssize_t>{n, w.cols}).mutable_data();
    if (need[1]) out.db = db.emplace(std::vector<py::ssize_t>{w.rows}).mutable_data();
    if (need[2]) out.da = da.emplace(std::vector<py::ssize_t>{r, w.cols}).mutable_data();
    if (need[3]) out.dbm = dbm.emplace(std::vector<py::ssize_t>{w.rows, r}).mutable_data();
    {
        py::gil_scoped_release release;
        minitl::cpu::quant_lora_linear_bwd(fdata(g), fdata(x), w, fdata(a), fdata(bm),
                                           fdata(xa), float(scale), n, r, out);
    }
    auto or_none = [](std::optional<py::array_t<float>>& v) -> py::object {
        return v ? py::object(std::move(*v)) : py::none();
    };
    return py::make_tuple(or_none(dx), or_none(db), or_none(da), or_none(dbm));
}

// ---------------------------------------------------------------------------------------------
// conv2d

using Pair = std::array<py::ssize_t, 2>;

// Checks x (N, C, H, W), weight (Co, C / groups, kh, kw) and the geometry; returns it with the
// output size. Every size that indexes memory is validated here.
minitl::cpu::ConvGeom conv_geom(const char* op, const py::array& x, const py::array& w,
                                Pair stride, Pair pad_lo, Pair pad_hi, Pair dilation,
                                py::ssize_t groups) {
    check_operand(op, "x", x, 4);
    check_operand(op, "weight", w, 4);
    const std::string shapes = "x " + shape_str(x) + ", weight " + shape_str(w);
    if (groups < 1 || x.shape(1) % groups != 0 || w.shape(0) % groups != 0 ||
        w.shape(1) * groups != x.shape(1))
        throw py::value_error(std::string(op) + ": " + shapes + " do not fit groups=" +
                              std::to_string(groups) +
                              " (need C = weight.shape[1] * groups, Co divisible by groups)");
    for (int i = 0; i < 2; ++i) {
        if (stride[i] < 1 || dilation[i] < 1 || pad_lo[i] < 0 || pad_hi[i] < 0)
            throw py::value_error(std::string(op) + ": stride and dilation must be >= 1 and "
                                  "padding >= 0, got stride (" + std::to_string(stride[0]) +
                                  ", " + std::to_string(stride[1]) + "), dilation (" +
                                  std::to_string(dilation[0]) + ", " +
                                  std::to_string(dilation[1]) + ")");
    }
    minitl::cpu::ConvGeom g{};
    g.n = x.shape(0), g.c = x.shape(1), g.h = x.shape(2), g.w = x.shape(3);
    g.co = w.shape(0), g.kh = w.shape(2), g.kw = w.shape(3);
    g.sh = stride[0], g.sw = stride[1], g.ph = pad_lo[0], g.pw = pad_lo[1];
    g.dh = dilation[0], g.dw = dilation[1], g.groups = groups;
    const py::ssize_t span_h = g.h + pad_lo[0] + pad_hi[0] - g.dh * (g.kh - 1) - 1;
    const py::ssize_t span_w = g.w + pad_lo[1] + pad_hi[1] - g.dw * (g.kw - 1) - 1;
    if (g.kh < 1 || g.kw < 1 || span_h < 0 || span_w < 0)
        throw py::value_error(std::string(op) + ": " + shapes +
                              ": the padded input is smaller than the dilated kernel");
    g.oh = span_h / g.sh + 1, g.ow = span_w / g.sw + 1;
    return g;
}

py::array conv2d_fwd(const py::array& x, const py::array& w, const std::optional<py::array>& b,
                     Pair stride, Pair pad_lo, Pair pad_hi, Pair dilation, py::ssize_t groups) {
    const char* op = "conv2d_fwd";
    const minitl::cpu::ConvGeom g = conv_geom(op, x, w, stride, pad_lo, pad_hi, dilation, groups);
    if (b) {
        check_operand(op, "bias", *b, 1);
        if (b->shape(0) != g.co)
            throw py::value_error(std::string(op) + ": bias " + shape_str(*b) +
                                  " does not match weight " + shape_str(w));
    }
    py::array_t<float> y({g.n, g.co, g.oh, g.ow});
    const float* pb = b ? fdata(*b) : nullptr;
    float* out = y.mutable_data();
    {
        py::gil_scoped_release release;
        minitl::cpu::conv2d_fwd(fdata(x), fdata(w), pb, out, g);
    }
    return std::move(y);
}

py::tuple conv2d_bwd(const py::array& x, const py::array& w, const py::array& gy, Pair stride,
                     Pair pad_lo, Pair pad_hi, Pair dilation, py::ssize_t groups, bool need_dx,
                     bool need_dw) {
    const char* op = "conv2d_bwd";
    const minitl::cpu::ConvGeom g = conv_geom(op, x, w, stride, pad_lo, pad_hi, dilation, groups);
    check_operand(op, "gy", gy, 4);
    if (gy.shape(0) != g.n || gy.shape(1) != g.co || gy.shape(2) != g.oh || gy.shape(3) != g.ow)
        throw py::value_error(std::string(op) + ": gy " + shape_str(gy) + " does not match " +
                              "the output (" + std::to_string(g.n) + ", " + std::to_string(g.co) +
                              ", " + std::to_string(g.oh) + ", " + std::to_string(g.ow) +
                              ") of x " + shape_str(x) + " and weight " + shape_str(w));
    std::optional<py::array_t<float>> dx, dw;
    float* pdx = need_dx ? dx.emplace(std::vector<py::ssize_t>{g.n, g.c, g.h, g.w})
                               .mutable_data() : nullptr;
    float* pdw = need_dw ? dw.emplace(std::vector<py::ssize_t>{g.co, w.shape(1), g.kh, g.kw})
                               .mutable_data() : nullptr;
    {
        py::gil_scoped_release release;
        minitl::cpu::conv2d_bwd(fdata(x), fdata(w), fdata(gy), pdx, pdw, g);
    }
    auto or_none = [](std::optional<py::array_t<float>>& v) -> py::object {
        return v ? py::object(std::move(*v)) : py::none();
    };
    return py::make_tuple(or_none(dx), or_none(dw));
}

void set_conv_path(const std::string& name) {
    if (!minitl::cpu::set_conv_path(name))
        throw py::value_error("set_conv_path: unknown path '" + name +
                              "' (expected 'auto', 'gemm' or 'direct')");
}

void set_quant_path(const std::string& name) {
    if (!minitl::cpu::set_quant_path(name))
        throw py::value_error("set_quant_path: unknown or unsupported path '" + name +
                              "' (expected 'auto', 'generic', 'avx2' or 'avx512' where the CPU "
                              "has it)");
}

py::dict cpu_features() {
    const minitl::cpu::CpuFeatures f = minitl::cpu::cpu_features();
    py::dict d;
    d["avx2"] = f.avx2;
    d["fma"] = f.fma;
    d["avx512f"] = f.avx512f;
    d["openmp_threads"] = f.openmp_threads;
    d["gemm_path"] = f.gemm_path;
    d["quant_path"] = minitl::cpu::quant_path();
    d["isa"] = minitl::cpu::isa_name(minitl::cpu::isa());  // after the MINITL_CPU_ISA cap
    return d;
}

void set_gemm_path(const std::string& name) {
    if (!minitl::cpu::set_gemm_path(name))
        throw py::value_error("set_gemm_path: unknown or unsupported path '" + name +
                              "' (expected 'auto', 'generic', 'generic_12x32', 'avx2' or "
                              "'avx512' where the CPU has it)");
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// module

// ---------------------------------------------------------------------------------------------
// gelu

py::array gelu_fwd(const py::array& x, bool exact) {
    check_float32("gelu_fwd", "x", x);
    check_c_contiguous("gelu_fwd", "x", x);
    py::array_t<float> y(std::vector<py::ssize_t>(x.shape(), x.shape() + x.ndim()));
    const py::ssize_t n = x.size();
    float* out = y.mutable_data();
    {
        py::gil_scoped_release release;
        minitl::cpu::gelu_fwd(fdata(x), out, n, exact);
    }
    return std::move(y);
}

py::array gelu_bwd(const py::array& g, const py::array& x, bool exact) {
    for (const auto& [name, a] : {std::pair<const char*, const py::array&>{"g", g}, {"x", x}}) {
        check_float32("gelu_bwd", name, a);
        check_c_contiguous("gelu_bwd", name, a);
    }
    if (g.ndim() != x.ndim() || !std::equal(g.shape(), g.shape() + g.ndim(), x.shape()))
        throw py::value_error("gelu_bwd: g of shape " + shape_str(g) + " does not match x of "
                              "shape " + shape_str(x));
    py::array_t<float> dx(std::vector<py::ssize_t>(x.shape(), x.shape() + x.ndim()));
    const py::ssize_t n = x.size();
    float* out = dx.mutable_data();
    {
        py::gil_scoped_release release;
        minitl::cpu::gelu_bwd(fdata(g), fdata(x), out, n, exact);
    }
    return std::move(dx);
}

PYBIND11_MODULE(_C, m) {
    m.doc() = "minitl native CPU kernels (C++, OpenMP)";
    minitl::bind::def_rowwise(m);
    minitl::bind::def_embedding(m);
    minitl::bind::def_attention(m);
    minitl::bind::def_batchnorm(m);

    m.def("gelu_fwd", &gelu_fwd, py::arg("x"), py::arg("exact"),
          "GELU of a C-contiguous float32 array (exact: erf form, else tanh form)");
    m.def("gelu_bwd", &gelu_bwd, py::arg("g"), py::arg("x"), py::arg("exact"),
          "dx of gelu_fwd for C-contiguous float32 g and x of one shape");

    m.def("gemm", &gemm, py::arg("a"), py::arg("b"), py::arg("trans_a") = false,
          py::arg("trans_b") = false,
          "C = op(a) @ op(b) for 2-D C-contiguous float32 arrays; op transposes when its flag "
          "is set. Reference: minitl/backend/reference.py: gemm.");
    m.def("gemm_batched", &gemm_batched, py::arg("a"), py::arg("b"), py::arg("trans_a") = false,
          py::arg("trans_b") = false,
          "C[i] = op(a[i]) @ op(b[i]) for 3-D C-contiguous float32 arrays with one batch size. "
          "Reference: minitl/backend/reference.py: gemm_batched.");
    m.def("lora_linear_fwd", &lora_linear_fwd, py::arg("x"), py::arg("w"), py::arg("b"),
          py::arg("a"), py::arg("bm"), py::arg("scale"),
          "(y, xa): y = x w^T + b + scale * (x a^T) bm^T and xa = x a^T, for C-contiguous "
          "float32 x (N, Din), w (Dout, Din), b (Dout,) or None, a (r, Din), bm (Dout, r). "
          "Reference: minitl/backend/reference.py: lora_linear_fwd.");
    m.def("lora_linear_bwd", &lora_linear_bwd, py::arg("g"), py::arg("x"), py::arg("w"),
          py::arg("a"), py::arg("bm"), py::arg("xa"), py::arg("scale"), py::arg("needs"),
          "(dx, dw, db, da, dbm) of lora_linear_fwd given g = dL/dy (N, Dout) and its xa; "
          "needs holds 5 flags, and a gradient not needed is None and costs nothing. "
          "Reference: minitl/backend/reference.py: lora_linear_bwd.");
    m.def("quant_linear_fwd", &quant_linear_fwd, py::arg("x"), py::arg("q"), py::arg("qtype"),
          py::arg("bias"),
          "y = x W^T + bias for C-contiguous float32 x (N, k) and W (n, k) kept as ggml blocks "
          "q (n, k / 32 * block bytes) uint8 of type qtype (2 Q4_0, 3 Q4_1, 8 Q8_0); bias (n,) "
          "or None. Reference: minitl/backend/reference.py: quant_linear_fwd.");
    m.def("quant_linear_bwd", &quant_linear_bwd, py::arg("g"), py::arg("q"), py::arg("qtype"),
          "dx = g W for float32 g (N, n) and the blocks q of W (n, k). Reference: "
          "minitl/backend/reference.py: quant_linear_bwd.");
    m.def("quant_lora_linear_fwd", &quant_lora_linear_fwd, py::arg("x"), py::arg("q"),
          py::arg("qtype"), py::arg("b"), py::arg("a"), py::arg("bm"), py::arg("scale"),
          "(y, xa): y = x W^T + b + scale * (x a^T) bm^T with W (n, k) kept as ggml blocks q "
          "(QLoRA), xa = x a^T. Reference: minitl/backend/reference.py: quant_lora_linear_fwd.");
    m.def("quant_lora_linear_bwd", &quant_lora_linear_bwd, py::arg("g"), py::arg("x"),
          py::arg("q"), py::arg("qtype"), py::arg("a"), py::arg("bm"), py::arg("xa"),
          py::arg("scale"), py::arg("needs"),
          "(dx, db, da, dbm) of quant_lora_linear_fwd; needs holds 4 flags, and a gradient "
          "not needed is None. Reference: minitl/backend/reference.py: quant_lora_linear_bwd.");
    m.def("dequantize_rows", &dequantize_rows, py::arg("q"), py::arg("qtype"), py::arg("ids"),
          "W[ids] (len(ids), k) float32 from the blocks q of W; ids 1-D int64 in [0, n). "
          "Reference: minitl/backend/reference.py: dequantize_rows.");
    m.def("conv2d_fwd", &conv2d_fwd, py::arg("x"), py::arg("weight"), py::arg("bias"),
          py::arg("stride"), py::arg("pad_lo"), py::arg("pad_hi"), py::arg("dilation"),
          py::arg("groups"),
          "y (N, Co, OH, OW) = conv2d of C-contiguous float32 x (N, C, H, W) with weight "
          "(Co, C / groups, kh, kw) and bias (Co,) or None; pad_lo / pad_hi are the (top, left) "
          "/ (bottom, right) padding. Reference: minitl/backend/cpu_conv.py.");
    m.def("conv2d_bwd", &conv2d_bwd, py::arg("x"), py::arg("weight"), py::arg("gy"),
          py::arg("stride"), py::arg("pad_lo"), py::arg("pad_hi"), py::arg("dilation"),
          py::arg("groups"), py::arg("need_dx"), py::arg("need_dw"),
          "(dx, dweight) of conv2d_fwd given gy = dL/dy; one not needed is None. Reference: "
          "minitl/backend/cpu_conv.py.");
    m.def("set_quant_path", &set_quant_path, py::arg("name"),
          "Force the dequantizing path: 'auto' (default), 'generic', 'avx2' or 'avx512'.");
    m.def("set_conv_path", &set_conv_path, py::arg("name"),
          "Force conv2d's path: 'auto' (default), 'gemm' (im2col + GEMM) or 'direct' (the "
          "shifted windows wherever the geometry allows), for tests.");
    m.def("conv_path", &minitl::cpu::conv_path, "conv2d's forced path, or 'auto'.");
    m.def("blas_jobs_callback",
          [] { return reinterpret_cast<std::uintptr_t>(&minitl::cpu::run_blas_jobs); },
          "Address of a function with OpenBLAS's openblas_threads_callback signature that runs "
          "OpenBLAS's parallel jobs on minitl's OpenMP team (csrc/cpu/blas_pool.h).");
    m.def("blas_job_counts", [] {
              const minitl::cpu::BlasJobCounts c = minitl::cpu::blas_job_counts();
              return py::make_tuple(c.calls, c.on_started_threads);
          },
          "(calls, calls on started threads) of the OpenBLAS jobs callback so far.");
    m.def("cpu_features", &cpu_features,
          "dict: avx2, fma, avx512f (bool), openmp_threads (int), gemm_path, quant_path, "
          "isa (str)");
    m.def("set_gemm_path", &set_gemm_path, py::arg("name"),
          "Force the GEMM micro-kernel: 'auto' (default), 'generic', 'avx2', 'avx512', or "
          "'generic_12x32' (portable code in the AVX-512 kernel's shape, for tests).");
}
