// The inner coordinate descent of crowdstat's proximal Newton solver
// (crowdstat/estimators/l1/newton.py), as XLA FFI kernels for the CPU: liblinear's column-wise
// form (newGLMNET), matrix free.
//
// CrowdstatCsc{F32,F64}: the votes (row, annotator, label), sorted by row, to a column layout
//   (col_ptr of length m + 1, the rows and labels of each annotator's votes), by counting sort.
// CrowdstatNewtonCd{F32,F64}: minimise over d the model
//     g^T d + 1/2 d^T H d + sum_i pen_i |x_i + d_i|,   H = A^T diag(D) A,  A = [E, 1]
//   by cyclic coordinate descent over the active coordinates (coordinate m is the intercept),
//   keeping Ad (length n) up to date, so that (H d)_i = sum over i's votes of e D_row (Ad)_row:
//   a coordinate costs its number of votes and H is never formed. Sweeps stop when the largest
//   move of a sweep is <= kappa times that of the first sweep, or after max_sweeps.
//   Returns d, Ad and the number of sweeps.
//
// Built and registered on first use through crowdstat/_native/__init__.py (g++ -O3 against
// jax.ffi.include_dir()) when the L1 solver (crowdstat/estimators/l1/) first needs it, like
// crowdstat/_native/sequential.cc.

#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

template <ffi::DataType DT>
ffi::Error Csc(ffi::Buffer<ffi::S32> row, ffi::Buffer<ffi::S32> ann, ffi::Buffer<DT> label, ffi::ResultBuffer<ffi::S32> col_ptr,
               ffi::ResultBuffer<ffi::S32> crow, ffi::ResultBuffer<DT> cval) {
  using T = ffi::NativeType<DT>;
  const int64_t nv = row.element_count();
  const int64_t m = col_ptr->element_count() - 1;
  const int32_t* r = row.typed_data();
  const int32_t* a = ann.typed_data();
  const T* e = label.typed_data();
  int32_t* cp = col_ptr->typed_data();
  std::memset(cp, 0, sizeof(int32_t) * (m + 1));
  for (int64_t k = 0; k < nv; ++k) {
    if (a[k] < 0 || a[k] >= m) return ffi::Error(ffi::ErrorCode::kOutOfRange, "crowdstat newton: annotator index out of range");
    cp[a[k] + 1] += 1;
  }
  for (int64_t i = 0; i < m; ++i) cp[i + 1] += cp[i];
  std::vector<int32_t> pos(cp, cp + m);
  int32_t* cr = crow->typed_data();
  T* cv = cval->typed_data();
  for (int64_t k = 0; k < nv; ++k) {  // stable: rows stay ascending inside a column
    const int32_t p = pos[a[k]]++;
    cr[p] = r[k];
    cv[p] = e[k];
  }
  return ffi::Error::Success();
}

