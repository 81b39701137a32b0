// CoMCL as a pre-training method (methods.md §2; docs/methods/comcl.md): the four patch views and the
// whole-image pair of comcl_views.h through a query and a momentum key encoder, the three InfoNCE terms of
// comcl_loss.h, and the healthy-only and image queues, checkpointed with the encoders.
#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>

#include <chrono>

#include "comcl/training/comcl_loss.h"
#include "comcl/training/comcl_views.h"
#include "comcl/training/moco.h"
#include "pretrain_method.h"

namespace comcl::training::detail {

namespace {

// The networks and queues of a run: everything its checkpoint holds besides the optimiser.
class ComclNetworkImpl : public torch::nn::Module {
 public:
  ComclNetworkImpl(const MocoConfig& encoder, std::int64_t healthyQueueSize, std::int64_t imageQueueSize)
      : healthy(healthyQueueSize, encoder.projectionDim), images(imageQueueSize, encoder.projectionDim) {
    query = register_module("encoder_q", ContrastiveEncoder(encoder.architecture, encoder.channels,
                                                            encoder.projectionDim, encoder.mlpHead));
    key = register_module("encoder_k", ContrastiveEncoder(encoder.architecture, encoder.channels,
                                                          encoder.projectionDim, encoder.mlpHead));
    copyToKeyEncoder(query, key);
    // The queues' tensors are registered as they are: to(), save and load then act on the rings too.
    for (const auto& [name, tensor] : healthy.buffers())
      register_buffer("healthy_queue_" + name, tensor);
    for (const auto& [name, tensor] : images.buffers())
      register_buffer("image_queue_" + name, tensor);
  }

  ContrastiveEncoder query{nullptr};
  ContrastiveEncoder key{nullptr};
  HealthyKeyQueue healthy;
  ImageKeyQueue images;
};
TORCH_MODULE(ComclNetwork);

class ComclMethod final : public PretrainMethod {
 public:
  ComclMethod(const TrainingSet& set, const storage::ImageCache& cache, const PretrainConfig& config,
              const ComclRoles& roles)
      : set_(set),
        cache_(cache),
        config_(config),
        roles_(roles),
        planner_(set, roles, config.comcl.views, config.batchSize),
        makeViews_(config.comcl.views, config.augment),
        loss_(config.comcl.loss),
        network_(config.moco, config.moco.queueSize, config.comcl.imageQueueSize) {}

  torch::nn::Module& module() override { return *network_; }
  std::vector<torch::Tensor> trainableParameters() override { return network_->query->parameters(); }
  ResNet& backbone() override { return network_->query->backbone(); }
  std::int64_t stepsPerEpoch() const override { return planner_.stepsPerEpoch(); }
  std::int64_t imagesPerStep() const override { return config_.batchSize; }  // lesion samples

  void planEpoch(std::int64_t epoch) override {
    std::mt19937_64 rng = streamFor(config_.seed, epoch, 0, kEpochPlan);
    plan_ = planner_.planEpoch(rng);
  }

  HostBatch load(std::int64_t step, bool pin) const override {
    ComclStepImages images = loadComclStep(set_, cache_, roles_, plan_[static_cast<std::size_t>(step)], pin,
                                           config_.moco.channels);
    return {{images.lesionImages, images.lesionBoxes, images.healthyImages, images.lowQualityImages,
             images.lowQualityIsReal}};
  }

