// torchstn's fused CPU kernels: grid generation and sampling in one pass, never materialising
// the sampling grid, forward and backward (the gradients to the input and to the matrix are
// computed without the grid's gradient tensor).
//
// Built on first use by torchstn.native (torch.utils.cpp_extension, cached per source, torch
// version and CPU); where it cannot be built, torchstn falls back to affine_grid + grid_sample.
//
// Conventions are grid_sample's: a 2x3 normalised matrix theta per batch item maps the output
// frame's normalised points (xs[j], ys[i]) to the input's; the point is computed as
// (t0 * x + t2) + t1 * y, the rounding order of torchstn's grid generator, so the fused and the
// unfused path sample the same points. Backward sums every gradient of a batch item in one
// fixed order, in one task per item: the result does not depend on the thread count.
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

namespace {

enum Padding { ZEROS = 0, BORDER = 1, REFLECTION = 2 };

// One axis of n pixels: normalised coordinate -> pixel coordinate under a padding mode, with
// the arithmetic (and its rounding order) of grid_sample's CPU kernels, so that both paths
// read the same points: unnormalise ((g + 1) s, minus 1/2 for pixel-area coordinates), reflect
// about [low, low + span] and clip to [0, n - 1].
template <typename T, bool AC>
struct Axis {
  T scale, max_val, low, twice_span;
  bool empty;
  int64_t n;
  explicit Axis(int64_t size)
      : scale(AC ? T(size - 1) / 2 : T(size) / 2),
        max_val(T(size - 1)),
        low(AC ? T(0) : T(-0.5)),
        twice_span(AC ? T(size - 1) * 2 : T(size) * 2),
        empty(AC ? size <= 1 : size <= 0),
        n(size) {}

  T unnormalize(T g) const { return AC ? (g + T(1)) * scale : (g + T(1)) * scale - T(0.5); }

  T clip(T x) const { return std::min(max_val, std::max(T(0), x)); }  // NaN -> 0

  T clip_grad(T x, T* d) const {
    T lo = std::max(x, T(0));
    T res = std::min(lo, max_val);
    *d = (lo != T(0) && res != max_val) ? T(1) : T(0);  // the bounds themselves have no slope
    return res;
  }

  T reflect(T x) const {  // branch-free, so that the row loops vectorise
    T a = std::abs(x - low);
    T extra = a - std::floor(a / twice_span) * twice_span;
    T r = std::min(extra, twice_span - extra) + low;
    return (AC && empty) ? T(0) : r;
  }

  T reflect_grad(T x, T* d) const {
    T shifted = x - low;
    bool neg = shifted < T(0);
    T a = std::abs(shifted);
    T extra = a - std::floor(a / twice_span) * twice_span;
    T other = twice_span - extra;
    bool flip = extra > other;
    const bool none = AC && empty;
    *d = none ? T(0) : ((flip != neg) ? T(-1) : T(1));
    return none ? T(0) : (flip ? other : extra) + low;
  }

  template <int PAD>
  T apply(T g) const {
    T x = unnormalize(g);
    if (PAD == BORDER) return clip(x);
    if (PAD == REFLECTION) return clip(reflect(x));
    return x;
  }

  template <int PAD>
  T apply_grad(T g, T* d) const {
    T x = unnormalize(g);
    if (PAD == ZEROS) { *d = scale; return x; }
    if (PAD == BORDER) { T c; x = clip_grad(x, &c); *d = c * scale; return x; }
    T r, c;
    x = reflect_grad(x, &r);
    x = clip_grad(x, &c);
    *d = c * (r * scale);
    return x;
  }

  // the padding of a point already in pixels (dense fields): apply / apply_grad without the
  // unnormalisation and its scale
  template <int PAD>
  T pad_px(T x) const {
    if (PAD == BORDER) return clip(x);
    if (PAD == REFLECTION) return clip(reflect(x));
    return x;
  }

  template <int PAD>
  T pad_px_grad(T x, T* d) const {
    if (PAD == ZEROS) { *d = T(1); return x; }
    if (PAD == BORDER) { T c; x = clip_grad(x, &c); *d = c; return x; }
    T r, c;
    x = reflect_grad(x, &r);
    x = clip_grad(x, &c);
    *d = c * r;
    return x;
  }

