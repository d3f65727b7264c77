// csrc/cpu/embedding.h — the gradient of an embedding lookup: a scatter-add of rows.
#pragma once

#include <cstdint>

#include "common.h"

namespace minitl::cpu {

// dw (n, d) += g[i] at row ids[i] for i < m, repeats accumulating, rows equal to padding_idx
// skipped (pass -1 for none); with scale_grad_by_freq each row touched is then divided by the
// number of times its id occurs. dw comes in zeroed (np.zeros: fresh pages the kernel maps in
// only where a row lands). Returns the position of the first id outside [0, n), or -1; when
// one is out of range nothing is written. Reference: minitl/backend/reference.py:
// embedding_bwd. Bound: reads m·d floats of g and read-modify-writes as many of dw, so a
// 2048 x 256 gradient is ~6 MB of traffic (under a millisecond on one core); the page faults
// of the rows first touched cost about as much again.
index_t embedding_bwd(const float* g, const std::int64_t* ids, index_t m, index_t d, index_t n,
                      std::int64_t padding_idx, bool scale_grad_by_freq, float* dw);

}  // namespace minitl::cpu