  torch::Tensor forward(const HostBatch& batch, const StepContext& c) override {
    const std::vector<torch::Tensor>& t = batch.tensors;
    const ComclStepImages images{t[0].to(c.device, true), t[1], t[2].to(c.device, true),
                                 t[3].to(c.device, true), t[4]};
    std::mt19937_64 rng = streamFor(c.seed, c.epoch, c.step, kComclViews);
    const auto viewsStart = std::chrono::steady_clock::now();
    const ComclViews views = makeViews_(images, rng);
    viewSeconds_ = std::chrono::duration<double>(std::chrono::steady_clock::now() - viewsStart).count();
    const ComclLossConfig& terms = loss_.config();
    const bool patches = terms.lesionTerm || terms.qualityTerm;  // both need the healthy queue

    // One pass of each encoder over every view it embeds; `take` hands the slices out in order.
    std::vector<torch::Tensor> queries, keys;
    if (terms.lesionTerm) {
      queries.push_back(views.lesion);
      keys.push_back(views.lesionSecond);
    }
    if (terms.qualityTerm) {
      queries.push_back(views.lowQualityLesion);
      keys.push_back(views.lesion);
    }
    if (terms.imageTerm) {
      queries.push_back(views.lowQualityImage);
      keys.push_back(views.image);
    }
    if (patches) {
      keys.push_back(views.healthy);
      keys.push_back(views.lowQualityHealthy);
    }
    torch::Tensor q, k;
    {
      CudaAutocast autocast(c.autocast, c.autocastType);
      q = network_->query->forward(normalise(torch::cat(queries)));
      torch::NoGradGuard noGrad;
      k = network_->key->forward(normalise(torch::cat(keys)));
    }
    q = q.to(torch::kFloat32);
    k = k.to(torch::kFloat32);
    std::int64_t qAt = 0, kAt = 0;
    const auto take = [](const torch::Tensor& from, std::int64_t& at, std::int64_t n) {
      torch::Tensor slice = from.narrow(0, at, n);
      at += n;
      return slice;
    };
    const std::int64_t b = views.lesion.size(0), h = views.healthy.size(0);
    ComclStepEmbeddings step;
    if (terms.lesionTerm) {
      step.lesionQuery = take(q, qAt, b);
      step.lesionKey = take(k, kAt, b);
    }
    if (terms.qualityTerm) {
      step.lowQualityLesionQuery = take(q, qAt, b);
      step.highQualityLesionKey = take(k, kAt, b);
    }
    if (terms.imageTerm) {
      step.lowQualityImageQuery = take(q, qAt, b);
      step.highQualityImageKey = take(k, kAt, b);
      pendingImageKeys_ = step.highQualityImageKey.detach();
    }
    if (patches) {
      pendingHealthy_ = take(k, kAt, h).detach();
      pendingLowQualityHealthy_ = take(k, kAt, h).detach();
    }
    return loss_(step, network_->healthy, network_->images, static_cast<int>(c.epoch)).total;
  }

  void afterStep() override {
    momentumUpdate(network_->query, network_->key, config_.moco.momentum);
    // Only now do this step's keys become negatives (never of the step that made them).
    if (pendingHealthy_.defined()) {
      network_->healthy.enqueue(pendingHealthy_, PatchKind::HealthyHighQuality);
      network_->healthy.enqueue(pendingLowQualityHealthy_, PatchKind::HealthyLowQuality);
    }
    if (pendingImageKeys_.defined())
      network_->images.enqueue(pendingImageKeys_);
    pendingHealthy_ = pendingLowQualityHealthy_ = pendingImageKeys_ = torch::Tensor();
  }

  double lastViewSeconds() const override { return viewSeconds_; }

  nlohmann::json encoderDetails() const override {
    return {{"lesionImages", roles_.lesionImages.size()},
            {"healthyImages", roles_.healthyImages.size()},
            {"lesionImagesWithoutBox", planner_.lesionImagesWithoutBox()}};
  }

 private:
  torch::Tensor normalise(const torch::Tensor& views) const {
    return (views - config_.mean) / config_.stddev;
  }

  const TrainingSet& set_;
  const storage::ImageCache& cache_;
  const PretrainConfig& config_;
  const ComclRoles& roles_;
  ComclPlanner planner_;
  ComclViewMaker makeViews_;
  ComclLoss loss_;
  ComclNetwork network_;
  std::vector<ComclStepPlan> plan_;
  torch::Tensor pendingHealthy_, pendingLowQualityHealthy_, pendingImageKeys_;
  double viewSeconds_ = 0;
};

}  // namespace

std::unique_ptr<PretrainMethod> makeComclMethod(const TrainingSet& set, const storage::ImageCache& cache,
                                                const PretrainConfig& config, const ComclRoles& roles) {
  return std::make_unique<ComclMethod>(set, cache, config, roles);
}

}  // namespace comcl::training::detail
