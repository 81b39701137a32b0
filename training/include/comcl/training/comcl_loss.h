// CoMCL's contrastive objective (methods.md §2): three InfoNCE terms (lesion, quality, image level) whose
// negatives come from queues of past keys, the healthy-only negative queue (false-negative elimination) and
// self-paced hard-negative mining. docs/methods/comcl.md ("Losses, negative queue and self-paced mining")
// says which settings follow the authors' code (methods.md §2.2, "verified") and which are inferred (§2.3).
//
// Views (methods.md §2.2): V1 lesion patch, V1' a second crop of the same box, V2 the same box on a degraded
// copy (low-quality lesion), V3 healthy patch, V4 low-quality healthy patch; I_HQ / I_LQ a whole image and
// its degraded copy. With q = query-encoder embeddings, k = key-encoder embeddings (constants), both
// L2-normalised, and w_n the self-paced weights:
//
//   InfoNCE(q, k+, N) = -log( e^{q.k+/T} / (e^{q.k+/T} + sum_{n in N} w_n e^{q.n/T}) ), mean over the batch
//   L_les  = InfoNCE(q(V1), k(V1'), healthy queue: high- and low-quality keys)
//   L_qual = InfoNCE(q(V2), k(V1),  healthy queue: low-quality keys only)
//   L_img  = InfoNCE(q(I_LQ), k(I_HQ), image queue)
//   L      = lesionWeight L_les + qualityWeight L_qual + imageWeight L_img
#pragma once

#include <torch/types.h>

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

namespace comcl::training {

// How many negatives per query get the hard weight 1 + beta.
enum class HardNegativeMode {
  TopFraction,  // the hardest ceil(rho(epoch) * K): the self-paced schedule (default)
  FixedTopK,    // the hardest min(fixedTopK, K) at every epoch (ablation "SPL vs top-k fixed")
};
std::string toString(HardNegativeMode mode);                           // "top-fraction" | "fixed-top-k"
HardNegativeMode hardNegativeModeFromString(const std::string& text);  // throws std::invalid_argument

struct ComclLossConfig {
  // Verified (methods.md §2.2, the authors' config): MoCo temperature T = 0.07.
  double temperature = 0.07;
  // Inferred (methods.md §2.3): L = 1 * L_les + lambda1 * L_qual + lambda2 * L_img, lambda1 = lambda2 = 1.
  double lesionWeight = 1.0;
  double qualityWeight = 1.0;  // lambda1
  double imageWeight = 1.0;    // lambda2
  // Ablations "w/o L_qual" and "w/o L_img": a switched-off term is not computed at all. At least one term
  // must stay on.
  bool lesionTerm = true;
  bool qualityTerm = true;
  bool imageTerm = true;
  // Self-paced hard-negative mining, all inferred (methods.md §2.3): rho(e) = min(rhoMax, rho0 * mu^e).
  HardNegativeMode hardNegatives = HardNegativeMode::TopFraction;
  double rho0 = 0.05;   // share of the negatives that is hard at epoch 0, in [0, 1]
  double mu = 1.05;     // pace (>= 1: easy to hard)
  double rhoMax = 0.5;  // ceiling of rho, in [rho0, 1]
  double beta = 1.0;    // hard negatives weigh 1 + beta; 0 turns mining off (ablation "w/o SPL")
  int fixedTopK = 360;  // FixedTopK only: rho0 x the authors' K = 7200, i.e. SPL's epoch-0 count, frozen

  void validate() const;  // std::invalid_argument naming the field
  nlohmann::json toJson() const;
  static ComclLossConfig fromJson(const nlohmann::json& json);  // unknown keys and bad values throw
};

// The easy-to-hard pace of the negatives' weights. Epochs count from 0: rho(0) = rho0.
class SelfPacedSchedule {
 public:
  explicit SelfPacedSchedule(const ComclLossConfig& config);  // validates the config

  // min(rhoMax, rho0 * mu^epoch); throws std::invalid_argument for a negative epoch.
  double rho(int epoch) const;
  // How many of `negatives` candidates are hard at `epoch`: TopFraction ceil(rho(epoch) * negatives), where
  // a product within 1e-12 (relative) above an integer counts as that integer (0.05 * 1.05 * 7200 is 378,
  // not 379); FixedTopK min(fixedTopK, negatives).
  std::int64_t hardCount(std::int64_t negatives, int epoch) const;
  // Weights [B, K] (hardness's dtype and device) for hardness [B, K] = cosine of each query to each
  // candidate negative (read without gradient). `members` (bool [K] or [B, K], optional) marks the
  // candidates that are negatives of this term; the others get weight 0 and are not counted in K. Per row,
  // the hardCount(members in the row, epoch) hardest members weigh 1 + beta and the other members 1. Ties
  // in hardness go to the lower column (queue slot) index: the rank comes from a stable descending sort, so
  // the result is the same on every device. beta = 0 gives weight 1 to every member.
  torch::Tensor negativeWeights(const torch::Tensor& hardness, int epoch,
                                const torch::Tensor& members = torch::Tensor()) const;

