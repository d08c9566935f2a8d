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

  T reflect(T x) const {
    if (AC && empty) return T(0);
    T a = std::abs(x - low);
    T extra = a - std::trunc(a / twice_span) * twice_span;
    return std::min(extra, twice_span - extra) + low;
  }

  T reflect_grad(T x, T* d) const {
    if (AC && empty) { *d = T(0); return T(0); }
    T shifted = x - low;
    bool neg = shifted < T(0);
    T a = std::abs(shifted);
    T extra = a - std::trunc(a / twice_span) * twice_span;
    T other = twice_span - extra;
    bool flip = extra > other;
    *d = (flip != neg) ? T(-1) : T(1);
    return (flip ? other : extra) + low;
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

  // a coordinate kept finite and outside every tap when it is far outside (no int overflow)
  T bounded(T x) const { return std::min(std::max(x, T(-2)), T(n + 1)); }
};

// the bilinear taps of a point: the weights (zero for a tap outside) and clamped offsets
template <typename T>
struct Taps {
  T w[4];
  int64_t o[4];
  T tx, ty;
  bool in[4];
  bool finite;
};

template <typename T, bool AC>
inline void taps(T x, T y, const Axis<T, AC>& ax, const Axis<T, AC>& ay, int64_t W, Taps<T>* t) {
  // a point that is not finite reads NaN weights at pixel 0, as grid_sample's 0 * NaN does
  const bool finite = std::isfinite(x) && std::isfinite(y);
  x = finite ? ax.bounded(x) : T(0);
  y = finite ? ay.bounded(y) : T(0);
  T fx = std::floor(x), fy = std::floor(y);
  int64_t x0 = static_cast<int64_t>(fx), y0 = static_cast<int64_t>(fy);
  T e = x - fx, n = y - fy;  // distances to the west and north taps
  T we = T(1) - e, s = T(1) - n;
  t->tx = e;
  t->ty = n;
  bool inx0 = x0 >= 0 && x0 < ax.n, inx1 = x0 + 1 >= 0 && x0 + 1 < ax.n;
  bool iny0 = y0 >= 0 && y0 < ay.n, iny1 = y0 + 1 >= 0 && y0 + 1 < ay.n;
  t->finite = finite;
  t->in[0] = finite && inx0 && iny0; t->in[1] = finite && inx1 && iny0;
  t->in[2] = finite && inx0 && iny1; t->in[3] = finite && inx1 && iny1;
  T wt[4] = {s * we, s * e, n * we, n * e};
  int64_t cx0 = std::min(std::max<int64_t>(x0, 0), ax.n - 1);
  int64_t cx1 = std::min(std::max<int64_t>(x0 + 1, 0), ax.n - 1);
  int64_t cy0 = std::min(std::max<int64_t>(y0, 0), ay.n - 1);
  int64_t cy1 = std::min(std::max<int64_t>(y0 + 1, 0), ay.n - 1);
  int64_t off[4] = {cy0 * W + cx0, cy0 * W + cx1, cy1 * W + cx0, cy1 * W + cx1};
  for (int k = 0; k < 4; ++k) {
    t->w[k] = !finite ? std::numeric_limits<T>::quiet_NaN() : (t->in[k] ? wt[k] : T(0));
    t->o[k] = off[k];
  }
}

