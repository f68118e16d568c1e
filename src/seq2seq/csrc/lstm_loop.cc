// The LSTM's recurrent loop, forward and backward, as XLA FFI handlers for the CPU
// (seq2seq/native.py builds and registers them; seq2seq/recurrence.py calls them).
//
// In XLA's own loop (recurrence.py) a char-level step spent about as long in the gates'
// elementwise work, which XLA runs unvectorised, as in the product h @ U. Here:
// - rows of a batch are independent in the recurrence, so the batch is split in two
//   halves, one on the calling thread and one on XLA's intra-op pool, and each runs every
//   step of its rows without waiting for the other;
// - a step is z = x_t + b + h @ U, a register-blocked AVX-512 product against U packed
//   in panels, then the gates' elementwise work in vectorised loops;
// - inference (a forward pass kept for nothing) has a loop of its own whose product
//   leaves each row's gates for 16 units in registers and finishes the step there.
// Shapes and semantics are recurrence.py's; tests/test_native.py compares the two.
#ifndef __AVX512F__
#error "the native LSTM loop needs AVX-512F (seq2seq then uses XLA's loop)"
#endif

#include <immintrin.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "split_rows.h"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;
using F32 = ffi::Buffer<ffi::F32>;
using seq2seq::split_rows;

namespace {

constexpr int64_t kPanel = 32;  // columns of B per packed panel: two 16-float vectors
// rows a thread takes through a step at a time, so that its buffer of pre-activations
// stays (32, 4H) whatever the batch
constexpr int64_t kChunk = 32;

ffi::Error check_units(int64_t units) {
  if (units <= 0 || units % kPanel != 0)
    return ffi::Error(ffi::ErrorCode::kInvalidArgument, "the native LSTM loop needs units divisible by 32");
  return ffi::Error::Success();
}

// tanh as Eigen's (and XLA's CPU) rational approximation: multiplies, adds and one division,
// so the compiler vectorises the loops that call it.
inline float fast_tanh(float x) {
  const float clamp = 7.90531110763549805f;
  x = x > clamp ? clamp : (x < -clamp ? -clamp : x);
  const float x2 = x * x;
  float p = -2.76076847742355e-16f;
  p = p * x2 + 2.00018790482477e-13f;
  p = p * x2 + -8.60467152213735e-11f;
  p = p * x2 + 5.12229709037114e-08f;
  p = p * x2 + 1.48572235717979e-05f;
  p = p * x2 + 6.37261928875436e-04f;
  p = p * x2 + 4.89352455891786e-03f;
  p = p * x;
  float q = 1.19825839466702e-06f;
  q = q * x2 + 1.18534705686654e-04f;
  q = q * x2 + 2.26843463243900e-03f;
  q = q * x2 + 4.89352518554385e-03f;
  return p / q;
}

inline float sigmoid(float x) { return 0.5f + 0.5f * fast_tanh(0.5f * x); }

// c[R, 32] += a[R, k] @ panel (k, 32); rows of a are lda apart, rows of c ldc apart.
template <int R>
void gemm_block(const float* a, int64_t lda, const float* panel, int64_t k, float* c, int64_t ldc) {
  __m512 lo[R], hi[R];
  for (int r = 0; r < R; ++r) {
    lo[r] = _mm512_loadu_ps(c + r * ldc);
    hi[r] = _mm512_loadu_ps(c + r * ldc + 16);
  }
  for (int64_t kk = 0; kk < k; ++kk) {
    const __m512 b_lo = _mm512_loadu_ps(panel + kk * kPanel);
    const __m512 b_hi = _mm512_loadu_ps(panel + kk * kPanel + 16);
    for (int r = 0; r < R; ++r) {
      const __m512 av = _mm512_set1_ps(a[r * lda + kk]);
      lo[r] = _mm512_fmadd_ps(av, b_lo, lo[r]);
      hi[r] = _mm512_fmadd_ps(av, b_hi, hi[r]);
    }
  }
  for (int r = 0; r < R; ++r) {
    _mm512_storeu_ps(c + r * ldc, lo[r]);
    _mm512_storeu_ps(c + r * ldc + 16, hi[r]);
  }
}

// c[m, n] += a[m, k] @ B, with B (k, n) as n / 32 panels, each (k, 32) contiguous (see
// recurrence.py's `panels`). Panel by panel, so each is read from memory once and stays in
// L1 while every block of 8 rows (and one block of the rest) goes through it.
void gemm(const float* a, int64_t lda, const float* panels, int64_t m, int64_t k, int64_t n,
          float* c, int64_t ldc) {
  for (int64_t j0 = 0; j0 < n; j0 += kPanel) {
    const float* panel = panels + j0 * k;
    int64_t r = 0;
    for (; r + 8 <= m; r += 8) gemm_block<8>(a + r * lda, lda, panel, k, c + r * ldc + j0, ldc);
    switch (m - r) {
#define REST(R) \
  case R:       \
    gemm_block<R>(a + r * lda, lda, panel, k, c + r * ldc + j0, ldc); break;
      REST(1) REST(2) REST(3) REST(4) REST(5) REST(6) REST(7)
#undef REST
      default: break;
    }
  }
}

// fast_tanh and sigmoid on 16 floats in registers (same rational, same clamp).
inline __m512 tanh16(__m512 x) {
  const __m512 clamp = _mm512_set1_ps(7.90531110763549805f);
  // NaN as the second operand, which max and min return when either is NaN: NaN stays NaN
  x = _mm512_min_ps(clamp, _mm512_max_ps(_mm512_sub_ps(_mm512_setzero_ps(), clamp), x));
  const __m512 x2 = _mm512_mul_ps(x, x);
  __m512 p = _mm512_set1_ps(-2.76076847742355e-16f);
  p = _mm512_fmadd_ps(p, x2, _mm512_set1_ps(2.00018790482477e-13f));
  p = _mm512_fmadd_ps(p, x2, _mm512_set1_ps(-8.60467152213735e-11f));
  p = _mm512_fmadd_ps(p, x2, _mm512_set1_ps(5.12229709037114e-08f));
  p = _mm512_fmadd_ps(p, x2, _mm512_set1_ps(1.48572235717979e-05f));
  p = _mm512_fmadd_ps(p, x2, _mm512_set1_ps(6.37261928875436e-04f));
  p = _mm512_fmadd_ps(p, x2, _mm512_set1_ps(4.89352455891786e-03f));
  p = _mm512_mul_ps(p, x);
  __m512 q = _mm512_set1_ps(1.19825839466702e-06f);
  q = _mm512_fmadd_ps(q, x2, _mm512_set1_ps(1.18534705686654e-04f));
  q = _mm512_fmadd_ps(q, x2, _mm512_set1_ps(2.26843463243900e-03f));
  q = _mm512_fmadd_ps(q, x2, _mm512_set1_ps(4.89352518554385e-03f));
  return _mm512_div_ps(p, q);
}

inline __m512 sigmoid16(__m512 x) {
  const __m512 half = _mm512_set1_ps(0.5f);
  return _mm512_fmadd_ps(half, tanh16(_mm512_mul_ps(half, x)), half);
}

// One step of R rows for the 16 units j0..j0+15, gates kept in registers:
// z = x_t + b + h @ U for the four gates, then c and h. u points at U's block for these
// units, (H, 64): element (kk, gate q, unit j) at u[kk * 64 + q * 16 + j]. h: R rows of
// the previous h (units apart); x: the first row's x_t (x_stride apart); c and h_next: the
// rows' c (updated in place) and next h; live: the rows' mask at this step.
template <int R>
void step_block(const float* h, int64_t units, int64_t j0, const float* u, const float* x, int64_t x_stride, const float* b, float* c, float* h_next, const float* live,
                int64_t live_stride) {
  __m512 z[R][4];
  for (int r = 0; r < R; ++r)
    for (int q = 0; q < 4; ++q)
      z[r][q] = _mm512_add_ps(_mm512_loadu_ps(x + r * x_stride + q * units + j0), _mm512_loadu_ps(b + q * units + j0));
  for (int64_t kk = 0; kk < units; ++kk) {
    const float* uk = u + kk * 64;
    const __m512 u0 = _mm512_loadu_ps(uk), u1 = _mm512_loadu_ps(uk + 16);
    const __m512 u2 = _mm512_loadu_ps(uk + 32), u3 = _mm512_loadu_ps(uk + 48);
    for (int r = 0; r < R; ++r) {
      const __m512 a = _mm512_set1_ps(h[r * units + kk]);
      z[r][0] = _mm512_fmadd_ps(a, u0, z[r][0]);
      z[r][1] = _mm512_fmadd_ps(a, u1, z[r][1]);
      z[r][2] = _mm512_fmadd_ps(a, u2, z[r][2]);
      z[r][3] = _mm512_fmadd_ps(a, u3, z[r][3]);
    }
  }
  // through memory: with the gates' code reading z directly, GCC kept z on the stack and
  // stored all of it at every kk
  alignas(64) float zs[R][4][16];
  for (int r = 0; r < R; ++r)
    for (int q = 0; q < 4; ++q) _mm512_store_ps(zs[r][q], z[r][q]);
  for (int r = 0; r < R; ++r) {
    float* cr = c + r * units + j0;
    float* hr = h_next + r * units + j0;
    if (live[r * live_stride] > 0.0f) {
      const __m512 i = sigmoid16(_mm512_load_ps(zs[r][0])), f = sigmoid16(_mm512_load_ps(zs[r][1]));
      const __m512 g = tanh16(_mm512_load_ps(zs[r][2])), o = sigmoid16(_mm512_load_ps(zs[r][3]));
      const __m512 c_new = _mm512_fmadd_ps(f, _mm512_loadu_ps(cr), _mm512_mul_ps(i, g));
      _mm512_storeu_ps(cr, c_new);
      _mm512_storeu_ps(hr, _mm512_mul_ps(o, tanh16(c_new)));
    } else {  // a masked step keeps h (c stays as it is)
      _mm512_storeu_ps(hr, _mm512_loadu_ps(h + r * units + j0));
    }
  }
}

// A buffer's element count against what the shapes of x (or cs) imply.
ffi::Error check_size(const F32& buffer, int64_t expected, const char* name) {
  if (static_cast<int64_t>(buffer.element_count()) != expected)
    return ffi::Error(ffi::ErrorCode::kInvalidArgument, std::string("lstm_loop: wrong size of ") + name);
  return ffi::Error::Success();
}

ffi::Error out_of_memory() { return ffi::Error(ffi::ErrorCode::kResourceExhausted, "lstm_loop: out of memory"); }

// The checks both forward loops make: x (B,T,4H) against U, b, h0, c0 and mask.
ffi::Error check_forward_inputs(const F32& x, const F32& kernel, const F32& bias, const F32& h0, const F32& c0,
                                const F32& mask) {
  const auto dims = x.dimensions();
  const int64_t batch = dims[0], steps = dims[1], four = dims[2], units = four / 4;
  for (ffi::Error error : {check_units(units), check_size(kernel, units * four, "U"), check_size(bias, four, "b"),
                           check_size(h0, batch * units, "h0"), check_size(c0, batch * units, "c0"),
                           check_size(mask, batch * steps, "mask")})
    if (error.failure()) return error;
  return ffi::Error::Success();
}

// Rows [begin, end) of a (B, width) buffer, as a thread's own copy.
std::vector<float> rows_of(const F32& buffer, int64_t begin, int64_t end, int64_t width) {
  return std::vector<float>(buffer.typed_data() + begin * width, buffer.typed_data() + end * width);
}

// A thread's rows back into rows [begin, ...) of a (B, width) result.
void store_rows(const std::vector<float>& rows, ffi::ResultBuffer<ffi::F32>& result, int64_t begin, int64_t width) {
  std::memcpy(result->typed_data() + begin * width, rows.data(), rows.size() * sizeof(float));
}

}  // namespace