 private:
  HardNegativeMode mode_;
  double rho0_;
  double mu_;
  double rhoMax_;
  double beta_;
  int fixedTopK_;
};

// A ring buffer of keys [capacity, dim] (float) with an int64 tag per slot, -1 for a slot never written. A
// batch is written at the write position and wraps around the end, overwriting the oldest keys, so the
// number of keys enqueued per step need not divide the capacity (the authors' code requires it); a batch
// larger than the capacity keeps its last `capacity` keys. Keys are stored detached.
//
// Checkpoints: the state is three plain tensors ("keys", "tags", "write_position"); register them with
// torch::nn::Module::register_buffer and the module's to(device), save and load act on this ring too (they
// change the registered tensors in place, which this ring shares).
class KeyRing {
 public:
  const torch::Tensor& keys() const { return keys_; }  // [capacity, dim]
  const torch::Tensor& tags() const { return tags_; }  // int64 [capacity]
  std::int64_t capacity() const { return keys_.size(0); }
  std::int64_t dim() const { return keys_.size(1); }
  std::int64_t writePosition() const;
  std::int64_t written() const;        // slots holding a key (at most capacity)
  torch::Tensor writtenSlots() const;  // bool [capacity]
  std::vector<std::pair<std::string, torch::Tensor>> buffers() const;  // for register_buffer

 protected:
  // A base only: the queues below decide what may be enqueued.
  KeyRing(std::int64_t capacity, std::int64_t dim, torch::Device device);
  void enqueue(const torch::Tensor& keys, std::int64_t tag);  // keys [N, dim]; tag >= 0

 private:
  torch::Tensor keys_;
  torch::Tensor tags_;
  torch::Tensor writePosition_;  // int64 [1]
};

// What a key was made from.
enum class PatchKind : std::int64_t {
  HealthyHighQuality = 0,  // V3
  HealthyLowQuality = 1,   // V4
  Lesion = 2,              // V1 / V2: never a negative
};

// CoMCL's negative queue: healthy-patch keys only (false-negative elimination, verified: the authors'
// `eliminate_falseN=True` enqueues enc_k(healthy patches), never lesion keys), each tagged high or low
// quality. Slots never written are no one's negative.
class HealthyKeyQueue : public KeyRing {
 public:
  enum class Subset { All, HighQuality, LowQuality };

  HealthyKeyQueue(std::int64_t capacity, std::int64_t dim, torch::Device device = torch::kCPU);
  // keys [N, dim] of healthy patches of one quality; PatchKind::Lesion throws std::invalid_argument and
  // leaves the queue as it was.
  void enqueue(const torch::Tensor& keys, PatchKind kind);
  torch::Tensor members(Subset subset) const;  // bool [capacity]: the written slots of that subset
};

// L_img's negatives: keys of whole high-quality images, a plain ring.
class ImageKeyQueue : public KeyRing {
 public:
  ImageKeyQueue(std::int64_t capacity, std::int64_t dim, torch::Device device = torch::kCPU)
      : KeyRing(capacity, dim, device) {}
  void enqueue(const torch::Tensor& keys) { KeyRing::enqueue(keys, 0); }
};

// The embeddings of one step, each [B, D] and L2-normalised; the pairs of one term share B. Query-encoder
// outputs carry the gradient; key-encoder outputs are used as constants (detached inside the loss). Only
// the switched-on terms' tensors need to be defined.
struct ComclStepEmbeddings {
  torch::Tensor lesionQuery;            // q(V1): anchor of L_les
  torch::Tensor lesionKey;              // k(V1'): positive of L_les
  torch::Tensor lowQualityLesionQuery;  // q(V2): anchor of L_qual
  torch::Tensor highQualityLesionKey;   // k(V1), the same box as V2: positive of L_qual
  torch::Tensor lowQualityImageQuery;   // q(I_LQ): anchor of L_img
  torch::Tensor highQualityImageKey;    // k(I_HQ): positive of L_img
};

// Scalars. A switched-off term is an undefined tensor (check .defined() before logging it); total is the
// weighted sum of the terms that are on.
struct ComclLossOutput {
  torch::Tensor total;
  torch::Tensor lesion;
  torch::Tensor quality;
  torch::Tensor image;
};

class ComclLoss {
 public:
  explicit ComclLoss(ComclLossConfig config);  // validates
  const ComclLossConfig& config() const { return config_; }
  const SelfPacedSchedule& schedule() const { return schedule_; }

  // The objective for one step at `epoch` (0-based, drives the self-paced schedule). Throws
  // std::invalid_argument when a switched-on term's embeddings are missing or their shapes disagree with
  // each other or with the queue's key dimension.
  ComclLossOutput operator()(const ComclStepEmbeddings& step, const HealthyKeyQueue& healthy,
                             const ImageKeyQueue& images, int epoch) const;

 private:
  struct Named {  // an embedding and its field name in ComclStepEmbeddings, for error messages
    const char* name;
    const torch::Tensor& tensor;
  };
  // One InfoNCE term: query [B, D] against its positive [B, D] and the queue's `members` slots.
  torch::Tensor term(const Named& query, const Named& positive, const KeyRing& queue,
                     const torch::Tensor& members, int epoch) const;

  ComclLossConfig config_;
  SelfPacedSchedule schedule_;
};

}  // namespace comcl::training
