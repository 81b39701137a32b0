#include "comcl/training/evaluation.h"

#include <torch/nn/functional/loss.h>
#include <torch/nn/functional/upsampling.h>
#include <torch/optim/adam.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <locale>
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
#include "image_ops.h"

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

torch::Tensor readImages(const TrainingSet& set, const storage::ImageCache& cache,
                         const std::vector<int>& images, torch::Device device, int channels) {
  return loadBatch(cache, set.cachedRefs(images), device, channels);
}

// Changes a batch of images ([n, C, size, size] in [0, 1], the set's images `images`) before it is
// normalised: the sweep's degradations.
using BatchTransform =
    std::function<torch::Tensor(const torch::Tensor& batch, const std::vector<int>& images)>;

// `forward` (a backbone's features or a network's logits) of the images, `batchSize` at a time in the given
// order: read from the cache with the encoder's channels, resized to `imageSize`, passed through `transform`
// (when set) and normalised. Rows in the order of `images`, on the CPU. The clean and the degraded
// test images go through here in the same batches, so a transform that changes nothing changes no output.
torch::Tensor forwardImages(const std::function<torch::Tensor(const torch::Tensor&)>& forward,
                            const EncoderInfo& info, const TrainingSet& set, const storage::ImageCache& cache,
                            const std::vector<int>& images, int imageSize, int batchSize,
                            torch::Device device, const BatchTransform& transform = {}) {
  torch::NoGradGuard noGrad;
  std::vector<torch::Tensor> parts;
  for (std::size_t start = 0; start < images.size(); start += static_cast<std::size_t>(batchSize)) {
    const std::vector<int> chunk(
        images.begin() + static_cast<std::ptrdiff_t>(start),
        images.begin() + static_cast<std::ptrdiff_t>(
                             std::min(images.size(), start + static_cast<std::size_t>(batchSize))));
    torch::Tensor x = detail::resizedTo(readImages(set, cache, chunk, device, info.channels), imageSize);
    if (transform)
      x = transform(x, chunk);
    x = (x - info.mean) / info.stddev;
    parts.push_back(forward(x).to(torch::kCPU));
  }
  return torch::cat(parts);
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
    e.info.channels = source.channels;
    e.backbone = makeBackbone(source.architecture, source.channels, 1);
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
    if (!missing.empty()) {
      const torch::Tensor f = compute(missing);
      for (std::size_t k = 0; k < missing.size(); ++k)
        features_.emplace(missing[k], f[static_cast<std::int64_t>(k)]);
    }
    std::vector<torch::Tensor> rows;
    for (int i : images)
      rows.push_back(features_.at(i));
    return torch::stack(rows);
  }

  // Features of the images as they come after `transform`, in batches of the images' order; not cached.
  torch::Tensor compute(const std::vector<int>& images, const BatchTransform& transform = {}) {
    backbone_.eval();
    return forwardImages([this](const torch::Tensor& x) { return backbone_.features(x); }, info_, set_,
                         cache_, images, size_, batch_, device_, transform);
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
      torch::Tensor x = augment(readImages(set, cache, chunk, device, encoder.info.channels), rng);
      x = (x - encoder.info.mean) / encoder.info.stddev;
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
                            int batchSize, torch::Device device, const BatchTransform& transform = {}) {
  network.eval();
  return forwardImages([&network](const torch::Tensor& x) { return network.forward(x); }, info, set, cache,
                       images, imageSize, batchSize, device, transform);
}

// The test images of each quality level (rows into the test list), in qualityLevels() order and then any
// other flag found, alphabetically.
std::vector<std::pair<std::string, std::vector<std::size_t>>> rowsByQuality(const TrainingSet& set,
                                                                            const std::vector<int>& images) {
  std::vector<std::pair<std::string, std::vector<std::size_t>>> levels;
  for (const std::string& level : qualityLevels())
    levels.emplace_back(level, std::vector<std::size_t>{});
  std::map<std::string, std::vector<std::size_t>> others;
  for (std::size_t row = 0; row < images.size(); ++row) {
    const auto& flag = set.images()[static_cast<std::size_t>(images[row])].qualityFlag;
    const std::string level = flag && !flag->empty() ? *flag : "none";
    auto it = std::find_if(levels.begin(), levels.end(), [&](const auto& l) { return l.first == level; });
    if (it != levels.end())
      it->second.push_back(row);
    else
      others[level].push_back(row);
  }
  for (auto& [level, rows] : others)
    levels.emplace_back(level, std::move(rows));
  return levels;
}

