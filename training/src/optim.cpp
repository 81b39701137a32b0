#include "comcl/training/optim.h"

// clip_grad.h uses torch:: tensor functions without including them: types.h must come first.
#include <torch/types.h>
// (separate block so that sorting keeps the order)
#include <torch/nn/utils/clip_grad.h>
#include <torch/optim/adam.h>
#include <torch/optim/sgd.h>

#include <cmath>
#include <stdexcept>

namespace comcl::training {

namespace {

[[noreturn]] void invalid(const std::string& field, const std::string& why) {
  throw std::invalid_argument("optim." + field + " " + why);
}

constexpr double kPi = 3.14159265358979323846;

}  // namespace

void OptimConfig::validate() const {
  if (optimizer != "adam" && optimizer != "sgd")
    invalid("optimizer", "must be adam or sgd, not \"" + optimizer + "\"");
  if (!(learningRate > 0 && learningRate < 10))
    invalid("learningRate", "must be in (0, 10), not " + std::to_string(learningRate));
  if (!(weightDecay >= 0))
    invalid("weightDecay", "must be >= 0, not " + std::to_string(weightDecay));
  if (!(momentum >= 0 && momentum < 1))
    invalid("momentum", "must be in [0, 1), not " + std::to_string(momentum));
  if (schedule != "constant" && schedule != "step" && schedule != "cosine")
    invalid("schedule", "must be constant, step or cosine, not \"" + schedule + "\"");
  for (int m : milestones) {
    if (m < 1)
      invalid("milestones", "must be epochs >= 1, not " + std::to_string(m));
  }
  if (!(gamma > 0 && gamma <= 1))
    invalid("gamma", "must be in (0, 1], not " + std::to_string(gamma));
  if (warmupEpochs < 0)
    invalid("warmupEpochs", "must be >= 0, not " + std::to_string(warmupEpochs));
  if (!(clipGradNorm >= 0))
    invalid("clipGradNorm", "must be >= 0 (0 = off), not " + std::to_string(clipGradNorm));
}

nlohmann::json OptimConfig::toJson() const {
  return {{"optimizer", optimizer},       {"learningRate", learningRate},
          {"weightDecay", weightDecay},   {"momentum", momentum},
          {"nesterov", nesterov},         {"schedule", schedule},
          {"milestones", milestones},     {"gamma", gamma},
          {"warmupEpochs", warmupEpochs}, {"clipGradNorm", clipGradNorm}};
}

OptimConfig OptimConfig::fromJson(const nlohmann::json& json) {
  if (!json.is_object())
    throw std::invalid_argument("optim config must be a JSON object");
  OptimConfig c;
  for (const auto& [key, value] : json.items()) {
    if (key == "optimizer")
      c.optimizer = value.get<std::string>();
    else if (key == "learningRate")
      c.learningRate = value.get<double>();
    else if (key == "weightDecay")
      c.weightDecay = value.get<double>();
    else if (key == "momentum")
      c.momentum = value.get<double>();
    else if (key == "nesterov")
      c.nesterov = value.get<bool>();
    else if (key == "schedule")
      c.schedule = value.get<std::string>();
    else if (key == "milestones")
      c.milestones = value.get<std::vector<int>>();
    else if (key == "gamma")
      c.gamma = value.get<double>();
    else if (key == "warmupEpochs")
      c.warmupEpochs = value.get<int>();
    else if (key == "clipGradNorm")
      c.clipGradNorm = value.get<double>();
    else
      throw std::invalid_argument("optim config: unknown key \"" + key + "\"");
  }
  c.validate();
  return c;
}

std::unique_ptr<torch::optim::Optimizer> makeOptimizer(const std::vector<torch::Tensor>& parameters,
                                                       const OptimConfig& config) {
  config.validate();
  if (config.optimizer == "sgd") {
    return std::make_unique<torch::optim::SGD>(parameters,
                                               torch::optim::SGDOptions(config.learningRate)
                                                   .momentum(config.momentum)
                                                   .nesterov(config.nesterov && config.momentum > 0)
                                                   .weight_decay(config.weightDecay));
  }
  return std::make_unique<torch::optim::Adam>(
      parameters, torch::optim::AdamOptions(config.learningRate).weight_decay(config.weightDecay));
}

double learningRateAt(const OptimConfig& config, double epoch, int totalEpochs) {
  double rate = config.learningRate;
  if (config.schedule == "step") {
    for (int milestone : config.milestones) {
      if (epoch >= milestone)
        rate *= config.gamma;
    }
  } else if (config.schedule == "cosine" && totalEpochs > 0) {
    const double progress = std::min(1.0, std::max(0.0, epoch / totalEpochs));
    rate *= 0.5 * (1.0 + std::cos(kPi * progress));
  }
  if (config.warmupEpochs > 0 && epoch < config.warmupEpochs)
    rate *= epoch / config.warmupEpochs;
  return rate;
}

void setLearningRate(torch::optim::Optimizer& optimizer, double rate) {
  for (auto& group : optimizer.param_groups())
    group.options().set_lr(rate);
}

double clipGradients(const std::vector<torch::Tensor>& parameters, const OptimConfig& config) {
  if (config.clipGradNorm <= 0)
    return 0.0;
  return torch::nn::utils::clip_grad_norm_(parameters, config.clipGradNorm);
}

}  // namespace comcl::training
