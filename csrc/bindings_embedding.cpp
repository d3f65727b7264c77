// csrc/bindings_embedding.cpp — argument checks and m.def lines for embedding backward (csrc/cpu/embedding.cpp).
#include "bind_checks.h"

namespace minitl::bind {

void def_embedding(py::module_& m) { (void)m; }

}  // namespace minitl::bind
