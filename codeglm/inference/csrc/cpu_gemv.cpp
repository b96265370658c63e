// Kernels for the one-token decode steps on AVX2 CPUs (CodeGeeX, StarCoder and
// Llama-family models).
//
// Matrix-vector products for the one-row inputs of batch-1 steps: fp32 weights
// (float_linear) and int8 weights with per-row scales (int8_linear). Each thread reads
// its share of the weight rows front to back - long sequential streams, which the
// prefetchers follow - and a call costs a few microseconds, where oneDNN's fp32 kernel
// costs ~30 and fbgemm's int8 one ~20. Both take the small operations around a product
// of a block with them, each of which would cost a torch call (~3-25 us in a step, more
// than its arithmetic): the layer norm or RMSNorm before it, the activation (CodeGeeX's
// GELU, GELU-tanh, or SwiGLU over the [gate; up] halves) and the residual after.
//
// decode_attention: one new query per row against the KV cache, writing the new key
// and value into the cache first, with rotary positions applied to both where given
// and grouped-query heads (several query heads reading one key/value head). At the benchmark's shape (12 heads of 64, 129
// positions, warm caches) torch's SDPA with the cache slicing and copies costs ~52 us a
// layer, this ~26; at 1,024 positions it is as fast as SDPA.
//
// int8_linear: y = x @ (W_int8 * scale)^T + bias.
//
// Why not fbgemm (quantized::linear_dynamic): it costs ~20 us a call before any
// arithmetic and quantizes activations to 7 bits. Here each row of x is rounded once
// to 13-bit integers (relative error ~1e-4, far below the weights' int8 rounding) and
// dotted with the int8 weight rows by vpmaddwd: int8 weights widened to int16, pairs
// multiplied and summed into int32. |w x| <= 127 * 4095, so CHUNK of them fit in int32;
// the sums are flushed to float every CHUNK inputs. Each thread reads two rows at a
// time, one from each half of its share: two streams, each activation load serving both.
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <vector>

namespace {

constexpr int64_t CHUNK = 2048;
// Several input rows: BLOCK_ROWS weight rows against GROUP_ROWS input rows at a time, 12
// accumulators of the 16 AVX2 registers. Measured for a speculative check's 6 rows of
// Qwen2.5-Coder-0.5B (2026-12-06): 4 x 3 126.6 ms a pass, 2 x 6 141.6, 4 x 3 with a
// software prefetch 512 floats ahead 130.2, four rows dotted with one input row after
// another 136.6; a one-row step 82.5.
constexpr int BLOCK_ROWS = 4;
constexpr int64_t GROUP_ROWS = 3;
constexpr float X_LEVELS = 4095.f;

inline int32_t sum_lanes(__m256i v) {
  __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0x4E));
  s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0xB1));
  return _mm_cvtsi128_si32(s);
}

// The dot product of one int8 weight row and one int16 activation row, K long.
inline int64_t dot(const int8_t* w, const int16_t* x, int64_t K) {
  int64_t total = 0;
  for (int64_t c = 0; c < K; c += CHUNK) {
    const int64_t end = std::min(K, c + CHUNK);
    __m256i a0 = _mm256_setzero_si256(), a1 = _mm256_setzero_si256();
    int64_t k = c;
    for (; k + 32 <= end; k += 32) {
      const __m256i w32 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(w + k));
      const __m256i x0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x + k));
      const __m256i x1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x + k + 16));
      a0 = _mm256_add_epi32(a0, _mm256_madd_epi16(_mm256_cvtepi8_epi16(_mm256_castsi256_si128(w32)), x0));
      a1 = _mm256_add_epi32(a1, _mm256_madd_epi16(_mm256_cvtepi8_epi16(_mm256_extracti128_si256(w32, 1)), x1));
    }
    for (; k + 16 <= end; k += 16) {
      const __m128i w16 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(w + k));
      const __m256i x0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x + k));
      a0 = _mm256_add_epi32(a0, _mm256_madd_epi16(_mm256_cvtepi8_epi16(w16), x0));
    }
    total += sum_lanes(_mm256_add_epi32(a0, a1));
    for (; k < end; k++) total += int32_t(w[k]) * int32_t(x[k]);
  }
  return total;
}

