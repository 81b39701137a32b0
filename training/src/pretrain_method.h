// What a pre-training method plugs into Pretrainer's loop (pretrain.cpp), which owns what every method
// shares: the run directory, run.json, checkpoints, resume and cancel, the loader threads, autocast, loss
// scaling, progress and throughput. A method owns its networks, its epoch plan, what a step reads from the
// image cache (on loader threads) and what it computes on the device. Internal to the training library.
#pragma once

#include <ATen/autocast_mode.h>
#include <torch/nn/module.h>
#include <torch/version.h>

#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <random>
#include <vector>

#include "comcl/storage/image_cache.h"
#include "comcl/training/comcl_views.h"
#include "comcl/training/dataset.h"
#include "comcl/training/pretrain.h"
#include "comcl/training/resnet.h"

namespace comcl::training::detail {

// An independent generator for each (seed, epoch, step, purpose): what a step draws never depends on how
// many draws earlier steps made, so resuming mid-run reproduces the uninterrupted run.
std::mt19937_64 streamFor(std::uint64_t seed, std::int64_t epoch, std::int64_t step, std::uint32_t purpose);
enum Purpose : std::uint32_t { kEpochPlan = 1, kQueryView = 2, kKeyView = 3, kModel = 4, kComclViews = 5 };

// Autocast for CUDA in the scope of one forward pass. LibTorch 2.4 renamed the calls (device-type argument).
class CudaAutocast {
 public:
  CudaAutocast(bool enabled, at::ScalarType dtype) : enabled_(enabled) {
    if (!enabled_)
      return;
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 4)
    at::autocast::set_autocast_dtype(at::kCUDA, dtype);
    at::autocast::set_autocast_enabled(at::kCUDA, true);
#else
    at::autocast::set_autocast_gpu_dtype(dtype);
    at::autocast::set_enabled(true);
#endif
  }
  ~CudaAutocast() {
    if (!enabled_)
      return;
#if TORCH_VERSION_MAJOR > 2 || (TORCH_VERSION_MAJOR == 2 && TORCH_VERSION_MINOR >= 4)
    at::autocast::set_autocast_enabled(at::kCUDA, false);
#else
    at::autocast::set_enabled(false);
#endif
    at::autocast::clear_cache();
  }
  CudaAutocast(const CudaAutocast&) = delete;
  CudaAutocast& operator=(const CudaAutocast&) = delete;

 private:
  bool enabled_;
};

struct StepContext {
  torch::Device device = torch::kCPU;
  bool autocast = false;  // CUDA autocast round the networks' forward passes
  at::ScalarType autocastType = at::kHalf;
  std::uint64_t seed = 0;
  std::int64_t epoch = 0;  // 0-based
  std::int64_t step = 0;   // 0-based within the epoch
};

// One step's host data, read on a loader thread; its layout is the method's own.
struct HostBatch {
  std::vector<torch::Tensor> tensors;
};

class PretrainMethod {
 public:
  virtual ~PretrainMethod() = default;
  virtual torch::nn::Module& module() = 0;  // everything checkpointed (encoders, queues)
  virtual std::vector<torch::Tensor> trainableParameters() = 0;
  virtual ResNet& backbone() = 0;  // the query encoder's backbone: what pre-training produces
  virtual std::int64_t stepsPerEpoch() const = 0;
  virtual std::int64_t imagesPerStep() const = 0;  // the throughput unit
  // Main thread, before an epoch's loader starts; load() may then run on several threads at once.
  virtual void planEpoch(std::int64_t epoch) = 0;
  virtual HostBatch load(std::int64_t step, bool pin) const = 0;
  // The step's loss (differentiable); keeps what afterStep() needs.
  virtual torch::Tensor forward(const HostBatch& batch, const StepContext& context) = 0;
  // After the optimiser step: momentum update, queues.
  virtual void afterStep() = 0;
  // Seconds the last forward() spent making views (augmentation, degradation, patch extraction). Measured
  // with the clock round the calls, so on CUDA, whose kernels run asynchronously, it is launch time only.
  virtual double lastViewSeconds() const = 0;
  virtual nlohmann::json encoderDetails() const = 0;  // the method's part of the encoder file's details
};

std::unique_ptr<PretrainMethod> makeComclMethod(const TrainingSet& set, const storage::ImageCache& cache,
                                                const PretrainConfig& config, const ComclRoles& roles);

}  // namespace comcl::training::detail
