// The LSTM's recurrent loop, forward and backward, as XLA FFI handlers for the CPU
// (seq2seq/native.py builds and registers them; seq2seq/recurrence.py calls them).
//
// In XLA's own loop (recurrence.py) a char-level step spent about as long in the gates'
// elementwise work, which XLA runs unvectorised, as in the product h @ U. Here:
// - rows of a batch are independent in the recurrence, so the batch is split in two
//   halves, one on the calling thread and one on XLA's intra-op pool, and each runs every
//   step of its rows without waiting for the other;
// - a step is z = x_t + b + h @ U, a register-blocked product against U packed in panels,
//   then the gates' elementwise work in vectorised loops;
// - inference (a forward pass kept for nothing) has a loop of its own whose product
//   leaves each row's gates for a vector of units in registers and finishes the step there.
// Shapes and semantics are recurrence.py's; tests/test_native.py compares the two.
//
// Portable C++: GCC/Clang vector extensions at the target's own register width (64 bytes
// with AVX-512, 32 with AVX/AVX2, 16 with SSE2 or NEON), the blocking sized to the target's
// register count, so one source serves x86-64 at any level and ARM64.

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

#if defined(SEQ2SEQ_VECTOR_FLOATS)  // a width forced from the command line (to compare widths)
constexpr int kWidth = SEQ2SEQ_VECTOR_FLOATS, kRegisters = 16;
#elif defined(__AVX512F__)
constexpr int kWidth = 16, kRegisters = 32;
#elif defined(__AVX__)
constexpr int kWidth = 8, kRegisters = 16;
#elif defined(__aarch64__)
constexpr int kWidth = 4, kRegisters = 32;
#else  // SSE2 (x86-64's baseline), 32-bit NEON, anything else: 16-byte vectors
constexpr int kWidth = 4, kRegisters = 16;
#endif

using vf = float __attribute__((vector_size(kWidth * sizeof(float))));
using vi = int32_t __attribute__((vector_size(kWidth * sizeof(float))));  // comparisons' masks

constexpr int64_t kPanel = 32;  // columns of B per packed panel (recurrence.py's `panels`)
constexpr int64_t kUnitBlock = 16;  // units per block of the inference loop's U (`packed_units`)
static_assert(kPanel % kWidth == 0 && kUnitBlock % kWidth == 0, "a vector must divide the panels");
// the product's tile: kGemmVectors vectors of columns by kGemmRows rows, its accumulators,
// one vector of B per column vector and a broadcast in registers
constexpr int kGemmVectors = std::min<int>(kPanel / kWidth, kRegisters / 8);
constexpr int kGemmRows = std::min(8, (kRegisters - kGemmVectors - 1) / kGemmVectors);
// the inference step's block: 4 gates by kInferRows rows, plus a vector of U per gate
constexpr int kInferRows = std::min(6, (kRegisters - 5) / 4);
// rows a thread takes through a step at a time, so that its buffer of pre-activations
// stays (32, 4H) whatever the batch
constexpr int64_t kChunk = 32;

ffi::Error check_units(int64_t units) {
  if (units <= 0 || units % kPanel != 0)
    return ffi::Error(ffi::ErrorCode::kInvalidArgument, "the native LSTM loop needs units divisible by 32");
  return ffi::Error::Success();
}

inline vf load(const float* p) {
  vf v;
  std::memcpy(&v, p, sizeof v);  // unaligned: one vector load
  return v;
}

inline void store(float* p, vf v) { std::memcpy(p, &v, sizeof v); }

inline vf splat(float s) { return vf{} + s; }

// where m, a, else b (m from a comparison: all ones or all zeros per lane)
inline vf select(vi m, vf a, vf b) { return reinterpret_cast<vf>((m & reinterpret_cast<vi>(a)) | (~m & reinterpret_cast<vi>(b))); }

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