  // a coordinate kept finite and outside every tap when it is far outside (no int overflow)
  T bounded(T x) const { return std::min(std::max(x, T(-2)), T(n + 1)); }
};

// The bilinear taps of one output row, structure of arrays, computed in plain loops that the
// compiler vectorises: clamped int32 offsets, weights zeroed outside the input (NaN for a point
// that is not finite), the fractions and the padding's slope for the backward pass.
template <typename T>
struct RowTaps {
  std::vector<T> w[4], fx, fy, dx, dy;
  std::vector<int32_t> o[4];
  std::vector<T> in[4];  // 1 where the tap lies inside the input, else 0
  static constexpr int64_t kBlock = 16;  // rows are padded to whole blocks: no scalar tail
  std::vector<T> xs, ux, uy;  // ux, uy: a row of a dense field, copied into padded buffers
  // projective matrices, for the backward pass: 1 / w, the point (u / w, v / w) and 1 where
  // |w| was not floored (the floor has no slope)
  std::vector<T> rc, px, py, fl;
  RowTaps(int64_t n, const T* xs_in)
      : fx(pad(n)), fy(pad(n)), dx(pad(n)), dy(pad(n)), xs(pad(n), T(0)), ux(pad(n), T(0)),
        uy(pad(n), T(0)), rc(pad(n), T(0)), px(pad(n), T(0)), py(pad(n), T(0)),
        fl(pad(n), T(0)) {
    if (xs_in) std::copy(xs_in, xs_in + n, xs.begin());
    n = pad(n);
    for (int k = 0; k < 4; ++k) {
      w[k].resize(n);
      o[k].resize(n);
      in[k].resize(n);
    }
  }
  static int64_t pad(int64_t n) { return (n + kBlock - 1) / kBlock * kBlock; }
  // row i of item b of a (B, 2, H, W) field into ux, uy (their padding lanes stay 0)
  void load_field_row(const T* u, int64_t b, int64_t i, int64_t H, int64_t W) {
    const T* x = u + (b * 2 * H + i) * W;
    const T* y = u + ((b * 2 + 1) * H + i) * W;
    std::copy(x, x + W, ux.begin());
    std::copy(y, y + W, uy.begin());
  }
};

// FIELD: the points are the row's pixels moved by a dense field (r.ux, r.uy, in pixels; yv is
// the row's index and t is unused); otherwise the matrix t applied to (xs[j], yv): 2x3, or with
// PROJ 3x3 and the division by w, |w| floored at eps with its sign kept (the arithmetic of
// torchstn's projective grid, step by step)
template <typename T, int PAD, bool AC, bool GRAD, bool FIELD = false, bool PROJ = false>
void row_taps(const T* t, T yv, const T* __restrict xs, int64_t Wo, const Axis<T, AC>& ax,
              const Axis<T, AC>& ay, RowTaps<T>& r, T eps = T(0)) {
  // the matrix and the axes' constants in locals: no load in the loop that a store may alias
  const T t0 = FIELD ? T(0) : t[0], t2 = FIELD ? T(0) : t[2];
  const T t3 = FIELD ? T(0) : t[3], t5 = FIELD ? T(0) : t[5];
  const T yr0 = FIELD ? T(0) : t[1] * yv, yr1 = FIELD ? T(0) : t[4] * yv;
  const T t6 = PROJ ? t[6] : T(0), t8 = PROJ ? t[8] : T(0), yr2 = PROJ ? t[7] * yv : T(0);
  T* __restrict rcs = r.rc.data(); T* __restrict pxs = r.px.data();
  T* __restrict pys = r.py.data(); T* __restrict fls = r.fl.data();
  const T* __restrict ux = r.ux.data();
  const T* __restrict uy = r.uy.data();
  const Axis<T, AC> axl = ax, ayl = ay;
  const int32_t W = static_cast<int32_t>(ax.n), H = static_cast<int32_t>(ay.n);
  const T big = std::numeric_limits<T>::max();
  T* __restrict w0 = r.w[0].data(); T* __restrict w1 = r.w[1].data();
  T* __restrict w2 = r.w[2].data(); T* __restrict w3 = r.w[3].data();
  int32_t* __restrict o0 = r.o[0].data(); int32_t* __restrict o1 = r.o[1].data();
  int32_t* __restrict o2 = r.o[2].data(); int32_t* __restrict o3 = r.o[3].data();
  T* __restrict m0 = r.in[0].data(); T* __restrict m1 = r.in[1].data();
  T* __restrict m2 = r.in[2].data(); T* __restrict m3 = r.in[3].data();
  T* __restrict fxs = r.fx.data(); T* __restrict fys = r.fy.data();
  T* __restrict dxs = r.dx.data(); T* __restrict dys = r.dy.data();
  const int64_t Wp = RowTaps<T>::pad(Wo);
  for (int64_t jb = 0; jb < Wp; jb += RowTaps<T>::kBlock) {
#pragma omp simd
  for (int64_t j = jb; j < jb + RowTaps<T>::kBlock; ++j) {
    T x, y, sx = T(1), sy = T(1);
    if (FIELD) {
      const T px = static_cast<T>(j) + ux[j], py = yv + uy[j];
      if (GRAD) {
        x = axl.template pad_px_grad<PAD>(px, &sx);
        y = ayl.template pad_px_grad<PAD>(py, &sy);
      } else {
        x = axl.template pad_px<PAD>(px);
        y = ayl.template pad_px<PAD>(py);
      }
    } else {
      T gx = (t0 * xs[j] + t2) + yr0;
      T gy = (t3 * xs[j] + t5) + yr1;
      if (PROJ) {
        const T w = (t6 * xs[j] + t8) + yr2;
        const T rcp = T(1) / (w < T(0) ? std::min(w, -eps) : std::max(w, eps));
        gx = gx * rcp;
        gy = gy * rcp;
        if (GRAD) {
          rcs[j] = rcp; pxs[j] = gx; pys[j] = gy;
          fls[j] = std::abs(w) < eps ? T(0) : T(1);
        }
      }
      if (GRAD) {
        x = axl.template apply_grad<PAD>(gx, &sx);
        y = ayl.template apply_grad<PAD>(gy, &sy);
      } else {
        x = axl.template apply<PAD>(gx);
        y = ayl.template apply<PAD>(gy);
      }
    }
    const bool finite = (std::abs(x) <= big) & (std::abs(y) <= big);
    x = finite ? axl.bounded(x) : T(0);
    y = finite ? ayl.bounded(y) : T(0);
    const T flx = std::floor(x), fly = std::floor(y);
    const int32_t ix = static_cast<int32_t>(flx), iy = static_cast<int32_t>(fly);
    const T e = x - flx, n = y - fly, we = T(1) - e, s = T(1) - n;
    const bool inx0 = static_cast<uint32_t>(ix) < static_cast<uint32_t>(W);
    const bool inx1 = static_cast<uint32_t>(ix + 1) < static_cast<uint32_t>(W);
    const bool iny0 = static_cast<uint32_t>(iy) < static_cast<uint32_t>(H);
    const bool iny1 = static_cast<uint32_t>(iy + 1) < static_cast<uint32_t>(H);
    const int32_t cx0 = std::min(std::max(ix, 0), W - 1), cx1 = std::min(std::max(ix + 1, 0), W - 1);
    const int32_t cy0 = std::min(std::max(iy, 0), H - 1), cy1 = std::min(std::max(iy + 1, 0), H - 1);
    const T nan = std::numeric_limits<T>::quiet_NaN();
    const bool a0 = finite & inx0 & iny0, a1 = finite & inx1 & iny0;
    const bool a2 = finite & inx0 & iny1, a3 = finite & inx1 & iny1;
    // forward: NaN weights for a point that is not finite (grid_sample's 0 * NaN); backward:
    // zero weights there (the scatter adds nothing), its NaN travels in the slopes dx, dy
    const T bad = GRAD ? T(0) : nan;
    w0[j] = finite ? (a0 ? s * we : T(0)) : bad;
    w1[j] = finite ? (a1 ? s * e : T(0)) : bad;
    w2[j] = finite ? (a2 ? n * we : T(0)) : bad;
    w3[j] = finite ? (a3 ? n * e : T(0)) : bad;
    o0[j] = cy0 * W + cx0; o1[j] = cy0 * W + cx1; o2[j] = cy1 * W + cx0; o3[j] = cy1 * W + cx1;
    if (GRAD) {  // what only the backward pass reads
      m0[j] = a0 ? T(1) : T(0); m1[j] = a1 ? T(1) : T(0);
      m2[j] = a2 ? T(1) : T(0); m3[j] = a3 ? T(1) : T(0);
      fxs[j] = e; fys[j] = n;
      dxs[j] = finite ? sx : nan; dys[j] = finite ? sy : nan;
    }
  }
  }
}

// One output row read through its taps, for every channel: out(c)[j] = sum_k in(c)[o_k[j]] w_k[j]
// (planes of in_plane and out_plane values apart); the matrix and the field kernels share it.
template <typename T>
inline void gather_row(const RowTaps<T>& r, const T* in, int64_t in_plane, T* out,
                       int64_t out_plane, int64_t C, int64_t n) {
  const T *__restrict w0 = r.w[0].data(), *__restrict w1 = r.w[1].data();
  const T *__restrict w2 = r.w[2].data(), *__restrict w3 = r.w[3].data();
  const int32_t *__restrict o0 = r.o[0].data(), *__restrict o1 = r.o[1].data();
  const int32_t *__restrict o2 = r.o[2].data(), *__restrict o3 = r.o[3].data();
  for (int64_t c = 0; c < C; ++c) {
    const T* __restrict p = in + c * in_plane;
    T* __restrict dst = out + c * out_plane;
#pragma omp simd
    for (int64_t j = 0; j < n; ++j)
      dst[j] = p[o0[j]] * w0[j] + p[o1[j]] * w1[j] + p[o2[j]] * w2[j] + p[o3[j]] * w3[j];
  }
}

// The backward of gather_row for one row, channel by channel: the gradient at each point, summed
// over channels into gx, gy (where given), and the scatter of the output gradient to gin (where
// given: serial, in pixel order; taps outside have zero weight).
template <typename T>
inline void scatter_row(const RowTaps<T>& r, const T* in, int64_t in_plane, const T* go,
                        int64_t go_plane, T* gin, T* __restrict gx, T* __restrict gy, int64_t C,
                        int64_t n) {
  const T *__restrict w0 = r.w[0].data(), *__restrict w1 = r.w[1].data();
  const T *__restrict w2 = r.w[2].data(), *__restrict w3 = r.w[3].data();
  const int32_t *__restrict o0 = r.o[0].data(), *__restrict o1 = r.o[1].data();
  const int32_t *__restrict o2 = r.o[2].data(), *__restrict o3 = r.o[3].data();
  const T *__restrict m0 = r.in[0].data(), *__restrict m1 = r.in[1].data();
  const T *__restrict m2 = r.in[2].data(), *__restrict m3 = r.in[3].data();
  const T *__restrict e = r.fx.data(), *__restrict nf = r.fy.data();
  for (int64_t c = 0; c < C; ++c) {
    const T* __restrict p = in + c * in_plane;
    const T* __restrict g = go + c * go_plane;
    if (gx) {
#pragma omp simd
      for (int64_t j = 0; j < n; ++j) {
        // every offset is clamped inside the input: load, then zero the taps outside
        const T l0 = p[o0[j]], l1 = p[o1[j]], l2 = p[o2[j]], l3 = p[o3[j]];
        const T v0 = m0[j] != T(0) ? l0 : T(0), v1 = m1[j] != T(0) ? l1 : T(0);
        const T v2 = m2[j] != T(0) ? l2 : T(0), v3 = m3[j] != T(0) ? l3 : T(0);
        gx[j] += g[j] * ((v1 - v0) * (T(1) - nf[j]) + (v3 - v2) * nf[j]);
        gy[j] += g[j] * ((v2 - v0) * (T(1) - e[j]) + (v3 - v1) * e[j]);
      }
    }
    if (gin) {
      T* q = gin + c * in_plane;
      for (int64_t j = 0; j < n; ++j) {
        const T gj = g[j];
        q[o0[j]] += w0[j] * gj;
        q[o1[j]] += w1[j] * gj;
        q[o2[j]] += w2[j] * gj;
        q[o3[j]] += w3[j] * gj;
      }
    }
  }
}

template <typename T, int PAD, bool AC, bool PROJ>
void forward_matrix(const T* in, const T* theta, const T* xs, const T* ys, T* out, int64_t B,
                    int64_t C, int64_t H, int64_t W, int64_t Ho, int64_t Wo, T eps) {
  const Axis<T, AC> ax(W), ay(H);
  const int64_t stride = PROJ ? 9 : 6;
  at::parallel_for(0, B * Ho, 4, [&](int64_t begin, int64_t end) {
    RowTaps<T> r(Wo, xs);
    for (int64_t row = begin; row < end; ++row) {
      const int64_t b = row / Ho, i = row % Ho;
      row_taps<T, PAD, AC, false, false, PROJ>(theta + b * stride, ys[i], r.xs.data(), Wo, ax,
                                               ay, r, eps);
      gather_row(r, in + b * C * H * W, H * W, out + b * C * Ho * Wo + i * Wo, Ho * Wo, C, Wo);
    }
  });
}

template <typename T, int PAD, bool AC>
void forward_bilinear(const T* in, const T* theta, const T* xs, const T* ys, T* out, int64_t B,
                      int64_t C, int64_t H, int64_t W, int64_t Ho, int64_t Wo) {
  forward_matrix<T, PAD, AC, false>(in, theta, xs, ys, out, B, C, H, W, Ho, Wo, T(0));
}

template <typename T, int PAD, bool AC>
void forward_projective(const T* in, const T* theta, const T* xs, const T* ys, T* out,
                        int64_t B, int64_t C, int64_t H, int64_t W, int64_t Ho, int64_t Wo,
                        T eps) {
  forward_matrix<T, PAD, AC, true>(in, theta, xs, ys, out, B, C, H, W, Ho, Wo, eps);
}

// backward of the bilinear kernel: one task per batch item, which owns its slice of the input
// gradient and its six matrix gradients; per row, the taps once (vectorised), then per channel
// the point gradients and the scatter to the input gradient, in one fixed order (no atomics,
// the same bits at any thread count)
template <typename T, int PAD, bool AC, bool PROJ>
void backward_matrix(const T* go, const T* in, const T* theta, const T* xs, const T* ys, T* gin,
                     T* gtheta, int64_t B, int64_t C, int64_t H, int64_t W, int64_t Ho,
                     int64_t Wo, T eps) {
  const Axis<T, AC> ax(W), ay(H);
  constexpr int64_t stride = PROJ ? 9 : 6;
  at::parallel_for(0, B, 1, [&](int64_t begin, int64_t end) {
    RowTaps<T> r(Wo, xs);
    std::vector<T> gxv(RowTaps<T>::pad(Wo)), gyv(RowTaps<T>::pad(Wo));  // padding lanes stay 0
    for (int64_t b = begin; b < end; ++b) {
      const T* t = theta + b * stride;
      T acc[stride] = {};
      for (int64_t i = 0; i < Ho; ++i) {
        row_taps<T, PAD, AC, true, false, PROJ>(t, ys[i], r.xs.data(), Wo, ax, ay, r, eps);
        T* __restrict gx = gxv.data();
        T* __restrict gy = gyv.data();
        std::fill(gxv.begin(), gxv.end(), T(0));
        std::fill(gyv.begin(), gyv.end(), T(0));
        scatter_row(r, in + b * C * H * W, H * W, go + b * C * Ho * Wo + i * Wo, Ho * Wo,
                    gin ? gin + b * C * H * W : nullptr, gtheta ? gx : nullptr,
                    gtheta ? gy : nullptr, C, Wo);
        if (!gtheta) continue;
        const T *__restrict dx = r.dx.data(), *__restrict dy = r.dy.data();
        const T* __restrict xv = r.xs.data();
        // the row's sums in 16 lanes (pixel j in lane j % 16; the padding lanes hold zeros),
        // then the lanes in order: a fixed order that vectorises
        constexpr int64_t L = RowTaps<T>::kBlock;
        if (!PROJ) {
          T lx_x[L] = {}, lx[L] = {}, ly_x[L] = {}, ly[L] = {};
          for (int64_t jb = 0; jb < RowTaps<T>::pad(Wo); jb += L) {
#pragma omp simd
            for (int64_t k = 0; k < L; ++k) {
              const int64_t j = jb + k;
              const T a = gx[j] * dx[j], c2 = gy[j] * dy[j];
              lx_x[k] += a * xv[j]; lx[k] += a; ly_x[k] += c2 * xv[j]; ly[k] += c2;
            }
          }
          T sx_x = 0, sx = 0, sy_x = 0, sy = 0;
          for (int64_t k = 0; k < L; ++k) {
            sx_x += lx_x[k]; sx += lx[k]; sy_x += ly_x[k]; sy += ly[k];
          }
          acc[0] += sx_x; acc[1] += sx * ys[i]; acc[2] += sx;
          acc[3] += sy_x; acc[4] += sy * ys[i]; acc[5] += sy;
        } else {
          // through the division: dL/du = a / w, dL/dv = c / w, dL/dw = -(a px + c py) / w
          // (zero where |w| was floored); rows u, v, w of the matrix, columns x, y, 1
          const T *__restrict rc = r.rc.data(), *__restrict px = r.px.data();
          const T *__restrict py = r.py.data(), *__restrict fl = r.fl.data();
          T l[6][L] = {};
          for (int64_t jb = 0; jb < RowTaps<T>::pad(Wo); jb += L) {
#pragma omp simd
            for (int64_t k = 0; k < L; ++k) {
              const int64_t j = jb + k;
              const T a = gx[j] * dx[j], c2 = gy[j] * dy[j];
              const T du = a * rc[j], dv = c2 * rc[j];
              const T dw = -((a * px[j] + c2 * py[j]) * rc[j]) * fl[j];
              l[0][k] += du * xv[j]; l[1][k] += du;
              l[2][k] += dv * xv[j]; l[3][k] += dv;
              l[4][k] += dw * xv[j]; l[5][k] += dw;
            }
          }
          T sum[6] = {};
          for (int q = 0; q < 6; ++q)
            for (int64_t k = 0; k < L; ++k) sum[q] += l[q][k];
          for (int q = 0; q < 3; ++q) {
            acc[3 * q] += sum[2 * q];
            acc[3 * q + 1] += sum[2 * q + 1] * ys[i];
            acc[3 * q + 2] += sum[2 * q + 1];
          }
        }
      }
      if (gtheta)
        for (int q = 0; q < stride; ++q) gtheta[b * stride + q] = acc[q];
    }
  });
}

template <typename T, int PAD, bool AC>
void backward_bilinear(const T* go, const T* in, const T* theta, const T* xs, const T* ys, T* gin,
                       T* gtheta, int64_t B, int64_t C, int64_t H, int64_t W, int64_t Ho,
                       int64_t Wo) {
  backward_matrix<T, PAD, AC, false>(go, in, theta, xs, ys, gin, gtheta, B, C, H, W, Ho, Wo,
                                     T(0));
}

template <typename T, int PAD, bool AC>
void backward_projective(const T* go, const T* in, const T* theta, const T* xs, const T* ys,
                         T* gin, T* gtheta, int64_t B, int64_t C, int64_t H, int64_t W,
                         int64_t Ho, int64_t Wo, T eps) {
  backward_matrix<T, PAD, AC, true>(go, in, theta, xs, ys, gin, gtheta, B, C, H, W, Ho, Wo, eps);
}

// ---- dense fields, 2-D: output(p) = input(p + u(p)), u in pixels, (B, 2, H, W) ------------

template <typename T, int PAD, bool AC>
void forward_field2d(const T* in, const T* u, T* out, int64_t B, int64_t C, int64_t H, int64_t W) {
  const Axis<T, AC> ax(W), ay(H);
  at::parallel_for(0, B * H, 4, [&](int64_t begin, int64_t end) {
    RowTaps<T> r(W, nullptr);
    for (int64_t row = begin; row < end; ++row) {
      const int64_t b = row / H, i = row % H;
      r.load_field_row(u, b, i, H, W);
      row_taps<T, PAD, AC, false, true>(nullptr, static_cast<T>(i), r.xs.data(), W, ax, ay, r);
      gather_row(r, in + b * C * H * W, H * W, out + b * C * H * W + i * W, H * W, C, W);
    }
  });
}

// backward: one task per batch item (its input-gradient slice; the field's gradient is per pixel)
template <typename T, int PAD, bool AC>
void backward_field2d(const T* go, const T* in, const T* u, T* gin, T* gu, int64_t B, int64_t C,
                      int64_t H, int64_t W) {
  const Axis<T, AC> ax(W), ay(H);
  at::parallel_for(0, B, 1, [&](int64_t begin, int64_t end) {
    RowTaps<T> r(W, nullptr);
    for (int64_t b = begin; b < end; ++b) {
      for (int64_t i = 0; i < H; ++i) {
        r.load_field_row(u, b, i, H, W);
        row_taps<T, PAD, AC, true, true>(nullptr, static_cast<T>(i), r.xs.data(), W, ax, ay, r);
        T* __restrict gx = gu ? gu + (b * 2 * H + i) * W : nullptr;
        T* __restrict gy = gu ? gu + ((b * 2 + 1) * H + i) * W : nullptr;
        scatter_row(r, in + b * C * H * W, H * W, go + b * C * H * W + i * W, H * W,
                    gin ? gin + b * C * H * W : nullptr, gx, gy, C, W);
        if (gu) {
          const T *__restrict dx = r.dx.data(), *__restrict dy = r.dy.data();
#pragma omp simd
          for (int64_t j = 0; j < W; ++j) {
            gx[j] *= dx[j];
            gy[j] *= dy[j];
          }
        }
      }
    }
  });
}

// nearest: the tap of a point, or -1 where it reads nothing (outside, or not finite)
template <typename T, int PAD, bool AC>
inline int64_t nearest_offset(T gx, T gy, const Axis<T, AC>& ax, const Axis<T, AC>& ay) {
  const T x = ax.template apply<PAD>(gx), y = ay.template apply<PAD>(gy);
  const T rx = std::nearbyint(ax.bounded(x)), ry = std::nearbyint(ay.bounded(y));
  if (!(std::isfinite(rx) && std::isfinite(ry))) return -1;
  const int64_t xi = static_cast<int64_t>(rx), yi = static_cast<int64_t>(ry);
  return (xi >= 0 && xi < ax.n && yi >= 0 && yi < ay.n) ? yi * ax.n + xi : -1;
}

template <typename T, int PAD, bool AC>
void forward_nearest(const T* in, const T* theta, const T* xs, const T* ys, T* out, int64_t B,
                     int64_t C, int64_t H, int64_t W, int64_t Ho, int64_t Wo) {
  const Axis<T, AC> ax(W), ay(H);
  at::parallel_for(0, B * Ho, 4, [&](int64_t begin, int64_t end) {
    std::vector<int64_t> obuf(Wo);
    for (int64_t r = begin; r < end; ++r) {
      const int64_t b = r / Ho, i = r % Ho;
      const T* t = theta + b * 6;
      const T yr0 = t[1] * ys[i], yr1 = t[4] * ys[i];
      for (int64_t j = 0; j < Wo; ++j)
        obuf[j] = nearest_offset<T, PAD, AC>((t[0] * xs[j] + t[2]) + yr0,
                                             (t[3] * xs[j] + t[5]) + yr1, ax, ay);
      for (int64_t c = 0; c < C; ++c) {
        const T* p = in + (b * C + c) * H * W;
        T* dst = out + (b * C + c) * Ho * Wo + i * Wo;
        for (int64_t j = 0; j < Wo; ++j) dst[j] = obuf[j] >= 0 ? p[obuf[j]] : T(0);
      }
    }
  });
}

// nearest has no gradient to the matrix (piecewise constant); the input's, one task per batch
// item, in pixel order
template <typename T, int PAD, bool AC>
void backward_nearest(const T* go, const T* in, const T* theta, const T* xs, const T* ys, T* gin,
                      T* gtheta, int64_t B, int64_t C, int64_t H, int64_t W, int64_t Ho,
                      int64_t Wo) {
  (void)in;
  (void)gtheta;
  if (!gin) return;
  const Axis<T, AC> ax(W), ay(H);
  at::parallel_for(0, B, 1, [&](int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end; ++b) {
      const T* t = theta + b * 6;
      for (int64_t i = 0; i < Ho; ++i) {
        const T yr0 = t[1] * ys[i], yr1 = t[4] * ys[i];
        for (int64_t j = 0; j < Wo; ++j) {
          const int64_t o = nearest_offset<T, PAD, AC>((t[0] * xs[j] + t[2]) + yr0,
                                                       (t[3] * xs[j] + t[5]) + yr1, ax, ay);
          if (o < 0) continue;
          for (int64_t c = 0; c < C; ++c)
            gin[(b * C + c) * H * W + o] += go[(b * C + c) * Ho * Wo + i * Wo + j];
        }
      }
    }
  });
}

