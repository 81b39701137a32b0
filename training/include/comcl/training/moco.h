// MoCo v2 (methods.md §1.3): a query encoder trained by back-propagation, a key encoder that follows it by
// momentum, and a queue of past keys as negatives, with InfoNCE over [positive, queue] / T. The queue keeps
// each key's metadata (patient, study, laterality) so that MedAug's four hard-negative strategies
// (methods.md §1.4) can select or weight negatives by laterality.
//
// Batch norm and the key encoder: MoCo's shuffle-BN runs the key encoder on a batch shuffled across GPUs so
// that batch statistics cannot leak which key matches which query. On one device comcl emulates it: the key
// batch is permuted and split into `bnGroups` groups that pass the encoder separately (each group has its own
// batch statistics, like one GPU's share), and the query batch is split into the same number of contiguous
// groups. With bnGroups = 1 there is no shuffling (plain BN, which MoCo reports can overfit the pretext
// task).
#pragma once

#include <torch/nn/module.h>
#include <torch/nn/modules/container/sequential.h>

#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <random>
#include <string>

#include "comcl/training/resnet.h"

namespace comcl::training {

enum class NegativeStrategy { Default, SameLateralityOnly, Reweighted, Appended, Synthetic };
std::string toString(NegativeStrategy strategy);
NegativeStrategy negativeStrategyFromString(const std::string& text);  // throws std::invalid_argument

struct MocoConfig {
  std::string architecture = "resnet18";  // resnet18 | resnet50
  int channels = 1;                       // input channels of the backbone
  int projectionDim = 128;                // the L2-normalised embedding
  bool mlpHead = true;                    // MoCo v2: Linear-ReLU-Linear; false: one Linear (MoCo v1)
  int queueSize = 24576;                  // K
  double momentum = 0.999;                // m
  double temperature = 0.2;               // T
  int bnGroups = 2;                       // shuffle-BN emulation, see above
  NegativeStrategy negatives = NegativeStrategy::Default;
  double hardNegativeTarget = 0.9;  // reweighted: share of the denominator's weight on same-laterality keys
  double appendFraction = 0.1;      // appended/synthetic: m = fraction * K extra negatives

  void validate() const;  // std::invalid_argument naming the field
  nlohmann::json toJson() const;
  static MocoConfig fromJson(const nlohmann::json& json);  // unknown keys throw
};

// Backbone (torchvision ResNet names) + projection head ("head.0", "head.2"): image -> unit vector.
class ContrastiveEncoderImpl : public torch::nn::Module {
 public:
  ContrastiveEncoderImpl(const std::string& architecture, int channels, int projectionDim, bool mlpHead);
  torch::Tensor forward(torch::Tensor images);  // [N, projectionDim], L2-normalised
  ResNet& backbone() { return *backbone_; }
  std::shared_ptr<ResNet> backbonePtr() { return backbone_; }

 private:
  std::shared_ptr<ResNet> backbone_;
  torch::nn::Sequential head_{nullptr};
};
TORCH_MODULE(ContrastiveEncoder);

// Makes `key` a copy of `query` that receives no gradient (the key encoder at the start of a run).
void copyToKeyEncoder(ContrastiveEncoder& query, ContrastiveEncoder& key);
// key = momentum * key + (1 - momentum) * query, parameters only (buffers keep the key encoder's own).
void momentumUpdate(ContrastiveEncoder& query, ContrastiveEncoder& key, double momentum);

// Per-key metadata carried through the queue; -1 = unknown.
struct KeyMetadata {
  torch::Tensor patient;     // int64 [N]
  torch::Tensor study;       // int64 [N]
  torch::Tensor laterality;  // int64 [N]: 0 frontal, 1 lateral, -1 unknown
};

struct MocoStepOutput {
  torch::Tensor loss;           // scalar, differentiable
  double positiveAccuracy = 0;  // share of queries whose positive has the top logit (a pretext monitor)
};

class MocoImpl : public torch::nn::Module {
 public:
  explicit MocoImpl(MocoConfig config);
  const MocoConfig& config() const { return config_; }
  ContrastiveEncoder& queryEncoder() { return query_; }

  // One forward pass: embeds queries (with gradient) and keys (without), computes the loss under the
  // configured negative strategy (queryMeta selects the hard negatives). `rng` draws the shuffle-BN
  // permutation and the appended/synthetic negatives. Does not update the key encoder or the queue: call
  // afterStep() once the optimiser stepped; the keys then enter the queue with keyMeta (the metadata of the
  // images the keys were made from, which MedAug's positives may take from another study or view).
  MocoStepOutput forward(const torch::Tensor& queryImages, const torch::Tensor& keyImages,
                         const KeyMetadata& queryMeta, const KeyMetadata& keyMeta, std::mt19937_64& rng);
  // Momentum update of the key encoder, then the keys of the last forward() enter the queue.
  void afterStep();
  // Whether every queue entry has been written by a real key (hard-negative strategies wait for it).
  bool queueFull() const;

 private:
  torch::Tensor embedKeys(const torch::Tensor& images, std::mt19937_64& rng);
  torch::Tensor embedQueries(const torch::Tensor& images);
  // lPos [N] and lNeg [N, K]: cosine similarities of the queries to their keys and to the queue.
  torch::Tensor lossFor(const torch::Tensor& q, const torch::Tensor& lPos, const torch::Tensor& lNeg,
                        const KeyMetadata& meta, std::mt19937_64& rng);

  MocoConfig config_;
  ContrastiveEncoder query_{nullptr};
  ContrastiveEncoder key_{nullptr};
  torch::Tensor queue_;      // [K, dim], registered buffer
  torch::Tensor queueMeta_;  // int64 [K, 3] (patient, study, laterality), registered buffer, -1 = none yet
  torch::Tensor queuePtr_;   // int64 [1] write position, registered buffer
  torch::Tensor filled_;     // int64 [1] number of real keys written so far (capped at K), registered buffer
  torch::Tensor pendingKeys_;
  torch::Tensor pendingMeta_;
};
TORCH_MODULE(Moco);

// The InfoNCE variants on precomputed logits, exposed for tests. lPos [N], lNeg [N, K] are cosine
// similarities (not yet divided by T). `hardMask` [N, K] marks same-laterality queue keys (S(x)),
// `excludeMask` [N, K] marks keys never used as negatives (same patient and study, for
// SameLateralityOnly). Weighted: loss = -lPos/T + log(exp(lPos/T) + sum_j w_j exp(lNeg_j/T)) with
// w = target/r on S(x) and (1-target)/(1-r) elsewhere, r = |S(x)|/K (weights 1 when r is 0 or 1).
torch::Tensor infoNce(const torch::Tensor& lPos, const torch::Tensor& lNeg, double temperature);
torch::Tensor infoNceMasked(const torch::Tensor& lPos, const torch::Tensor& lNeg,
                            const torch::Tensor& keepMask, double temperature);
torch::Tensor infoNceReweighted(const torch::Tensor& lPos, const torch::Tensor& lNeg,
                                const torch::Tensor& hardMask, double target, double temperature);
// The general weighted form (infoNceReweighted and CoMCL's loss use it): loss = -lPos/T + log(exp(lPos/T) +
// sum_j exp(lNeg_j/T + logWeights_j)), i.e. negative j weighs w_j = exp(logWeights_j); -inf drops a key,
// 0 everywhere gives infoNce's value. logWeights [N, K] (or broadcastable) is used as given.
torch::Tensor infoNceLogWeighted(const torch::Tensor& lPos, const torch::Tensor& lNeg,
                                 const torch::Tensor& logWeights, double temperature);

}  // namespace comcl::training
