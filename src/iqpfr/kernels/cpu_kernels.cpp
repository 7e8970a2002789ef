// CPU kernels for fp32 inference on NHWC (channels-last) activations:
//  * a 3x3 / stride 1 / zero-padding 1 convolution by Winograd's minimal filtering F(4x4, 3x3)
//    (Lavin & Gray 2016): 36 multiplications per 4x4 output tile and channel pair instead of 144, so a
//    layer needs 1/4 of the multiply-adds of the direct convolution, with optional bias and residual
//    added in the same pass;
//  * GroupNorm, optionally followed by SiLU, as one statistics pass and one apply pass.
// Built at run time by iqpfr.kernels.load_cpu_kernels() (torch.utils.cpp_extension).
//
// The 8-float vectors are GCC/Clang vector extensions, so the same source compiles to AVX2/AVX-512 on
// x86 and to NEON on ARM. Every kernel needs channel counts divisible by 8 (checked).

#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <unordered_map>
#include <vector>

namespace {

typedef float v8 __attribute__((vector_size(32)));
typedef int32_t v8i __attribute__((vector_size(32)));

inline v8 load8(const float* p) {
  v8 v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}

inline void store8(float* p, v8 v) { std::memcpy(p, &v, sizeof(v)); }

inline v8 splat(float x) { return v8{x, x, x, x, x, x, x, x}; }

// exp(x) with a relative error near float rounding (~1e-7): x = n ln2 + r with |r| <= ln2/2, exp(r)
// by its degree-7 Taylor polynomial (remainder below 6e-9), 2^n put directly into the exponent bits.
inline v8 exp8(v8 x) {
  x = x < splat(-87.f) ? splat(-87.f) : x;
  x = x > splat(88.f) ? splat(88.f) : x;
  const v8 shifter = splat(12582912.f);  // 1.5 * 2^23: adding it rounds to the nearest integer
  v8 n = (x * splat(1.44269504088896341f) + shifter) - shifter;
  v8 r = x - n * splat(0.693359375f);
  r = r - n * splat(-2.12194440e-4f);
  v8 p = splat(1.f / 5040.f);
  p = p * r + splat(1.f / 720.f);
  p = p * r + splat(1.f / 120.f);
  p = p * r + splat(1.f / 24.f);
  p = p * r + splat(1.f / 6.f);
  p = p * r + splat(0.5f);
  p = p * r + splat(1.f);
  p = p * r + splat(1.f);
  v8i bits = (__builtin_convertvector(n, v8i) + 127) << 23;
  v8 scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  return p * scale;
}

inline v8 silu8(v8 x) { return x / (splat(1.f) + exp8(-x)); }

// B^T d B of one row/column of 6 values (F(4x4, 3x3) input transform, interpolation points 0, +-1,
// +-2 and infinity), written with the shared sub-expressions.
inline void input_transform_6(const v8 d[6], v8 t[6]) {
  v8 a = d[4] - 4.f * d[2], b = d[3] - 4.f * d[1];
  v8 c = d[4] - d[2], e = 2.f * (d[3] - d[1]);
  t[0] = 4.f * d[0] - 5.f * d[2] + d[4];
  t[1] = a + b;
  t[2] = a - b;
  t[3] = c + e;
  t[4] = c - e;
  t[5] = 4.f * d[1] - 5.f * d[3] + d[5];
}

// A^T m of 6 values -> 4 outputs (F(4x4, 3x3) output transform).
inline void output_transform_6(const v8 m[6], v8 o[4]) {
  v8 a = m[1] + m[2], b = m[1] - m[2], c = m[3] + m[4], e = m[3] - m[4];
  o[0] = m[0] + a + c;
  o[1] = b + 2.f * e;
  o[2] = a + 4.f * c;
  o[3] = b + 8.f * e + m[5];
}

struct Geometry {
  int64_t H, W, C, K, tiles_h, tiles_w;
};

// Tiles [first, first + count) of x (N, H, W, C) -> V laid out (count, 36, C): the 36 transformed
// values of one tile are contiguous, so each tile is read and written in one place.
void transform_input_tiles(const float* x, const Geometry& g, int64_t first, int64_t count, const float* zeros,
                           const float* input_scale, float* V) {
  const int64_t per_image = g.tiles_h * g.tiles_w;
  for (int64_t k = 0; k < count; ++k) {
    const int64_t t = first + k, n = t / per_image, ty = (t % per_image) / g.tiles_w, tx = t % g.tiles_w;
    const float* rows[6][6];
    for (int i = 0; i < 6; ++i) {
      for (int j = 0; j < 6; ++j) {
        const int64_t y = 4 * ty - 1 + i, xx = 4 * tx - 1 + j;
        const bool inside = y >= 0 && y < g.H && xx >= 0 && xx < g.W;
        rows[i][j] = inside ? x + ((n * g.H + y) * g.W + xx) * g.C : zeros;
      }
    }
    float* out = V + k * 36 * g.C;
    for (int64_t c = 0; c < g.C; c += 8) {
      const v8 s = input_scale ? load8(input_scale + n * g.C + c) : splat(1.f);
      v8 m[6][6];
      for (int i = 0; i < 6; ++i) {
        v8 d[6];
        for (int j = 0; j < 6; ++j) d[j] = load8(rows[i][j] + c) * s;
        input_transform_6(d, m[i]);  // m[i][b]: row i, transformed along the width
      }
      for (int b = 0; b < 6; ++b) {
        v8 d[6], t[6];
        for (int i = 0; i < 6; ++i) d[i] = m[i][b];
        input_transform_6(d, t);
        for (int a = 0; a < 6; ++a) store8(out + (a * 6 + b) * g.C + c, t[a]);
      }
    }
  }
}

// M laid out (count, 36, K) -> the 4x4 output pixels of each tile in y (N, H, W, K), cropped at the
// border, times output_scale[n, k], plus bias[k] and residual (N, H, W, K), each where given.
void transform_output_tiles(const float* M, const Geometry& g, int64_t first, int64_t count,
                            const float* output_scale, const float* bias, const float* residual, float* y) {
  const int64_t per_image = g.tiles_h * g.tiles_w;
  for (int64_t k = 0; k < count; ++k) {
    const int64_t t = first + k, n = t / per_image, ty = (t % per_image) / g.tiles_w, tx = t % g.tiles_w;
    const float* in = M + k * 36 * g.K;
    int64_t offset[4][4];
    for (int i = 0; i < 4; ++i) {
      for (int j = 0; j < 4; ++j) {
        const int64_t yy = 4 * ty + i, xx = 4 * tx + j;
        offset[i][j] = (yy < g.H && xx < g.W) ? ((n * g.H + yy) * g.W + xx) * g.K : -1;
      }
    }
    for (int64_t c = 0; c < g.K; c += 8) {
      v8 s[6][4];
      for (int b = 0; b < 6; ++b) {
        v8 m[6];
        for (int a = 0; a < 6; ++a) m[a] = load8(in + (a * 6 + b) * g.K + c);
        output_transform_6(m, s[b]);  // s[b][i]: output row i, column position b
      }
      const v8 bias_c = bias ? load8(bias + c) : splat(0.f);
      const v8 scale_c = output_scale ? load8(output_scale + n * g.K + c) : splat(1.f);
      for (int i = 0; i < 4; ++i) {
        v8 m[6], o[4];
        for (int b = 0; b < 6; ++b) m[b] = s[b][i];
        output_transform_6(m, o);
        for (int j = 0; j < 4; ++j) {
          if (offset[i][j] < 0) continue;
          v8 value = o[j] * scale_c + bias_c;
          if (residual) value += load8(residual + offset[i][j] + c);
          store8(y + offset[i][j] + c, value);
        }
      }
    }
  }
}

// Outputs and scratch come from a pool of reused buffers. A fresh large buffer costs a page fault
// per 4 KiB the first time it is written (the kernel zeroes each page): ~20 ms for a 64 MiB
// activation, 40 % of a Winograd pass over it (benchmarks/cpu_kernels.py). The pool keeps buffers of released tensors
// (their storage's deleter hands them back) for the next tensor of the same size: a network's layers
// repeat their shapes from face to face, so after the first face nothing is faulted in again.
// The pool is local to these kernels; PyTorch's own allocations are untouched.
class BufferPool {
 public:
  static constexpr size_t kMaxIdleBytes = size_t(2) << 30;  // idle buffers beyond this are freed