// x (B,T,4H), U (H,4H) in panels, b (4H), h0 c0 (B,H), mask (B,T) -> hs cs (B,T,H), gates (B,T,4H),
// h c (B,H). Loop step t reads input step k (T-1-t with `reverse`) and writes outputs at t.
static ffi::Error Forward(F32 x, F32 kernel_panels, F32 bias, F32 h0, F32 c0, F32 mask, bool reverse,
                          ffi::ResultBuffer<ffi::F32> hs, ffi::ResultBuffer<ffi::F32> cs,
                          ffi::ResultBuffer<ffi::F32> gates, ffi::ResultBuffer<ffi::F32> h_out,
                          ffi::ResultBuffer<ffi::F32> c_out, ffi::ThreadPool pool) {
  const auto dims = x.dimensions();
  const int64_t batch = dims[0], steps = dims[1], four = dims[2], units = four / 4;
  if (ffi::Error error = check_forward_inputs(x, kernel_panels, bias, h0, c0, mask); error.failure()) return error;
  const float* packed = kernel_panels.typed_data();
  const float* xs = x.typed_data();
  const float* bs = bias.typed_data();
  const float* ms = mask.typed_data();
  float* hs_out = hs->typed_data();
  float* cs_out = cs->typed_data();
  float* gs_out = gates->typed_data();
  const bool done = split_rows(pool, batch, [&](int64_t begin, int64_t end) {
    const int64_t rows = end - begin;
    std::vector<float> h = rows_of(h0, begin, end, units);
    std::vector<float> c = rows_of(c0, begin, end, units);
    std::vector<float> z(kChunk * four);
    for (int64_t t = 0; t < steps; ++t) {
      const int64_t k = reverse ? steps - 1 - t : t;
      for (int64_t first = 0; first < rows; first += kChunk) {
        const int64_t last = std::min(rows, first + kChunk);
        for (int64_t r = first; r < last; ++r) {
          const float* xr = xs + ((begin + r) * steps + k) * four;
          float* zr = &z[(r - first) * four];
#pragma omp simd
          for (int64_t j = 0; j < four; ++j) zr[j] = xr[j] + bs[j];
        }
        gemm(&h[first * units], units, packed, last - first, units, four, z.data(), four);
        for (int64_t r = first; r < last; ++r) {
          const int64_t row = begin + r;
          float* a = gs_out + (row * steps + t) * four;
          const float* zr = &z[(r - first) * four];
#pragma omp simd
          for (int64_t j = 0; j < four; ++j)  // tanh for the cell input g (third quarter)
            a[j] = (j >= 2 * units && j < 3 * units) ? fast_tanh(zr[j]) : sigmoid(zr[j]);
          float* hr = &h[r * units];
          float* cr = &c[r * units];
          if (ms[row * steps + k] > 0.0f) {
            const float *i = a, *f = a + units, *g = a + 2 * units, *o = a + 3 * units;
#pragma omp simd
            for (int64_t j = 0; j < units; ++j) {
              const float c_new = f[j] * cr[j] + i[j] * g[j];
              cr[j] = c_new;
              hr[j] = o[j] * fast_tanh(c_new);
            }
          }  // a masked step keeps h and c
          std::memcpy(hs_out + (row * steps + t) * units, hr, units * sizeof(float));
          std::memcpy(cs_out + (row * steps + t) * units, cr, units * sizeof(float));
        }
      }
    }
    store_rows(h, h_out, begin, units);
    store_rows(c, c_out, begin, units);
  });
  return done ? ffi::Error::Success() : out_of_memory();
}