inline float sum_floats(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// Dot products of four consecutive (K)-rows of w with x; two accumulators per row.
inline void dot4(const float* w, int64_t K, const float* x, float* out) {
  const float* w0 = w;
  const float* w1 = w + K;
  const float* w2 = w + 2 * K;
  const float* w3 = w + 3 * K;
  __m256 a0 = _mm256_setzero_ps(), b0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps(), b1 = _mm256_setzero_ps();
  __m256 a2 = _mm256_setzero_ps(), b2 = _mm256_setzero_ps(), a3 = _mm256_setzero_ps(), b3 = _mm256_setzero_ps();
  int64_t k = 0;
  for (; k + 16 <= K; k += 16) {
    const __m256 x0 = _mm256_loadu_ps(x + k), x1 = _mm256_loadu_ps(x + k + 8);
    a0 = _mm256_fmadd_ps(_mm256_loadu_ps(w0 + k), x0, a0);
    b0 = _mm256_fmadd_ps(_mm256_loadu_ps(w0 + k + 8), x1, b0);
    a1 = _mm256_fmadd_ps(_mm256_loadu_ps(w1 + k), x0, a1);
    b1 = _mm256_fmadd_ps(_mm256_loadu_ps(w1 + k + 8), x1, b1);
    a2 = _mm256_fmadd_ps(_mm256_loadu_ps(w2 + k), x0, a2);
    b2 = _mm256_fmadd_ps(_mm256_loadu_ps(w2 + k + 8), x1, b2);
    a3 = _mm256_fmadd_ps(_mm256_loadu_ps(w3 + k), x0, a3);
    b3 = _mm256_fmadd_ps(_mm256_loadu_ps(w3 + k + 8), x1, b3);
  }
  out[0] = sum_floats(_mm256_add_ps(a0, b0));
  out[1] = sum_floats(_mm256_add_ps(a1, b1));
  out[2] = sum_floats(_mm256_add_ps(a2, b2));
  out[3] = sum_floats(_mm256_add_ps(a3, b3));
  for (; k < K; k++) {
    out[0] += w0[k] * x[k];
    out[1] += w1[k] * x[k];
    out[2] += w2[k] * x[k];
    out[3] += w3[k] * x[k];
  }
}

// Dot products of W consecutive weight rows (w, W rows of K) with R input rows (x, R rows
// of K) into sums[r * W + j]: W * R accumulators, so each weight load serves R products
// and each input load W. The weights are consumed as they stream in, and the arithmetic
// of R rows overlaps their reading.
template <int W, int R>
inline void dot_block(const float* w, int64_t K, const float* x, float* sums) {
  __m256 acc[R][W];
  for (int r = 0; r < R; r++)
    for (int j = 0; j < W; j++) acc[r][j] = _mm256_setzero_ps();
  int64_t k = 0;
  for (; k + 8 <= K; k += 8) {
    __m256 v[W];
    for (int j = 0; j < W; j++) v[j] = _mm256_loadu_ps(w + j * K + k);
    for (int r = 0; r < R; r++) {
      const __m256 xr = _mm256_loadu_ps(x + r * K + k);
      for (int j = 0; j < W; j++) acc[r][j] = _mm256_fmadd_ps(v[j], xr, acc[r][j]);
    }
  }
  for (int r = 0; r < R; r++) {
    for (int j = 0; j < W; j++) {
      float t = sum_floats(acc[r][j]);
      for (int64_t i = k; i < K; i++) t += w[j * K + i] * x[r * K + i];
      sums[r * W + j] = t;
    }
  }
}

// dot_block of BLOCK_ROWS weight rows for 1 to GROUP_ROWS input rows.
inline void dot_group(const float* w, int64_t K, const float* x, int64_t rows, float* sums) {
  static_assert(GROUP_ROWS == 3, "dot_group dispatches 1 to 3 rows");
  if (rows == 1) return dot_block<BLOCK_ROWS, 1>(w, K, x, sums);
  if (rows == 2) return dot_block<BLOCK_ROWS, 2>(w, K, x, sums);
  dot_block<BLOCK_ROWS, 3>(w, K, x, sums);
}

// dot() of two weight rows with the same activations: the x loads are shared.
inline void dot2(const int8_t* wa, const int8_t* wb, const int16_t* x, int64_t K, int64_t* ra, int64_t* rb) {
  int64_t ta = 0, tb = 0;
  for (int64_t c = 0; c < K; c += CHUNK) {
    const int64_t end = std::min(K, c + CHUNK);
    __m256i a0 = _mm256_setzero_si256(), a1 = _mm256_setzero_si256();
    __m256i b0 = _mm256_setzero_si256(), b1 = _mm256_setzero_si256();
    int64_t k = c;
    for (; k + 32 <= end; k += 32) {
      const __m256i x0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x + k));
      const __m256i x1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x + k + 16));
      // 2 KiB ahead in each stream: 5-15% faster on the benchmark machine than the
      // hardware prefetchers alone (measured; the fp32 product got slower with it).
      _mm_prefetch(reinterpret_cast<const char*>(wa + k + 2048), _MM_HINT_T0);
      _mm_prefetch(reinterpret_cast<const char*>(wb + k + 2048), _MM_HINT_T0);
      const __m256i va = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(wa + k));
      const __m256i vb = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(wb + k));
      a0 = _mm256_add_epi32(a0, _mm256_madd_epi16(_mm256_cvtepi8_epi16(_mm256_castsi256_si128(va)), x0));
      a1 = _mm256_add_epi32(a1, _mm256_madd_epi16(_mm256_cvtepi8_epi16(_mm256_extracti128_si256(va, 1)), x1));
      b0 = _mm256_add_epi32(b0, _mm256_madd_epi16(_mm256_cvtepi8_epi16(_mm256_castsi256_si128(vb)), x0));
      b1 = _mm256_add_epi32(b1, _mm256_madd_epi16(_mm256_cvtepi8_epi16(_mm256_extracti128_si256(vb, 1)), x1));
    }
    ta += sum_lanes(_mm256_add_epi32(a0, a1));
    tb += sum_lanes(_mm256_add_epi32(b0, b1));
    for (; k < end; k++) {
      ta += int32_t(wa[k]) * int32_t(x[k]);
      tb += int32_t(wb[k]) * int32_t(x[k]);
    }
  }
  *ra = ta;
  *rb = tb;
}