template <typename T, typename F>
F pick(int64_t mode, int64_t pad, bool ac, F z0, F z1, F b0, F b1, F r0, F r1) {
  (void)mode;
  if (pad == BORDER) return ac ? b1 : b0;
  if (pad == REFLECTION) return ac ? r1 : r0;
  return ac ? z1 : z0;
}

#define TORCHSTN_TABLE(KERNEL, T)                                                          \
  pick<T>(mode, pad, ac, KERNEL<T, ZEROS, false>, KERNEL<T, ZEROS, true>,                     \
          KERNEL<T, BORDER, false>, KERNEL<T, BORDER, true>, KERNEL<T, REFLECTION, false>,    \
          KERNEL<T, REFLECTION, true>)

void check_args(const torch::Tensor& input, const torch::Tensor& theta, const torch::Tensor& xs,
                const torch::Tensor& ys, int64_t mode, int64_t pad) {
  TORCH_CHECK(input.device().is_cpu() && input.dim() == 4, "torchstn fused affine2d: input must be a (B, C, H, W) CPU tensor");
  TORCH_CHECK(input.size(2) * input.size(3) < (int64_t(1) << 31) - 2,
              "torchstn fused affine2d: an image plane must have fewer than 2^31 pixels");
  TORCH_CHECK(theta.dim() == 3 && theta.size(0) == input.size(0) && theta.size(1) == 2 && theta.size(2) == 3,
              "torchstn fused affine2d: theta must be (B, 2, 3)");
  TORCH_CHECK(xs.dim() == 1 && ys.dim() == 1, "torchstn fused affine2d: xs and ys must be 1-D");
  TORCH_CHECK(theta.scalar_type() == input.scalar_type() && xs.scalar_type() == input.scalar_type() &&
              ys.scalar_type() == input.scalar_type(), "torchstn fused affine2d: dtypes differ");
  TORCH_CHECK(mode == 0 || mode == 1, "torchstn fused affine2d: mode 0 (bilinear) or 1 (nearest)");
  TORCH_CHECK(pad >= 0 && pad <= 2, "torchstn fused affine2d: padding 0, 1 or 2");
}

