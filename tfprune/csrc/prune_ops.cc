// tfprune's compiled kernels: a gradual mask update done where the weights live, and a masked
// optimizer update.
//
// TfprunePruneSmallest(kernels, masks, sparsities, pruned_targets, sparsity): for every layer i, prunes
// the smallest-magnitude kept weights of float kernel i until pruned_targets[i] weights are pruned, writing
// zeros into the kernel and the mask in place, and `sparsity` into the layer's target-sparsity variable.
// Exactly `criteria.newly_pruned` (ties go in index order), with its outputs per layer: how many it pruned
// (-1 when the mask already prunes more than the target: that layer is left untouched), how many
// non-zero weights the kernel keeps, and how many of its weights are NaN or inf (counted in the same pass;
// when any layer has one, no layer is touched and the caller reports them). One call for all layers: right
// after a train step TensorFlow's worker threads still spin, and every separate op dispatch pays for it.
// TfpruneMaskedUpdate(kernel, mask, delta, subtract): kernel = (kernel +/- delta) where mask != 0, else 0,
// in one pass. An optimizer's assign_add / assign_sub on a pruned kernel runs it (kernel_mask.py), so the
// kernel comes out of every step already masked, and the mask constraint's own pass (another read of kernel
// and mask and a write) is left out of the step.
// Variables are locked and made exclusive (copied first if a read still holds the buffer) as TensorFlow's
// own optimizer kernels do, so a tensor read earlier never changes under its reader.
#define EIGEN_USE_THREADS
#include <algorithm>
#include <cfloat>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <vector>
#ifdef __SSE__
#include <immintrin.h>
#endif

#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/resource_mgr.h"
#include "tensorflow/core/framework/resource_var.h"
#include "tensorflow/core/framework/shape_inference.h"
#include "tensorflow/core/kernels/training_op_helpers.h"
#include "tensorflow/core/util/work_sharder.h"