// exp(x) for 8 floats: Cephes' polynomial after a split into 2^n * e^r (relative error
// ~2e-7, like expf), inputs clamped to the float range.
inline __m256 exp8(__m256 x) {
  x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-87.3f)), _mm256_set1_ps(88.3f));
  const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
  __m256 p = _mm256_set1_ps(1.9875691500e-4f);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
  p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.f)));
  const __m256i pow2 = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(p, _mm256_castsi256_ps(pow2));
}

// CodeGeeX's GELU, x * sigmoid(1.702 x) = x / (1 + e^(-1.702 x)), in place.
void gelu(float* y, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 x = _mm256_loadu_ps(y + i);
    const __m256 e = exp8(_mm256_mul_ps(x, _mm256_set1_ps(-1.702f)));
    _mm256_storeu_ps(y + i, _mm256_div_ps(x, _mm256_add_ps(_mm256_set1_ps(1.f), e)));
  }
  for (; i < n; i++) y[i] = y[i] / (1.f + std::exp(-1.702f * y[i]));
}

// GELU's tanh approximation (GPT-2's, StarCoder's; torch's gelu(approximate="tanh")),
// 0.5 x (1 + tanh(u)) = x / (1 + e^(-2u)), u = sqrt(2/pi) (x + 0.044715 x^3), in place
// (the sigmoid form: no cancellation where the result is small).
void gelu_tanh(float* y, int64_t n) {
  constexpr float kAlpha = 0.7978845608028654f, kBeta = 0.044715f;
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 x = _mm256_loadu_ps(y + i);
    const __m256 cube = _mm256_mul_ps(_mm256_mul_ps(x, x), x);
    const __m256 u = _mm256_mul_ps(_mm256_set1_ps(-2.f * kAlpha), _mm256_fmadd_ps(_mm256_set1_ps(kBeta), cube, x));
    const __m256 e = exp8(u);
    _mm256_storeu_ps(y + i, _mm256_div_ps(x, _mm256_add_ps(_mm256_set1_ps(1.f), e)));
  }
  for (; i < n; i++) {
    const float x = y[i];
    y[i] = 0.5f * x * (1.f + std::tanh(kAlpha * (x + kBeta * x * x * x)));
  }
}

// SwiGLU: out[i] = silu(gate[i]) * up[i], silu(g) = g / (1 + e^-g).
void swiglu(const float* gate, const float* up, float* out, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 g = _mm256_loadu_ps(gate + i);
    const __m256 e = exp8(_mm256_sub_ps(_mm256_setzero_ps(), g));
    const __m256 silu = _mm256_div_ps(g, _mm256_add_ps(_mm256_set1_ps(1.f), e));
    _mm256_storeu_ps(out + i, _mm256_mul_ps(silu, _mm256_loadu_ps(up + i)));
  }
  for (; i < n; i++) out[i] = gate[i] / (1.f + std::exp(-gate[i])) * up[i];
}

