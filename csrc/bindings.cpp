// csrc/bindings.cpp — the pybind11 module minitl._C: argument checks and m.def only.
//
// Every argument is checked here (ndim, dtype, contiguity, shape agreement) and a ValueError
// naming the shapes is raised before any pointer reaches a kernel. Arrays are taken as plain
// py::array, never py::array_t with forcecast, so a float64 or strided array is refused
// instead of being copied and converted behind the caller's back. Kernels run without the GIL.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <string>

#include "cpu/gemm.h"

namespace py = pybind11;

namespace {

// ---------------------------------------------------------------------------------------------
// argument checks

// Shape as Python prints the tuple: (3,), (3, 4).
std::string shape_str(const py::array& x) {
    std::string s = "(";
    for (py::ssize_t i = 0; i < x.ndim(); ++i) {
        if (i > 0) s += ", ";
        s += std::to_string(x.shape(i));
    }
    return s + (x.ndim() == 1 ? ",)" : ")");
}

std::string dtype_str(const py::array& x) { return py::str(x.dtype()).cast<std::string>(); }

const char* bool_str(bool v) { return v ? "True" : "False"; }

// float32 in native byte order; equal() rather than identity so an equivalent descriptor
// (one carrying metadata, say) is accepted while a byte-swapped one is not.
void check_float32(const char* op, const char* name, const py::array& x) {
    if (!x.dtype().equal(py::dtype::of<float>()))
        throw py::value_error(std::string(op) + ": expected float32, got " + dtype_str(x) +
                              " for " + name);
}

void check_c_contiguous(const char* op, const char* name, const py::array& x) {
    if (!(x.flags() & py::array::c_style))
        throw py::value_error(std::string(op) + ": " + name + " with shape " + shape_str(x) +
                              " must be C-contiguous (pass np.ascontiguousarray(" + name + "))");
}

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

py::dict cpu_features() {
    const minitl::cpu::CpuFeatures f = minitl::cpu::cpu_features();
    py::dict d;
    d["avx2"] = f.avx2;
    d["fma"] = f.fma;
    d["avx512f"] = f.avx512f;
    d["openmp_threads"] = f.openmp_threads;
    d["gemm_path"] = f.gemm_path;
    return d;
}

void set_gemm_path(const std::string& name) {
    if (!minitl::cpu::set_gemm_path(name))
        throw py::value_error("set_gemm_path: unknown or unsupported path '" + name +
                              "' (expected 'auto', 'generic' or 'avx2' where the CPU has it)");
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// module

PYBIND11_MODULE(_C, m) {
    m.doc() = "minitl native CPU kernels (C++, OpenMP)";

    m.def("gemm", &gemm, py::arg("a"), py::arg("b"), py::arg("trans_a") = false,
          py::arg("trans_b") = false,
          "C = op(a) @ op(b) for 2-D C-contiguous float32 arrays; op transposes when its flag "
          "is set. Reference: minitl/backend/reference.py: gemm.");
    m.def("cpu_features", &cpu_features,
          "dict: avx2, fma, avx512f (bool), openmp_threads (int), gemm_path (str)");
    m.def("set_gemm_path", &set_gemm_path, py::arg("name"),
          "Force the GEMM micro-kernel: 'auto' (default), 'generic' or 'avx2'.");
}