namespace tensorflow {
namespace {

using CPUDevice = Eigen::ThreadPoolDevice;

REGISTER_OP("TfprunePruneSmallest")
    .Input("kernels: N * resource")
    .Input("masks: N * resource")
    .Input("sparsities: N * resource")
    .Input("pruned_targets: int64")
    .Input("sparsity: float")
    .Output("added: int64")
    .Output("nonzero: int64")
    .Output("nonfinite: int64")
    .Attr("N: int >= 1")
    .SetIsStateful()
    .SetShapeFn([](shape_inference::InferenceContext* c) {
      int n;
      TF_RETURN_IF_ERROR(c->GetAttr("N", &n));
      c->set_output(0, c->Vector(n));
      c->set_output(1, c->Vector(n));
      c->set_output(2, c->Vector(n));
      return absl::OkStatus();
    });

// The stride of criteria._bracket: no odd prime factor below 1009, so a sample meets every column.
int64_t SampleStride(int64_t n) {
  int64_t stride = std::max<int64_t>(1, n / 16384) | 1;
  auto has_small_factor = [](int64_t s) {
    for (int64_t p = 3; p < std::min<int64_t>(s, 1009); p += 2)
      if (s % p == 0) return true;
    return false;
  };
  while (stride > 1 && has_small_factor(stride)) stride += 2;
  return stride;
}

// An upper bound that likely holds the target-th smallest magnitude: criteria._bracket's high end, but
// 3 standard errors above the sample's quantile, not 5 (fewer candidates to select from; a miss, ~0.1 %
// of calls, costs one more pass).
float BracketTop(const float* k, int64_t n, int64_t target) {
  const int64_t stride = SampleStride(n);
  if (stride == 1 || target <= 0) return INFINITY;  // small kernels: every kept weight is a candidate
  std::vector<float> sample;
  sample.reserve(n / stride + 1);
  for (int64_t i = target % stride; i < n; i += stride) sample.push_back(std::fabs(k[i]));
  const double share = static_cast<double>(target) / n;
  const double margin = 3 * std::sqrt(share * (1 - share) / sample.size()) + 1e-4;
  const int64_t top = static_cast<int64_t>(std::ceil(std::min(1.0, share + margin) * (sample.size() - 1)));
  std::nth_element(sample.begin(), sample.begin() + top, sample.end());
  return sample[top];
}

constexpr int64_t kChunk = 1 << 16;  // a pass's unit of work; offsets within one fit in int32

#ifdef __x86_64__
bool UseAvx512() {  // TFPRUNE_NO_AVX512 lets the tests run the portable paths on this CPU too
  static const bool avx512 = __builtin_cpu_supports("avx512f") && !std::getenv("TFPRUNE_NO_AVX512");
  return avx512;
}
#endif

// Kept weights at or below a bracket's top: flat index and magnitude (read once, in the streaming pass;
// reading them again by index afterwards missed the cache and doubled the selection's time).
struct Candidates {
  std::vector<int64_t> index;
  std::vector<float> magnitude;
  void append(const Candidates& other) {
    index.insert(index.end(), other.index.begin(), other.index.end());
    magnitude.insert(magnitude.end(), other.magnitude.begin(), other.magnitude.end());
  }
};

// Counts the kept weights in [begin, end) and appends those with |w| <= top. Candidates are a few per
// cent of a kernel, scattered, so a branch per weight mispredicts (3 ns a weight here): four weights per
// compare and a branch only where one hits (1.1 ns), or with AVX-512 sixteen and no branch at all, the
// hits compressed into place (0.5 ns).
int64_t KeptAndCandidatesPortable(const float* __restrict__ k, const float* __restrict__ m, int64_t begin,
                                  int64_t end, float top, Candidates* found, int64_t* nonfinite) {
  int64_t kept = 0, i = begin;
#ifdef __SSE__
  const __m128 zero = _mm_setzero_ps(), top4 = _mm_set1_ps(top), largest4 = _mm_set1_ps(FLT_MAX);
  const __m128 magnitude = _mm_castsi128_ps(_mm_set1_epi32(0x7fffffff));
  for (; i + 4 <= end; i += 4) {
    const int is_kept = _mm_movemask_ps(_mm_cmpneq_ps(_mm_loadu_ps(m + i), zero));
    const __m128 absolute = _mm_and_ps(_mm_loadu_ps(k + i), magnitude);
    int hit = is_kept & _mm_movemask_ps(_mm_cmple_ps(absolute, top4));
    *nonfinite += __builtin_popcount(_mm_movemask_ps(_mm_cmpnle_ps(absolute, largest4)));  // inf and NaN
    kept += __builtin_popcount(is_kept);
    for (; hit; hit &= hit - 1) {
      const int64_t at = i + __builtin_ctz(hit);
      found->index.push_back(at);
      found->magnitude.push_back(std::fabs(k[at]));
    }
  }
#endif
  for (; i < end; ++i) {
    const bool is_kept = m[i] != 0.0f;
    kept += is_kept;
    *nonfinite += !(std::fabs(k[i]) <= FLT_MAX);
    if (is_kept && std::fabs(k[i]) <= top) {
      found->index.push_back(i);
      found->magnitude.push_back(std::fabs(k[i]));
    }
  }
  return kept;
}

#ifdef __x86_64__
__attribute__((target("avx512f")))
int64_t KeptAndCandidatesAvx512(const float* k, const float* m, int64_t begin, int64_t end, float top,
                                Candidates* found, int64_t* nonfinite) {
  const int64_t length = end - begin + 16;
  std::unique_ptr<int32_t[]> offsets(new int32_t[length]);  // uninitialised: only the hits are written
  std::unique_ptr<float[]> magnitudes(new float[length]);
  int64_t kept = 0, count = 0, i = begin;
  const __m512 top16 = _mm512_set1_ps(top), largest16 = _mm512_set1_ps(FLT_MAX);
  const __m512i sixteen = _mm512_set1_epi32(16);
  __m512i offset = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  for (; i + 16 <= end; i += 16) {
    const __mmask16 is_kept = _mm512_cmp_ps_mask(_mm512_loadu_ps(m + i), _mm512_setzero_ps(), _CMP_NEQ_UQ);
    const __m512 magnitude = _mm512_abs_ps(_mm512_loadu_ps(k + i));
    const __mmask16 hit = _mm512_mask_cmp_ps_mask(is_kept, magnitude, top16, _CMP_LE_OQ);
    *nonfinite += __builtin_popcount(_mm512_cmp_ps_mask(magnitude, largest16, _CMP_NLE_UQ));  // inf and NaN
    kept += __builtin_popcount(is_kept);
    _mm512_mask_compressstoreu_epi32(offsets.get() + count, hit, offset);
    _mm512_mask_compressstoreu_ps(magnitudes.get() + count, hit, magnitude);
    count += __builtin_popcount(hit);
    offset = _mm512_add_epi32(offset, sixteen);
  }
  found->index.reserve(found->index.size() + count + 16);
  for (int64_t j = 0; j < count; ++j) found->index.push_back(begin + offsets[j]);
  found->magnitude.insert(found->magnitude.end(), magnitudes.get(), magnitudes.get() + count);
  return kept + KeptAndCandidatesPortable(k, m, i, end, top, found, nonfinite);
}
#endif

int64_t KeptAndCandidates(const float* k, const float* m, int64_t begin, int64_t end, float top,
                          Candidates* found, int64_t* nonfinite) {
#ifdef __x86_64__
  if (UseAvx512()) return KeptAndCandidatesAvx512(k, m, begin, end, top, found, nonfinite);
#endif
  return KeptAndCandidatesPortable(k, m, begin, end, top, found, nonfinite);
}

struct Layer {
  float* kernel;
  float* mask;
  int64_t size, target, kept = 0, added = -1, nonzero = -1, nonfinite_count = 0;
  float top = INFINITY;
  bool nonfinite = false;
  Candidates candidates;
};

// Prunes the `needed` smallest candidates (ties in index order) in place; returns the non-zero weights left.
int64_t PruneCandidates(Layer* layer, int64_t needed) {
  const std::vector<int64_t>& index = layer->candidates.index;
  const std::vector<float>& values = layer->candidates.magnitude;
  float threshold = -1.0f;
  if (needed > 0) {
    std::vector<float> order(values);
    std::nth_element(order.begin(), order.begin() + (needed - 1), order.end());
    threshold = order[needed - 1];
  }
  int64_t ties = needed;
  for (float v : values) ties -= v < threshold;
  int64_t kept_zeros = 0;  // every kept zero is a candidate (|0| <= any top)
  for (size_t j = 0; j < index.size(); ++j) {
    bool prune = values[j] < threshold;
    if (!prune && values[j] == threshold && ties > 0) prune = true, --ties;
    if (prune) {
      layer->kernel[index[j]] = 0.0f;
      layer->mask[index[j]] = 0.0f;
    } else {
      kept_zeros += values[j] == 0.0f;
    }
  }
  return layer->kept - needed - kept_zeros;
}

class PruneSmallestOp : public OpKernel {
 public:
  explicit PruneSmallestOp(OpKernelConstruction* c) : OpKernel(c) { OP_REQUIRES_OK(c, c->GetAttr("N", &n_)); }