// One activation row as 13-bit integers: row ~ out * scale, rounded to nearest (even).
void quantize_row(const float* row, int64_t K, int16_t* out, float* scale) {
  const __m256 magnitude = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
  __m256 top = _mm256_setzero_ps();
  int64_t k = 0;
  for (; k + 8 <= K; k += 8) top = _mm256_max_ps(top, _mm256_and_ps(_mm256_loadu_ps(row + k), magnitude));
  __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(top), _mm256_extractf128_ps(top, 1));
  m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
  m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
  float amax = _mm_cvtss_f32(m4);
  for (; k < K; k++) amax = std::max(amax, std::fabs(row[k]));
  *scale = amax > 0.f ? amax / X_LEVELS : 1.f;
  const float inverse = 1.f / *scale;
  const __m256 factor = _mm256_set1_ps(inverse);
  k = 0;
  for (; k + 16 <= K; k += 16) {
    // cvtps rounds to nearest even, as lrintf does; packs interleaves 128-bit lanes.
    const __m256i a = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(row + k), factor));
    const __m256i b = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(row + k + 8), factor));
    const __m256i packed = _mm256_permute4x64_epi64(_mm256_packs_epi32(a, b), 0xD8);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + k), packed);
  }
  for (; k < K; k++) out[k] = static_cast<int16_t>(std::lrintf(row[k] * inverse));
}

// The activation a product applies to its outputs (the Python side's codes).
enum Activation : int64_t { kNone = 0, kFastGelu = 1, kGeluTanh = 2, kSwiGlu = 3 };

// What a product takes with it, around y = x @ W^T + bias:
// x -> layer_norm(x) (a bias given) or rms_norm(x) (no bias) before;
// y -> activation(y) -> y + residual after. SwiGLU halves the width: y = [gate; up] ->
// silu(gate) * up.
struct Extras {
  c10::optional<torch::Tensor> norm_weight, norm_bias;
  double eps;
  c10::optional<torch::Tensor> residual;
  int64_t activation;
};

// The rows the product reads: x's, their layer norm (mean and variance summed in double:
// torch's fp32 within rounding), or their RMSNorm (Llama's: x * rsqrt(mean(x^2) + eps),
// then scaled by the weight).
torch::Tensor normalized(const torch::Tensor& rows, const Extras& extras) {
  if (!extras.norm_weight.has_value()) return rows;
  const int64_t M = rows.size(0), K = rows.size(1);
  const torch::Tensor& w = *extras.norm_weight;
  const bool rms = !extras.norm_bias.has_value();
  TORCH_CHECK(w.scalar_type() == torch::kFloat && w.is_contiguous() && w.numel() == K,
              "norm weight must be contiguous float32 of the input size");
  const float* bd = nullptr;
  if (!rms) {
    const torch::Tensor& b = *extras.norm_bias;
    TORCH_CHECK(b.scalar_type() == torch::kFloat && b.is_contiguous() && b.numel() == K,
                "layer norm bias must be contiguous float32 of the input size");
    bd = b.data_ptr<float>();
  }
  torch::Tensor out = torch::empty_like(rows);
  const float* wd = w.data_ptr<float>();
  for (int64_t m = 0; m < M; m++) {
    const float* x = rows.data_ptr<float>() + m * K;
    float* o = out.data_ptr<float>() + m * K;
    if (rms) {
      double squares = 0.0;
      for (int64_t k = 0; k < K; k++) squares += double(x[k]) * double(x[k]);
      const float rstd = static_cast<float>(1.0 / std::sqrt(squares / K + extras.eps));
      for (int64_t k = 0; k < K; k++) o[k] = wd[k] * (x[k] * rstd);
      continue;
    }
    double sum = 0.0;
    for (int64_t k = 0; k < K; k++) sum += x[k];
    const float mean = static_cast<float>(sum / K);
    double squares = 0.0;
    for (int64_t k = 0; k < K; k++) squares += double(x[k] - mean) * double(x[k] - mean);
    const float rstd = static_cast<float>(1.0 / std::sqrt(squares / K + extras.eps));
    for (int64_t k = 0; k < K; k++) o[k] = (x[k] - mean) * rstd * wd[k] + bd[k];
  }
  return out;
}

// The residual's rows, checked against the output (M, N); null without one.
const float* residual_rows(const Extras& extras, int64_t M, int64_t N) {
  if (!extras.residual.has_value()) return nullptr;
  const torch::Tensor& r = *extras.residual;
  TORCH_CHECK(r.scalar_type() == torch::kFloat && r.is_contiguous() && r.numel() == M * N,
              "residual must be contiguous float32 of the output's size");
  return r.data_ptr<float>();
}

