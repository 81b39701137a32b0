// The Cam lesion source: a supervised ResNet trained on the training patients' labelled images, then the
// class-activation maps of the lesion images, thresholded into connected regions (lesions.h).
#include <torch/nn/functional/loss.h>
#include <torch/nn/functional/upsampling.h>
#include <torch/optim/adam.h>

#include <algorithm>
#include <map>
#include <numeric>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "comcl/training/encoder_file.h"
#include "comcl/training/model_io.h"
#include "comcl/training/resnet.h"
#include "comcl/training/tensor_batch.h"
#include "image_ops.h"
#include "lesion_sources.h"

namespace comcl::training::detail {

namespace {

namespace F = torch::nn::functional;

struct CamModel {
  std::shared_ptr<ResNet> network;  // one logit
  EncoderInfo info;
};

// A fresh network takes the cache's channels; a pre-trained encoder keeps its own (images are read to fit).
CamModel makeModel(const LesionConfig& config, int cacheChannels) {
  CamModel model;
  torch::manual_seed(config.seed);
  if (config.camEncoder.empty()) {
    model.info.architecture = config.camArchitecture;
    model.info.channels = cacheChannels;
    model.network = makeBackbone(config.camArchitecture, cacheChannels, 1);
    return model;
  }
  std::shared_ptr<ResNet> backbone;
  try {
    backbone = loadEncoder(config.camEncoder, &model.info);
  } catch (const std::exception& e) {
    throw LesionError("cannot load the CAM model's encoder " + config.camEncoder + ": " + e.what());
  }
  model.network = makeBackbone(model.info.architecture, model.info.channels, 1);
  torch::NoGradGuard noGrad;
  std::map<std::string, torch::Tensor> weights;
  for (const NamedTensor& t : stateOf(*backbone))
    weights.emplace(t.name, t.tensor);
  for (const NamedTensor& t : stateOf(*model.network)) {
    if (t.name.rfind("fc.", 0) != 0)
      t.tensor.copy_(weights.at(t.name));
  }
  return model;
}

// Images of the set as the network's input: read with its channels, resized to `size`, normalised.
torch::Tensor input(const LesionRun& run, const CamModel& model, const std::vector<int>& images, int size) {
  torch::Tensor x = detail::resizedTo(
      loadBatch(run.cache, run.set.cachedRefs(images), run.device, model.info.channels), size);
  return (x - model.info.mean) / model.info.stddev;
}

std::vector<int> slice(const std::vector<int>& items, std::size_t start, std::size_t count) {
  const std::size_t end = std::min(items.size(), start + count);
  return std::vector<int>(items.begin() + static_cast<std::ptrdiff_t>(start),
                          items.begin() + static_cast<std::ptrdiff_t>(end));
}

// Trains the model with class-balanced binary cross-entropy; returns the last epoch's mean loss.
double train(const LesionRun& run, CamModel& model, const std::vector<int>& images,
             const std::vector<int>& targets, std::mt19937_64& rng) {
  const LesionConfig& config = run.config;
  const auto positives = static_cast<double>(std::count(targets.begin(), targets.end(), 1));
  const auto negatives = static_cast<double>(targets.size()) - positives;
  const torch::Tensor positiveWeight = torch::full({1}, negatives / positives, torch::kFloat).to(run.device);
  model.network->to(run.device);
  model.network->train();
  torch::optim::Adam optimizer(
      model.network->parameters(),
      torch::optim::AdamOptions(config.camLearningRate).weight_decay(config.camWeightDecay));
  std::vector<std::size_t> order(images.size());
  std::iota(order.begin(), order.end(), 0);
  const auto batch = static_cast<std::size_t>(config.batchSize);
  double lastLoss = 0;
  for (int epoch = 0; epoch < config.camEpochs; ++epoch) {
    std::shuffle(order.begin(), order.end(), rng);
    double sum = 0;
    int steps = 0;
    for (std::size_t start = 0; start + 1 < order.size(); start += batch) {  // batch norm needs 2 images
      run.checkCancel();
      std::vector<int> chunk;
      std::vector<float> y;
      for (std::size_t k = start; k < std::min(order.size(), start + batch); ++k) {
        chunk.push_back(images[order[k]]);
        y.push_back(static_cast<float>(targets[order[k]]));
      }
      if (chunk.size() < 2)
        continue;
      const torch::Tensor logits =
          model.network->forward(input(run, model, chunk, config.camImageSize)).reshape({-1});
      const torch::Tensor truth = torch::tensor(y).to(run.device);
      const torch::Tensor loss = F::binary_cross_entropy_with_logits(
          logits, truth, F::BinaryCrossEntropyWithLogitsFuncOptions().pos_weight(positiveWeight));
      optimizer.zero_grad();
      loss.backward();
      optimizer.step();
      sum += loss.item<double>();
      ++steps;
    }
    lastLoss = steps ? sum / steps : 0;
    std::ostringstream message;
    message << "lesion proposals: CAM model epoch " << epoch + 1 << "/" << config.camEpochs << ", loss "
            << lastLoss;
    run.report(message.str());
  }
  model.network->eval();
  return lastLoss;
}

// The [size, cells] matrix that upsamples one axis of a feature map linearly, with cell j at the centre of
// its receptive field, input pixel j * stride (stride = size / cells; for a ResNet every strided layer puts
// output j over input 2j). Pixel p reads cell coordinate p / stride, clamped to the last cell. (Bilinear
// interpolation with align_corners=false would put cell j at pixel (j + 0.5) * stride - 0.5 and shift the
// map by half a cell, 16 px at stride 32, down and to the right.)
torch::Tensor upsamplingMatrix(int size, std::int64_t cells) {
  torch::Tensor m = torch::zeros({size, cells}, torch::kFloat);
  auto a = m.accessor<float, 2>();
  const double last = static_cast<double>(cells - 1);
  for (int p = 0; p < size; ++p) {
    const double u = std::min(last, static_cast<double>(p) * static_cast<double>(cells) / size);
    const auto j = static_cast<std::int64_t>(u);
    const double f = u - static_cast<double>(j);
    a[p][j] += static_cast<float>(1 - f);
    if (j + 1 < cells)
      a[p][j + 1] += static_cast<float>(f);
  }
  return m;
}

// Recomputes every batch norm's running statistics as the plain average over the training images (the
// network unchanged otherwise): after a short training the exponential averages still remember their
// initial values, and eval-mode maps and probabilities would be off.
void recalibrateBatchNorm(const LesionRun& run, CamModel& model, const std::vector<int>& images) {
  torch::NoGradGuard noGrad;
  std::vector<torch::nn::BatchNorm2dImpl*> norms;
  for (const auto& module : model.network->modules(/*include_self=*/false)) {
    if (auto* norm = module->as<torch::nn::BatchNorm2d>()) {
      norm->reset_running_stats();
      norm->options.momentum(c10::nullopt);  // cumulative average
      norms.push_back(norm);
    }
  }
  model.network->train();
  const auto batch = static_cast<std::size_t>(run.config.batchSize);
  for (std::size_t start = 0; start < images.size(); start += batch) {
    run.checkCancel();
    const std::vector<int> chunk = slice(images, start, batch);
    if (chunk.size() >= 2)
      model.network->forward(input(run, model, chunk, run.config.camImageSize));
  }
  for (torch::nn::BatchNorm2dImpl* norm : norms)
    norm->options.momentum(0.1);
  model.network->eval();
}

struct Region {
  LesionBox box;      // bounding box, confidence = peak value
  float centreX = 0;  // normalised CAM-weighted centroid
  float centreY = 0;
};

// The 8-connected regions of `cam` (side x side, values in [0, 1]) at or above `threshold`.
std::vector<Region> regions(const float* cam, int side, float threshold) {
  std::vector<Region> out;
  std::vector<char> seen(static_cast<std::size_t>(side) * static_cast<std::size_t>(side), 0);
  std::vector<int> stack;
  auto at = [side](int x, int y) {
    return static_cast<std::size_t>(y) * static_cast<std::size_t>(side) + static_cast<std::size_t>(x);
  };
  const auto s = static_cast<float>(side);
  for (int y0 = 0; y0 < side; ++y0) {
    for (int x0 = 0; x0 < side; ++x0) {
      if (seen[at(x0, y0)] || cam[at(x0, y0)] < threshold)
        continue;
      int minX = x0, maxX = x0, minY = y0, maxY = y0;
      float peak = 0;
      double mass = 0, sumX = 0, sumY = 0;
      seen[at(x0, y0)] = 1;
      stack.assign({x0, y0});
      while (!stack.empty()) {
        const int y = stack.back();
        stack.pop_back();
        const int x = stack.back();
        stack.pop_back();
        const float value = cam[at(x, y)];
        peak = std::max(peak, value);
        mass += value;
        sumX += value * (x + 0.5);
        sumY += value * (y + 0.5);
        minX = std::min(minX, x);
        maxX = std::max(maxX, x);
        minY = std::min(minY, y);
        maxY = std::max(maxY, y);
        for (int dy = -1; dy <= 1; ++dy) {
          for (int dx = -1; dx <= 1; ++dx) {
            const int nx = x + dx, ny = y + dy;
            if (nx < 0 || ny < 0 || nx >= side || ny >= side || seen[at(nx, ny)] ||
                cam[at(nx, ny)] < threshold)
              continue;
            seen[at(nx, ny)] = 1;
            stack.push_back(nx);
            stack.push_back(ny);
          }
        }
      }
      Region region;
      region.box = {static_cast<float>(minX) / s, static_cast<float>(minY) / s,
                    static_cast<float>(maxX + 1) / s, static_cast<float>(maxY + 1) / s, peak};
      region.centreX = static_cast<float>(sumX / mass) / s;
      region.centreY = static_cast<float>(sumY / mass) / s;
      out.push_back(region);
    }
  }
  return out;
}

// One side of a region's box shrunk to `side`, centred on `centre` as far as the region allows.
void shrink(float& low, float& high, float centre, float side) {
  if (high - low <= side)
    return;
  const float start = std::clamp(centre - side / 2, low, high - side);
  low = start;
  high = start + side;
}

}  // namespace

std::vector<std::vector<LesionBox>> camCandidates(const LesionRun& run, const std::vector<int>& images,
                                                  const std::vector<int>& trainImages,
                                                  const std::vector<int>& trainTargets,
                                                  nlohmann::json& details) {
  const LesionConfig& config = run.config;
  const auto positives = std::count(trainTargets.begin(), trainTargets.end(), 1);
  const auto negatives = static_cast<std::int64_t>(trainTargets.size()) - positives;
  if (positives == 0 || negatives == 0 || trainImages.size() < 2) {
    throw LesionError(
        "the CAM lesion source trains a classifier on the training patients' images labelled for '" +
        config.label + "' and needs both positive and negative ones; the split's training patients have " +
        std::to_string(positives) + " positive and " + std::to_string(negatives) +
        " negative. Label more training patients' images, or use the stored or detector lesion source.");
  }
  CamModel model = makeModel(config, run.cache.format().channels);
  std::mt19937_64 rng(config.seed);
  run.report("lesion proposals: training the CAM model (" + model.info.architecture + ", " +
             std::to_string(config.camImageSize) + " px) on " + std::to_string(trainImages.size()) +
             " images, " + std::to_string(positives) + " positive");
  const double loss = train(run, model, trainImages, trainTargets, rng);
  recalibrateBatchNorm(run, model, trainImages);

  torch::NoGradGuard noGrad;
  const int side = config.camImageSize;
  torch::Tensor fcWeight, fcBias;
  for (const auto& p : model.network->named_parameters()) {
    if (p.key() == "fc.weight")
      fcWeight = p.value();
    else if (p.key() == "fc.bias")
      fcBias = p.value();
  }
  std::vector<std::vector<LesionBox>> candidates;
  candidates.reserve(images.size());
  const auto maxSide = static_cast<float>(config.filter.maxSideFraction);
  int shrunk = 0;
  const auto batch = static_cast<std::size_t>(config.batchSize);
  for (std::size_t start = 0; start < images.size(); start += batch) {
    run.checkCancel();
    const std::vector<int> chunk = slice(images, start, batch);
    const torch::Tensor maps = model.network->featureMaps(input(run, model, chunk, side));  // [B, C, h, w]
    const torch::Tensor probability =
        torch::sigmoid(maps.mean({2, 3}).matmul(fcWeight.t()) + fcBias).reshape({-1}).to(torch::kCPU);
    const torch::Tensor small = torch::relu((maps * fcWeight.reshape({1, -1, 1, 1})).sum(1))
                                    .to(torch::kCPU, torch::kFloat);  // [B, h, w]
    const torch::Tensor rowsUp = upsamplingMatrix(side, small.size(1));
    const torch::Tensor columnsUp = upsamplingMatrix(side, small.size(2));
    const torch::Tensor cam =
        rowsUp.matmul(small).matmul(columnsUp.t()).unsqueeze(1).contiguous();  // [B, 1, S, S]
    for (std::size_t k = 0; k < chunk.size(); ++k) {
      // Zero outside the image (the letterbox's padding), then scale the maximum to 1.
      const ContentRect& c = run.content[static_cast<std::size_t>(chunk[k])];
      torch::Tensor one = cam[static_cast<std::int64_t>(k)][0].clone();
      float* v = one.data_ptr<float>();
      for (int y = 0; y < side; ++y) {
        for (int x = 0; x < side; ++x) {
          const float cx = (static_cast<float>(x) + 0.5F) / static_cast<float>(side);
          const float cy = (static_cast<float>(y) + 0.5F) / static_cast<float>(side);
          if (cx < c.x0 || cx > c.x1 || cy < c.y0 || cy > c.y1)
            v[static_cast<std::size_t>(y) * static_cast<std::size_t>(side) + static_cast<std::size_t>(x)] = 0;
        }
      }
      const float peak = one.max().item<float>();
      std::vector<LesionBox> boxes;
      if (peak > 0) {
        one.div_(peak);
        const float p = probability[static_cast<std::int64_t>(k)].item<float>();
        for (const Region& region :
             regions(one.data_ptr<float>(), side, static_cast<float>(config.camThreshold))) {
          LesionBox box = region.box;
          box.confidence *= p;
          if (config.camShrinkToMaxSide && (box.width() > maxSide || box.height() > maxSide)) {
            shrink(box.x0, box.x1, region.centreX, maxSide);
            shrink(box.y0, box.y1, region.centreY, maxSide);
            ++shrunk;
          }
          boxes.push_back(box);
        }
      }
      candidates.push_back(std::move(boxes));
    }
    run.report("lesion proposals: CAM boxes of " + std::to_string(candidates.size()) + " of " +
               std::to_string(images.size()) + " lesion images");
  }
  details = {{"camModel", model.info.architecture},
             {"camEncoder", config.camEncoder},
             {"camImageSize", side},
             {"camTrainImages", trainImages.size()},
             {"camTrainPositives", positives},
             {"camEpochs", config.camEpochs},
             {"camFinalLoss", loss},
             {"camBoxesShrunk", shrunk}};
  return candidates;
}

}  // namespace comcl::training::detail