// forward: rows of output pixels in parallel; per row, the taps of every pixel first, then
// every channel reads them
template <typename T, int PAD, bool AC, bool NEAREST>
void forward_kernel(const T* in, const T* theta, const T* xs, const T* ys, T* out, int64_t B,
                    int64_t C, int64_t H, int64_t W, int64_t Ho, int64_t Wo) {
  const Axis<T, AC> ax(W), ay(H);
  at::parallel_for(0, B * Ho, 4, [&](int64_t begin, int64_t end) {
    std::vector<T> wbuf(4 * Wo);
    std::vector<int64_t> obuf(4 * Wo);
    for (int64_t r = begin; r < end; ++r) {
      const int64_t b = r / Ho, i = r % Ho;
      const T* t = theta + b * 6;
      const T yr0 = t[1] * ys[i], yr1 = t[4] * ys[i];
      for (int64_t j = 0; j < Wo; ++j) {
        const T gx = (t[0] * xs[j] + t[2]) + yr0;
        const T gy = (t[3] * xs[j] + t[5]) + yr1;
        const T x = ax.template apply<PAD>(gx), y = ay.template apply<PAD>(gy);
        if (NEAREST) {
          T rx = std::nearbyint(ax.bounded(x)), ry = std::nearbyint(ay.bounded(y));
          const bool finite = std::isfinite(rx) && std::isfinite(ry);  // NaN reads nothing
          int64_t xi = finite ? static_cast<int64_t>(rx) : -1, yi = finite ? static_cast<int64_t>(ry) : -1;
          bool ok = xi >= 0 && xi < W && yi >= 0 && yi < H;
          wbuf[j] = ok ? T(1) : T(0);
          obuf[j] = ok ? yi * W + xi : 0;
          continue;
        }
        Taps<T> tp;
        taps(x, y, ax, ay, W, &tp);
        for (int k = 0; k < 4; ++k) {
          wbuf[k * Wo + j] = tp.w[k];
          obuf[k * Wo + j] = tp.o[k];
        }
      }
      for (int64_t c = 0; c < C; ++c) {
        const T* p = in + (b * C + c) * H * W;
        T* dst = out + (b * C + c) * Ho * Wo + i * Wo;
        if (NEAREST) {
          for (int64_t j = 0; j < Wo; ++j) dst[j] = wbuf[j] != T(0) ? p[obuf[j]] : T(0);
          continue;
        }
        const T *w0 = wbuf.data(), *w1 = w0 + Wo, *w2 = w1 + Wo, *w3 = w2 + Wo;
        const int64_t *o0 = obuf.data(), *o1 = o0 + Wo, *o2 = o1 + Wo, *o3 = o2 + Wo;
        for (int64_t j = 0; j < Wo; ++j)
          dst[j] = p[o0[j]] * w0[j] + p[o1[j]] * w1[j] + p[o2[j]] * w2[j] + p[o3[j]] * w3[j];
      }
    }
  });
}

