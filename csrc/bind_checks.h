// csrc/bind_checks.h — the argument checks every binding file shares (csrc/bindings*.cpp).
//
// Each check raises a ValueError that names the op, the operand and its shape before any
// pointer reaches a kernel.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <string>

namespace minitl::bind {

namespace py = pybind11;

// Shape as Python prints the tuple: (3,), (3, 4).
inline std::string shape_str(const py::array& x) {
    std::string s = "(";
    for (py::ssize_t i = 0; i < x.ndim(); ++i) {
        if (i > 0) s += ", ";
        s += std::to_string(x.shape(i));
    }
    return s + (x.ndim() == 1 ? ",)" : ")");
}

inline std::string dtype_str(const py::array& x) { return py::str(x.dtype()).cast<std::string>(); }

inline const char* bool_str(bool v) { return v ? "True" : "False"; }

// float32 in native byte order; equal() rather than identity so an equivalent descriptor
// (one carrying metadata, say) is accepted while a byte-swapped one is not.
inline void check_float32(const char* op, const char* name, const py::array& x) {
    if (!x.dtype().equal(py::dtype::of<float>()))
        throw py::value_error(std::string(op) + ": expected float32, got " + dtype_str(x) +
                              " for " + name + " with shape " + shape_str(x));
}

inline void check_c_contiguous(const char* op, const char* name, const py::array& x) {
    if (!(x.flags() & py::array::c_style))
        throw py::value_error(std::string(op) + ": " + name + " with shape " + shape_str(x) +
                              " must be C-contiguous (pass np.ascontiguousarray(" + name + "))");
}

inline const float* fdata(const py::array& x) { return static_cast<const float*>(x.data()); }

inline void check_operand(const char* op, const char* name, const py::array& x,
                          py::ssize_t ndim) {
    check_float32(op, name, x);
    check_c_contiguous(op, name, x);
    if (x.ndim() != ndim)
        throw py::value_error(std::string(op) + ": expected " + name + " to be " +
                              std::to_string(ndim) + "-D, got shape " + shape_str(x));
}

// Each csrc/bindings_<part>.cpp defines one of these; PYBIND11_MODULE (csrc/bindings.cpp) calls
// them all, so the kernels of one file keep their checks and m.def lines beside each other.
void def_rowwise(py::module_& m);    // softmax, layer_norm, softmax cross-entropy
void def_embedding(py::module_& m);  // embedding backward
void def_attention(py::module_& m);  // scaled dot-product attention
void def_batchnorm(py::module_& m);  // BatchNorm statistics and affine passes

}  // namespace minitl::bind