std::vector<std::size_t> allRows(std::size_t count) {
  std::vector<std::size_t> rows(count);
  std::iota(rows.begin(), rows.end(), std::size_t{0});
  return rows;
}

// The draw's headline metrics: AUC and accuracy (binary) or accuracy and kappa (graded) on every test image.
DrawResult score(const torch::Tensor& logits, const std::vector<int>& truth, int classes) {
  const SubsetScore all = scoreSubset(logits, truth, classes, allRows(truth.size()));
  DrawResult r;
  r.accuracy = all.accuracy.value_or(0);
  if (classes == 2)
    r.auc = all.auc.value_or(0);
  else
    r.kappa = all.kappa.value_or(0);
  return r;
}

std::optional<MeanStd> meanStdOf(const std::vector<const SubsetScore*>& scores,
                                 std::optional<double> SubsetScore::*metric) {
  std::vector<double> values;
  for (const SubsetScore* s : scores) {
    if (s->*metric)
      values.push_back(*(s->*metric));
  }
  if (values.empty())
    return std::nullopt;
  return meanStd(values);
}

// One subset's metrics over the draws. Which metrics are defined depends on the test images only, so it is
// the same in every draw; the reason is the first draw's.
SubsetSummary summarise(const std::vector<const SubsetScore*>& scores) {
  SubsetSummary s;
  if (scores.empty())
    return s;
  s.images = scores.front()->images;
  s.classCounts = scores.front()->classCounts;
  s.missing = scores.front()->missing;
  s.auc = meanStdOf(scores, &SubsetScore::auc);
  s.accuracy = meanStdOf(scores, &SubsetScore::accuracy);
  s.kappa = meanStdOf(scores, &SubsetScore::kappa);
  return s;
}

// Fills the label's per-level and per-severity summaries from its draws.
void summariseSubsets(LabelResult& r) {
  for (std::size_t level = 0; level < r.byQuality.size(); ++level) {
    std::vector<const SubsetScore*> scores;
    for (const DrawResult& d : r.draws)
      scores.push_back(&d.byQuality.at(level));
    SubsetSummary summary = summarise(scores);
    summary.level = r.byQuality[level].level;
    r.byQuality[level] = std::move(summary);
  }
  for (std::size_t k = 0; k < r.sweepResults.size(); ++k) {
    std::vector<const SubsetScore*> scores;
    for (const DrawResult& d : r.draws)
      scores.push_back(&d.sweep.at(k));
    SubsetSummary summary = summarise(scores);
    summary.severity = r.sweepResults[k].severity;
    r.sweepResults[k] = std::move(summary);
  }
}

nlohmann::json meanStdJson(const MeanStd& m) {
  return {{"mean", m.mean}, {"std", m.std}, {"n", m.count}};
}

nlohmann::json optionalJson(const std::optional<double>& value) {
  return value ? nlohmann::json(*value) : nlohmann::json(nullptr);
}

nlohmann::json optionalJson(const std::optional<MeanStd>& value) {
  return value ? meanStdJson(*value) : nlohmann::json(nullptr);
}

// The counts and the metrics a label reports for a subset: AUC for binary labels, accuracy and kappa for all.
template <typename Subset>
nlohmann::json subsetJson(const Subset& s, bool graded, bool counts) {
  nlohmann::json json = nlohmann::json::object();
  if (counts) {
    json["images"] = s.images;
    if (graded)
      json["classCounts"] = s.classCounts;
    else
      json["positives"] = s.positives();
  }
  if (!graded)
    json["auc"] = optionalJson(s.auc);
  json["accuracy"] = optionalJson(s.accuracy);
  json["kappa"] = optionalJson(s.kappa);
  if (!s.missing.empty())
    json["missing"] = s.missing;
  return json;
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
  nlohmann::json json = {{"mode", mode},
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
                         {"finetuneOptim", finetuneOptim.toJson()},
                         {"byQuality", byQuality}};
  if (sweep)
    json["sweep"] = sweep->toJson();
  return json;
}

std::string EncoderSource::describe() const {
  return directory.empty() ? "random " + architecture : directory;
}

const std::vector<std::string>& qualityLevels() {
  static const std::vector<std::string> levels{"good", "usable", "reject", "none"};
  return levels;
}

void DegradationSweep::validate() const {
  if (spec != "composite") {
    try {
      degradationKindFromString(spec);
    } catch (const std::invalid_argument&) {
      std::string kinds;
      for (DegradationKind kind : allDegradationKinds())
        kinds += std::string(", ") + toString(kind);
      throw std::invalid_argument("unknown degradation sweep \"" + spec + "\": use composite" + kinds);
    }
  }
  if (severities.empty())
    throw std::invalid_argument("the degradation sweep needs at least one severity");
  for (double severity : severities) {
    if (!(severity >= 0 && severity <= 1))
      throw std::invalid_argument("sweep severity " + detail::numberText(severity) + " is outside [0, 1]");
  }
}

