// Eq. (8) of docs/math.md, the sequential reliability update, as an XLA FFI kernel for the CPU.
//
// Same inputs and semantics as crowdstat.estimators.sequential.update scanned over the task
// blocks: within a task every step uses the weights held before the task; then w_i += step for
// every vote, then the touched weights are clipped to [-w_max, w_max] (w0 arrives clipped).
// Padding votes carry label 0 and change nothing. XLA:CPU runs the lax.scan version as about a
// dozen thunks per task, a fixed cost whatever the block size; this loop's cost is per vote
// (figures in docs/performance.md).
//
// Built on first use by crowdstat/_native/__init__.py (g++ -O3 against jax.ffi.include_dir()).

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

template <typename T>
ffi::Error SequentialImpl(const int32_t* line_local, const int32_t* ann, const int8_t* label, const int8_t* truth,
                          int64_t n_tasks, int64_t block, int64_t n_lines_block, const T* w0, int64_t n_ann,
                          const T* params, T* w, int32_t* n_updates, T* traj, bool keep) {
  const T lam = params[0], logit_hp = params[1], w_max = params[2], cap = params[3], prior = params[4];
  std::memcpy(w, w0, sizeof(T) * n_ann);
  const int64_t nl = n_lines_block > 0 ? n_lines_block : 1;
  std::vector<T> acc(nl), coef(nl);
  std::vector<int8_t> line_truth(nl);
  for (int64_t t = 0; t < n_tasks; ++t) {
    const int64_t o = t * block;
    const int32_t* ll = line_local + o;
    const int32_t* a = ann + o;
    const int8_t* e = label + o;
    const int8_t* tr = truth + o;
    // Padding trails the task's votes: stop at the last nonzero label. (A zero label anywhere
    // else reads valid slots and adds exactly 0.)
    int64_t nb = block;
    while (nb > 0 && e[nb - 1] == 0) --nb;
    // Check the task's indices first (a vectorised max; it also brings the task into L1), so
    // the loops below carry no bounds checks. Unsigned: a negative index becomes huge.
    uint32_t max_line = 0, max_ann = 0;
    for (int64_t b = 0; b < nb; ++b) {
      max_line = std::max(max_line, static_cast<uint32_t>(ll[b]));
      max_ann = std::max(max_ann, static_cast<uint32_t>(a[b]));
    }
    if (nb > 0 && (static_cast<int64_t>(max_line) >= n_lines_block || static_cast<int64_t>(max_ann) >= n_ann))
      return ffi::Error(ffi::ErrorCode::kOutOfRange, "crowdstat sequential: vote index out of range");
    for (int64_t k = 0; k < nl; ++k) acc[k] = prior, line_truth[k] = 0;
    // Votes come sorted by line: sum a run of one line's votes in a register (no store-to-load
    // chain through acc[]), flush when the line changes (correct in any order).
    int32_t cur = nb > 0 ? ll[0] : 0;
    int8_t cur_truth = 0;  // a line's votes all carry its truth (padding carries 0)
    T run = 0;
    for (int64_t b = 0; b < nb; ++b) {
      if (ll[b] != cur) {
        acc[cur] += run;
        line_truth[cur] |= cur_truth;
        run = 0;
        cur_truth = 0;
        cur = ll[b];
      }
      run += static_cast<T>(e[b]) * w[a[b]];
      cur_truth |= tr[b];
    }
    acc[cur] += run;
    line_truth[cur] |= cur_truth;
    // r_j * logit(pbar_j) depends on the line only: t_j logit(pbar_hp) on a honeypot, else
    // sign(l_j) min(|l_j|, cap) = clip(l_j, -cap, cap). Times lam: the step per unit label.
    for (int64_t k = 0; k < nl; ++k) {
      const T lv = std::min(std::max(acc[k], -cap), cap);
      coef[k] = lam * (line_truth[k] != 0 ? static_cast<T>(line_truth[k]) * logit_hp : lv);
    }
    // acc held the pre-task logits, so each step goes straight into w; then clip.
    int32_t moved = 0;
    for (int64_t b = 0; b < nb; ++b) {
      const T s = static_cast<T>(e[b]) * coef[ll[b]];
      moved += s != 0;
      w[a[b]] += s;
    }
    for (int64_t b = 0; b < nb; ++b) {
      T& x = w[a[b]];
      x = std::min(std::max(x, -w_max), w_max);
    }
    n_updates[t] = moved;
    if (keep) std::memcpy(traj + t * n_ann, w, sizeof(T) * n_ann);
  }
  return ffi::Error::Success();
}

template <ffi::DataType DT>
ffi::Error Sequential(ffi::Buffer<ffi::S32> line_local, ffi::Buffer<ffi::S32> ann, ffi::Buffer<ffi::S8> label,
                      ffi::Buffer<ffi::S8> truth, ffi::Buffer<DT> w0, ffi::Buffer<DT> params, int64_t n_lines_block,
                      ffi::ResultBuffer<DT> w, ffi::ResultBuffer<ffi::S32> n_updates, ffi::ResultBuffer<DT> traj) {
  using T = ffi::NativeType<DT>;
  auto dims = line_local.dimensions();
  if (dims.size() != 2) return ffi::Error::InvalidArgument("crowdstat sequential: blocks must be 2-d (n_tasks, B)");
  const int64_t n_tasks = dims[0], block = dims[1];
  if (ann.element_count() != n_tasks * block || label.element_count() != n_tasks * block ||
      truth.element_count() != n_tasks * block)
    return ffi::Error::InvalidArgument("crowdstat sequential: block arrays differ in shape");
  if (params.element_count() != 5) return ffi::Error::InvalidArgument("crowdstat sequential: 5 parameters expected");
  const int64_t n_ann = w0.element_count();
  const bool keep = traj->element_count() == n_tasks * n_ann && n_tasks > 0;
  return SequentialImpl<T>(line_local.typed_data(), ann.typed_data(), label.typed_data(), truth.typed_data(), n_tasks,
                           block, n_lines_block, w0.typed_data(), n_ann, params.typed_data(), w->typed_data(),
                           n_updates->typed_data(), traj->typed_data(), keep);
}

}  // namespace

#define CROWDSTAT_BIND(DT)                      \
  ffi::Ffi::Bind()                              \
      .Arg<ffi::Buffer<ffi::S32>>()             \
      .Arg<ffi::Buffer<ffi::S32>>()             \
      .Arg<ffi::Buffer<ffi::S8>>()              \
      .Arg<ffi::Buffer<ffi::S8>>()              \
      .Arg<ffi::Buffer<DT>>()                   \
      .Arg<ffi::Buffer<DT>>()                   \
      .Attr<int64_t>("n_lines_block")           \
      .Ret<ffi::Buffer<DT>>()                   \
      .Ret<ffi::Buffer<ffi::S32>>()             \
      .Ret<ffi::Buffer<DT>>()

XLA_FFI_DEFINE_HANDLER_SYMBOL(CrowdstatSequentialF32, Sequential<ffi::F32>, CROWDSTAT_BIND(ffi::F32));
XLA_FFI_DEFINE_HANDLER_SYMBOL(CrowdstatSequentialF64, Sequential<ffi::F64>, CROWDSTAT_BIND(ffi::F64));