// backward: one task per batch item, which owns its slice of the input gradient and its six
// matrix gradients, summed row by row in a fixed order (no atomics, thread-count independent)
template <typename T, int PAD, bool AC, bool NEAREST>
void backward_kernel(const T* go, const T* in, const T* theta, const T* xs, const T* ys, T* gin,
                     T* gtheta, int64_t B, int64_t C, int64_t H, int64_t W, int64_t Ho,
                     int64_t Wo) {
  const Axis<T, AC> ax(W), ay(H);
  at::parallel_for(0, B, 1, [&](int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end; ++b) {
      const T* t = theta + b * 6;
      const T* src = in + b * C * H * W;
      T* gsrc = gin ? gin + b * C * H * W : nullptr;
      const T* g = go + b * C * Ho * Wo;
      T acc[6] = {0, 0, 0, 0, 0, 0};
      for (int64_t i = 0; i < Ho; ++i) {
        const T yr0 = t[1] * ys[i], yr1 = t[4] * ys[i];
        T sx_x = 0, sx = 0, sy_x = 0, sy = 0;  // row sums of the point gradients
        for (int64_t j = 0; j < Wo; ++j) {
          const int64_t k = i * Wo + j;
          const T gx = (t[0] * xs[j] + t[2]) + yr0;
          const T gy = (t[3] * xs[j] + t[5]) + yr1;
          T dx, dy;
          const T x = ax.template apply_grad<PAD>(gx, &dx);
          const T y = ay.template apply_grad<PAD>(gy, &dy);
          if (NEAREST) {
            if (!gsrc) continue;
            T rx = std::nearbyint(ax.bounded(x)), ry = std::nearbyint(ay.bounded(y));
            const bool finite = std::isfinite(rx) && std::isfinite(ry);
            int64_t xi = finite ? static_cast<int64_t>(rx) : -1, yi = finite ? static_cast<int64_t>(ry) : -1;
            if (xi >= 0 && xi < W && yi >= 0 && yi < H)
              for (int64_t c = 0; c < C; ++c) gsrc[c * H * W + yi * W + xi] += g[c * Ho * Wo + k];
            continue;
          }
          Taps<T> tp;
          taps(x, y, ax, ay, W, &tp);
          const T e = tp.tx, n = tp.ty;
          T gix = 0, giy = 0;
          for (int64_t c = 0; c < C; ++c) {
            const T* p = src + c * H * W;
            const T gv = g[c * Ho * Wo + k];
            const T v0 = tp.in[0] ? p[tp.o[0]] : T(0), v1 = tp.in[1] ? p[tp.o[1]] : T(0);
            const T v2 = tp.in[2] ? p[tp.o[2]] : T(0), v3 = tp.in[3] ? p[tp.o[3]] : T(0);
            gix += gv * ((v1 - v0) * (T(1) - n) + (v3 - v2) * n);
            giy += gv * ((v2 - v0) * (T(1) - e) + (v3 - v1) * e);
            if (gsrc) {
              T* q = gsrc + c * H * W;
              for (int m = 0; m < 4; ++m)
                if (tp.in[m]) q[tp.o[m]] += tp.w[m] * gv;
            }
          }
          if (!tp.finite) gix = giy = std::numeric_limits<T>::quiet_NaN();
          gix *= dx;
          giy *= dy;
          sx_x += gix * xs[j]; sx += gix; sy_x += giy * xs[j]; sy += giy;
        }
        acc[0] += sx_x; acc[1] += sx * ys[i]; acc[2] += sx;
        acc[3] += sy_x; acc[4] += sy * ys[i]; acc[5] += sy;
      }
      if (gtheta)
        for (int q = 0; q < 6; ++q) gtheta[b * 6 + q] = acc[q];
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

#define TORCHSTN_TABLE(KERNEL, T, NEAREST)                                                 \
  pick<T>(mode, pad, ac, KERNEL<T, ZEROS, false, NEAREST>, KERNEL<T, ZEROS, true, NEAREST>,   \
          KERNEL<T, BORDER, false, NEAREST>, KERNEL<T, BORDER, true, NEAREST>,               \
          KERNEL<T, REFLECTION, false, NEAREST>, KERNEL<T, REFLECTION, true, NEAREST>)

void check_args(const torch::Tensor& input, const torch::Tensor& theta, const torch::Tensor& xs,
                const torch::Tensor& ys, int64_t mode, int64_t pad) {
  TORCH_CHECK(input.device().is_cpu() && input.dim() == 4, "torchstn fused affine2d: input must be a (B, C, H, W) CPU tensor");
  TORCH_CHECK(theta.dim() == 3 && theta.size(0) == input.size(0) && theta.size(1) == 2 && theta.size(2) == 3,
              "torchstn fused affine2d: theta must be (B, 2, 3)");
  TORCH_CHECK(xs.dim() == 1 && ys.dim() == 1, "torchstn fused affine2d: xs and ys must be 1-D");
  TORCH_CHECK(theta.scalar_type() == input.scalar_type() && xs.scalar_type() == input.scalar_type() &&
              ys.scalar_type() == input.scalar_type(), "torchstn fused affine2d: dtypes differ");
  TORCH_CHECK(mode == 0 || mode == 1, "torchstn fused affine2d: mode 0 (bilinear) or 1 (nearest)");
  TORCH_CHECK(pad >= 0 && pad <= 2, "torchstn fused affine2d: padding 0, 1 or 2");
}

}  // namespace

torch::Tensor affine2d_forward(torch::Tensor input, torch::Tensor theta, torch::Tensor xs,
                               torch::Tensor ys, int64_t mode, int64_t pad, bool ac) {
  check_args(input, theta, xs, ys, mode, pad);
  auto in = input.contiguous();
  auto th = theta.contiguous();
  auto cx = xs.contiguous();
  auto cy = ys.contiguous();
  const int64_t B = in.size(0), C = in.size(1), H = in.size(2), W = in.size(3);
  const int64_t Ho = cy.size(0), Wo = cx.size(0);
  auto out = torch::empty({B, C, Ho, Wo}, in.options());
  if (out.numel() == 0) return out;
  AT_DISPATCH_FLOATING_TYPES(in.scalar_type(), "affine2d_forward", [&] {
    using F = void (*)(const scalar_t*, const scalar_t*, const scalar_t*, const scalar_t*,
                       scalar_t*, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t);
    F f = mode == 1 ? TORCHSTN_TABLE(forward_kernel, scalar_t, true)
                    : TORCHSTN_TABLE(forward_kernel, scalar_t, false);
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
    F f = mode == 1 ? TORCHSTN_TABLE(backward_kernel, scalar_t, true)
                    : TORCHSTN_TABLE(backward_kernel, scalar_t, false);
    f(go.data_ptr<scalar_t>(), in.data_ptr<scalar_t>(), th.data_ptr<scalar_t>(),
      cx.data_ptr<scalar_t>(), cy.data_ptr<scalar_t>(),
      need_input ? gin.data_ptr<scalar_t>() : nullptr,
      need_theta ? gth.data_ptr<scalar_t>() : nullptr, B, C, H, W, Ho, Wo);
  });
  return {gin, gth};
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("affine2d_forward", &affine2d_forward, "fused affine grid + sampling, forward");
  m.def("affine2d_backward", &affine2d_backward,
        "fused affine grid + sampling, gradients to the input and to theta");
}