// fast_tanh and sigmoid on a vector (same rational, same clamp).
inline vf tanh_v(vf x) {
  const vf clamp = splat(7.90531110763549805f);
  // a comparison with NaN is false, so NaN passes the clamp and stays NaN
  x = select(x > clamp, clamp, x);
  x = select(x < -clamp, -clamp, x);
  const vf x2 = x * x;
  vf p = splat(-2.76076847742355e-16f);
  p = p * x2 + 2.00018790482477e-13f;
  p = p * x2 + -8.60467152213735e-11f;
  p = p * x2 + 5.12229709037114e-08f;
  p = p * x2 + 1.48572235717979e-05f;
  p = p * x2 + 6.37261928875436e-04f;
  p = p * x2 + 4.89352455891786e-03f;
  p = p * x;
  vf q = splat(1.19825839466702e-06f);
  q = q * x2 + 1.18534705686654e-04f;
  q = q * x2 + 2.26843463243900e-03f;
  q = q * x2 + 4.89352518554385e-03f;
  return p / q;
}

inline vf sigmoid_v(vf x) { return 0.5f * tanh_v(0.5f * x) + 0.5f; }

// c[R, kGemmVectors * kWidth] += a[R, k] @ b, b being the tile's columns of a panel (rows
// kPanel apart); rows of a are lda apart, rows of c ldc apart.
template <int R>
void gemm_block(const float* a, int64_t lda, const float* b, int64_t k, float* c, int64_t ldc) {
  vf acc[R][kGemmVectors];
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < kGemmVectors; ++v) acc[r][v] = load(c + r * ldc + v * kWidth);
  for (int64_t kk = 0; kk < k; ++kk) {
    vf bv[kGemmVectors];
    for (int v = 0; v < kGemmVectors; ++v) bv[v] = load(b + kk * kPanel + v * kWidth);
    for (int r = 0; r < R; ++r) {
      const float ar = a[r * lda + kk];
      for (int v = 0; v < kGemmVectors; ++v) acc[r][v] += ar * bv[v];
    }
  }
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < kGemmVectors; ++v) store(c + r * ldc + v * kWidth, acc[r][v]);
}

// The last `rows` (< kGemmRows) rows of a tile.
template <int R>
void gemm_rest(int64_t rows, const float* a, int64_t lda, const float* b, int64_t k, float* c, int64_t ldc) {
  if constexpr (R > 0) {
    if (rows == R)
      gemm_block<R>(a, lda, b, k, c, ldc);
    else
      gemm_rest<R - 1>(rows, a, lda, b, k, c, ldc);
  }
}

// c[m, n] += a[m, k] @ B, with B (k, n) as n / 32 panels, each (k, 32) contiguous (see
// recurrence.py's `panels`). Tile by tile of a panel, so each is read from memory once and
// stays in L1 while every block of kGemmRows rows (and one block of the rest) goes through it.
void gemm(const float* a, int64_t lda, const float* panels, int64_t m, int64_t k, int64_t n,
          float* c, int64_t ldc) {
  constexpr int64_t tile = kGemmVectors * kWidth;
  for (int64_t j0 = 0; j0 < n; j0 += kPanel) {
    for (int64_t s = 0; s < kPanel; s += tile) {
      const float* b = panels + j0 * k + s;
      int64_t r = 0;
      for (; r + kGemmRows <= m; r += kGemmRows)
        gemm_block<kGemmRows>(a + r * lda, lda, b, k, c + r * ldc + j0 + s, ldc);
      gemm_rest<kGemmRows - 1>(m - r, a + r * lda, lda, b, k, c + r * ldc + j0 + s, ldc);
    }
  }
}

