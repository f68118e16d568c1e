// The training loss's work on the logits, fused: per target token its share of the batch's
// mean cross-entropy, whether its prediction is right, and the gradient of the mean with
// respect to its logits, in one XLA FFI call (seq2seq/losses.py calls it; native.py builds
// and registers it).
//
// At word level (7,150 target words) XLA spent about 3.7 ms of a 21.5 ms step in
// separate passes over the (B*T, V) logits: the max, exp and sum, the target's logit,
// the max again for the accuracy, then the softmax's gradient. Here a row (V floats, 28 KB)
// is read from memory once and stays in the core's first-level cache for the rest:
//   pass 1: the row's max (and its sum, for label smoothing);
//   pass 2: exp(logit - max) into the gradient's row, and their sum;
//   pass 3: the gradient: w * (p - q), q the target distribution, w the token's weight.
// Shapes and semantics are losses.py's XLA path; tests/test_losses.py compares the two.
#ifndef __AVX512F__
#error "the native cross-entropy needs AVX-512F (seq2seq then uses XLA's)"
#endif

#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "split_rows.h"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;
using seq2seq::split_rows;

namespace {

// exp as Cephes's expf: x = n ln2 + r with |r| <= ln2 / 2, exp(r) by a degree-7
// polynomial, times 2^n; within 2 ulp of expf. NaN stays NaN (max and min return their
// second operand when either is NaN).
inline __m512 exp16(__m512 x) {
  x = _mm512_min_ps(_mm512_set1_ps(88.3762626647949f), _mm512_max_ps(_mm512_set1_ps(-103.0f), x));
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
  __m512 p = _mm512_set1_ps(1.9875691500e-4f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
  p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
  return _mm512_scalef_ps(p, n);
}

struct RowResult {
  float share;  // w * (-log p(target)), smoothed
  float hit;    // 1 if the target's logit is the row's largest
};

// One row of V logits -> its result, and its gradient written to `grad` (V floats).
// w: the token's weight (0 for <pad>, else 1 / real tokens in the batch); e: label smoothing.
RowResult row(const float* logits, int64_t vocab, int32_t target, float w, float e, float* grad) {
  const int64_t full = vocab / 16 * 16;
  const __mmask16 tail = static_cast<__mmask16>((1u << (vocab - full)) - 1);
  const __m512 lowest = _mm512_set1_ps(-std::numeric_limits<float>::infinity());
  __m512 vmax = lowest, vsum = _mm512_setzero_ps();
  for (int64_t v = 0; v < full; v += 16) {
    const __m512 x = _mm512_loadu_ps(logits + v);
    vmax = _mm512_max_ps(vmax, x);
    vsum = _mm512_add_ps(vsum, x);
  }
  if (tail) {
    vmax = _mm512_max_ps(vmax, _mm512_mask_loadu_ps(lowest, tail, logits + full));
    vsum = _mm512_add_ps(vsum, _mm512_maskz_loadu_ps(tail, logits + full));
  }
  const float max = _mm512_reduce_max_ps(vmax);
  const float mean = _mm512_reduce_add_ps(vsum) / static_cast<float>(vocab);
  const __m512 shift = _mm512_set1_ps(max);
  __m512 vexp = _mm512_setzero_ps();
  for (int64_t v = 0; v < full; v += 16) {
    const __m512 t = exp16(_mm512_sub_ps(_mm512_loadu_ps(logits + v), shift));
    _mm512_storeu_ps(grad + v, t);
    vexp = _mm512_add_ps(vexp, t);
  }
  if (tail) {
    const __m512 t = _mm512_maskz_mov_ps(tail, exp16(_mm512_sub_ps(_mm512_maskz_loadu_ps(tail, logits + full), shift)));
    _mm512_mask_storeu_ps(grad + full, tail, t);
    vexp = _mm512_add_ps(vexp, t);
  }
  const float sum = _mm512_reduce_add_ps(vexp);
  const float target_logit = logits[target];
  const float nll = max + std::log(sum) - target_logit;
  // the smoothed target puts e / V on every word: its cross-entropy adds e * (mean -log p - nll)
  const RowResult result{w * (nll - e * (mean - target_logit)), (w > 0.0f && target_logit >= max) ? 1.0f : 0.0f};
  const __m512 scale = _mm512_set1_ps(w / sum), spread = _mm512_set1_ps(w * e / static_cast<float>(vocab));
  for (int64_t v = 0; v < full; v += 16)
    _mm512_storeu_ps(grad + v, _mm512_fmsub_ps(_mm512_loadu_ps(grad + v), scale, spread));
  if (tail)
    _mm512_mask_storeu_ps(grad + full, tail, _mm512_fmsub_ps(_mm512_maskz_loadu_ps(tail, grad + full), scale, spread));
  grad[target] -= w * (1.0f - e);
  return result;
}

ffi::Error invalid(const std::string& message) {
  return ffi::Error(ffi::ErrorCode::kInvalidArgument, "cross_entropy: " + message);
}

}  // namespace

// logits (..., V), targets (...) as float32 ids -> shares (...), hits (...), dlogits (..., V): the
// mean over the non-<pad> targets of their (label-smoothed) cross-entropy is sum(shares);
// dlogits is its gradient; hits is 1.0 where the target's logit is the largest.
static ffi::Error CrossEntropy(ffi::Buffer<ffi::F32> logits, ffi::Buffer<ffi::F32> targets, float label_smoothing,
                               int64_t pad_id, ffi::ResultBuffer<ffi::F32> shares,
                               ffi::ResultBuffer<ffi::F32> hits, ffi::ResultBuffer<ffi::F32> dlogits,
                               ffi::ThreadPool pool) {
  const auto dims = logits.dimensions();
  if (dims.size() < 1) return invalid("logits need a vocabulary axis");
  const int64_t vocab = dims.back();
  const int64_t rows = vocab ? static_cast<int64_t>(logits.element_count()) / vocab : 0;
  if (static_cast<int64_t>(targets.element_count()) != rows) return invalid("one target per row of logits");
  // ids as float32, as Keras hands a loss its targets: the loss and the accuracy then pass
  // XLA the same operands, and it runs one call for both
  std::vector<int32_t> target(rows);
  int64_t real = 0;
  for (int64_t i = 0; i < rows; ++i) {
    const float id = targets.typed_data()[i];
    if (!(id >= 0.0f && id < static_cast<float>(vocab)) || id != std::floor(id))
      return invalid("a target id outside the vocabulary");
    target[i] = static_cast<int32_t>(id);
    real += target[i] != pad_id;
  }
  const float weight = 1.0f / static_cast<float>(std::max<int64_t>(real, 1));
  const float* x = logits.typed_data();
  float *share = shares->typed_data(), *hit = hits->typed_data(), *grad = dlogits->typed_data();
  const bool done = split_rows(pool, rows, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      if (target[i] == pad_id) {
        share[i] = hit[i] = 0.0f;
        std::memset(grad + i * vocab, 0, sizeof(float) * vocab);
        continue;
      }
      const RowResult r = row(x + i * vocab, vocab, target[i], weight, label_smoothing, grad + i * vocab);
      share[i] = r.share;
      hit[i] = r.hit;
    }
  });
  return done ? ffi::Error::Success() : ffi::Error(ffi::ErrorCode::kInternal, "cross_entropy: a half failed");
}

XLA_FFI_DEFINE_HANDLER_SYMBOL(SoftmaxCrossEntropy, CrossEntropy,
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()  // logits
                                  .Arg<ffi::Buffer<ffi::F32>>()  // target ids
                                  .Attr<float>("label_smoothing")
                                  .Attr<int64_t>("pad_id")
                                  .Ret<ffi::Buffer<ffi::F32>>()  // shares
                                  .Ret<ffi::Buffer<ffi::F32>>()  // hits
                                  .Ret<ffi::Buffer<ffi::F32>>()  // dlogits
                                  .Ctx<ffi::ThreadPool>());