// ---- volumes: the trilinear counterpart, a 3x4 matrix per batch item -----------------------

// the eight trilinear taps of one output row (corner k = (kx, ky, kz) = (k & 1, k >> 1 & 1,
// k >> 2)), structure of arrays, padded to whole blocks like RowTaps
template <typename T>
struct RowTaps3 {
  static constexpr int64_t kBlock = 16;
  std::vector<T> w[8], in[8], fx, fy, fz, dx, dy, dz, xs;
  std::vector<T> ux, uy, uz;  // a row of a dense field, copied into padded buffers
  std::vector<int32_t> o[8];
  RowTaps3(int64_t n, const T* xs_in)
      : xs(pad(n), T(0)), ux(pad(n), T(0)), uy(pad(n), T(0)), uz(pad(n), T(0)) {
    if (xs_in) std::copy(xs_in, xs_in + n, xs.begin());
    n = pad(n);
    for (auto* v : {&fx, &fy, &fz, &dx, &dy, &dz}) v->resize(n);
    for (int k = 0; k < 8; ++k) {
      w[k].resize(n);
      in[k].resize(n);
      o[k].resize(n);
    }
  }
  static int64_t pad(int64_t n) { return (n + kBlock - 1) / kBlock * kBlock; }
  // row (k, i) of item b of a (B, 3, D, H, W) field into ux, uy, uz (padding lanes stay 0)
  void load_field_row(const T* u, int64_t b, int64_t k, int64_t i, int64_t D, int64_t H,
                      int64_t W) {
    const int64_t vol = D * H * W, at = (k * H + i) * W;
    const T* base = u + b * 3 * vol + at;
    std::copy(base, base + W, ux.begin());
    std::copy(base + vol, base + vol + W, uy.begin());
    std::copy(base + 2 * vol, base + 2 * vol + W, uz.begin());
  }
};