XLA_FFI_DEFINE_HANDLER_SYMBOL(LstmForward, Forward,
                              ffi::Ffi::Bind()
                                  .Arg<F32>()  // x
                                  .Arg<F32>()  // U in panels
                                  .Arg<F32>()  // b
                                  .Arg<F32>()  // h0
                                  .Arg<F32>()  // c0
                                  .Arg<F32>()  // mask
                                  .Attr<bool>("reverse")
                                  .Ret<F32>()   // hs
                                  .Ret<F32>()   // cs
                                  .Ret<F32>()   // gates
                                  .Ret<F32>()   // h
                                  .Ret<F32>()  // c
                                  .Ctx<ffi::ThreadPool>());

// Inference: x (B,T,4H), U (H,4H) in unit panels (H/16, H, 64) (U as it is, read with 4 KB
// strides, thrashed the caches: 1.3x slower), b (4H), h0 c0 (B,H), mask (B,T) ->
// hs (B,T,H), h c (B,H); nothing kept for a backward pass. Unit block by unit block, each
// block's U (64 KB) read from cache by every 6 rows; the gates never leave registers.
static ffi::Error Infer(F32 x, F32 kernel_panels, F32 bias, F32 h0, F32 c0, F32 mask, bool reverse,
                        ffi::ResultBuffer<ffi::F32> hs, ffi::ResultBuffer<ffi::F32> h_out,
                        ffi::ResultBuffer<ffi::F32> c_out, ffi::ThreadPool pool) {
  const auto dims = x.dimensions();
  const int64_t batch = dims[0], steps = dims[1], four = dims[2], units = four / 4;
  if (ffi::Error error = check_forward_inputs(x, kernel_panels, bias, h0, c0, mask); error.failure()) return error;
  const float* packed = kernel_panels.typed_data();
  const float* xs = x.typed_data();
  const float* bs = bias.typed_data();
  const float* ms = mask.typed_data();
  float* hs_out = hs->typed_data();
  const bool done = split_rows(pool, batch, [&](int64_t begin, int64_t end) {
    const int64_t rows = end - begin;
    std::vector<float> h = rows_of(h0, begin, end, units);
    std::vector<float> c = rows_of(c0, begin, end, units);
    std::vector<float> h_next(rows * units);
    for (int64_t t = 0; t < steps; ++t) {
      const int64_t k = reverse ? steps - 1 - t : t;
      for (int64_t j0 = 0; j0 < units; j0 += 16) {
        const float* u = packed + (j0 / 16) * units * 64;
        int64_t r = 0;
#define BLOCK(R)                                                                                               \
  step_block<R>(&h[r * units], units, j0, u, xs + ((begin + r) * steps + k) * four, \
                steps * four, bs, &c[r * units], &h_next[r * units], ms + (begin + r) * steps + k, steps)
        for (; r + 6 <= rows; r += 6) BLOCK(6);
        switch (rows - r) {
          case 1: BLOCK(1); break;
          case 2: BLOCK(2); break;
          case 3: BLOCK(3); break;
          case 4: BLOCK(4); break;
          case 5: BLOCK(5); break;
          default: break;
        }
#undef BLOCK
      }
      h.swap(h_next);
      for (int64_t r = 0; r < rows; ++r)
        std::memcpy(hs_out + ((begin + r) * steps + t) * units, &h[r * units], units * sizeof(float));
    }
    store_rows(h, h_out, begin, units);
    store_rows(c, c_out, begin, units);
  });
  return done ? ffi::Error::Success() : out_of_memory();
}

