// Eq. (8) of MATH.md, the sequential reliability update, as an XLA FFI kernel for the CPU.
//
// Same inputs and semantics as crowdstat.sequential.update scanned over the task blocks: within
// a task every step uses the weights held before the task; then w_i += step for every vote,
// then the touched weights are clipped to [-w_max, w_max] (w0 arrives clipped). Padding votes
// carry label 0 and change nothing. XLA:CPU runs the lax.scan version as ~12 thunks per task
// (about 1-2 us a task whatever the block size); this loop costs a few ns a vote.
//
// Built on first use by crowdstat/_native/__init__.py (g++ -O3 against jax.ffi.include_dir()).

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
  std::vector<T> acc(n_lines_block > 0 ? n_lines_block : 1);
  std::vector<T> step(block > 0 ? block : 1);
  for (int64_t t = 0; t < n_tasks; ++t) {
    const int64_t o = t * block;
    const int32_t* ll = line_local + o;
    const int32_t* a = ann + o;
    const int8_t* e = label + o;
    const int8_t* tr = truth + o;
    for (int64_t k = 0; k < n_lines_block; ++k) acc[k] = prior;
    for (int64_t b = 0; b < block; ++b) {
      if (e[b] == 0) continue;
      if (ll[b] < 0 || ll[b] >= n_lines_block || a[b] < 0 || a[b] >= n_ann)
        return ffi::Error(ffi::ErrorCode::kOutOfRange, "crowdstat sequential: vote index out of range");
      acc[ll[b]] += static_cast<T>(e[b]) * w[a[b]];
    }
    int32_t moved = 0;
    for (int64_t b = 0; b < block; ++b) {
      if (e[b] == 0) { step[b] = 0; continue; }
      const T lv = acc[ll[b]];
      T r, lp;
      if (tr[b] != 0) {
        r = static_cast<T>(tr[b]);
        lp = logit_hp;
      } else {
        r = static_cast<T>((lv > 0) - (lv < 0));
        lp = std::fabs(lv) < cap ? std::fabs(lv) : cap;
      }
      step[b] = lam * static_cast<T>(e[b]) * r * lp;
      moved += step[b] != 0;
    }
    for (int64_t b = 0; b < block; ++b)
      if (e[b] != 0) w[a[b]] += step[b];
    for (int64_t b = 0; b < block; ++b) {
      if (e[b] == 0) continue;
      T& x = w[a[b]];
      x = x < -w_max ? -w_max : (x > w_max ? w_max : x);
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
