// Matrix-vector products for the one-row inputs of batch-1 decode steps, on AVX2 CPUs:
// fp32 weights (float_linear) and int8 weights with per-row scales (int8_linear).
// Each thread reads its share of the weight rows front to back - one sequential
// stream, which the prefetchers follow - and a call costs a few microseconds, where
// oneDNN's fp32 kernel costs ~30 and fbgemm's int8 one ~20.
//
// int8_linear: y = x @ (W_int8 * scale)^T + bias.
//
// Why not fbgemm (quantized::linear_dynamic): it costs ~20 us a call before any
// arithmetic and quantizes activations to 7 bits. Here each row of x is rounded once
// to 13-bit integers (relative error ~1e-4, far below the weights' int8 rounding) and
// dotted with the int8 weight rows by vpmaddwd: int8 weights widened to int16, pairs
// multiplied and summed into int32. |w x| <= 127 * 4095, so CHUNK of them fit in int32;
// the sums are flushed to float every CHUNK inputs. Each thread reads its share of the
// weight rows front to back - one sequential stream, which the prefetchers follow.
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <vector>

namespace {

constexpr int64_t CHUNK = 2048;
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

// What both products check and prepare: x as contiguous (M, K) rows, the bias's data
// (or null), and the output's sizes (x's, with N last).
struct Operands {
  torch::Tensor rows;
  const float* bias;
  std::vector<int64_t> out_sizes;
};

Operands operands(const torch::Tensor& x, int64_t N, int64_t K, const c10::optional<torch::Tensor>& bias) {
  TORCH_CHECK(x.scalar_type() == torch::kFloat, "x must be float32");
  TORCH_CHECK(x.size(-1) == K, "x has ", x.size(-1), " features, the weight ", K);
  const float* bias_data = nullptr;
  if (bias.has_value()) {
    TORCH_CHECK(bias->scalar_type() == torch::kFloat && bias->is_contiguous() && bias->numel() == N,
                "bias must be contiguous float32 of the output size");
    bias_data = bias->data_ptr<float>();
  }
  std::vector<int64_t> out_sizes = x.sizes().vec();
  out_sizes.back() = N;
  return {x.reshape({-1, K}).contiguous(), bias_data, out_sizes};
}

}  // namespace

// x (..., K) fp32, weight (N, K) fp32 contiguous, bias (N) fp32 or None.
torch::Tensor float_linear(const torch::Tensor& x, const torch::Tensor& weight, const c10::optional<torch::Tensor>& bias) {
  TORCH_CHECK(weight.scalar_type() == torch::kFloat && weight.dim() == 2 && weight.is_contiguous(),
              "weight must be a contiguous float32 (out, in) tensor");
  const int64_t N = weight.size(0), K = weight.size(1);
  const Operands in = operands(x, N, K, bias);
  const int64_t M = in.rows.size(0);
  const float* bias_data = in.bias;
  torch::Tensor y = torch::empty({M, N}, x.options());
  const float* x_data = in.rows.data_ptr<float>();
  const float* w_data = weight.data_ptr<float>();
  float* y_data = y.data_ptr<float>();
  at::parallel_for(0, N, 16, [&](int64_t n0, int64_t n1) {
    for (int64_t m = 0; m < M; m++) {
      const float* xm = x_data + m * K;
      for (int64_t n = n0; n < n1; n++) {
        const float* w = w_data + n * K;
        __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps(), a2 = _mm256_setzero_ps(), a3 = _mm256_setzero_ps();
        int64_t k = 0;
        for (; k + 32 <= K; k += 32) {
          a0 = _mm256_fmadd_ps(_mm256_loadu_ps(w + k), _mm256_loadu_ps(xm + k), a0);
          a1 = _mm256_fmadd_ps(_mm256_loadu_ps(w + k + 8), _mm256_loadu_ps(xm + k + 8), a1);
          a2 = _mm256_fmadd_ps(_mm256_loadu_ps(w + k + 16), _mm256_loadu_ps(xm + k + 16), a2);
          a3 = _mm256_fmadd_ps(_mm256_loadu_ps(w + k + 24), _mm256_loadu_ps(xm + k + 24), a3);
        }
        float sum = sum_floats(_mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
        for (; k < K; k++) sum += w[k] * xm[k];
        y_data[m * N + n] = bias_data ? sum + bias_data[n] : sum;
      }
    }
  });
  return y.view(in.out_sizes);
}

// x (..., K) fp32, weight (N, K) int8 contiguous, scale (N) fp32, bias (N) fp32 or None.
torch::Tensor int8_linear(const torch::Tensor& x, const torch::Tensor& weight, const torch::Tensor& scale,
                          const c10::optional<torch::Tensor>& bias) {
  TORCH_CHECK(weight.scalar_type() == torch::kChar && weight.dim() == 2 && weight.is_contiguous(),
              "weight must be a contiguous 2-d int8 tensor");
  TORCH_CHECK(scale.scalar_type() == torch::kFloat && scale.is_contiguous(), "scale must be contiguous float32");
  const int64_t N = weight.size(0), K = weight.size(1);
  const Operands in = operands(x, N, K, bias);
  const int64_t M = in.rows.size(0);
  const float* bias_data = in.bias;
  const float* x_data = in.rows.data_ptr<float>();

  std::vector<int16_t> x_int(M * K);
  std::vector<float> x_scale(M);
  for (int64_t m = 0; m < M; m++) {
    const float* row = x_data + m * K;
    float amax = 0.f;
    for (int64_t k = 0; k < K; k++) amax = std::max(amax, std::fabs(row[k]));
    x_scale[m] = amax > 0.f ? amax / X_LEVELS : 1.f;
    const float inverse = 1.f / x_scale[m];
    for (int64_t k = 0; k < K; k++) x_int[m * K + k] = static_cast<int16_t>(std::lrintf(row[k] * inverse));
  }

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
    }
  });
  return y.view(in.out_sizes);
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("int8_linear", &int8_linear, "int8-weight linear layer for few rows (AVX2)");
  m.def("float_linear", &float_linear, "fp32 linear layer for few rows (AVX2)");
}