// The activation (element-wise ones) and the residual on the outputs [n0, n1) of row m,
// which one thread computed. SwiGLU mixes two halves of a row: ``finish_swiglu``.
inline void finish(float* y, const float* residual, int64_t activation, int64_t m, int64_t N, int64_t n0, int64_t n1) {
  if (activation == kSwiGlu) return;
  if (activation == kFastGelu) gelu(y + m * N + n0, n1 - n0);
  if (activation == kGeluTanh) gelu_tanh(y + m * N + n0, n1 - n0);
  if (residual != nullptr) {
    for (int64_t n = n0; n < n1; n++) y[m * N + n] += residual[m * N + n];
  }
}

// The product's output: y itself, or for SwiGLU silu(gate) * up (+ residual) of its
// [gate; up] halves, (M, N / 2).
torch::Tensor finish_swiglu(const torch::Tensor& y, const Extras& extras) {
  if (extras.activation != kSwiGlu) return y;
  const int64_t M = y.size(0), N = y.size(1), half = N / 2;
  torch::Tensor out = torch::empty({M, half}, y.options());
  const float* residual = residual_rows(extras, M, half);
  for (int64_t m = 0; m < M; m++) {
    const float* row = y.data_ptr<float>() + m * N;
    float* o = out.data_ptr<float>() + m * half;
    swiglu(row, row + half, o, half);
    if (residual != nullptr) {
      for (int64_t n = 0; n < half; n++) o[n] += residual[m * half + n];
    }
  }
  return out;
}

void check_activation(const Extras& extras, int64_t N) {
  TORCH_CHECK(extras.activation >= kNone && extras.activation <= kSwiGlu, "unknown activation code ", extras.activation);
  TORCH_CHECK(extras.activation != kSwiGlu || N % 2 == 0, "SwiGLU needs an even output width ([gate; up]), got ", N);
}

// What both products check and prepare: x as contiguous (M, K) rows, the bias's data
// (or null), and the output's sizes (x's, with N last).
struct Operands {
  torch::Tensor rows;
  const float* bias;
  std::vector<int64_t> out_sizes;
};

Operands operands(const torch::Tensor& x, int64_t N, int64_t K, const c10::optional<torch::Tensor>& bias) {
  TORCH_CHECK(x.scalar_type() == torch::kFloat && x.device().is_cpu(), "x must be float32 on the CPU");
  TORCH_CHECK(x.size(-1) == K, "x has ", x.size(-1), " features, the weight ", K);
  const float* bias_data = nullptr;
  if (bias.has_value()) {
    TORCH_CHECK(bias->scalar_type() == torch::kFloat && bias->is_contiguous() && bias->numel() == N,
                "bias must be contiguous float32 of the output size");
    bias_data = bias->data_ptr<float>();
  }
  std::vector<int64_t> out_sizes = x.sizes().vec();
  out_sizes.back() = N;  // halved by the callers for SwiGLU
  return {x.reshape({-1, K}).contiguous(), bias_data, out_sizes};
}

}  // namespace