XLA_FFI_DEFINE_HANDLER_SYMBOL(LstmInfer, Infer,
                              ffi::Ffi::Bind()
                                  .Arg<F32>()  // x
                                  .Arg<F32>()  // U in unit panels
                                  .Arg<F32>()  // b
                                  .Arg<F32>()  // h0
                                  .Arg<F32>()  // c0
                                  .Arg<F32>()  // mask
                                  .Attr<bool>("reverse")
                                  .Ret<F32>()   // hs
                                  .Ret<F32>()   // h
                                  .Ret<F32>()  // c
                                  .Ctx<ffi::ThreadPool>());

// U (H,4H) -> unit panels (H/16, H, 64), the inference loop's layout. A custom call rather
// than XLA's transpose: XLA does not hoist a lone transpose out of a loop (a decoding loop
// would lay U out again at every step), and it does hoist a call without side effects.
static ffi::Error PackUnits(F32 kernel, ffi::ResultBuffer<ffi::F32> panels) {
  const auto dims = kernel.dimensions();
  if (dims.size() != 2 || dims[1] != 4 * dims[0])
    return ffi::Error(ffi::ErrorCode::kInvalidArgument, "lstm_loop: U must be (H, 4H)");
  const int64_t units = dims[0];
  if (ffi::Error error = check_units(units); error.failure()) return error;
  if (ffi::Error error = check_size(*panels, units * 4 * units, "panels"); error.failure()) return error;
  const float* u = kernel.typed_data();
  float* out = panels->typed_data();
  for (int64_t block = 0; block < units / 16; ++block)
    for (int64_t kk = 0; kk < units; ++kk)
      for (int64_t q = 0; q < 4; ++q)
        std::memcpy(out + (block * units + kk) * 64 + q * 16, u + kk * 4 * units + q * units + block * 16,
                    16 * sizeof(float));
  return ffi::Error::Success();
}

