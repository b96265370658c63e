// y = x @ (W_int8 * scale)^T + bias for the few rows of a decode step, on AVX2 CPUs.
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

}  // namespace

// x (..., K) fp32, weight (N, K) int8 contiguous, scale (N) fp32, bias (N) fp32 or None.
torch::Tensor int8_linear(const torch::Tensor& x, const torch::Tensor& weight, const torch::Tensor& scale,
                          const c10::optional<torch::Tensor>& bias) {
  TORCH_CHECK(x.scalar_type() == torch::kFloat, "x must be float32");
  TORCH_CHECK(weight.scalar_type() == torch::kChar && weight.dim() == 2 && weight.is_contiguous(),
              "weight must be a contiguous 2-d int8 tensor");
  TORCH_CHECK(scale.scalar_type() == torch::kFloat && scale.is_contiguous(), "scale must be contiguous float32");
  const int64_t N = weight.size(0), K = weight.size(1);
  TORCH_CHECK(x.size(-1) == K, "x has ", x.size(-1), " features, the weight ", K);
  const float* bias_data = nullptr;
  if (bias.has_value()) {
    TORCH_CHECK(bias->scalar_type() == torch::kFloat && bias->is_contiguous(), "bias must be contiguous float32");
    bias_data = bias->data_ptr<float>();
  }
  const torch::Tensor rows = x.reshape({-1, K}).contiguous();
  const int64_t M = rows.size(0);
  const float* x_data = rows.data_ptr<float>();

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

  std::vector<int64_t> out_sizes = x.sizes().vec();
  out_sizes.back() = N;
  torch::Tensor y = torch::empty({M, N}, x.options());
  float* y_data = y.data_ptr<float>();
  const int8_t* w_data = weight.data_ptr<int8_t>();
  const float* s_data = scale.data_ptr<float>();
  at::parallel_for(0, N, 32, [&](int64_t n0, int64_t n1) {
    for (int64_t m = 0; m < M; m++) {
      const int16_t* xm = x_int.data() + m * K;
      for (int64_t n = n0; n < n1; n++) {
        const float value = float(dot(w_data + n * K, xm, K)) * x_scale[m] * s_data[n];
        y_data[m * N + n] = bias_data ? value + bias_data[n] : value;
      }
    }
  });
  return y.view(out_sizes);
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("int8_linear", &int8_linear, "int8-weight linear layer for few rows (AVX2)");
}