// FIELD: the points are the row's voxels moved by a dense field (r.ux, r.uy, r.uz, in voxels;
// yv, zv are the row's indices and t is unused); otherwise the matrix t applied to
// (xs[j], yv, zv)
template <typename T, int PAD, bool AC, bool GRAD, bool FIELD = false>
void row_taps3(const T* t, T yv, T zv, const T* __restrict xs, int64_t Wo, const Axis<T, AC>& ax,
               const Axis<T, AC>& ay, const Axis<T, AC>& az, RowTaps3<T>& r) {
  // x' = ((t0 x + t3) + t1 y) + t2 z per row of the matrix: torchstn's grid's rounding order
  T c[3] = {}, yz[3] = {}, tx[3] = {};
  for (int q = 0; q < 3 && !FIELD; ++q) {
    tx[q] = t[4 * q];
    c[q] = t[4 * q + 3];
    yz[q] = t[4 * q + 1] * yv;  // added to the column term, then the slice term
  }
  const T zt[3] = {FIELD ? T(0) : t[2] * zv, FIELD ? T(0) : t[6] * zv,
                   FIELD ? T(0) : t[10] * zv};
  const T* __restrict ux = r.ux.data();
  const T* __restrict uy = r.uy.data();
  const T* __restrict uz = r.uz.data();
  const Axis<T, AC> axl = ax, ayl = ay, azl = az;
  const int32_t W = static_cast<int32_t>(ax.n), H = static_cast<int32_t>(ay.n);
  const int32_t D = static_cast<int32_t>(az.n);
  const T big = std::numeric_limits<T>::max(), nan = std::numeric_limits<T>::quiet_NaN();
  T* __restrict wp[8];
  T* __restrict mp[8];
  int32_t* __restrict op[8];
  for (int k = 0; k < 8; ++k) {
    wp[k] = r.w[k].data();
    mp[k] = r.in[k].data();
    op[k] = r.o[k].data();
  }
  T* __restrict fxs = r.fx.data(); T* __restrict fys = r.fy.data(); T* __restrict fzs = r.fz.data();
  T* __restrict dxs = r.dx.data(); T* __restrict dys = r.dy.data(); T* __restrict dzs = r.dz.data();
  const int64_t Wp = RowTaps3<T>::pad(Wo);
  for (int64_t jb = 0; jb < Wp; jb += RowTaps3<T>::kBlock) {
#pragma omp simd
    for (int64_t j = jb; j < jb + RowTaps3<T>::kBlock; ++j) {
      T x, y, z, sx = T(1), sy = T(1), sz = T(1);
      if (FIELD) {
        const T px = static_cast<T>(j) + ux[j], py = yv + uy[j], pz = zv + uz[j];
        if (GRAD) {
          x = axl.template pad_px_grad<PAD>(px, &sx);
          y = ayl.template pad_px_grad<PAD>(py, &sy);
          z = azl.template pad_px_grad<PAD>(pz, &sz);
        } else {
          x = axl.template pad_px<PAD>(px);
          y = ayl.template pad_px<PAD>(py);
          z = azl.template pad_px<PAD>(pz);
        }
      } else {
        const T gx = ((tx[0] * xs[j] + c[0]) + yz[0]) + zt[0];
        const T gy = ((tx[1] * xs[j] + c[1]) + yz[1]) + zt[1];
        const T gz = ((tx[2] * xs[j] + c[2]) + yz[2]) + zt[2];
        if (GRAD) {
          x = axl.template apply_grad<PAD>(gx, &sx);
          y = ayl.template apply_grad<PAD>(gy, &sy);
          z = azl.template apply_grad<PAD>(gz, &sz);
        } else {
          x = axl.template apply<PAD>(gx);
          y = ayl.template apply<PAD>(gy);
          z = azl.template apply<PAD>(gz);
        }
      }
      const bool finite = (std::abs(x) <= big) & (std::abs(y) <= big) & (std::abs(z) <= big);
      x = finite ? axl.bounded(x) : T(0);
      y = finite ? ayl.bounded(y) : T(0);
      z = finite ? azl.bounded(z) : T(0);
      const T flx = std::floor(x), fly = std::floor(y), flz = std::floor(z);
      const int32_t ix = static_cast<int32_t>(flx), iy = static_cast<int32_t>(fly);
      const int32_t iz = static_cast<int32_t>(flz);
      const T e = x - flx, n = y - fly, f = z - flz;
      const T wx[2] = {T(1) - e, e}, wy[2] = {T(1) - n, n}, wz[2] = {T(1) - f, f};
      const bool inx[2] = {static_cast<uint32_t>(ix) < static_cast<uint32_t>(W),
                           static_cast<uint32_t>(ix + 1) < static_cast<uint32_t>(W)};
      const bool iny[2] = {static_cast<uint32_t>(iy) < static_cast<uint32_t>(H),
                           static_cast<uint32_t>(iy + 1) < static_cast<uint32_t>(H)};
      const bool inz[2] = {static_cast<uint32_t>(iz) < static_cast<uint32_t>(D),
                           static_cast<uint32_t>(iz + 1) < static_cast<uint32_t>(D)};
      const int32_t cx[2] = {std::min(std::max(ix, 0), W - 1), std::min(std::max(ix + 1, 0), W - 1)};
      const int32_t cy[2] = {std::min(std::max(iy, 0), H - 1), std::min(std::max(iy + 1, 0), H - 1)};
      const int32_t cz[2] = {std::min(std::max(iz, 0), D - 1), std::min(std::max(iz + 1, 0), D - 1)};
      const T bad = GRAD ? T(0) : nan;
      for (int k = 0; k < 8; ++k) {
        const int a = k & 1, b = (k >> 1) & 1, cc = k >> 2;
        const bool inside = finite & inx[a] & iny[b] & inz[cc];
        wp[k][j] = finite ? (inside ? (wz[cc] * wy[b]) * wx[a] : T(0)) : bad;
        op[k][j] = (cz[cc] * H + cy[b]) * W + cx[a];
        if (GRAD) mp[k][j] = inside ? T(1) : T(0);
      }
      if (GRAD) {
        fxs[j] = e; fys[j] = n; fzs[j] = f;
        dxs[j] = finite ? sx : nan; dys[j] = finite ? sy : nan; dzs[j] = finite ? sz : nan;
      }
    }
  }
}

// One output row read through its eight taps, for every channel (planes in_plane and
// out_plane values apart); the matrix and the field kernels share it.
template <typename T>
inline void gather_row3(const RowTaps3<T>& r, const T* in, int64_t in_plane, T* out,
                        int64_t out_plane, int64_t C, int64_t n) {
  const T *__restrict w0 = r.w[0].data(), *__restrict w1 = r.w[1].data();
  const T *__restrict w2 = r.w[2].data(), *__restrict w3 = r.w[3].data();
  const T *__restrict w4 = r.w[4].data(), *__restrict w5 = r.w[5].data();
  const T *__restrict w6 = r.w[6].data(), *__restrict w7 = r.w[7].data();
  const int32_t *__restrict o0 = r.o[0].data(), *__restrict o1 = r.o[1].data();
  const int32_t *__restrict o2 = r.o[2].data(), *__restrict o3 = r.o[3].data();
  const int32_t *__restrict o4 = r.o[4].data(), *__restrict o5 = r.o[5].data();
  const int32_t *__restrict o6 = r.o[6].data(), *__restrict o7 = r.o[7].data();
  for (int64_t c = 0; c < C; ++c) {
    const T* __restrict p = in + c * in_plane;
    T* __restrict dst = out + c * out_plane;
#pragma omp simd
    for (int64_t j = 0; j < n; ++j)
      dst[j] = ((p[o0[j]] * w0[j] + p[o1[j]] * w1[j]) + (p[o2[j]] * w2[j] + p[o3[j]] * w3[j])) +
               ((p[o4[j]] * w4[j] + p[o5[j]] * w5[j]) + (p[o6[j]] * w6[j] + p[o7[j]] * w7[j]));
  }
}

// The backward of gather_row3 for one row, channel by channel: the gradient at each point,
// summed over channels into gx, gy, gz (where given), and the serial scatter of the output
// gradient to gin (where given, in voxel order; taps outside have zero weight).
template <typename T>
inline void scatter_row3(const RowTaps3<T>& r, const T* in, int64_t in_plane, const T* go,
                         int64_t go_plane, T* gin, T* __restrict gx, T* __restrict gy,
                         T* __restrict gz, int64_t C, int64_t n) {
  const T *__restrict e = r.fx.data(), *__restrict ny = r.fy.data(), *__restrict f = r.fz.data();
  for (int64_t c = 0; c < C; ++c) {
    const T* __restrict p = in + c * in_plane;
    const T* __restrict g = go + c * go_plane;
    if (gx) {
      for (int64_t j = 0; j < n; ++j) {
        T v[8];
        for (int k = 0; k < 8; ++k) v[k] = r.in[k][j] != T(0) ? p[r.o[k][j]] : T(0);
        const T ex = e[j], nj = ny[j], fz = f[j];
        // differences along x, y, z of the corner values, weighted by the other two axes
        const T dvx = (T(1) - fz) * ((T(1) - nj) * (v[1] - v[0]) + nj * (v[3] - v[2])) +
                      fz * ((T(1) - nj) * (v[5] - v[4]) + nj * (v[7] - v[6]));
        const T dvy = (T(1) - fz) * ((T(1) - ex) * (v[2] - v[0]) + ex * (v[3] - v[1])) +
                      fz * ((T(1) - ex) * (v[6] - v[4]) + ex * (v[7] - v[5]));
        const T dvz = (T(1) - nj) * ((T(1) - ex) * (v[4] - v[0]) + ex * (v[5] - v[1])) +
                      nj * ((T(1) - ex) * (v[6] - v[2]) + ex * (v[7] - v[3]));
        gx[j] += g[j] * dvx;
        gy[j] += g[j] * dvy;
        gz[j] += g[j] * dvz;
      }
    }
    if (gin) {
      T* q = gin + c * in_plane;
      for (int64_t j = 0; j < n; ++j) {
        const T gj = g[j];
        for (int k = 0; k < 8; ++k) q[r.o[k][j]] += r.w[k][j] * gj;
      }
    }
  }
}

template <typename T, int PAD, bool AC>
void forward_trilinear(const T* in, const T* theta, const T* xs, const T* ys, const T* zs, T* out,
                       int64_t B, int64_t C, int64_t D, int64_t H, int64_t W, int64_t Do,
                       int64_t Ho, int64_t Wo) {
  const Axis<T, AC> ax(W), ay(H), az(D);
  at::parallel_for(0, B * Do * Ho, 4, [&](int64_t begin, int64_t end) {
    RowTaps3<T> r(Wo, xs);
    for (int64_t row = begin; row < end; ++row) {
      const int64_t b = row / (Do * Ho), kz = (row / Ho) % Do, i = row % Ho;
      row_taps3<T, PAD, AC, false>(theta + b * 12, ys[i], zs[kz], r.xs.data(), Wo, ax, ay, az, r);
      gather_row3(r, in + b * C * D * H * W, D * H * W,
                  out + (b * C * Do + kz) * Ho * Wo + i * Wo, Do * Ho * Wo, C, Wo);
    }
  });
}