// x (..., K) fp32, weight (N, K) fp32 contiguous, bias (N) fp32 or None.
torch::Tensor float_linear(const torch::Tensor& x, const torch::Tensor& weight, const c10::optional<torch::Tensor>& bias,
                           const c10::optional<torch::Tensor>& norm_weight, const c10::optional<torch::Tensor>& norm_bias,
                           double eps, const c10::optional<torch::Tensor>& residual, int64_t activation) {
  const Extras extras{norm_weight, norm_bias, eps, residual, activation};
  TORCH_CHECK(weight.scalar_type() == torch::kFloat && weight.dim() == 2 && weight.is_contiguous() && weight.device().is_cpu(),
              "weight must be a contiguous float32 (out, in) tensor on the CPU");
  const int64_t N = weight.size(0), K = weight.size(1);
  check_activation(extras, N);
  Operands in = operands(x, N, K, bias);
  const int64_t M = in.rows.size(0);
  const float* bias_data = in.bias;
  torch::Tensor y = torch::empty({M, N}, x.options());
  const torch::Tensor rows = normalized(in.rows, extras);
  const float* x_data = rows.data_ptr<float>();
  const float* w_data = weight.data_ptr<float>();
  const float* r_data = extras.activation == kSwiGlu ? nullptr : residual_rows(extras, M, N);
  float* y_data = y.data_ptr<float>();
  auto store = [&](int64_t m, int64_t n, float sum) { y_data[m * N + n] = bias_data ? sum + bias_data[n] : sum; };
  at::parallel_for(0, N, 16, [&](int64_t n0, int64_t n1) {
    int64_t n = n0;
    if (M == 1) {
      // Four weight rows at a time: four streams in flight per thread (one stream leaves
      // the memory system idle between its misses) and each x load shared by four rows.
      for (; n + 4 <= n1; n += 4) {
        float sums[4];
        dot4(w_data + n * K, K, x_data, sums);
        for (int r = 0; r < 4; r++) store(0, n + r, sums[r]);
      }
    } else {
      // Several input rows (a speculative check's, n samples'): each block of weight rows
      // is dotted with the input rows while it streams in, so the weights are read from
      // memory once for all of them and the arithmetic overlaps the reading.
      for (; n + BLOCK_ROWS <= n1; n += BLOCK_ROWS) {
        for (int64_t m = 0; m < M; m += GROUP_ROWS) {
          const int64_t rows = std::min<int64_t>(GROUP_ROWS, M - m);
          float sums[GROUP_ROWS * BLOCK_ROWS];
          dot_group(w_data + n * K, K, x_data + m * K, rows, sums);
          for (int64_t r = 0; r < rows; r++)
            for (int j = 0; j < BLOCK_ROWS; j++) store(m + r, n + j, sums[r * BLOCK_ROWS + j]);
        }
      }
    }
    for (; n < n1; n++) {
      const float* w = w_data + n * K;
      for (int64_t m = 0; m < M; m++) {
        const float* xm = x_data + m * K;
        __m256 a0 = _mm256_setzero_ps();
        int64_t k = 0;
        for (; k + 8 <= K; k += 8) a0 = _mm256_fmadd_ps(_mm256_loadu_ps(w + k), _mm256_loadu_ps(xm + k), a0);
        float sum = sum_floats(a0);
        for (; k < K; k++) sum += w[k] * xm[k];
        store(m, n, sum);
      }
    }
    for (int64_t m = 0; m < M; m++) finish(y_data, r_data, extras.activation, m, N, n0, n1);
  });
  if (extras.activation == kSwiGlu) in.out_sizes.back() = N / 2;
  return finish_swiglu(y, extras).view(in.out_sizes);
}

// x (..., K) fp32, weight (N, K) int8 contiguous, scale (N) fp32, bias (N) fp32 or None.
torch::Tensor int8_linear(const torch::Tensor& x, const torch::Tensor& weight, const torch::Tensor& scale,
                          const c10::optional<torch::Tensor>& bias, const c10::optional<torch::Tensor>& norm_weight,
                          const c10::optional<torch::Tensor>& norm_bias, double eps,
                          const c10::optional<torch::Tensor>& residual, int64_t activation) {
  const Extras extras{norm_weight, norm_bias, eps, residual, activation};
  TORCH_CHECK(weight.scalar_type() == torch::kChar && weight.dim() == 2 && weight.is_contiguous() && weight.device().is_cpu(),
              "weight must be a contiguous 2-d int8 tensor on the CPU");
  TORCH_CHECK(scale.scalar_type() == torch::kFloat && scale.is_contiguous() && scale.device().is_cpu(),
              "scale must be contiguous float32 on the CPU");
  const int64_t N = weight.size(0), K = weight.size(1);
  check_activation(extras, N);
  Operands in = operands(x, N, K, bias);
  const int64_t M = in.rows.size(0);
  const float* bias_data = in.bias;
  const torch::Tensor rows = normalized(in.rows, extras);
  const float* x_data = rows.data_ptr<float>();
  const float* r_data = extras.activation == kSwiGlu ? nullptr : residual_rows(extras, M, N);

  std::vector<int16_t> x_int(M * K);
  std::vector<float> x_scale(M);
  for (int64_t m = 0; m < M; m++) quantize_row(x_data + m * K, K, x_int.data() + m * K, &x_scale[m]);

  torch::Tensor y = torch::empty({M, N}, x.options());
  float* y_data = y.data_ptr<float>();
  const int8_t* w_data = weight.data_ptr<int8_t>();
  const float* s_data = scale.data_ptr<float>();
  auto store = [&](int64_t m, int64_t n, int64_t sum) {
    const float value = float(sum) * x_scale[m] * s_data[n];
    y_data[m * N + n] = bias_data ? value + bias_data[n] : value;
  };
  at::parallel_for(0, N, 64, [&](int64_t n0, int64_t n1) {
    // Two rows at a time, one from each half of this thread's range: two long
    // sequential streams, and each activation load serves both.
    const int64_t half = (n1 - n0) / 2;
    for (int64_t m = 0; m < M; m++) {
      const int16_t* xm = x_int.data() + m * K;
      for (int64_t i = 0; i < half; i++) {
        int64_t a = 0, b = 0;
        dot2(w_data + (n0 + i) * K, w_data + (n0 + half + i) * K, xm, K, &a, &b);
        store(m, n0 + i, a);
        store(m, n0 + half + i, b);
      }
      for (int64_t n = n0 + 2 * half; n < n1; n++) store(m, n, dot(w_data + n * K, xm, K));
      finish(y_data, r_data, extras.activation, m, N, n0, n1);
    }
  });
  if (extras.activation == kSwiGlu) in.out_sizes.back() = N / 2;
  return finish_swiglu(y, extras).view(in.out_sizes);
}