// One step of R rows for the kWidth units j0.., gates kept in registers:
// z = x_t + b + h @ U for the four gates, then c and h. u points at U's block for these
// units: element (kk, gate q) of unit j0 + j at u[kk * 64 + q * 16 + j]. h: R rows of the
// previous h (units apart); x: the first row's x_t (x_stride apart); c and h_next: the
// rows' c (updated in place) and next h; live: the rows' mask at this step.
template <int R>
void step_block(const float* h, int64_t units, int64_t j0, const float* u, const float* x, int64_t x_stride,
                const float* b, float* c, float* h_next, const float* live, int64_t live_stride) {
  vf z[R][4];
  for (int r = 0; r < R; ++r)
    for (int q = 0; q < 4; ++q) z[r][q] = load(x + r * x_stride + q * units + j0) + load(b + q * units + j0);
  for (int64_t kk = 0; kk < units; ++kk) {
    const float* uk = u + kk * 4 * kUnitBlock;
    const vf u0 = load(uk), u1 = load(uk + kUnitBlock), u2 = load(uk + 2 * kUnitBlock), u3 = load(uk + 3 * kUnitBlock);
    for (int r = 0; r < R; ++r) {
      const float a = h[r * units + kk];
      z[r][0] += a * u0;
      z[r][1] += a * u1;
      z[r][2] += a * u2;
      z[r][3] += a * u3;
    }
  }
  // through memory: with the gates' code reading z directly, GCC kept z on the stack and
  // stored all of it at every kk
  alignas(64) float zs[R][4][kWidth];
  for (int r = 0; r < R; ++r)
    for (int q = 0; q < 4; ++q) store(zs[r][q], z[r][q]);
  for (int r = 0; r < R; ++r) {
    float* cr = c + r * units + j0;
    float* hr = h_next + r * units + j0;
    if (live[r * live_stride] > 0.0f) {
      const vf i = sigmoid_v(load(zs[r][0])), f = sigmoid_v(load(zs[r][1]));
      const vf g = tanh_v(load(zs[r][2])), o = sigmoid_v(load(zs[r][3]));
      const vf c_new = f * load(cr) + i * g;
      store(cr, c_new);
      store(hr, o * tanh_v(c_new));
    } else {  // a masked step keeps h (c stays as it is)
      store(hr, load(h + r * units + j0));
    }
  }
}

// The last `rows` (< kInferRows) rows of a step.
template <int R>
void step_rest(int64_t rows, const float* h, int64_t units, int64_t j0, const float* u, const float* x,
               int64_t x_stride, const float* b, float* c, float* h_next, const float* live, int64_t live_stride) {
  if constexpr (R > 0) {
    if (rows == R)
      step_block<R>(h, units, j0, u, x, x_stride, b, c, h_next, live, live_stride);
    else
      step_rest<R - 1>(rows, h, units, j0, u, x, x_stride, b, c, h_next, live, live_stride);
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
// hs (B,T,H), h c (B,H); nothing kept for a backward pass. A vector of units at a time, its
// share of U read from cache by every block of kInferRows rows; the gates never leave registers.
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
      for (int64_t j0 = 0; j0 < units; j0 += kWidth) {
        const float* u = packed + (j0 / kUnitBlock) * units * 4 * kUnitBlock + j0 % kUnitBlock;
        int64_t r = 0;
        for (; r + kInferRows <= rows; r += kInferRows)
          step_block<kInferRows>(&h[r * units], units, j0, u, xs + ((begin + r) * steps + k) * four, steps * four,
                                 bs, &c[r * units], &h_next[r * units], ms + (begin + r) * steps + k, steps);
        step_rest<kInferRows - 1>(rows - r, &h[r * units], units, j0, u, xs + ((begin + r) * steps + k) * four,
                                  steps * four, bs, &c[r * units], &h_next[r * units], ms + (begin + r) * steps + k,
                                  steps);
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
  for (int64_t block = 0; block < units / kUnitBlock; ++block)
    for (int64_t kk = 0; kk < units; ++kk)
      for (int64_t q = 0; q < 4; ++q)
        std::memcpy(out + (block * units + kk) * 4 * kUnitBlock + q * kUnitBlock,
                    u + kk * 4 * units + q * units + block * kUnitBlock, kUnitBlock * sizeof(float));
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

// The vector width this build was compiled for, in floats (tests check which build runs).
extern "C" int seq2seq_vector_floats() { return kWidth; }
