// Optimisers and learning-rate schedules shared by pre-training and the evaluation protocol: Adam or SGD with
// Nesterov momentum, constant / step / cosine schedules with optional linear warm-up, and gradient clipping.
#pragma once

#include <torch/optim/optimizer.h>

#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace comcl::training {

struct OptimConfig {
  std::string optimizer = "adam";  // adam | sgd (SGD always with momentum; nesterov as set)
  double learningRate = 1e-4;
  double weightDecay = 1e-4;
  double momentum = 0.9;                    // sgd
  bool nesterov = true;                     // sgd
  std::string schedule = "step";            // constant | step | cosine
  std::vector<int> milestones{12, 18, 24};  // step: epochs at which the rate is multiplied by gamma
  double gamma = 0.1;
  int warmupEpochs = 0;       // linear warm-up from 0 over this many epochs
  double clipGradNorm = 0.0;  // 0: off; else the global L2 norm is clipped to this

  void validate() const;  // std::invalid_argument naming the field
  nlohmann::json toJson() const;
  static OptimConfig fromJson(const nlohmann::json& json);  // unknown keys throw
};

std::unique_ptr<torch::optim::Optimizer> makeOptimizer(const std::vector<torch::Tensor>& parameters,
                                                       const OptimConfig& config);
// The scheduled rate at a (fractional) epoch of a run of totalEpochs.
double learningRateAt(const OptimConfig& config, double epoch, int totalEpochs);
void setLearningRate(torch::optim::Optimizer& optimizer, double rate);
// Clips gradients if configured; returns the global gradient norm before clipping (0 when off).
double clipGradients(const std::vector<torch::Tensor>& parameters, const OptimConfig& config);

}  // namespace comcl::training
