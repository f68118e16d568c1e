// The training loss's work on the logits, fused: per target token its share of the batch's
// mean cross-entropy, whether its prediction is right, and the gradient of the mean with
// respect to its logits, in one XLA FFI call (seq2seq/losses.py calls it; native.py builds
// and registers it).
//
// At word level (7,150 target words) XLA spent about 3.7 ms of a 21.5 ms step in
// separate passes over the (B*T, V) logits: the max, exp and sum, the target's logit,
// the max again for the accuracy, then the softmax's gradient. Here a row (V floats, 28 KB)
// is read from memory once; it and its gradient's row stay in the core's cache for:
//   pass 1: the row's max and mean (the mean for label smoothing);
//   pass 2: exp(logit - max) into the gradient's row, and their sum;
//   pass 3: the gradient: w * (p - q), q the target distribution, w the token's weight.
// Shapes and semantics are losses.py's Keras ops; tests/test_cross_entropy.py compares the two.
// (One difference: a NaN logit at a <pad> position does not reach the loss here; there it
// does, as NaN * 0.)
#ifndef __AVX512F__
#error "the native cross-entropy needs AVX-512F (seq2seq then uses XLA's)"
#endif

#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <new>
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

// A row of V floats in blocks of 16, the last one masked to the row's end.
struct Blocks {
  int64_t full;     // floats in whole blocks
  __mmask16 tail;   // lanes of the last, partial block (0: none)
  explicit Blocks(int64_t vocab)
      : full(vocab / 16 * 16), tail(static_cast<__mmask16>((1u << (vocab - vocab / 16 * 16)) - 1)) {}
};

// Pass 1: the row's largest logit and its mean (V logits).
void max_and_mean(const float* logits, int64_t vocab, Blocks blocks, float& max, float& mean) {
  const __m512 lowest = _mm512_set1_ps(-std::numeric_limits<float>::infinity());
  __m512 vmax = lowest, vsum = _mm512_setzero_ps();
  for (int64_t v = 0; v < blocks.full; v += 16) {
    const __m512 x = _mm512_loadu_ps(logits + v);
    vmax = _mm512_max_ps(vmax, x);
    vsum = _mm512_add_ps(vsum, x);
  }
  if (blocks.tail) {
    vmax = _mm512_max_ps(vmax, _mm512_mask_loadu_ps(lowest, blocks.tail, logits + blocks.full));
    vsum = _mm512_add_ps(vsum, _mm512_maskz_loadu_ps(blocks.tail, logits + blocks.full));
  }
  max = _mm512_reduce_max_ps(vmax);
  mean = _mm512_reduce_add_ps(vsum) / static_cast<float>(vocab);
}

// Pass 2: out = exp(logits - max) (V floats); returns their sum.
float exp_shifted(const float* logits, float max, Blocks blocks, float* out) {
  const __m512 shift = _mm512_set1_ps(max);
  __m512 vsum = _mm512_setzero_ps();
  for (int64_t v = 0; v < blocks.full; v += 16) {
    const __m512 t = exp16(_mm512_sub_ps(_mm512_loadu_ps(logits + v), shift));
    _mm512_storeu_ps(out + v, t);
    vsum = _mm512_add_ps(vsum, t);
  }
  if (blocks.tail) {
    const __m512 x = _mm512_maskz_loadu_ps(blocks.tail, logits + blocks.full);
    const __m512 t = _mm512_maskz_mov_ps(blocks.tail, exp16(_mm512_sub_ps(x, shift)));
    _mm512_mask_storeu_ps(out + blocks.full, blocks.tail, t);
    vsum = _mm512_add_ps(vsum, t);
  }
  return _mm512_reduce_add_ps(vsum);
}

// Pass 3: values <- values * scale - spread, in place (V floats).
void scale_and_shift(float* values, Blocks blocks, float scale, float spread) {
  const __m512 a = _mm512_set1_ps(scale), b = _mm512_set1_ps(spread);
  for (int64_t v = 0; v < blocks.full; v += 16)
    _mm512_storeu_ps(values + v, _mm512_fmsub_ps(_mm512_loadu_ps(values + v), a, b));
  if (blocks.tail) {
    float* last = values + blocks.full;
    _mm512_mask_storeu_ps(last, blocks.tail, _mm512_fmsub_ps(_mm512_maskz_loadu_ps(blocks.tail, last), a, b));
  }
}

struct RowResult {
  float share;  // w * (-log p(target)), smoothed
  float hit;    // 1 if the target's logit is the row's largest
};

// One real row of V logits -> its result, and its gradient written to `grad` (V floats):
// w (p - q), p = softmax(logits), q = (1 - e) one_hot(target) + e / V.
// w: the token's weight, 1 / real tokens in the batch; e: label smoothing.
RowResult row(const float* logits, int64_t vocab, int32_t target, float w, float e, float* grad) {
  const Blocks blocks(vocab);
  float max, mean;
  max_and_mean(logits, vocab, blocks, max, mean);
  const float sum = exp_shifted(logits, max, blocks, grad);
  scale_and_shift(grad, blocks, w / sum, w * e / static_cast<float>(vocab));
  grad[target] -= w * (1.0f - e);
  const float target_logit = logits[target];
  const float nll = max + std::log(sum) - target_logit;
  // The smoothed target's cross-entropy is (1 - e) nll + e (mean over words of -log p).
  // A NaN anywhere in the row makes the sum NaN (the max may have dropped it): no hit.
  const bool hit = !std::isnan(sum) && target_logit >= max;
  // without smoothing the mean is not used (a word ruled out by a -inf logit makes it -inf)
  const float smoothing = e != 0.0f ? e * (mean - target_logit) : 0.0f;
  return {w * (nll - smoothing), hit ? 1.0f : 0.0f};
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
  // XLA the same operands, and it runs one call for both (exact up to 2^24 words)
  if (vocab > (int64_t{1} << 24)) return invalid("a vocabulary over 2^24 words (ids are float32)");
  std::vector<int32_t> target;
  try {
    target.resize(rows);
  } catch (const std::bad_alloc&) {
    return ffi::Error(ffi::ErrorCode::kResourceExhausted, "cross_entropy: out of memory");
  }
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