  void Compute(OpKernelContext* ctx) override {
    std::vector<int> variables(3 * n_);
    for (int i = 0; i < 3 * n_; ++i) variables[i] = i;
    auto locks = MaybeLockVariableInputMutexesInOrder<CPUDevice, float>(ctx, true, false, variables);
    const Tensor& targets = ctx->input(3 * n_);
    OP_REQUIRES(ctx, targets.NumElements() == n_,
                errors::InvalidArgument("pruned_targets has ", targets.NumElements(), " values for ", n_, " layers"));
    const float sparsity = ctx->input(3 * n_ + 1).scalar<float>()();
    std::vector<Tensor> tensors(3 * n_);
    for (int i = 0; i < 3 * n_; ++i) {
      OP_REQUIRES_OK(ctx, GetInputTensorFromVariable<CPUDevice, float>(ctx, i, true, false, &tensors[i]));
      OP_REQUIRES(ctx, tensors[i].dtype() == DT_FLOAT, errors::InvalidArgument("variable ", i, " is not float32"));
    }
    std::vector<Layer> layers(n_);
    for (int i = 0; i < n_; ++i) {
      const Tensor &kernel = tensors[i], &mask = tensors[n_ + i];
      OP_REQUIRES(ctx, kernel.shape() == mask.shape(),
                  errors::InvalidArgument("kernel ", kernel.shape().DebugString(), " and mask ",
                                          mask.shape().DebugString(), " differ in shape"));
      OP_REQUIRES(ctx, tensors[2 * n_ + i].NumElements() == 1,
                  errors::InvalidArgument("sparsity variable ", i, " is not a scalar"));
      Layer& layer = layers[i];
      layer.kernel = const_cast<float*>(kernel.flat<float>().data());
      layer.mask = const_cast<float*>(mask.flat<float>().data());
      layer.size = kernel.NumElements();
      layer.target = targets.flat<int64_t>()(i);
      OP_REQUIRES(ctx, layer.target >= 0 && layer.target < std::max<int64_t>(layer.size, 1),
                  errors::InvalidArgument("pruned_targets[", i, "] = ", layer.target, " outside [0, ", layer.size, ")"));
    }
    auto* pool = ctx->device()->tensorflow_cpu_worker_threads();
    auto parallel = [&](int64_t units, int64_t cost, const std::function<void(int64_t)>& work) {
      Shard(pool->num_threads, pool->workers, units, cost, [&](int64_t first, int64_t last) {
        for (int64_t unit = first; unit < last; ++unit) work(unit);
      });
    };
    parallel(n_, 1 << 20, [&](int64_t i) { layers[i].top = BracketTop(layers[i].kernel, layers[i].size, layers[i].target); });

    // One pass over every kernel and mask, in chunks that both cores share; chunk order keeps index order.
    struct Chunk { int layer; int64_t begin, end, kept = 0, nonfinite = 0; Candidates candidates; };
    std::vector<Chunk> chunks;
    for (int i = 0; i < n_; ++i)
      for (int64_t begin = 0; begin < layers[i].size; begin += kChunk)
        chunks.push_back({i, begin, std::min(layers[i].size, begin + kChunk)});
    parallel(chunks.size(), kChunk * 2, [&](int64_t c) {
      Chunk& chunk = chunks[c];
      const Layer& layer = layers[chunk.layer];
      chunk.kept = KeptAndCandidates(layer.kernel, layer.mask, chunk.begin, chunk.end, layer.top, &chunk.candidates,
                                     &chunk.nonfinite);
    });
    bool any_nonfinite = false;
    for (Chunk& chunk : chunks) {
      Layer& layer = layers[chunk.layer];
      layer.kept += chunk.kept;
      layer.nonfinite_count += chunk.nonfinite;
      any_nonfinite |= chunk.nonfinite > 0;
      layer.candidates.append(chunk.candidates);
    }

    // Weights that are NaN or inf rank nothing: no layer is touched, and the caller names them.
    if (!any_nonfinite) parallel(n_, 1 << 20, [&](int64_t i) {
      Layer& layer = layers[i];
      const int64_t needed = layer.target - (layer.size - layer.kept);
      if (needed < 0) return;  // the mask prunes more than asked: the caller recomputes this layer
      if (static_cast<int64_t>(layer.candidates.index.size()) < needed) {  // the sample misled: all kept weights
        layer.candidates = Candidates();
        int64_t ignored = 0;
        for (int64_t begin = 0; begin < layer.size; begin += kChunk)
          KeptAndCandidates(layer.kernel, layer.mask, begin, std::min(layer.size, begin + kChunk), INFINITY,
                            &layer.candidates, &ignored);
      }
      if (static_cast<int64_t>(layer.candidates.index.size()) < needed) {  // NaN weights are never candidates
        layer.nonfinite = true;
        return;
      }
      layer.nonzero = PruneCandidates(&layer, needed);
      layer.added = needed;
      tensors[2 * n_ + i].flat<float>()(0) = sparsity;
    });

    for (int i = 0; i < n_; ++i)  // nothing of that layer was written: the caller's fallback ranks NaN last
      OP_REQUIRES(ctx, !layers[i].nonfinite,
                  errors::InvalidArgument("kernel ", i, " holds NaN weights: fewer comparable kept weights than ",
                                          "the target prunes"));
    Tensor *added = nullptr, *nonzero = nullptr, *nonfinite = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, TensorShape({n_}), &added));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, TensorShape({n_}), &nonzero));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(2, TensorShape({n_}), &nonfinite));
    for (int i = 0; i < n_; ++i) {
      added->flat<int64_t>()(i) = layers[i].added;
      nonzero->flat<int64_t>()(i) = layers[i].nonzero;
      nonfinite->flat<int64_t>()(i) = layers[i].nonfinite_count;
    }
  }

 private:
  int n_;
};