  void* take(size_t bytes) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      auto it = idle_.find(bytes);
      if (it != idle_.end() && !it->second.empty()) {
        void* p = it->second.back();
        it->second.pop_back();
        idle_bytes_ -= bytes;
        return p;
      }
    }
    void* p = std::aligned_alloc(64, (bytes + 63) / 64 * 64);
    TORCH_CHECK(p != nullptr, "out of memory allocating ", bytes, " bytes");
    return p;
  }

  void give_back(void* p, size_t bytes) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (idle_bytes_ + bytes <= kMaxIdleBytes) {
        idle_[bytes].push_back(p);
        idle_bytes_ += bytes;
        return;
      }
    }
    std::free(p);
  }

  size_t idle_bytes() {
    std::lock_guard<std::mutex> lock(mutex_);
    return idle_bytes_;
  }

  void release() {
    std::lock_guard<std::mutex> lock(mutex_);
    for (auto& entry : idle_) {
      for (void* p : entry.second) std::free(p);
    }
    idle_.clear();
    idle_bytes_ = 0;
  }

 private:
  std::mutex mutex_;
  std::unordered_map<size_t, std::vector<void*>> idle_;
  size_t idle_bytes_ = 0;
};

BufferPool& pool() {
  static BufferPool* instance = new BufferPool();  // never destroyed: tensors may outlive static teardown
  return *instance;
}