// backward: one task per batch item (its input-gradient slice and twelve matrix gradients), in
// one fixed order, as the 2-D kernel
template <typename T, int PAD, bool AC>
void backward_trilinear(const T* go, const T* in, const T* theta, const T* xs, const T* ys,
                        const T* zs, T* gin, T* gtheta, int64_t B, int64_t C, int64_t D, int64_t H,
                        int64_t W, int64_t Do, int64_t Ho, int64_t Wo) {
  const Axis<T, AC> ax(W), ay(H), az(D);
  at::parallel_for(0, B, 1, [&](int64_t begin, int64_t end) {
    RowTaps3<T> r(Wo, xs);
    const int64_t Wp = RowTaps3<T>::pad(Wo);
    std::vector<T> gv[3];
    for (auto& v : gv) v.resize(Wp);
    for (int64_t b = begin; b < end; ++b) {
      const T* t = theta + b * 12;
      T acc[12] = {};
      for (int64_t kz = 0; kz < Do; ++kz) {
        for (int64_t i = 0; i < Ho; ++i) {
          row_taps3<T, PAD, AC, true>(t, ys[i], zs[kz], r.xs.data(), Wo, ax, ay, az, r);
          for (auto& v : gv) std::fill(v.begin(), v.end(), T(0));
          T* __restrict gx = gv[0].data();
          T* __restrict gy = gv[1].data();
          T* __restrict gz = gv[2].data();
          scatter_row3(r, in + b * C * D * H * W, D * H * W,
                       go + (b * C * Do + kz) * Ho * Wo + i * Wo, Do * Ho * Wo,
                       gin ? gin + b * C * D * H * W : nullptr, gtheta ? gx : nullptr,
                       gtheta ? gy : nullptr, gtheta ? gz : nullptr, C, Wo);
          if (!gtheta) continue;
          const T* __restrict xv = r.xs.data();
          const T* dv[3] = {r.dx.data(), r.dy.data(), r.dz.data()};
          for (int q = 0; q < 3; ++q) {
            const T* __restrict gq = gv[q].data();
            const T* __restrict dq = dv[q];
            T sxx = 0, s1 = 0;
            for (int64_t j = 0; j < Wo; ++j) {
              const T a = gq[j] * dq[j];
              sxx += a * xv[j];
              s1 += a;
            }
            acc[4 * q] += sxx;
            acc[4 * q + 1] += s1 * ys[i];
            acc[4 * q + 2] += s1 * zs[kz];
            acc[4 * q + 3] += s1;
          }
        }
      }
      if (gtheta)
        for (int q = 0; q < 12; ++q) gtheta[b * 12 + q] = acc[q];
    }
  });
}

// ---- dense fields, 3-D: output(p) = input(p + u(p)), u in voxels, (B, 3, D, H, W) ---------

template <typename T, int PAD, bool AC>
void forward_field3d(const T* in, const T* u, T* out, int64_t B, int64_t C, int64_t D, int64_t H,
                     int64_t W) {
  const Axis<T, AC> ax(W), ay(H), az(D);
  const int64_t vol = D * H * W;
  at::parallel_for(0, B * D * H, 4, [&](int64_t begin, int64_t end) {
    RowTaps3<T> r(W, nullptr);
    for (int64_t row = begin; row < end; ++row) {
      const int64_t b = row / (D * H), k = (row / H) % D, i = row % H;
      r.load_field_row(u, b, k, i, D, H, W);
      row_taps3<T, PAD, AC, false, true>(nullptr, static_cast<T>(i), static_cast<T>(k),
                                         r.xs.data(), W, ax, ay, az, r);
      gather_row3(r, in + b * C * vol, vol, out + b * C * vol + (k * H + i) * W, vol, C, W);
    }
  });
}

// backward: one task per batch item (its input-gradient slice; the field's gradient is per voxel)
template <typename T, int PAD, bool AC>
void backward_field3d(const T* go, const T* in, const T* u, T* gin, T* gu, int64_t B, int64_t C,
                      int64_t D, int64_t H, int64_t W) {
  const Axis<T, AC> ax(W), ay(H), az(D);
  const int64_t vol = D * H * W;
  at::parallel_for(0, B, 1, [&](int64_t begin, int64_t end) {
    RowTaps3<T> r(W, nullptr);
    for (int64_t b = begin; b < end; ++b) {
      for (int64_t k = 0; k < D; ++k) {
        for (int64_t i = 0; i < H; ++i) {
          r.load_field_row(u, b, k, i, D, H, W);
          row_taps3<T, PAD, AC, true, true>(nullptr, static_cast<T>(i), static_cast<T>(k),
                                            r.xs.data(), W, ax, ay, az, r);
          const int64_t at = (k * H + i) * W;
          T* __restrict gx = gu ? gu + b * 3 * vol + at : nullptr;
          T* __restrict gy = gu ? gu + (b * 3 + 1) * vol + at : nullptr;
          T* __restrict gz = gu ? gu + (b * 3 + 2) * vol + at : nullptr;
          scatter_row3(r, in + b * C * vol, vol, go + b * C * vol + at, vol,
                       gin ? gin + b * C * vol : nullptr, gx, gy, gz, C, W);
          if (gu) {
            const T *__restrict dx = r.dx.data(), *__restrict dy = r.dy.data();
            const T* __restrict dz = r.dz.data();
#pragma omp simd
            for (int64_t j = 0; j < W; ++j) {
              gx[j] *= dx[j];
              gy[j] *= dy[j];
              gz[j] *= dz[j];
            }
          }
        }
      }
    }
  });
}

// the finite check, where the kernel reads the matrix (on the CPU, with no flag read back
// through the dispatcher): torchstn.native turns this error into NonFiniteError
void check_finite_matrix(const torch::Tensor& theta) {
  AT_DISPATCH_FLOATING_TYPES(theta.scalar_type(), "check_finite_matrix", [&] {
    const scalar_t* p = theta.data_ptr<scalar_t>();
    bool ok = true;
    for (int64_t k = 0; k < theta.numel(); ++k) ok &= std::isfinite(p[k]);
    TORCH_CHECK(ok, "torchstn-nonfinite-matrix");
  });
}

}  // namespace

torch::Tensor affine2d_forward(torch::Tensor input, torch::Tensor theta, torch::Tensor xs,
                               torch::Tensor ys, int64_t mode, int64_t pad, bool ac,
                               bool check_finite) {
  check_args(input, theta, xs, ys, mode, pad);
  auto in = input.contiguous();
  auto th = theta.contiguous();
  if (check_finite) check_finite_matrix(th);
  auto cx = xs.contiguous();
  auto cy = ys.contiguous();
  const int64_t B = in.size(0), C = in.size(1), H = in.size(2), W = in.size(3);
  const int64_t Ho = cy.size(0), Wo = cx.size(0);
  auto out = torch::empty({B, C, Ho, Wo}, in.options());
  if (out.numel() == 0) return out;
  AT_DISPATCH_FLOATING_TYPES(in.scalar_type(), "affine2d_forward", [&] {
    using F = void (*)(const scalar_t*, const scalar_t*, const scalar_t*, const scalar_t*,
                       scalar_t*, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t);
    F f = mode == 1 ? TORCHSTN_TABLE(forward_nearest, scalar_t)
                    : TORCHSTN_TABLE(forward_bilinear, scalar_t);
    f(in.data_ptr<scalar_t>(), th.data_ptr<scalar_t>(), cx.data_ptr<scalar_t>(),
      cy.data_ptr<scalar_t>(), out.data_ptr<scalar_t>(), B, C, H, W, Ho, Wo);
  });
  return out;
}

std::vector<torch::Tensor> affine2d_backward(torch::Tensor grad, torch::Tensor input,
                                             torch::Tensor theta, torch::Tensor xs,
                                             torch::Tensor ys, int64_t mode, int64_t pad,
                                             bool ac, bool need_input, bool need_theta) {
  check_args(input, theta, xs, ys, mode, pad);
  TORCH_CHECK(grad.dim() == 4 && grad.size(0) == input.size(0) && grad.size(1) == input.size(1) &&
              grad.size(2) == ys.size(0) && grad.size(3) == xs.size(0) &&
              grad.scalar_type() == input.scalar_type(), "torchstn fused affine2d: bad gradient");
  auto in = input.contiguous();
  auto th = theta.contiguous();
  auto go = grad.contiguous();
  auto cx = xs.contiguous();
  auto cy = ys.contiguous();
  const int64_t B = in.size(0), C = in.size(1), H = in.size(2), W = in.size(3);
  const int64_t Ho = cy.size(0), Wo = cx.size(0);
  auto gin = need_input ? torch::zeros_like(in) : torch::Tensor();
  auto gth = need_theta ? torch::zeros({B, 2, 3}, th.options()) : torch::Tensor();
  if (mode == 1) need_theta = false;  // nearest: piecewise constant in theta, zero gradient
  if (go.numel() == 0 || (!need_input && !need_theta)) return {gin, gth};
  AT_DISPATCH_FLOATING_TYPES(in.scalar_type(), "affine2d_backward", [&] {
    using F = void (*)(const scalar_t*, const scalar_t*, const scalar_t*, const scalar_t*,
                       const scalar_t*, scalar_t*, scalar_t*, int64_t, int64_t, int64_t, int64_t,
                       int64_t, int64_t);
    F f = mode == 1 ? TORCHSTN_TABLE(backward_nearest, scalar_t)
                    : TORCHSTN_TABLE(backward_bilinear, scalar_t);
    f(go.data_ptr<scalar_t>(), in.data_ptr<scalar_t>(), th.data_ptr<scalar_t>(),
      cx.data_ptr<scalar_t>(), cy.data_ptr<scalar_t>(),
      need_input ? gin.data_ptr<scalar_t>() : nullptr,
      need_theta ? gth.data_ptr<scalar_t>() : nullptr, B, C, H, W, Ho, Wo);
  });
  return {gin, gth};
}

