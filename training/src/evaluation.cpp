#include "comcl/training/evaluation.h"

#include <torch/nn/functional/loss.h>
#include <torch/nn/functional/upsampling.h>
#include <torch/optim/adam.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <set>
#include <sstream>

#include "comcl/training/augment.h"
#include "comcl/training/device.h"
#include "comcl/training/encoder_file.h"
#include "comcl/training/heap_retention.h"
#include "comcl/training/model_io.h"
#include "comcl/training/scorer.h"
#include "comcl/training/stable_hash.h"
#include "comcl/training/tensor_batch.h"

namespace comcl::training {

namespace F = torch::nn::functional;

namespace {

std::mt19937_64 drawRng(std::uint64_t seed, std::uint32_t label, std::uint32_t budget, std::uint32_t draw) {
  std::seed_seq sequence{static_cast<std::uint32_t>(seed), static_cast<std::uint32_t>(seed >> 32), label,
                         budget, draw};
  return std::mt19937_64(sequence);
}

// The images of one split that carry a usable label for `finding` (uncertain -1 and absent are left out).
struct Labelled {
  std::vector<int> images;
  std::vector<int> targets;
};

Labelled labelledIn(const TrainingSet& set, const std::map<std::string, std::string>& split,
                    const std::string& finding, const std::string& which) {
  Labelled out;
  for (std::size_t i = 0; i < set.size(); ++i) {
    const auto value = set.label(i, finding);
    if (!value || *value < 0)
      continue;
    const auto it = split.find(set.patientKeys()[static_cast<std::size_t>(set.images()[i].patient)]);
    if (it == split.end() || it->second != which)
      continue;
    out.images.push_back(static_cast<int>(i));
    out.targets.push_back(static_cast<int>(std::lround(*value)));
  }
  return out;
}

int classesOf(const Labelled& a, const Labelled& b) {
  int maximum = 1;
  for (const auto* l : {&a, &b}) {
    for (int t : l->targets)
      maximum = std::max(maximum, t);
  }
  return maximum + 1;
}

// A stratified random subset of `pool` within `budget`.
Labelled drawSubset(const Labelled& pool, int classes, const LabelBudget& budget, const std::string& finding,
                    std::mt19937_64& rng) {
  std::vector<std::vector<int>> byClass(static_cast<std::size_t>(classes));
  for (std::size_t i = 0; i < pool.images.size(); ++i)
    byClass[static_cast<std::size_t>(pool.targets[i])].push_back(static_cast<int>(i));
  const double total = static_cast<double>(pool.images.size());
  Labelled out;
  int classesKept = 0;
  for (int c = 0; c < classes; ++c) {
    auto& members = byClass[static_cast<std::size_t>(c)];
    const double share = budget.fraction > 0 ? budget.fraction * static_cast<double>(members.size())
                                             : budget.count * static_cast<double>(members.size()) / total;
    const auto keep = std::min<std::size_t>(members.size(), static_cast<std::size_t>(std::lround(share)));
    if (keep == 0 && !members.empty() && classes == 2) {
      std::ostringstream why;
      why.precision(2);
      why << "label budget " << budget.toString() << " of the " << pool.images.size()
          << " labelled training images keeps " << share << " " << (c == 1 ? "positive" : "negative")
          << " image(s) of '" << finding << "' (there are " << members.size()
          << "); it needs at least one of each: use a larger budget";
      throw DataError(why.str());
    }
    std::shuffle(members.begin(), members.end(), rng);
    for (std::size_t k = 0; k < keep; ++k) {
      out.images.push_back(pool.images[static_cast<std::size_t>(members[k])]);
      out.targets.push_back(c);
    }
    classesKept += keep > 0 ? 1 : 0;
  }
  if (classesKept < 2) {
    throw DataError("label budget " + budget.toString() + " keeps images of only " +
                    std::to_string(classesKept) + " grade(s) of '" + finding + "'; use a larger budget");
  }
  return out;
}

torch::Tensor prepare(const torch::Tensor& images, int size, double mean, double stddev) {
  torch::Tensor x = images;
  if (x.size(2) != size || x.size(3) != size) {
    x = F::interpolate(x, F::InterpolateFuncOptions()
                              .size(std::vector<std::int64_t>{size, size})
                              .mode(torch::kBilinear)
                              .align_corners(false));
  }
  return (x - mean) / stddev;
}

torch::Tensor readImages(const TrainingSet& set, const storage::ImageCache& cache,
                         const std::vector<int>& images, torch::Device device) {
  std::vector<CachedImageRef> refs;
  for (int i : images)
    refs.push_back(set.images()[static_cast<std::size_t>(i)].cached);
  return loadBatch(cache, refs, device);
}

struct Encoder {
  std::shared_ptr<ResNet> backbone;
  EncoderInfo info;
};

Encoder openEncoder(const EncoderSource& source, int imageSize, std::uint64_t seed) {
  Encoder e;
  if (source.directory.empty()) {
    torch::manual_seed(seed);
    e.info.architecture = source.architecture;
    e.info.imageSize = imageSize;
    e.backbone = makeBackbone(source.architecture, 1, 1);
  } else {
    e.backbone = loadEncoder(source.directory, &e.info);
  }
  return e;
}

// The backbone's weights in a network with `outputs` classifier outputs (a fresh fc).
std::shared_ptr<ResNet> withHead(ResNet& backbone, const EncoderInfo& info, int outputs) {
  auto network = makeBackbone(info.architecture, info.channels, outputs);
  torch::NoGradGuard noGrad;
  std::map<std::string, torch::Tensor> source;
  for (const NamedTensor& t : stateOf(backbone))
    source.emplace(t.name, t.tensor);
  for (const NamedTensor& t : stateOf(*network)) {
    if (t.name.rfind("fc.", 0) == 0)
      continue;
    t.tensor.copy_(source.at(t.name));
  }
  return network;
}

class FeatureCache {
 public:
  FeatureCache(ResNet& backbone, const EncoderInfo& info, const TrainingSet& set,
               const storage::ImageCache& cache, int imageSize, int batchSize, torch::Device device)
      : backbone_(backbone),
        info_(info),
        set_(set),
        cache_(cache),
        size_(imageSize),
        batch_(batchSize),
        device_(device) {}