torch::Tensor pooled_empty(at::IntArrayRef sizes) {
  int64_t count = 1;
  for (int64_t s : sizes) count *= s;
  const size_t bytes = std::max<size_t>(1, size_t(count) * sizeof(float));
  void* p = pool().take(bytes);
  return torch::from_blob(
      p, sizes, [bytes](void* q) { pool().give_back(q, bytes); }, torch::TensorOptions().dtype(torch::kFloat32));
}

void check_nhwc(const torch::Tensor& t, const char* name) {
  TORCH_CHECK(t.device().is_cpu() && t.scalar_type() == torch::kFloat32, name, " must be a float32 CPU tensor");
  TORCH_CHECK(t.dim() == 4 && t.is_contiguous(), name, " must be a contiguous (N, H, W, C) tensor");
  TORCH_CHECK(t.size(3) % 8 == 0, name, ": channels must be a multiple of 8, got ", t.size(3));
}

}  // namespace

// x (N, H, W, C), filter (36, C, K) from winograd_filter() -> (N, H, W, K): the convolution of
// x [* input_scale (N, C)], [* output_scale (N, K)], [+ bias (K)], [+ residual (N, H, W, K)].
// Tiles are processed in chunks of `chunk` per thread: the transformed chunk and its products stay in
// cache, and each chunk's 36 matrix products run on that thread alone.
static torch::Tensor winograd(const torch::Tensor& x, const torch::Tensor& filter, const c10::optional<torch::Tensor>& bias,
                       const c10::optional<torch::Tensor>& residual, const c10::optional<torch::Tensor>& input_scale,
                       const c10::optional<torch::Tensor>& output_scale, int64_t chunk) {
  check_nhwc(x, "x");
  TORCH_CHECK(filter.dim() == 3 && filter.size(0) == 36 && filter.size(1) == x.size(3) && filter.is_contiguous() &&
                  filter.scalar_type() == torch::kFloat32,
              "filter must be a contiguous float32 (36, C, K) tensor with C = ", x.size(3));
  const int64_t N = x.size(0), K = filter.size(2);
  TORCH_CHECK(K % 8 == 0, "output channels must be a multiple of 8, got ", K);
  Geometry g{x.size(1), x.size(2), x.size(3), K, (x.size(1) + 3) / 4, (x.size(2) + 3) / 4};
  const float* bias_ptr = nullptr;
  if (bias.has_value()) {
    TORCH_CHECK(bias->is_contiguous() && bias->numel() == K && bias->scalar_type() == torch::kFloat32,
                "bias must be a contiguous float32 tensor of ", K, " values");
    bias_ptr = bias->data_ptr<float>();
  }
  const float* residual_ptr = nullptr;
  if (residual.has_value()) {
    check_nhwc(*residual, "residual");
    TORCH_CHECK(residual->sizes() == torch::IntArrayRef({N, g.H, g.W, K}), "residual must be (N, H, W, K)");
    residual_ptr = residual->data_ptr<float>();
  }
  auto per_sample = [&](const c10::optional<torch::Tensor>& t, int64_t channels, const char* name) -> const float* {
    if (!t.has_value()) return nullptr;
    TORCH_CHECK(t->is_contiguous() && t->scalar_type() == torch::kFloat32 &&
                    t->sizes() == torch::IntArrayRef({N, channels}),
                name, " must be a contiguous float32 (N, ", channels, ") tensor");
    return t->data_ptr<float>();
  };
  const float* input_scale_ptr = per_sample(input_scale, g.C, "input_scale");
  const float* output_scale_ptr = per_sample(output_scale, K, "output_scale");
  TORCH_CHECK(chunk >= 1, "chunk must be >= 1");
  const int64_t tiles = N * g.tiles_h * g.tiles_w;
  auto y = pooled_empty({N, g.H, g.W, K});
  if (tiles == 0) return y;  // an empty batch or image
  chunk = std::min(chunk, tiles);
  auto zeros = torch::zeros({g.C}, x.options());
  const int threads = at::get_num_threads();
  std::vector<torch::Tensor> v_scratch(threads), m_scratch(threads);
  for (int i = 0; i < threads; ++i) {
    v_scratch[i] = pooled_empty({chunk, 36, g.C});
    m_scratch[i] = pooled_empty({chunk, 36, K});
  }
  const float* x_ptr = x.data_ptr<float>();
  float* y_ptr = y.data_ptr<float>();
  const int64_t chunks = (tiles + chunk - 1) / chunk;
  at::parallel_for(0, chunks, 1, [&](int64_t begin, int64_t end) {
    // worker threads do not inherit the caller's inference mode; without it, writing into the
    // scratch tensors (inference tensors when the caller is in inference mode) is refused
    c10::InferenceMode inference_mode;
    const int tid = at::get_thread_num();
    for (int64_t index = begin; index < end; ++index) {
      const int64_t first = index * chunk, count = std::min(chunk, tiles - first);
      auto V = v_scratch[tid].narrow(0, 0, count);
      auto M = m_scratch[tid].narrow(0, 0, count);
      transform_input_tiles(x_ptr, g, first, count, zeros.data_ptr<float>(), input_scale_ptr, V.data_ptr<float>());
      // (36, count, C) @ (36, C, K): strided views of the tile-major buffers, no copies
      auto product = M.transpose(0, 1);
      at::bmm_out(product, V.transpose(0, 1), filter);
      TORCH_CHECK(product.data_ptr() == M.data_ptr(), "bmm_out did not write in place");
      transform_output_tiles(M.data_ptr<float>(), g, first, count, output_scale_ptr, bias_ptr, residual_ptr, y_ptr);
    }
  });
  return y;
}