// Rotary positions on one head's hs values (transformers' Llama layout: the halves
// rotated, x * cos + rotate_half(x) * sin, rotate_half(x) = [-x2, x1]), into out.
inline void rotate(const float* x, const float* cos, const float* sin, int64_t hs, float* out) {
  const int64_t half = hs / 2;
  for (int64_t d = 0; d < half; d++) out[d] = x[d] * cos[d] - x[d + half] * sin[d];
  for (int64_t d = half; d < hs; d++) out[d] = x[d] * cos[d] + x[d - half] * sin[d];
}

// q (B, 1, nh * hs), k and v (B, 1, nkv * hs) fp32, last dimension contiguous (slices of a
// fused projection will do); key_cache and value_cache (B, nkv, capacity, hs) fp32, last
// dimension contiguous, nh a multiple of nkv (query head i reads key/value head
// i / (nh / nkv)). cos and sin, if given: (1 or B, hs) contiguous, the rotary angles of
// this position, applied to q and k first. Writes k and v at cache position `position`,
// then returns each row's attention over positions [0, position], (B, 1, nh * hs):
// softmax(q k^T / sqrt(hs)) v, the scores and their softmax in fp32 like SDPA's CPU kernel.
torch::Tensor decode_attention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                               const torch::Tensor& key_cache, const torch::Tensor& value_cache, int64_t position,
                               const c10::optional<torch::Tensor>& cos, const c10::optional<torch::Tensor>& sin) {
  TORCH_CHECK(key_cache.dim() == 4 && value_cache.sizes() == key_cache.sizes(), "caches must be (B, nkv, capacity, hs)");
  const int64_t B = key_cache.size(0), nkv = key_cache.size(1), capacity = key_cache.size(2), hs = key_cache.size(3);
  for (const torch::Tensor* t : {&q, &k, &v, &key_cache, &value_cache}) {
    TORCH_CHECK(t->scalar_type() == torch::kFloat && t->device().is_cpu() && t->stride(-1) == 1,
                "attention operands must be float32 on the CPU, last dimension contiguous");
  }
  TORCH_CHECK(q.dim() == 3 && q.size(0) == B && q.size(1) == 1 && q.size(2) % hs == 0,
              "q must be (B, 1, nh * hs) for the cache's B and hs");
  const int64_t nh = q.size(2) / hs;
  TORCH_CHECK(nh % nkv == 0, nh, " query heads cannot share ", nkv, " key/value heads evenly");
  const int64_t group = nh / nkv;
  for (const torch::Tensor* t : {&k, &v}) {
    TORCH_CHECK(t->dim() == 3 && t->size(0) == B && t->size(1) == 1 && t->size(2) == nkv * hs,
                "k and v must be (B, 1, nkv * hs) for the cache's B, nkv and hs");
  }
  TORCH_CHECK(cos.has_value() == sin.has_value(), "rotary positions need both cos and sin");
  const float* cos_data = nullptr;
  const float* sin_data = nullptr;
  int64_t angle_step = 0;  // 0: one set of angles for every row
  if (cos.has_value()) {
    TORCH_CHECK(hs % 2 == 0, "rotary positions need an even head size, got ", hs);
    for (const torch::Tensor* t : {&*cos, &*sin}) {
      TORCH_CHECK(t->scalar_type() == torch::kFloat && t->is_contiguous() && t->dim() == 2 && t->size(1) == hs &&
                      (t->size(0) == 1 || t->size(0) == B),
                  "cos and sin must be contiguous float32 (1 or B, hs)");
    }
    TORCH_CHECK(cos->sizes() == sin->sizes(), "cos and sin must have the same shape");
    cos_data = cos->data_ptr<float>();
    sin_data = sin->data_ptr<float>();
    angle_step = cos->size(0) == 1 ? 0 : hs;
  }
  TORCH_CHECK(0 <= position && position < capacity, "position ", position, " is outside the cache of ", capacity);
  const int64_t S = position + 1;
  const float scale = 1.f / std::sqrt(static_cast<float>(hs));

  // The new keys (rotated) and values into the cache: once per key/value head.
  const int64_t key_step = key_cache.stride(2), value_step = value_cache.stride(2);
  for (int64_t b = 0; b < B; b++) {
    for (int64_t head = 0; head < nkv; head++) {
      const float* key = k.data_ptr<float>() + b * k.stride(0) + head * hs;
      float* key_slot = key_cache.data_ptr<float>() + b * key_cache.stride(0) + head * key_cache.stride(1) + position * key_step;
      float* value_slot =
          value_cache.data_ptr<float>() + b * value_cache.stride(0) + head * value_cache.stride(1) + position * value_step;
      if (cos_data != nullptr) {
        rotate(key, cos_data + b * angle_step, sin_data + b * angle_step, hs, key_slot);
      } else {
        std::copy_n(key, hs, key_slot);
      }
      std::copy_n(v.data_ptr<float>() + b * v.stride(0) + head * hs, hs, value_slot);
    }
  }

  torch::Tensor y = torch::empty({B, 1, nh * hs}, q.options());
  float* y_data = y.data_ptr<float>();
  at::parallel_for(0, B * nh, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> scores(S);
    std::vector<float> out(hs);
    std::vector<float> rotated(hs);
    for (int64_t i = begin; i < end; i++) {
      const int64_t b = i / nh, head = i % nh, kv_head = head / group;
      const float* qi = q.data_ptr<float>() + b * q.stride(0) + head * hs;
      if (cos_data != nullptr) {
        rotate(qi, cos_data + b * angle_step, sin_data + b * angle_step, hs, rotated.data());
        qi = rotated.data();
      }
      const float* keys = key_cache.data_ptr<float>() + b * key_cache.stride(0) + kv_head * key_cache.stride(1);
      const float* values = value_cache.data_ptr<float>() + b * value_cache.stride(0) + kv_head * value_cache.stride(1);

      float best = -INFINITY;
      for (int64_t s = 0; s < S; s++) {
        const float* key = keys + s * key_step;
        __m256 acc = _mm256_setzero_ps();
        int64_t d = 0;
        for (; d + 8 <= hs; d += 8) acc = _mm256_fmadd_ps(_mm256_loadu_ps(qi + d), _mm256_loadu_ps(key + d), acc);
        float dot = sum_floats(acc);
        for (; d < hs; d++) dot += qi[d] * key[d];
        scores[s] = dot * scale;
        best = std::max(best, scores[s]);
      }
      float total = 0.f;
      int64_t s = 0;
      for (; s + 8 <= S; s += 8) {
        const __m256 e = exp8(_mm256_sub_ps(_mm256_loadu_ps(&scores[s]), _mm256_set1_ps(best)));
        _mm256_storeu_ps(&scores[s], e);
        total += sum_floats(e);
      }
      for (; s < S; s++) {
        scores[s] = std::exp(scores[s] - best);
        total += scores[s];
      }

      std::fill(out.begin(), out.end(), 0.f);
      for (int64_t t = 0; t < S; t++) {
        const float* value = values + t * value_step;
        const __m256 p = _mm256_set1_ps(scores[t]);
        int64_t d = 0;
        for (; d + 8 <= hs; d += 8) {
          _mm256_storeu_ps(&out[d], _mm256_fmadd_ps(p, _mm256_loadu_ps(value + d), _mm256_loadu_ps(&out[d])));
        }
        for (; d < hs; d++) out[d] += scores[t] * value[d];
      }
      float* yi = y_data + b * nh * hs + head * hs;
      const float inverse = 1.f / total;
      for (int64_t d = 0; d < hs; d++) yi[d] = out[d] * inverse;
    }
  });
  return y;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  namespace py = pybind11;
  m.def("int8_linear", &int8_linear, "int8-weight linear layer for few rows (AVX2)", py::arg("x"), py::arg("weight"),
        py::arg("scale"), py::arg("bias"), py::arg("norm_weight") = py::none(), py::arg("norm_bias") = py::none(),
        py::arg("eps") = 1e-5, py::arg("residual") = py::none(), py::arg("activation") = 0);
  m.def("float_linear", &float_linear, "fp32 linear layer for few rows (AVX2)", py::arg("x"), py::arg("weight"),
        py::arg("bias"), py::arg("norm_weight") = py::none(), py::arg("norm_bias") = py::none(), py::arg("eps") = 1e-5,
        py::arg("residual") = py::none(), py::arg("activation") = 0);
  m.def("decode_attention", &decode_attention, "one query per row against the KV cache (AVX2)", py::arg("q"),
        py::arg("k"), py::arg("v"), py::arg("key_cache"), py::arg("value_cache"), py::arg("position"),
        py::arg("cos") = py::none(), py::arg("sin") = py::none());
}