DegradationSweep DegradationSweep::parse(const std::string& spec, const std::string& severities) {
  DegradationSweep sweep;
  sweep.spec = spec;
  sweep.severities = parseSeverities(severities);
  sweep.validate();
  return sweep;
}

nlohmann::json DegradationSweep::toJson() const {
  return {{"spec", spec}, {"severities", severities}};
}

std::vector<double> parseSeverities(const std::string& text) {
  std::vector<double> values;
  std::istringstream items(text);
  std::string item;
  while (std::getline(items, item, ',')) {
    const auto first = item.find_first_not_of(" \t");
    const auto last = item.find_last_not_of(" \t");
    const std::string entry = first == std::string::npos ? "" : item.substr(first, last - first + 1);
    std::istringstream in(entry);
    in.imbue(std::locale::classic());
    double value = 0;
    in >> value;
    if (entry.empty() || in.fail() || !in.eof())
      throw std::invalid_argument("sweep severity \"" + entry + "\" (in \"" + text + "\") is not a number");
    if (!(value >= 0 && value <= 1))
      throw std::invalid_argument("sweep severity " + entry + " is outside [0, 1]");
    values.push_back(value);
  }
  if (values.empty())
    throw std::invalid_argument("the degradation sweep needs at least one severity (the list \"" + text +
                                "\" is empty)");
  return values;
}

SweepDegrader::SweepDegrader(DegradationSweep sweep, std::uint64_t seed)
    : sweep_(std::move(sweep)), seed_(seed) {
  sweep_.validate();
  if (sweep_.spec != "composite")
    kind_ = degradationKindFromString(sweep_.spec);
}

torch::Tensor SweepDegrader::operator()(const torch::Tensor& images, const std::vector<std::string>& keys,
                                        double severity) const {
  if (!(severity >= 0 && severity <= 1))
    throw std::invalid_argument("sweep severity " + detail::numberText(severity) + " is outside [0, 1]");
  if (images.dim() != 4 || static_cast<std::int64_t>(keys.size()) != images.size(0)) {
    throw std::invalid_argument("sweep degradation: " + std::to_string(keys.size()) + " image key(s) for " +
                                (images.dim() == 4 ? std::to_string(images.size(0)) + " images"
                                                   : "a tensor that is not [N, C, H, W]"));
  }
  DegradationConfig config = radiographDegradation();
  config.severityMin = severity;
  config.severityMax = severity;
  const Degrader degrader(config);
  const auto height = static_cast<int>(images.size(2));
  const auto width = static_cast<int>(images.size(3));
  std::vector<DegradeParams> params;
  for (const std::string& key : keys) {
    const std::uint64_t hash = StableHash().add("degradation sweep").add(key).value();
    std::seed_seq sequence{static_cast<std::uint32_t>(seed_), static_cast<std::uint32_t>(seed_ >> 32),
                           static_cast<std::uint32_t>(hash), static_cast<std::uint32_t>(hash >> 32)};
    std::mt19937_64 rng(sequence);
    std::vector<DegradeParams> one = kind_ ? degrader.drawKind(*kind_, severity, 1, height, width, rng)
                                           : degrader.drawParams(1, height, width, rng);
    params.push_back(std::move(one.front()));
  }
  return degrader.apply(images, params);
}