REGISTER_KERNEL_BUILDER(Name("TfprunePruneSmallest").Device(DEVICE_CPU), PruneSmallestOp);

REGISTER_OP("TfpruneMaskedUpdate")
    .Input("kernel: resource")
    .Input("mask: resource")
    .Input("delta: float")
    .Attr("subtract: bool")
    .SetIsStateful()
    .SetShapeFn(shape_inference::NoOutputs);

// Where the mask is 0 the result's bits are and-ed away: exactly +0, whatever kernel + delta was (inf, NaN).
template <bool Subtract>
void MaskedUpdatePortable(float* __restrict__ k, const float* __restrict__ m, const float* __restrict__ d,
                          int64_t begin, int64_t end) {
  for (int64_t i = begin; i < end; ++i) {
    const float updated = Subtract ? k[i] - d[i] : k[i] + d[i];
    uint32_t bits;
    std::memcpy(&bits, &updated, sizeof bits);
    bits &= -static_cast<uint32_t>(m[i] != 0.0f);
    std::memcpy(k + i, &bits, sizeof bits);
  }
}

#ifdef __x86_64__
template <bool Subtract>
__attribute__((target("avx512f")))
void MaskedUpdateAvx512(float* k, const float* m, const float* d, int64_t begin, int64_t end) {
  int64_t i = begin;
  for (; i + 16 <= end; i += 16) {
    const __mmask16 kept = _mm512_cmp_ps_mask(_mm512_loadu_ps(m + i), _mm512_setzero_ps(), _CMP_NEQ_UQ);
    const __m512 kernel = _mm512_loadu_ps(k + i), delta = _mm512_loadu_ps(d + i);
    _mm512_storeu_ps(k + i, _mm512_maskz_mov_ps(kept, Subtract ? _mm512_sub_ps(kernel, delta)
                                                               : _mm512_add_ps(kernel, delta)));
  }
  MaskedUpdatePortable<Subtract>(k, m, d, i, end);
}
#endif