namespace {
void check_args3(const torch::Tensor& input, const torch::Tensor& theta, const torch::Tensor& xs,
                 const torch::Tensor& ys, const torch::Tensor& zs, int64_t pad) {
  TORCH_CHECK(input.device().is_cpu() && input.dim() == 5,
              "torchstn fused affine3d: input must be a (B, C, D, H, W) CPU tensor");
  TORCH_CHECK(input.size(2) * input.size(3) * input.size(4) < (int64_t(1) << 31) - 2,
              "torchstn fused affine3d: a volume must have fewer than 2^31 voxels");
  TORCH_CHECK(theta.dim() == 3 && theta.size(0) == input.size(0) && theta.size(1) == 3 &&
              theta.size(2) == 4, "torchstn fused affine3d: theta must be (B, 3, 4)");
  TORCH_CHECK(xs.dim() == 1 && ys.dim() == 1 && zs.dim() == 1,
              "torchstn fused affine3d: xs, ys and zs must be 1-D");
  for (const auto* v : {&theta, &xs, &ys, &zs})
    TORCH_CHECK(v->scalar_type() == input.scalar_type(), "torchstn fused affine3d: dtypes differ");
  TORCH_CHECK(pad >= 0 && pad <= 2, "torchstn fused affine3d: padding 0, 1 or 2");
}
}  // namespace

torch::Tensor affine3d_forward(torch::Tensor input, torch::Tensor theta, torch::Tensor xs,
                               torch::Tensor ys, torch::Tensor zs, int64_t pad, bool ac,
                               bool check_finite) {
  check_args3(input, theta, xs, ys, zs, pad);
  auto in = input.contiguous();
  auto th = theta.contiguous();
  if (check_finite) check_finite_matrix(th);
  auto cx = xs.contiguous(), cy = ys.contiguous(), cz = zs.contiguous();
  const int64_t B = in.size(0), C = in.size(1), D = in.size(2), H = in.size(3), W = in.size(4);
  const int64_t Do = cz.size(0), Ho = cy.size(0), Wo = cx.size(0);
  auto out = torch::empty({B, C, Do, Ho, Wo}, in.options());
  if (out.numel() == 0) return out;
  AT_DISPATCH_FLOATING_TYPES(in.scalar_type(), "affine3d_forward", [&] {
    auto f = pick<scalar_t>(0, pad, ac, forward_trilinear<scalar_t, ZEROS, false>,
                            forward_trilinear<scalar_t, ZEROS, true>,
                            forward_trilinear<scalar_t, BORDER, false>,
                            forward_trilinear<scalar_t, BORDER, true>,
                            forward_trilinear<scalar_t, REFLECTION, false>,
                            forward_trilinear<scalar_t, REFLECTION, true>);
    f(in.data_ptr<scalar_t>(), th.data_ptr<scalar_t>(), cx.data_ptr<scalar_t>(),
      cy.data_ptr<scalar_t>(), cz.data_ptr<scalar_t>(), out.data_ptr<scalar_t>(), B, C, D, H, W,
      Do, Ho, Wo);
  });
  return out;
}

std::vector<torch::Tensor> affine3d_backward(torch::Tensor grad, torch::Tensor input,
                                             torch::Tensor theta, torch::Tensor xs,
                                             torch::Tensor ys, torch::Tensor zs, int64_t pad,
                                             bool ac, bool need_input, bool need_theta) {
  check_args3(input, theta, xs, ys, zs, pad);
  TORCH_CHECK(grad.dim() == 5 && grad.size(0) == input.size(0) && grad.size(1) == input.size(1) &&
              grad.size(2) == zs.size(0) && grad.size(3) == ys.size(0) &&
              grad.size(4) == xs.size(0) && grad.scalar_type() == input.scalar_type(),
              "torchstn fused affine3d: bad gradient");
  auto in = input.contiguous();
  auto th = theta.contiguous();
  auto go = grad.contiguous();
  auto cx = xs.contiguous(), cy = ys.contiguous(), cz = zs.contiguous();
  const int64_t B = in.size(0), C = in.size(1), D = in.size(2), H = in.size(3), W = in.size(4);
  const int64_t Do = cz.size(0), Ho = cy.size(0), Wo = cx.size(0);
  auto gin = need_input ? torch::zeros_like(in) : torch::Tensor();
  auto gth = need_theta ? torch::zeros({B, 3, 4}, th.options()) : torch::Tensor();
  if (go.numel() == 0 || (!need_input && !need_theta)) return {gin, gth};
  AT_DISPATCH_FLOATING_TYPES(in.scalar_type(), "affine3d_backward", [&] {
    auto f = pick<scalar_t>(0, pad, ac, backward_trilinear<scalar_t, ZEROS, false>,
                            backward_trilinear<scalar_t, ZEROS, true>,
                            backward_trilinear<scalar_t, BORDER, false>,
                            backward_trilinear<scalar_t, BORDER, true>,
                            backward_trilinear<scalar_t, REFLECTION, false>,
                            backward_trilinear<scalar_t, REFLECTION, true>);
    f(go.data_ptr<scalar_t>(), in.data_ptr<scalar_t>(), th.data_ptr<scalar_t>(),
      cx.data_ptr<scalar_t>(), cy.data_ptr<scalar_t>(), cz.data_ptr<scalar_t>(),
      need_input ? gin.data_ptr<scalar_t>() : nullptr,
      need_theta ? gth.data_ptr<scalar_t>() : nullptr, B, C, D, H, W, Do, Ho, Wo);
  });
  return {gin, gth};
}

torch::Tensor field2d_forward(torch::Tensor input, torch::Tensor field, int64_t pad, bool ac) {
  TORCH_CHECK(input.device().is_cpu() && input.dim() == 4 && field.dim() == 4 &&
              field.size(0) == input.size(0) && field.size(1) == 2 &&
              field.size(2) == input.size(2) && field.size(3) == input.size(3) &&
              field.scalar_type() == input.scalar_type(),
              "torchstn fused field2d: input (B, C, H, W) and field (B, 2, H, W), one dtype");
  TORCH_CHECK(input.size(2) * input.size(3) < (int64_t(1) << 31) - 2 && pad >= 0 && pad <= 2,
              "torchstn fused field2d: too large an image, or a bad padding");
  auto in = input.contiguous();
  auto u = field.contiguous();
  const int64_t B = in.size(0), C = in.size(1), H = in.size(2), W = in.size(3);
  auto out = torch::empty_like(in);
  if (out.numel() == 0) return out;
  AT_DISPATCH_FLOATING_TYPES(in.scalar_type(), "field2d_forward", [&] {
    auto f = pick<scalar_t>(0, pad, ac, forward_field2d<scalar_t, ZEROS, false>,
                            forward_field2d<scalar_t, ZEROS, true>,
                            forward_field2d<scalar_t, BORDER, false>,
                            forward_field2d<scalar_t, BORDER, true>,
                            forward_field2d<scalar_t, REFLECTION, false>,
                            forward_field2d<scalar_t, REFLECTION, true>);
    f(in.data_ptr<scalar_t>(), u.data_ptr<scalar_t>(), out.data_ptr<scalar_t>(), B, C, H, W);
  });
  return out;
}

std::vector<torch::Tensor> field2d_backward(torch::Tensor grad, torch::Tensor input,
                                            torch::Tensor field, int64_t pad, bool ac,
                                            bool need_input, bool need_field) {
  TORCH_CHECK(grad.sizes() == input.sizes() && grad.scalar_type() == input.scalar_type() &&
              field.dim() == 4 && field.size(0) == input.size(0) && field.size(1) == 2 &&
              field.size(2) == input.size(2) && field.size(3) == input.size(3) &&
              pad >= 0 && pad <= 2, "torchstn fused field2d: bad arguments");
  auto in = input.contiguous();
  auto u = field.contiguous();
  auto go = grad.contiguous();
  const int64_t B = in.size(0), C = in.size(1), H = in.size(2), W = in.size(3);
  auto gin = need_input ? torch::zeros_like(in) : torch::Tensor();
  auto gu = need_field ? torch::zeros_like(u) : torch::Tensor();
  if (go.numel() == 0 || (!need_input && !need_field)) return {gin, gu};
  AT_DISPATCH_FLOATING_TYPES(in.scalar_type(), "field2d_backward", [&] {
    auto f = pick<scalar_t>(0, pad, ac, backward_field2d<scalar_t, ZEROS, false>,
                            backward_field2d<scalar_t, ZEROS, true>,
                            backward_field2d<scalar_t, BORDER, false>,
                            backward_field2d<scalar_t, BORDER, true>,
                            backward_field2d<scalar_t, REFLECTION, false>,
                            backward_field2d<scalar_t, REFLECTION, true>);
    f(go.data_ptr<scalar_t>(), in.data_ptr<scalar_t>(), u.data_ptr<scalar_t>(),
      need_input ? gin.data_ptr<scalar_t>() : nullptr,
      need_field ? gu.data_ptr<scalar_t>() : nullptr, B, C, H, W);
  });
  return {gin, gu};
}

