// csrc/bindings_embedding.cpp — argument checks and m.def lines for embedding backward
// (csrc/cpu/embedding.cpp).
#include <cstdint>
#include <optional>
#include <string>

#include <pybind11/stl.h>  // std::optional: padding_idx=None

#include "bind_checks.h"
#include "cpu/embedding.h"

namespace minitl::bind {
namespace {

// dw += the rows of g at ids, in place (dw comes zeroed from np.zeros: see embedding.h).
void embedding_bwd(const py::array& g, const py::array& ids, py::array& dw,
                   std::optional<std::int64_t> padding_idx, bool scale_grad_by_freq) {
    const char* op = "embedding_bwd";
    check_operand(op, "g", g, 2);
    check_operand(op, "dw", dw, 2);
    if (!dw.writeable())
        throw py::value_error(std::string(op) + ": dw with shape " + shape_str(dw) +
                              " is read-only");
    if (!ids.dtype().equal(py::dtype::of<std::int64_t>()) || ids.ndim() != 1)
        throw py::value_error(std::string(op) + ": ids must be 1-D int64, got " +
                              dtype_str(ids) + " with shape " + shape_str(ids));
    check_c_contiguous(op, "ids", ids);
    const py::ssize_t m = g.shape(0), d = g.shape(1), n = dw.shape(0);
    if (ids.shape(0) != m || dw.shape(1) != d)
        throw py::value_error(std::string(op) + ": shapes do not fit: g " + shape_str(g) +
                              ", ids " + shape_str(ids) + ", dw " + shape_str(dw) +
                              " (need g (M, D), ids (M,), dw (N, D))");
    const std::int64_t pad = padding_idx.value_or(-1);
    if (padding_idx && (pad < 0 || pad >= n))
        throw py::value_error(std::string(op) + ": padding_idx " + std::to_string(pad) +
                              " is outside 0.." + std::to_string(n - 1));
    const auto* pid = static_cast<const std::int64_t*>(ids.data());
    float* pdw = static_cast<float*>(dw.mutable_data());
    minitl::cpu::index_t bad;
    {
        py::gil_scoped_release release;
        bad = minitl::cpu::embedding_bwd(fdata(g), pid, m, d, n, pad, scale_grad_by_freq, pdw);
    }
    if (bad >= 0)
        throw py::index_error(std::string(op) + ": index " + std::to_string(pid[bad]) +
                              " at position " + std::to_string(bad) + " is out of range for " +
                              std::to_string(n) + " embeddings; nothing was written");
}

}  // namespace

void def_embedding(py::module_& m) {
    m.def("embedding_bwd", &embedding_bwd, py::arg("g"), py::arg("ids"), py::arg("dw"),
          py::arg("padding_idx"), py::arg("scale_grad_by_freq"),
          "dw (N, D) += rows of g (M, D) at int64 ids (M,), the padding row skipped; with "
          "scale_grad_by_freq each row touched is divided by its id's count. In place.");
}

}  // namespace minitl::bind