template <bool Subtract>
void MaskedUpdate(float* k, const float* m, const float* d, int64_t begin, int64_t end) {
#ifdef __x86_64__
  if (UseAvx512()) return MaskedUpdateAvx512<Subtract>(k, m, d, begin, end);
#endif
  MaskedUpdatePortable<Subtract>(k, m, d, begin, end);
}

class MaskedUpdateOp : public OpKernel {
 public:
  explicit MaskedUpdateOp(OpKernelConstruction* c) : OpKernel(c) {
    OP_REQUIRES_OK(c, c->GetAttr("subtract", &subtract_));
  }

  void Compute(OpKernelContext* ctx) override {
    auto locks = MaybeLockVariableInputMutexesInOrder<CPUDevice, float>(ctx, true, false, {0, 1});
    Tensor kernel;
    OP_REQUIRES_OK(ctx, GetInputTensorFromVariable<CPUDevice, float>(ctx, 0, true, false, &kernel));
    core::RefCountPtr<Var> mask_variable;  // only read: no copy-on-write
    OP_REQUIRES_OK(ctx, LookupResource(ctx, HandleFromInput(ctx, 1), &mask_variable));
    const Tensor mask = *mask_variable->tensor();
    const Tensor& delta = ctx->input(2);
    OP_REQUIRES(ctx, kernel.dtype() == DT_FLOAT && mask.dtype() == DT_FLOAT,
                errors::InvalidArgument("kernel and mask must be float32"));
    OP_REQUIRES(ctx, kernel.shape() == mask.shape() && kernel.shape() == delta.shape(),
                errors::InvalidArgument("kernel ", kernel.shape().DebugString(), ", mask ", mask.shape().DebugString(),
                                        " and delta ", delta.shape().DebugString(), " differ in shape"));
    float* k = kernel.flat<float>().data();
    const float* m = mask.flat<float>().data();
    const float* d = delta.flat<float>().data();
    const int64_t size = kernel.NumElements(), chunks = (size + kChunk - 1) / kChunk;
    const bool subtract = subtract_;
    auto* pool = ctx->device()->tensorflow_cpu_worker_threads();
    Shard(pool->num_threads, pool->workers, chunks, kChunk * 2, [&](int64_t first, int64_t last) {
      const int64_t begin = first * kChunk, end = std::min(size, last * kChunk);
      subtract ? MaskedUpdate<true>(k, m, d, begin, end) : MaskedUpdate<false>(k, m, d, begin, end);
    });
  }

 private:
  bool subtract_;
};

REGISTER_KERNEL_BUILDER(Name("TfpruneMaskedUpdate").Device(DEVICE_CPU), MaskedUpdateOp);

}  // namespace
}  // namespace tensorflow