torch::Tensor winograd_conv3x3(torch::Tensor x, torch::Tensor filter, c10::optional<torch::Tensor> bias,
                               c10::optional<torch::Tensor> residual, int64_t chunk) {
  return winograd(x, filter, bias, residual, c10::nullopt, c10::nullopt, chunk);
}

// The StyleGAN2 modulated convolution as the network computes it: conv(x * input_scale) * output_scale
// with per-sample (N, C) and (N, K) scales (the style and the demodulation), no bias.
torch::Tensor winograd_conv3x3_modulated(torch::Tensor x, torch::Tensor filter, torch::Tensor input_scale,
                                         c10::optional<torch::Tensor> output_scale, int64_t chunk) {
  return winograd(x, filter, c10::nullopt, c10::nullopt, input_scale, output_scale, chunk);
}

// GroupNorm of x (N, H, W, C) with affine gamma/beta (C), then SiLU when `silu`; returns a new tensor.
// Statistics are accumulated in double per channel, then per group.
torch::Tensor group_norm(torch::Tensor x, int64_t groups, torch::Tensor gamma, torch::Tensor beta, double eps,
                         bool silu) {
  check_nhwc(x, "x");
  const int64_t N = x.size(0), pixels = x.size(1) * x.size(2), C = x.size(3);
  TORCH_CHECK(groups >= 1 && C % groups == 0, "channels (", C, ") must be divisible by groups (", groups, ")");
  TORCH_CHECK(gamma.numel() == C && beta.numel() == C && gamma.is_contiguous() && beta.is_contiguous() &&
                  gamma.scalar_type() == torch::kFloat32 && beta.scalar_type() == torch::kFloat32,
              "gamma and beta must be contiguous float32 tensors of ", C, " values");
  const float* x_ptr = x.data_ptr<float>();
  const int64_t block = 256;  // pixels summed in float before joining the double totals
  const int64_t blocks = (pixels + block - 1) / block;
  std::vector<double> sums(N * blocks * 2 * C);
  at::parallel_for(0, N * blocks, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> s(C), q(C);
    for (int64_t index = begin; index < end; ++index) {
      const int64_t n = index / blocks, p0 = (index % blocks) * block, p1 = std::min(pixels, p0 + block);
      std::fill(s.begin(), s.end(), 0.f);
      std::fill(q.begin(), q.end(), 0.f);
      for (int64_t p = p0; p < p1; ++p) {
        const float* row = x_ptr + (n * pixels + p) * C;
        for (int64_t c = 0; c < C; c += 8) {
          v8 v = load8(row + c);
          store8(s.data() + c, load8(s.data() + c) + v);
          store8(q.data() + c, load8(q.data() + c) + v * v);
        }
      }
      double* out = sums.data() + index * 2 * C;
      for (int64_t c = 0; c < C; ++c) {
        out[c] = s[c];
        out[C + c] = q[c];
      }
    }
  });
  const int64_t per_group = C / groups;
  const double count = static_cast<double>(pixels * per_group);
  auto scale = torch::empty({N, C}, x.options());
  auto shift = torch::empty({N, C}, x.options());
  float* scale_out = scale.data_ptr<float>();
  float* shift_out = shift.data_ptr<float>();
  const float* gamma_ptr = gamma.data_ptr<float>();
  const float* beta_ptr = beta.data_ptr<float>();
  for (int64_t n = 0; n < N; ++n) {
    for (int64_t g = 0; g < groups; ++g) {
      double total = 0, total_sq = 0;
      for (int64_t b = 0; b < blocks; ++b) {
        const double* part = sums.data() + (n * blocks + b) * 2 * C;
        for (int64_t c = g * per_group; c < (g + 1) * per_group; ++c) {
          total += part[c];
          total_sq += part[C + c];
        }
      }
      const double mean = total / count;
      const double var = std::max(total_sq / count - mean * mean, 0.0);
      const double rstd = 1.0 / std::sqrt(var + eps);
      for (int64_t c = g * per_group; c < (g + 1) * per_group; ++c) {
        const double a = gamma_ptr[c] * rstd;
        scale_out[n * C + c] = static_cast<float>(a);
        shift_out[n * C + c] = static_cast<float>(beta_ptr[c] - mean * a);
      }
    }
  }
  auto y = pooled_empty(x.sizes());
  float* y_ptr = y.data_ptr<float>();
  const float* scale_ptr = scale.data_ptr<float>();
  const float* shift_ptr = shift.data_ptr<float>();
  at::parallel_for(0, N * pixels, 1024, [&](int64_t begin, int64_t end) {
    for (int64_t p = begin; p < end; ++p) {
      const int64_t n = p / pixels;
      const float* a = scale_ptr + n * C;
      const float* b = shift_ptr + n * C;
      for (int64_t c = 0; c < C; c += 8) {
        v8 v = load8(x_ptr + p * C + c) * load8(a + c) + load8(b + c);
        store8(y_ptr + p * C + c, silu ? silu8(v) : v);
      }
    }
  });
  return y;
}