torch::Tensor projective2d_forward(torch::Tensor input, torch::Tensor theta, torch::Tensor xs,
                                   torch::Tensor ys, int64_t pad, bool ac, double eps,
                                   bool check_finite) {
  TORCH_CHECK(theta.dim() == 3 && theta.size(0) == input.size(0) && theta.size(1) == 3 &&
              theta.size(2) == 3, "torchstn fused projective2d: theta must be (B, 3, 3)");
  check_args(input, theta.narrow(1, 0, 2).narrow(2, 0, 3), xs, ys, 0, pad);
  auto in = input.contiguous();
  auto th = theta.contiguous();
  if (check_finite) check_finite_matrix(th);
  auto cx = xs.contiguous();
  auto cy = ys.contiguous();
  const int64_t B = in.size(0), C = in.size(1), H = in.size(2), W = in.size(3);
  const int64_t Ho = cy.size(0), Wo = cx.size(0);
  auto out = torch::empty({B, C, Ho, Wo}, in.options());
  if (out.numel() == 0) return out;
  AT_DISPATCH_FLOATING_TYPES(in.scalar_type(), "projective2d_forward", [&] {
    auto f = pick<scalar_t>(0, pad, ac, forward_projective<scalar_t, ZEROS, false>,
                            forward_projective<scalar_t, ZEROS, true>,
                            forward_projective<scalar_t, BORDER, false>,
                            forward_projective<scalar_t, BORDER, true>,
                            forward_projective<scalar_t, REFLECTION, false>,
                            forward_projective<scalar_t, REFLECTION, true>);
    f(in.data_ptr<scalar_t>(), th.data_ptr<scalar_t>(), cx.data_ptr<scalar_t>(),
      cy.data_ptr<scalar_t>(), out.data_ptr<scalar_t>(), B, C, H, W, Ho, Wo,
      static_cast<scalar_t>(eps));
  });
  return out;
}

std::vector<torch::Tensor> projective2d_backward(torch::Tensor grad, torch::Tensor input,
                                                 torch::Tensor theta, torch::Tensor xs,
                                                 torch::Tensor ys, int64_t pad, bool ac,
                                                 double eps, bool need_input, bool need_theta) {
  TORCH_CHECK(theta.dim() == 3 && theta.size(0) == input.size(0) && theta.size(1) == 3 &&
              theta.size(2) == 3, "torchstn fused projective2d: theta must be (B, 3, 3)");
  check_args(input, theta.narrow(1, 0, 2).narrow(2, 0, 3), xs, ys, 0, pad);
  TORCH_CHECK(grad.dim() == 4 && grad.size(0) == input.size(0) && grad.size(1) == input.size(1) &&
              grad.size(2) == ys.size(0) && grad.size(3) == xs.size(0) &&
              grad.scalar_type() == input.scalar_type(), "torchstn fused projective2d: bad gradient");
  auto in = input.contiguous();
  auto th = theta.contiguous();
  auto go = grad.contiguous();
  auto cx = xs.contiguous();
  auto cy = ys.contiguous();
  const int64_t B = in.size(0), C = in.size(1), H = in.size(2), W = in.size(3);
  const int64_t Ho = cy.size(0), Wo = cx.size(0);
  auto gin = need_input ? torch::zeros_like(in) : torch::Tensor();
  auto gth = need_theta ? torch::zeros({B, 3, 3}, th.options()) : torch::Tensor();
  if (go.numel() == 0 || (!need_input && !need_theta)) return {gin, gth};
  AT_DISPATCH_FLOATING_TYPES(in.scalar_type(), "projective2d_backward", [&] {
    auto f = pick<scalar_t>(0, pad, ac, backward_projective<scalar_t, ZEROS, false>,
                            backward_projective<scalar_t, ZEROS, true>,
                            backward_projective<scalar_t, BORDER, false>,
                            backward_projective<scalar_t, BORDER, true>,
                            backward_projective<scalar_t, REFLECTION, false>,
                            backward_projective<scalar_t, REFLECTION, true>);
    f(go.data_ptr<scalar_t>(), in.data_ptr<scalar_t>(), th.data_ptr<scalar_t>(),
      cx.data_ptr<scalar_t>(), cy.data_ptr<scalar_t>(),
      need_input ? gin.data_ptr<scalar_t>() : nullptr,
      need_theta ? gth.data_ptr<scalar_t>() : nullptr, B, C, H, W, Ho, Wo,
      static_cast<scalar_t>(eps));
  });
  return {gin, gth};
}

namespace {
void check_field3d(const torch::Tensor& input, const torch::Tensor& field, int64_t pad) {
  TORCH_CHECK(input.device().is_cpu() && input.dim() == 5 && field.dim() == 5 &&
              field.size(0) == input.size(0) && field.size(1) == 3 &&
              field.size(2) == input.size(2) && field.size(3) == input.size(3) &&
              field.size(4) == input.size(4) && field.scalar_type() == input.scalar_type(),
              "torchstn fused field3d: input (B, C, D, H, W) and field (B, 3, D, H, W), one dtype");
  TORCH_CHECK(input.size(2) * input.size(3) * input.size(4) < (int64_t(1) << 31) - 2 &&
              pad >= 0 && pad <= 2, "torchstn fused field3d: too large a volume, or a bad padding");
}
}  // namespace

torch::Tensor field3d_forward(torch::Tensor input, torch::Tensor field, int64_t pad, bool ac) {
  check_field3d(input, field, pad);
  auto in = input.contiguous();
  auto u = field.contiguous();
  const int64_t B = in.size(0), C = in.size(1), D = in.size(2), H = in.size(3), W = in.size(4);
  auto out = torch::empty_like(in, at::MemoryFormat::Contiguous);
  if (out.numel() == 0) return out;
  AT_DISPATCH_FLOATING_TYPES(in.scalar_type(), "field3d_forward", [&] {
    auto f = pick<scalar_t>(0, pad, ac, forward_field3d<scalar_t, ZEROS, false>,
                            forward_field3d<scalar_t, ZEROS, true>,
                            forward_field3d<scalar_t, BORDER, false>,
                            forward_field3d<scalar_t, BORDER, true>,
                            forward_field3d<scalar_t, REFLECTION, false>,
                            forward_field3d<scalar_t, REFLECTION, true>);
    f(in.data_ptr<scalar_t>(), u.data_ptr<scalar_t>(), out.data_ptr<scalar_t>(), B, C, D, H, W);
  });
  return out;
}

std::vector<torch::Tensor> field3d_backward(torch::Tensor grad, torch::Tensor input,
                                            torch::Tensor field, int64_t pad, bool ac,
                                            bool need_input, bool need_field) {
  check_field3d(input, field, pad);
  TORCH_CHECK(grad.sizes() == input.sizes() && grad.scalar_type() == input.scalar_type(),
              "torchstn fused field3d: bad gradient");
  auto in = input.contiguous();
  auto u = field.contiguous();
  auto go = grad.contiguous();
  const int64_t B = in.size(0), C = in.size(1), D = in.size(2), H = in.size(3), W = in.size(4);
  auto gin = need_input ? torch::zeros_like(in) : torch::Tensor();
  auto gu = need_field ? torch::zeros_like(u) : torch::Tensor();
  if (go.numel() == 0 || (!need_input && !need_field)) return {gin, gu};
  AT_DISPATCH_FLOATING_TYPES(in.scalar_type(), "field3d_backward", [&] {
    auto f = pick<scalar_t>(0, pad, ac, backward_field3d<scalar_t, ZEROS, false>,
                            backward_field3d<scalar_t, ZEROS, true>,
                            backward_field3d<scalar_t, BORDER, false>,
                            backward_field3d<scalar_t, BORDER, true>,
                            backward_field3d<scalar_t, REFLECTION, false>,
                            backward_field3d<scalar_t, REFLECTION, true>);
    f(go.data_ptr<scalar_t>(), in.data_ptr<scalar_t>(), u.data_ptr<scalar_t>(),
      need_input ? gin.data_ptr<scalar_t>() : nullptr,
      need_field ? gu.data_ptr<scalar_t>() : nullptr, B, C, D, H, W);
  });
  return {gin, gu};
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("projective2d_forward", &projective2d_forward,
        "fused projective grid + bilinear sampling, forward");
  m.def("projective2d_backward", &projective2d_backward,
        "fused projective grid + bilinear sampling, gradients to the input and to theta");
  m.def("field3d_forward", &field3d_forward, "fused dense-field warp of volumes, forward");
  m.def("field3d_backward", &field3d_backward,
        "fused dense-field warp of volumes, gradients to the input and to the field");
  m.def("affine2d_forward", &affine2d_forward, "fused affine grid + sampling, forward");
  m.def("affine2d_backward", &affine2d_backward,
        "fused affine grid + sampling, gradients to the input and to theta");
  m.def("field2d_forward", &field2d_forward, "fused dense-field warp of images, forward");
  m.def("field2d_backward", &field2d_backward,
        "fused dense-field warp of images, gradients to the input and to the field");
  m.def("affine3d_forward", &affine3d_forward, "fused 3-D affine grid + trilinear sampling");
  m.def("affine3d_backward", &affine3d_backward,
        "fused 3-D affine grid + trilinear sampling, gradients to the input and to theta");
}