SubsetScore scoreSubset(const torch::Tensor& logits, const std::vector<int>& truth, int classes,
                        const std::vector<std::size_t>& rows) {
  if (classes < 2)
    throw std::invalid_argument("scoreSubset: classes must be at least 2");
  if (logits.dim() != 2 || logits.size(0) != static_cast<std::int64_t>(truth.size()) ||
      logits.size(1) != (classes == 2 ? 1 : classes)) {
    throw std::invalid_argument("scoreSubset: logits must be [" + std::to_string(truth.size()) + ", " +
                                std::to_string(classes == 2 ? 1 : classes) + "]");
  }
  SubsetScore s;
  s.images = static_cast<int>(rows.size());
  s.classCounts.assign(static_cast<std::size_t>(classes), 0);
  std::vector<int> subsetTruth;
  std::vector<std::int64_t> index;
  for (std::size_t row : rows) {
    if (row >= truth.size())
      throw std::invalid_argument("scoreSubset: row " + std::to_string(row) + " of " +
                                  std::to_string(truth.size()) + " test images");
    const int t = truth[row];
    if (t < 0 || t >= classes)
      throw std::invalid_argument("scoreSubset: class " + std::to_string(t) + " outside 0.." +
                                  std::to_string(classes - 1));
    ++s.classCounts[static_cast<std::size_t>(t)];
    subsetTruth.push_back(t);
    index.push_back(static_cast<std::int64_t>(row));
  }
  if (rows.empty()) {
    s.missing = "no test images";
    return s;
  }
  const torch::Tensor selected = logits.to(torch::kCPU).index_select(0, torch::tensor(index, torch::kLong));
  std::vector<int> predicted;
  if (classes == 2) {
    const torch::Tensor p = torch::sigmoid(selected.reshape({-1})).to(torch::kDouble).contiguous();
    const std::vector<double> scores(p.data_ptr<double>(), p.data_ptr<double>() + p.numel());
    for (double score : scores)
      predicted.push_back(score >= 0.5 ? 1 : 0);
    const int positives = s.classCounts[1];
    if (positives == 0 || positives == s.images) {
      s.missing = "only " + std::string(positives == 0 ? "negatives" : "positives") + " (" +
                  std::to_string(s.images) + " image" + (s.images == 1 ? "" : "s") + "): AUC is undefined";
    } else {
      s.auc = rocAuc(scores, subsetTruth);
    }
  } else {
    const torch::Tensor arg = selected.argmax(1).to(torch::kLong).contiguous();
    predicted.assign(arg.data_ptr<std::int64_t>(), arg.data_ptr<std::int64_t>() + arg.numel());
  }
  s.accuracy = accuracy(predicted, subsetTruth);
  s.kappa = quadraticWeightedKappa(predicted, subsetTruth, classes);
  return s;
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
    if (!d.byQuality.empty()) {
      j["byQuality"] = nlohmann::json::array();
      for (std::size_t k = 0; k < d.byQuality.size(); ++k) {
        nlohmann::json level = subsetJson(d.byQuality[k], graded, false);
        level["level"] = k < byQuality.size() ? byQuality[k].level : std::string();
        j["byQuality"].push_back(level);
      }
    }
    if (!d.sweep.empty()) {
      j["sweep"] = nlohmann::json::array();
      for (std::size_t k = 0; k < d.sweep.size(); ++k) {
        nlohmann::json point = subsetJson(d.sweep[k], graded, false);
        point["severity"] = k < sweepResults.size() ? sweepResults[k].severity : 0.0;
        j["sweep"].push_back(point);
      }
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
  if (!byQuality.empty()) {
    json["byQuality"] = nlohmann::json::array();
    for (const SubsetSummary& level : byQuality) {
      nlohmann::json entry = subsetJson(level, graded, true);
      entry["level"] = level.level;
      json["byQuality"].push_back(entry);
    }
  }
  if (sweep) {
    nlohmann::json points = nlohmann::json::array();
    for (const SubsetSummary& point : sweepResults) {
      nlohmann::json entry = subsetJson(point, graded, true);
      entry["severity"] = point.severity;
      points.push_back(entry);
    }
    json["sweep"] = {{"spec", sweep->spec}, {"seed", sweepSeed}, {"severities", points}};
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
  if (config.sweep)
    config.sweep->validate();
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

  std::optional<SweepDegrader> degrader;
  if (config.sweep)
    degrader.emplace(*config.sweep, config.seed);
  const std::vector<double> severities = config.sweep ? config.sweep->severities : std::vector<double>{};
  // The sweep's transform at one severity: each image degraded by its own draws (keyed by its resource id).
  auto degradedAt = [&](double severity) -> BatchTransform {
    return [&degrader, &set, severity](const torch::Tensor& batch, const std::vector<int>& images) {
      std::vector<std::string> keys;
      for (int i : images)
        keys.push_back(set.images()[static_cast<std::size_t>(i)].resourceId);
      return (*degrader)(batch, keys, severity);
    };
  };

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
    const auto levels = config.byQuality ? rowsByQuality(set, test.images)
                                         : std::vector<std::pair<std::string, std::vector<std::size_t>>>{};
    const std::vector<std::size_t> everyRow = allRows(test.images.size());
    // Linear probe: the test images' features, encoded once per label in the batches the sweep uses.
    torch::Tensor testFeatures;
    if (config.mode == "linear")
      testFeatures = features.compute(test.images);
    struct KeptProbe {
      std::size_t labelResult;  // into `labelResults`
      std::size_t draw;
      LinearProbe probe;
    };
    std::vector<KeptProbe> probes;  // each draw's linear head, scored on the sweep after the draws
    std::vector<LabelResult> labelResults;
    for (std::size_t bi = 0; bi < config.budgets.size(); ++bi) {
      LabelResult r;
      r.finding = finding;
      r.budget = config.budgets[bi].toString();
      r.graded = classes > 2;
      r.classes = classes;
      r.testImages = static_cast<int>(test.images.size());
      r.testPositives = static_cast<int>(std::count(test.targets.begin(), test.targets.end(), 1));
      r.labelledTrainImages = static_cast<int>(pool.images.size());
      for (const auto& [level, rows] : levels) {
        SubsetSummary summary;
        summary.level = level;
        r.byQuality.push_back(summary);
      }
      if (config.sweep) {
        r.sweep = config.sweep;
        r.sweepSeed = config.seed;
        for (double severity : severities) {
          SubsetSummary summary;
          summary.severity = severity;
          r.sweepResults.push_back(summary);
        }
      }
      for (int draw = 0; draw < config.draws; ++draw) {
        if (cancel && cancel->load())
          throw DataError("cancelled");
        std::mt19937_64 rng = drawRng(config.seed, static_cast<std::uint32_t>(li),
                                      static_cast<std::uint32_t>(bi), static_cast<std::uint32_t>(draw));
        const Labelled subset = drawSubset(pool, classes, config.budgets[bi], finding, rng);
        torch::Tensor testLogits;
        std::vector<SubsetScore> sweep;
        if (config.mode == "linear") {
          LinearProbe probe = fitProbe(features.of(subset.images), subset.targets, classes, config);
          testLogits = probe.logits(testFeatures);
          if (config.sweep)
            probes.push_back({labelResults.size(), static_cast<std::size_t>(draw), std::move(probe)});
        } else {
          const torch::Tensor targets =
              classes == 2
                  ? torch::tensor(std::vector<float>(subset.targets.begin(), subset.targets.end()))
                  : torch::tensor(std::vector<std::int64_t>(subset.targets.begin(), subset.targets.end()));
          auto network =
              finetune(encoder, set, cache, subset.images, targets, classes, config, device, rng, cancel);
          testLogits = predictLogits(*network, encoder.info, set, cache, test.images, config.imageSize,
                                     config.batchSize, device);
          for (double severity : severities) {
            if (cancel && cancel->load())
              throw DataError("cancelled");
            const torch::Tensor logits =
                predictLogits(*network, encoder.info, set, cache, test.images, config.imageSize,
                              config.batchSize, device, degradedAt(severity));
            sweep.push_back(scoreSubset(logits, test.targets, classes, everyRow));
          }
        }
        DrawResult d = score(testLogits, test.targets, classes);
        d.trainImages = static_cast<int>(subset.images.size());
        d.trainPositives = static_cast<int>(std::count(subset.targets.begin(), subset.targets.end(), 1));
        for (const auto& [level, rows] : levels)
          d.byQuality.push_back(scoreSubset(testLogits, test.targets, classes, rows));
        d.sweep = std::move(sweep);  // the linear probe's come after the draws
        r.draws.push_back(std::move(d));
        if (progress) {
          const DrawResult& last = r.draws.back();
          std::ostringstream line;
          line.precision(3);
          line << finding << " " << r.budget << " draw " << draw + 1 << "/" << config.draws << ": "
               << last.trainImages << " train images, "
               << (r.graded ? "kappa " + std::to_string(last.kappa) : "AUC " + std::to_string(last.auc));
          progress(line.str());
        }
      }
      labelResults.push_back(std::move(r));
    }
    // The linear probe's sweep: the test images encoded once per severity, every kept head scored on them.
    if (config.mode == "linear") {
      for (double severity : severities) {
        if (cancel && cancel->load())
          throw DataError("cancelled");
        const torch::Tensor degraded = features.compute(test.images, degradedAt(severity));
        for (const KeptProbe& kept : probes) {
          labelResults[kept.labelResult].draws[kept.draw].sweep.push_back(
              scoreSubset(kept.probe.logits(degraded), test.targets, classes, everyRow));
        }
        if (progress)
          progress(finding + ": test images encoded at " + config.sweep->spec + " severity " +
                   detail::numberText(severity));
      }
    }
    for (LabelResult& r : labelResults) {
      std::vector<double> aucs, accuracies, kappas;
      for (const DrawResult& d : r.draws) {
        aucs.push_back(d.auc);
        accuracies.push_back(d.accuracy);
        kappas.push_back(d.kappa);
      }
      r.auc = meanStd(aucs);
      r.accuracy = meanStd(accuracies);
      r.kappa = meanStd(kappas);
      summariseSubsets(r);
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