// SiLU of any float32 tensor whose size is a multiple of 8 (the same exp as group_norm uses).
torch::Tensor silu(torch::Tensor x) {
  TORCH_CHECK(x.device().is_cpu() && x.scalar_type() == torch::kFloat32 && x.is_contiguous() && x.numel() % 8 == 0,
              "x must be a contiguous float32 CPU tensor with a multiple of 8 values");
  auto y = torch::empty_like(x);
  const float* x_ptr = x.data_ptr<float>();
  float* y_ptr = y.data_ptr<float>();
  at::parallel_for(0, x.numel() / 8, 4096, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) store8(y_ptr + 8 * i, silu8(load8(x_ptr + 8 * i)));
  });
  return y;
}

// The number of threads at::parallel_for used in this build (it is 1 when OpenMP was not enabled).
int64_t parallel_threads() {
  std::vector<int> seen(at::get_num_threads(), 0);
  at::parallel_for(0, 1024, 1, [&](int64_t, int64_t) { seen[at::get_thread_num()] = 1; });
  return std::count(seen.begin(), seen.end(), 1);
}

// Bytes held by idle pooled buffers, and a way to free them (e.g. after a batch job).
int64_t pool_idle_bytes() { return static_cast<int64_t>(pool().idle_bytes()); }
void pool_release() { pool().release(); }

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("winograd_conv3x3", &winograd_conv3x3, "Winograd F(4x4,3x3) convolution of NHWC float32");
  m.def("winograd_conv3x3_modulated", &winograd_conv3x3_modulated,
        "Winograd F(4x4,3x3) convolution with per-sample input and output channel scales");
  m.def("group_norm", &group_norm, "GroupNorm (+ SiLU) of NHWC float32");
  m.def("silu", &silu, "SiLU of float32");
  m.def("parallel_threads", &parallel_threads, "threads at::parallel_for runs on");
  m.def("pool_idle_bytes", &pool_idle_bytes, "bytes held by idle pooled buffers");
  m.def("pool_release", &pool_release, "free the idle pooled buffers");
}