template <ffi::DataType DT>
ffi::Error NewtonCd(ffi::Buffer<ffi::S32> col_ptr, ffi::Buffer<ffi::S32> crow, ffi::Buffer<DT> cval, ffi::Buffer<DT> dw,
                    ffi::Buffer<DT> g, ffi::Buffer<DT> x, ffi::Buffer<DT> pen, ffi::Buffer<ffi::S8> active,
                    ffi::Buffer<DT> params, ffi::ResultBuffer<DT> d_out, ffi::ResultBuffer<DT> ad_out,
                    ffi::ResultBuffer<ffi::S32> sweeps_out) {
  using T = ffi::NativeType<DT>;
  const int64_t m = col_ptr.element_count() - 1;  // annotators; coordinate m is the intercept
  const int64_t n = dw.element_count();
  if (g.element_count() != m + 1 || x.element_count() != m + 1 || pen.element_count() != m + 1 ||
      active.element_count() != m + 1 || d_out->element_count() != m + 1 || ad_out->element_count() != n)
    return ffi::Error::InvalidArgument("crowdstat newton: shapes differ");
  if (params.element_count() != 2) return ffi::Error::InvalidArgument("crowdstat newton: 2 parameters expected");
  const int32_t* cp = col_ptr.typed_data();
  const int32_t* cr = crow.typed_data();
  const T* cv = cval.typed_data();
  const T* D = dw.typed_data();
  const T* gg = g.typed_data();
  const T* xx = x.typed_data();
  const T* pp = pen.typed_data();
  const int8_t* act = active.typed_data();
  const T kappa = params.typed_data()[0];
  const int64_t max_sweeps = static_cast<int64_t>(params.typed_data()[1]);
  T* d = d_out->typed_data();
  T* ad = ad_out->typed_data();
  std::memset(d, 0, sizeof(T) * (m + 1));
  std::memset(ad, 0, sizeof(T) * n);
  std::vector<int32_t> idx;
  std::vector<T> hdiag(m + 1, T(0));
  // e D of every vote of an active column, gathered once per call: the sweeps then read one
  // array in column order instead of gathering D[row] again at every visit.
  std::vector<T> ed(static_cast<size_t>(cp[m]));
  for (int64_t i = 0; i <= m; ++i) {
    if (!act[i]) continue;
    idx.push_back(static_cast<int32_t>(i));
    T h = 0;
    if (i < m) {
      for (int32_t k = cp[i]; k < cp[i + 1]; ++k) {
        if (cr[k] < 0 || cr[k] >= n) return ffi::Error(ffi::ErrorCode::kOutOfRange, "crowdstat newton: row index out of range");
        ed[k] = cv[k] * D[cr[k]];
        h += ed[k] * cv[k];
      }
    } else {
      for (int64_t j = 0; j < n; ++j) h += D[j];
    }
    hdiag[i] = h + T(1e-12);
  }
  int32_t sw = 0;
  T first = 0;
  for (; sw < max_sweeps;) {
    T chg = 0;
    for (const int32_t i : idx) {
      T hd = 0;
      if (i < m) {
        // Four partial sums: one accumulator would make every add wait for the last (a 4-cycle
        // dependency chain per vote); this loop is most of the solver's time.
        T h0 = 0, h1 = 0, h2 = 0, h3 = 0;
        int32_t k = cp[i];
        const int32_t end = cp[i + 1];
        for (; k + 4 <= end; k += 4) {
          h0 += ed[k] * ad[cr[k]];
          h1 += ed[k + 1] * ad[cr[k + 1]];
          h2 += ed[k + 2] * ad[cr[k + 2]];
          h3 += ed[k + 3] * ad[cr[k + 3]];
        }
        for (; k < end; ++k) h0 += ed[k] * ad[cr[k]];
        hd = (h0 + h1) + (h2 + h3);
      } else {
        for (int64_t j = 0; j < n; ++j) hd += D[j] * ad[j];
      }
      const T h = hdiag[i];
      const T u = xx[i] + d[i];
      const T v = u - (gg[i] + hd) / h;
      const T thr = pp[i] / h;
      const T znew = v > thr ? v - thr : (v < -thr ? v + thr : T(0));
      const T delta = znew - u;
      if (delta != 0) {
        d[i] += delta;
        if (i < m) {
          for (int32_t k = cp[i]; k < cp[i + 1]; ++k) ad[cr[k]] += delta * cv[k];
        } else {
          for (int64_t j = 0; j < n; ++j) ad[j] += delta;
        }
      }
      const T a = std::fabs(delta);
      chg = a > chg ? a : chg;
    }
    ++sw;
    if (sw == 1) first = chg;
    if (!(chg > kappa * first)) break;
  }
  sweeps_out->typed_data()[0] = sw;
  return ffi::Error::Success();
}

}  // namespace

#define CROWDSTAT_CSC_BIND(DT)             \
  ffi::Ffi::Bind()                         \
      .Arg<ffi::Buffer<ffi::S32>>()        \
      .Arg<ffi::Buffer<ffi::S32>>()        \
      .Arg<ffi::Buffer<DT>>()              \
      .Ret<ffi::Buffer<ffi::S32>>()        \
      .Ret<ffi::Buffer<ffi::S32>>()        \
      .Ret<ffi::Buffer<DT>>()

#define CROWDSTAT_CD_BIND(DT)              \
  ffi::Ffi::Bind()                         \
      .Arg<ffi::Buffer<ffi::S32>>()        \
      .Arg<ffi::Buffer<ffi::S32>>()        \
      .Arg<ffi::Buffer<DT>>()              \
      .Arg<ffi::Buffer<DT>>()              \
      .Arg<ffi::Buffer<DT>>()              \
      .Arg<ffi::Buffer<DT>>()              \
      .Arg<ffi::Buffer<DT>>()              \
      .Arg<ffi::Buffer<ffi::S8>>()         \
      .Arg<ffi::Buffer<DT>>()              \
      .Ret<ffi::Buffer<DT>>()              \
      .Ret<ffi::Buffer<DT>>()              \
      .Ret<ffi::Buffer<ffi::S32>>()

XLA_FFI_DEFINE_HANDLER_SYMBOL(CrowdstatCscF32, Csc<ffi::F32>, CROWDSTAT_CSC_BIND(ffi::F32));
XLA_FFI_DEFINE_HANDLER_SYMBOL(CrowdstatCscF64, Csc<ffi::F64>, CROWDSTAT_CSC_BIND(ffi::F64));
XLA_FFI_DEFINE_HANDLER_SYMBOL(CrowdstatNewtonCdF32, NewtonCd<ffi::F32>, CROWDSTAT_CD_BIND(ffi::F32));
XLA_FFI_DEFINE_HANDLER_SYMBOL(CrowdstatNewtonCdF64, NewtonCd<ffi::F64>, CROWDSTAT_CD_BIND(ffi::F64));