  // Features of the images (computed once each), [N, D] on the CPU.
  torch::Tensor of(const std::vector<int>& images) {
    std::vector<int> missing;
    for (int i : images) {
      if (!features_.count(i))
        missing.push_back(i);
    }
    torch::NoGradGuard noGrad;
    backbone_.eval();
    for (std::size_t start = 0; start < missing.size(); start += static_cast<std::size_t>(batch_)) {
      const std::vector<int> chunk(
          missing.begin() + static_cast<std::ptrdiff_t>(start),
          missing.begin() + static_cast<std::ptrdiff_t>(
                                std::min(missing.size(), start + static_cast<std::size_t>(batch_))));
      const torch::Tensor x =
          prepare(readImages(set_, cache_, chunk, device_), size_, info_.mean, info_.stddev);
      const torch::Tensor f =
          backbone_.features(x.expand({x.size(0), info_.channels, x.size(2), x.size(3)})).to(torch::kCPU);
      for (std::size_t k = 0; k < chunk.size(); ++k)
        features_.emplace(chunk[k], f[static_cast<std::int64_t>(k)]);
    }
    std::vector<torch::Tensor> rows;
    for (int i : images)
      rows.push_back(features_.at(i));
    return torch::stack(rows);
  }

 private:
  ResNet& backbone_;
  const EncoderInfo& info_;
  const TrainingSet& set_;
  const storage::ImageCache& cache_;
  int size_, batch_;
  torch::Device device_;
  std::map<int, torch::Tensor> features_;
};

torch::Tensor lossFor(const torch::Tensor& logits, const torch::Tensor& targets, int classes) {
  if (classes == 2)
    return F::binary_cross_entropy_with_logits(logits.squeeze(1), targets.to(torch::kFloat));
  return F::cross_entropy(logits, targets);
}

// A linear head fitted on standardised features; `scores` gives its logits for other features.
struct LinearProbe {
  torch::Tensor mean, scale, weight, bias;  // features are (x - mean) / scale
  torch::Tensor logits(const torch::Tensor& features) const {
    return torch::addmm(bias, (features - mean) / scale, weight);
  }
};

LinearProbe fitProbe(const torch::Tensor& features, const std::vector<int>& targets, int classes,
                     const ProtocolConfig& config) {
  LinearProbe probe;
  probe.mean = features.mean(0);
  probe.scale = features.std(0, /*unbiased=*/false) + 1e-6;
  const torch::Tensor x = (features - probe.mean) / probe.scale;
  const int outputs = classes == 2 ? 1 : classes;
  torch::Tensor weight = torch::zeros({x.size(1), outputs}, torch::requires_grad());
  torch::Tensor bias = torch::zeros({outputs}, torch::requires_grad());
  const torch::Tensor y =
      torch::tensor(std::vector<std::int64_t>(targets.begin(), targets.end()), torch::kLong);
  torch::optim::Adam optimizer(
      {weight, bias},
      torch::optim::AdamOptions(config.linearLearningRate).weight_decay(config.linearWeightDecay));
  for (int step = 0; step < config.linearSteps; ++step) {
    optimizer.zero_grad();
    lossFor(torch::addmm(bias, x, weight), y, classes).backward();
    optimizer.step();
  }
  probe.weight = weight.detach();
  probe.bias = bias.detach();
  return probe;
}

// Fine-tunes a copy of the encoder with a head of `outputs` on the images; targets [N, outputs] (binary,
// NaN = no label, masked) or [N] classes when graded.
std::shared_ptr<ResNet> finetune(const Encoder& encoder, const TrainingSet& set,
                                 const storage::ImageCache& cache, const std::vector<int>& images,
                                 const torch::Tensor& targets, int classes, const ProtocolConfig& config,
                                 torch::Device device, std::mt19937_64& rng,
                                 const std::atomic<bool>* cancel) {
  const int outputs = classes == 2 ? static_cast<int>(targets.dim() == 2 ? targets.size(1) : 1) : classes;
  auto network = withHead(*encoder.backbone, encoder.info, outputs);
  network->to(device);
  network->train();
  auto optimizer = makeOptimizer(network->parameters(), config.finetuneOptim);
  const Augmenter augment(medAugAugment(config.imageSize));
  std::vector<int> order(images.size());
  std::iota(order.begin(), order.end(), 0);
  const auto batch = static_cast<std::size_t>(std::max(2, config.batchSize));
  for (int epoch = 0; epoch < config.finetuneEpochs; ++epoch) {
    setLearningRate(*optimizer, learningRateAt(config.finetuneOptim, epoch, config.finetuneEpochs));
    std::shuffle(order.begin(), order.end(), rng);
    for (std::size_t start = 0; start + 1 < order.size(); start += batch) {  // batch norm needs 2 images
      if (cancel && cancel->load())
        throw DataError("cancelled");
      const std::size_t end = std::min(order.size(), start + batch);
      std::vector<int> chunk;
      std::vector<std::int64_t> rows;
      for (std::size_t k = start; k < end; ++k) {
        chunk.push_back(images[static_cast<std::size_t>(order[k])]);
        rows.push_back(order[k]);
      }
      const torch::Tensor rowIndex = torch::tensor(rows, torch::kLong);
      torch::Tensor x = augment(readImages(set, cache, chunk, device), rng);
      x = (x - encoder.info.mean) / encoder.info.stddev;
      x = x.expand({x.size(0), encoder.info.channels, x.size(2), x.size(3)});
      const torch::Tensor logits = network->forward(x);
      torch::Tensor loss;
      if (classes == 2) {
        const torch::Tensor y = targets.index_select(0, rowIndex).to(device).reshape(logits.sizes());
        const torch::Tensor known = ~torch::isnan(y);
        loss = F::binary_cross_entropy_with_logits(logits.masked_select(known), y.masked_select(known));
      } else {
        loss = F::cross_entropy(logits, targets.index_select(0, rowIndex).to(device));
      }
      optimizer->zero_grad();
      loss.backward();
      clipGradients(network->parameters(), config.finetuneOptim);
      optimizer->step();
    }
  }
  network->eval();
  return network;
}

torch::Tensor predictLogits(ResNet& network, const EncoderInfo& info, const TrainingSet& set,
                            const storage::ImageCache& cache, const std::vector<int>& images, int imageSize,
                            int batchSize, torch::Device device) {
  torch::NoGradGuard noGrad;
  network.eval();
  std::vector<torch::Tensor> parts;
  for (std::size_t start = 0; start < images.size(); start += static_cast<std::size_t>(batchSize)) {
    const std::vector<int> chunk(
        images.begin() + static_cast<std::ptrdiff_t>(start),
        images.begin() + static_cast<std::ptrdiff_t>(
                             std::min(images.size(), start + static_cast<std::size_t>(batchSize))));
    const torch::Tensor x = prepare(readImages(set, cache, chunk, device), imageSize, info.mean, info.stddev);
    parts.push_back(
        network.forward(x.expand({x.size(0), info.channels, x.size(2), x.size(3)})).to(torch::kCPU));
  }
  return torch::cat(parts);
}

DrawResult score(const torch::Tensor& logits, const std::vector<int>& truth, int classes) {
  DrawResult r;
  if (classes == 2) {
    const torch::Tensor p = torch::sigmoid(logits.reshape({-1})).to(torch::kDouble).contiguous();
    const std::vector<double> scores(p.data_ptr<double>(), p.data_ptr<double>() + p.numel());
    std::vector<int> predicted;
    for (double s : scores)
      predicted.push_back(s >= 0.5 ? 1 : 0);
    r.auc = rocAuc(scores, truth);
    r.accuracy = accuracy(predicted, truth);
  } else {
    const torch::Tensor arg = logits.argmax(1).to(torch::kLong).contiguous();
    const std::vector<int> predicted(arg.data_ptr<std::int64_t>(),
                                     arg.data_ptr<std::int64_t>() + arg.numel());
    r.accuracy = accuracy(predicted, truth);
    r.kappa = quadraticWeightedKappa(predicted, truth, classes);
  }
  return r;
}

nlohmann::json meanStdJson(const MeanStd& m) {
  return {{"mean", m.mean}, {"std", m.std}, {"n", m.count}};
}

}  // namespace

std::map<std::string, std::string> ensurePatientSplit(storage::Index& index, const TrainingSet& set,
                                                      const SplitConfig& config) {
  if (!(config.trainFraction > 0 && config.valFraction >= 0 && config.trainFraction + config.valFraction < 1))
    throw std::invalid_argument(
        "split fractions must leave room for a test split (train > 0, val >= 0, sum < 1)");
  std::map<std::string, std::string> existing = index.splits();
  std::vector<std::pair<std::string, std::string>> added;
  std::map<std::string, std::string> result;
  for (const std::string& patient : set.patientKeys()) {
    auto it = existing.find(patient);
    if (it != existing.end()) {
      result.emplace(patient, it->second);
      continue;
    }
    const double u =
        static_cast<double>(StableHash().add(std::to_string(config.seed)).add(patient).value() >> 11) *
        (1.0 / 9007199254740992.0);  // 53 bits -> [0, 1)
    const std::string split = u < config.trainFraction                        ? "train"
                              : u < config.trainFraction + config.valFraction ? "val"
                                                                              : "test";
    added.emplace_back(patient, split);
    result.emplace(patient, split);
  }
  if (!added.empty())
    index.assignSplits(added, static_cast<std::int64_t>(config.seed));
  return result;
}

std::string splitId(const std::map<std::string, std::string>& split) {
  StableHash hash;
  for (const auto& [patient, which] : split)
    hash.add(patient).add(which);
  return hash.id("split");
}

LabelBudget LabelBudget::parse(const std::string& text) {
  LabelBudget budget;
  try {
    std::size_t used = 0;
    if (!text.empty() && text.back() == '%') {
      const double percent = std::stod(text.substr(0, text.size() - 1), &used);
      if (used != text.size() - 1 || !(percent > 0 && percent <= 100))
        throw std::invalid_argument("");
      budget.fraction = percent / 100.0;
    } else {
      const int count = std::stoi(text, &used);
      if (used != text.size() || count < 2)
        throw std::invalid_argument("");
      budget.count = count;
    }
  } catch (const std::exception&) {
    throw std::invalid_argument("label budget \"" + text +
                                "\" must be a percentage in (0, 100] such as 10% or a number of images >= 2");
  }
  return budget;
}

std::string LabelBudget::toString() const {
  if (count > 0)
    return std::to_string(count) + " images";
  std::ostringstream out;
  out << fraction * 100 << "%";
  return out.str();
}

ProtocolConfig::ProtocolConfig() {
  finetuneOptim.learningRate = 1e-4;
  finetuneOptim.schedule = "constant";
}

nlohmann::json ProtocolConfig::toJson() const {
  std::vector<std::string> budgetTexts;
  for (const auto& b : budgets)
    budgetTexts.push_back(b.toString());
  return {{"mode", mode},
          {"labels", labels},
          {"budgets", budgetTexts},
          {"draws", draws},
          {"seed", seed},
          {"imageSize", imageSize},
          {"batchSize", batchSize},
          {"linearSteps", linearSteps},
          {"linearLearningRate", linearLearningRate},
          {"linearWeightDecay", linearWeightDecay},
          {"finetuneEpochs", finetuneEpochs},
          {"finetuneOptim", finetuneOptim.toJson()}};
}

std::string EncoderSource::describe() const {
  return directory.empty() ? "random " + architecture : directory;
}

nlohmann::json LabelResult::toJson() const {
  nlohmann::json draws_ = nlohmann::json::array();
  for (const DrawResult& d : draws) {
    nlohmann::json j = {{"trainImages", d.trainImages}, {"accuracy", d.accuracy}};
    if (graded)
      j["kappa"] = d.kappa;
    else {
      j["trainPositives"] = d.trainPositives;
      j["auc"] = d.auc;
    }
    draws_.push_back(j);
  }
  nlohmann::json json = {{"finding", finding},
                         {"budget", budget},
                         {"graded", graded},
                         {"classes", classes},
                         {"testImages", testImages},
                         {"labelledTrainImages", labelledTrainImages},
                         {"accuracy", meanStdJson(accuracy)},
                         {"draws", draws_}};
  if (graded)
    json["kappa"] = meanStdJson(kappa);
  else {
    json["testPositives"] = testPositives;
    json["auc"] = meanStdJson(auc);
  }
  return json;
}

nlohmann::json ProtocolResult::toJson() const {
  nlohmann::json list = nlohmann::json::array();
  for (const auto& l : labels)
    list.push_back(l.toJson());
  return {{"encoder", encoder},
          {"dataSnapshot", dataSnapshot},
          {"split", {{"id", splitId}, {"patients", splitPatients}}},
          {"labels", list}};
}

ProtocolResult runProtocol(const TrainingSet& set, const storage::ImageCache& cache,
                           const std::map<std::string, std::string>& split, const EncoderSource& source,
                           const ProtocolConfig& config, const ProtocolProgress& progress,
                           const std::atomic<bool>* cancel) {
  if (config.mode != "linear" && config.mode != "finetune")
    throw std::invalid_argument("evaluation mode must be linear or finetune, not \"" + config.mode + "\"");
  if (config.labels.empty())
    throw std::invalid_argument("name at least one label to evaluate");
  if (config.draws < 1)
    throw std::invalid_argument("draws must be at least 1");
  const std::vector<std::string> known = set.findings();
  for (const std::string& label : config.labels) {
    if (std::find(known.begin(), known.end(), label) == known.end()) {
      std::string list;
      for (const auto& k : known)
        list += (list.empty() ? "" : ", ") + k;
      throw DataError("no image carries the label '" + label +
                      "'; labels present: " + (list.empty() ? "(none: import labels first)" : list));
    }
  }
  const torch::Device device = parseDevice(config.device);
  const HeapRetention heapRetention(device.is_cpu());
  Encoder encoder = openEncoder(source, config.imageSize, config.seed);
  encoder.backbone->to(device);
  FeatureCache features(*encoder.backbone, encoder.info, set, cache, config.imageSize, config.batchSize,
                        device);

  ProtocolResult result;
  result.encoder = source.directory.empty() ? source.describe() : source.directory;
  result.dataSnapshot = set.snapshotId();
  result.splitId = splitId(split);
  for (const auto& [patient, which] : split)
    ++result.splitPatients[which];

  for (std::size_t li = 0; li < config.labels.size(); ++li) {
    const std::string& finding = config.labels[li];
    const Labelled pool = labelledIn(set, split, finding, "train");
    const Labelled test = labelledIn(set, split, finding, "test");
    const int classes = classesOf(pool, test);
    if (test.images.empty() || std::set<int>(test.targets.begin(), test.targets.end()).size() < 2) {
      throw DataError("the test patients hold " + std::to_string(test.images.size()) +
                      " image(s) labelled '" + finding +
                      "', not both classes: AUC is undefined; label more studies or change the split");
    }
    for (std::size_t bi = 0; bi < config.budgets.size(); ++bi) {
      LabelResult r;
      r.finding = finding;
      r.budget = config.budgets[bi].toString();
      r.graded = classes > 2;
      r.classes = classes;
      r.testImages = static_cast<int>(test.images.size());
      r.testPositives = static_cast<int>(std::count(test.targets.begin(), test.targets.end(), 1));
      r.labelledTrainImages = static_cast<int>(pool.images.size());
      std::vector<double> aucs, accuracies, kappas;
      for (int draw = 0; draw < config.draws; ++draw) {
        if (cancel && cancel->load())
          throw DataError("cancelled");
        std::mt19937_64 rng = drawRng(config.seed, static_cast<std::uint32_t>(li),
                                      static_cast<std::uint32_t>(bi), static_cast<std::uint32_t>(draw));
        const Labelled subset = drawSubset(pool, classes, config.budgets[bi], finding, rng);
        torch::Tensor testLogits;
        if (config.mode == "linear") {
          const LinearProbe probe = fitProbe(features.of(subset.images), subset.targets, classes, config);
          testLogits = probe.logits(features.of(test.images));
        } else {
          const torch::Tensor targets =
              classes == 2
                  ? torch::tensor(std::vector<float>(subset.targets.begin(), subset.targets.end()))
                  : torch::tensor(std::vector<std::int64_t>(subset.targets.begin(), subset.targets.end()));
          auto network =
              finetune(encoder, set, cache, subset.images, targets, classes, config, device, rng, cancel);
          testLogits = predictLogits(*network, encoder.info, set, cache, test.images, config.imageSize,
                                     config.batchSize, device);
        }
        DrawResult d = score(testLogits, test.targets, classes);
        d.trainImages = static_cast<int>(subset.images.size());
        d.trainPositives = static_cast<int>(std::count(subset.targets.begin(), subset.targets.end(), 1));
        r.draws.push_back(d);
        aucs.push_back(d.auc);
        accuracies.push_back(d.accuracy);
        kappas.push_back(d.kappa);
        if (progress) {
          std::ostringstream line;
          line.precision(3);
          line << finding << " " << r.budget << " draw " << draw + 1 << "/" << config.draws << ": "
               << d.trainImages << " train images, "
               << (r.graded ? "kappa " + std::to_string(d.kappa) : "AUC " + std::to_string(d.auc));
          progress(line.str());
        }
      }
      r.auc = meanStd(aucs);
      r.accuracy = meanStd(accuracies);
      r.kappa = meanStd(kappas);
      result.labels.push_back(std::move(r));
    }
  }
  return result;
}

void trainAndSaveModel(const TrainingSet& set, const storage::ImageCache& cache,
                       const std::map<std::string, std::string>& split, const EncoderSource& source,
                       const ProtocolConfig& config, const ProtocolResult& metrics, int version,
                       const std::string& directory) {
  const torch::Device device = parseDevice(config.device);
  const HeapRetention heapRetention(device.is_cpu());
  Encoder encoder = openEncoder(source, config.imageSize, config.seed);
  encoder.backbone->to(device);
  std::vector<std::string> findings;
  std::vector<Labelled> pools;
  for (const std::string& label : config.labels) {
    Labelled pool = labelledIn(set, split, label, "train");
    if (pool.images.empty() || *std::max_element(pool.targets.begin(), pool.targets.end()) > 1)
      continue;  // graded labels have no place in a per-finding probability model
    findings.push_back(label);
    pools.push_back(std::move(pool));
  }
  if (findings.empty())
    throw DataError("no binary label with labelled training images: nothing to put in a model");
  const auto outputs = static_cast<int>(findings.size());
  std::shared_ptr<ResNet> network;
  if (config.mode == "linear") {
    network = withHead(*encoder.backbone, encoder.info, outputs);
    FeatureCache features(*encoder.backbone, encoder.info, set, cache, config.imageSize, config.batchSize,
                          device);
    for (int f = 0; f < outputs; ++f) {
      const Labelled& pool = pools[static_cast<std::size_t>(f)];
      const LinearProbe probe = fitProbe(features.of(pool.images), pool.targets, 2, config);
      // Fold the standardisation into the layer: w' = w / scale, b' = b - sum(mean * w / scale).
      torch::NoGradGuard noGrad;
      const torch::Tensor w = probe.weight.squeeze(1) / probe.scale;
      network->named_parameters()["fc.weight"][f].copy_(w);
      network->named_parameters()["fc.bias"][f].copy_(probe.bias[0] - (probe.mean * w).sum());
    }
  } else {
    std::set<int> all;
    for (const auto& pool : pools)
      all.insert(pool.images.begin(), pool.images.end());
    const std::vector<int> images(all.begin(), all.end());
    torch::Tensor targets = torch::full({static_cast<std::int64_t>(images.size()), outputs}, NAN);
    for (int f = 0; f < outputs; ++f) {
      const Labelled& pool = pools[static_cast<std::size_t>(f)];
      for (std::size_t k = 0; k < pool.images.size(); ++k) {
        const auto row = std::lower_bound(images.begin(), images.end(), pool.images[k]) - images.begin();
        targets[row][f] = static_cast<float>(pool.targets[k]);
      }
    }
    std::mt19937_64 rng = drawRng(config.seed, 0xffff, 0xffff, 0);
    network = finetune(encoder, set, cache, images, targets, 2, config, device, rng, nullptr);
  }
  network->to(torch::kCPU);
  ModelFile model;
  model.version = version;
  model.architecture = {{"name", encoder.info.architecture}, {"params", nlohmann::json::object()}};
  model.inputSize = config.imageSize;
  model.channels = encoder.info.channels;
  model.findings = findings;
  model.mean.assign(static_cast<std::size_t>(model.channels), encoder.info.mean);
  model.stddev.assign(static_cast<std::size_t>(model.channels), encoder.info.stddev);
  model.method = (source.directory.empty() ? std::string("random")
                                           : encoder.info.details.value("method", "pretrained")) +
                 "+" + config.mode;
  model.metrics = metrics.toJson();
  model.training = {{"dataSnapshot", set.snapshotId()},
                    {"split", {{"id", splitId(split)}, {"file", "split.json"}}},
                    {"encoder", source.describe()},
                    {"encoderDetails", encoder.info.details},
                    {"protocol", config.toJson()}};
  nlohmann::json splitJson = split;
  writeModelDirectory(
      directory, model, *network,
      {{"split.json", splitJson.dump(1) + "\n"}, {"weights.pth", pickledStateDict(*network)}});
}

std::function<double(ResNet& backbone, int epoch)> knnMonitor(const TrainingSet& set,
                                                              const storage::ImageCache& cache,
                                                              const std::map<std::string, std::string>& split,
                                                              const KnnMonitorConfig& config) {
  if (config.k < 1 || !(config.temperature > 0) || config.batchSize < 1)
    throw std::invalid_argument("k-NN monitor: k and the batch size must be >= 1, the temperature > 0");
  const std::vector<std::string> known = set.findings();
  if (std::find(known.begin(), known.end(), config.label) == known.end())
    throw DataError("k-NN monitor: no image carries the label '" + config.label + "'");
  const Labelled train = labelledIn(set, split, config.label, "train");
  const Labelled test = labelledIn(set, split, config.label, "test");
  if (train.images.empty() || test.images.empty()) {
    throw DataError("k-NN monitor: the patient split leaves " + std::to_string(train.images.size()) +
                    " train and " + std::to_string(test.images.size()) + " test images labelled '" +
                    config.label + "'; it needs both");
  }
  const int classes = classesOf(train, test);
  return [&set, &cache, config, train, test, classes](ResNet& backbone, int) {
    const torch::Device device = backbone.parameters().front().device();
    FeatureCache features(backbone, config.input, set, cache, config.input.imageSize, config.batchSize,
                          device);
    return knnAccuracy(features.of(train.images), torch::tensor(train.targets, torch::kLong),
                       features.of(test.images), torch::tensor(test.targets, torch::kLong), classes, config.k,
                       config.temperature);
  };
}

}  // namespace comcl::training