XLA_FFI_DEFINE_HANDLER_SYMBOL(LstmPackUnits, PackUnits, ffi::Ffi::Bind().Arg<F32>().Ret<F32>());

// d_outputs (B,T,H), d_h d_c (B,H) final-state cotangents, U^T (4H,H) in panels, gates (B,T,4H) and
// cs (B,T,H) from the forward pass, c0 (B,H), mask (B,T) -> dz (B,T,4H) in input order,
// dh0 dc0 (B,H).
static ffi::Error Backward(F32 d_outputs, F32 d_h, F32 d_c, F32 kernel_t_panels, F32 gates, F32 cs,
                           F32 c0, F32 mask, bool reverse, ffi::ResultBuffer<ffi::F32> dz_out,
                           ffi::ResultBuffer<ffi::F32> dh0, ffi::ResultBuffer<ffi::F32> dc0,
                           ffi::ThreadPool pool) {
  const auto dims = cs.dimensions();
  const int64_t batch = dims[0], steps = dims[1], units = dims[2], four = 4 * units;
  for (ffi::Error error :
       {check_units(units), check_size(d_outputs, batch * steps * units, "d_outputs"),
        check_size(d_h, batch * units, "d_h"), check_size(d_c, batch * units, "d_c"),
        check_size(kernel_t_panels, four * units, "U^T"), check_size(gates, batch * steps * four, "gates"),
        check_size(c0, batch * units, "c0"), check_size(mask, batch * steps, "mask")})
    if (error.failure()) return error;
  const float* packed = kernel_t_panels.typed_data();
  const float* ms = mask.typed_data();
  float* dz_all = dz_out->typed_data();
  const bool done = split_rows(pool, batch, [&](int64_t begin, int64_t end) {
    const int64_t rows = end - begin;
    std::vector<float> dh = rows_of(d_h, begin, end, units);
    std::vector<float> dc = rows_of(d_c, begin, end, units);
    std::vector<float> dh_new(kChunk * units);
    for (int64_t t = steps - 1; t >= 0; --t) {
      const int64_t k = reverse ? steps - 1 - t : t;
      for (int64_t first = 0; first < rows; first += kChunk) {
        const int64_t last = std::min(rows, first + kChunk);
        for (int64_t r = first; r < last; ++r) {
          const int64_t row = begin + r;
          float* dhr = &dh[r * units];
          float* dcr = &dc[r * units];
          const float* dout = d_outputs.typed_data() + (row * steps + t) * units;
#pragma omp simd
          for (int64_t j = 0; j < units; ++j) dhr[j] += dout[j];
          float* dz = dz_all + (row * steps + k) * four;
          if (!(ms[row * steps + k] > 0.0f)) {  // a masked step passes dh and dc through
            std::memset(dz, 0, four * sizeof(float));
            continue;
          }
          const float* a = gates.typed_data() + (row * steps + t) * four;
          const float *i = a, *f = a + units, *g = a + 2 * units, *o = a + 3 * units;
          const float* c = cs.typed_data() + (row * steps + t) * units;
          const float* c_prev = t > 0 ? c - units : c0.typed_data() + row * units;
#pragma omp simd
          for (int64_t j = 0; j < units; ++j) {
            const float tc = fast_tanh(c[j]);
            const float dcj = dcr[j] + dhr[j] * o[j] * (1.0f - tc * tc);
            dz[j] = dcj * g[j] * i[j] * (1.0f - i[j]);
            dz[units + j] = dcj * c_prev[j] * f[j] * (1.0f - f[j]);
            dz[2 * units + j] = dcj * i[j] * (1.0f - g[j] * g[j]);
            dz[3 * units + j] = dhr[j] * tc * o[j] * (1.0f - o[j]);
            dcr[j] = dcj * f[j];
          }
        }
        // dh for the step before: dz @ U^T on unmasked rows
        std::fill(dh_new.begin(), dh_new.end(), 0.0f);
        gemm(dz_all + ((begin + first) * steps + k) * four, steps * four, packed, last - first, four,
             units, dh_new.data(), units);
        for (int64_t r = first; r < last; ++r)
          if (ms[(begin + r) * steps + k] > 0.0f)
            std::memcpy(&dh[r * units], &dh_new[(r - first) * units], units * sizeof(float));
      }
    }
    store_rows(dh, dh0, begin, units);
    store_rows(dc, dc0, begin, units);
  });
  return done ? ffi::Error::Success() : out_of_memory();
}

XLA_FFI_DEFINE_HANDLER_SYMBOL(LstmBackward, Backward,
                              ffi::Ffi::Bind()
                                  .Arg<F32>()  // d_outputs
                                  .Arg<F32>()  // d_h
                                  .Arg<F32>()  // d_c
                                  .Arg<F32>()  // U^T in panels
                                  .Arg<F32>()  // gates
                                  .Arg<F32>()  // cs
                                  .Arg<F32>()  // c0
                                  .Arg<F32>()  // mask
                                  .Attr<bool>("reverse")
                                  .Ret<F32>()   // dz
                                  .Ret<F32>()   // dh0
                                  .Ret<F32>()  // dc0
                                  .Ctx<ffi::ThreadPool>());
