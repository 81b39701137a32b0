// comcl pairs / pretrain / linear-eval / finetune / score: the training side of the command-line tool.
// LibTorch and the index only, so these commands exist in a training-only build too.
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <optional>
#include <sstream>

#include "comcl/storage/image_cache.h"
#include "comcl/storage/index.h"
#include "comcl/training/device.h"
#include "comcl/training/encoder_file.h"
#include "comcl/training/evaluation.h"
#include "comcl/training/lesions.h"
#include "comcl/training/metrics.h"
#include "comcl/training/model_io.h"
#include "comcl/training/pairs.h"
#include "comcl/training/pretrain.h"
#include "comcl/training/scorer.h"
#include "comcl/training/tensor_batch.h"
#include "commands.h"

#ifdef COMCL_WITH_IMAGING
#include "comcl/imaging/png.h"
#endif

namespace comcl::cli {

namespace {

namespace fs = std::filesystem;

using namespace comcl::training;

std::atomic<bool> interrupted{false};

extern "C" void onInterrupt(int) {
  interrupted = true;
}

// Ctrl-C stops training between two steps (a second one kills the process as usual).
class InterruptToCancel {
 public:
  InterruptToCancel() {
    interrupted = false;
    previous_ = std::signal(SIGINT, onInterrupt);
    std::signal(SIGTERM, onInterrupt);
  }
  ~InterruptToCancel() {
    std::signal(SIGINT, previous_);
    std::signal(SIGTERM, SIG_DFL);
  }
  InterruptToCancel(const InterruptToCancel&) = delete;
  InterruptToCancel& operator=(const InterruptToCancel&) = delete;

 private:
  void (*previous_)(int) = SIG_DFL;
};

struct DataOptions {
  std::string db = "comcl.sqlite";
  std::string cache;  // default: db + ".images"
  std::string studyBy = "uid";
  std::string cachePath() const { return cache.empty() ? db + ".images" : cache; }
};

void addDataOptions(CLI::App* command, DataOptions& o) {
  command->add_option("--db", o.db, "SQLite index database")->capture_default_str();
  command->add_option("--cache", o.cache, "Image cache file (default: DB path + .images)");
  command
      ->add_option("--study-by", o.studyBy,
                   "What makes a study for MedAug pairs: uid (StudyInstanceUID) or date")
      ->check(CLI::IsMember({"uid", "date"}))
      ->capture_default_str();
}

// The index and its cache, opened for reading training data.
struct OpenData {
  std::unique_ptr<storage::Index> index;
  std::unique_ptr<storage::ImageCache> cache;
  TrainingSet set;
};

OpenData openData(const DataOptions& o) {
  if (::access(o.db.c_str(), F_OK) != 0)
    throw DataError("no index at " + o.db + " (build one with comcl index or comcl import-manifest)");
  OpenData d;
  d.index = std::make_unique<storage::Index>(o.db);
  const std::string cachePath = o.cachePath();
  d.set = TrainingSet::fromIndex(*d.index, studyGroupingFromString(o.studyBy));
  if (d.set.size() == 0)
    throw DataError("the index " + o.db + " holds no decoded images: nothing to train on");
  d.cache = std::make_unique<storage::ImageCache>(cachePath, storage::ImageCache::formatOf(cachePath));
  return d;
}

std::string duration(double seconds) {
  const auto s = static_cast<long>(seconds + 0.5);
  std::ostringstream out;
  if (s >= 3600)
    out << s / 3600 << "h" << std::setw(2) << std::setfill('0') << (s % 3600) / 60 << "m";
  else if (s >= 60)
    out << s / 60 << "m" << std::setw(2) << std::setfill('0') << s % 60 << "s";
  else
    out << s << "s";
  return out.str();
}

// ---------------------------------------------------------------------------------------------------------
// pairs

int runPairs(const DataOptions& data, const std::string& strategyText, int buckets) {
  storage::Index index(data.db);
  const TrainingSet set = TrainingSet::fromIndex(index, studyGroupingFromString(data.studyBy));
  std::int64_t multi = 0;
  for (const auto& images : set.imagesByPatient())
    multi += images.size() >= 2;
  std::cout << set.size() << " decoded images, " << set.patientKeys().size() << " patients (" << multi
            << " with several images), " << set.studyKeys().size() << " studies\n\n";
  std::cout << std::left << std::setw(52) << "criterion (same patient)" << std::right << std::setw(10)
            << "positive" << std::setw(10) << "self" << std::setw(10) << "fallback" << std::setw(12)
            << "mean cand." << std::setw(8) << "max"
            << "\n";
  for (const PairStrategy& s : allMedAugStrategies()) {
    const PairStatistics st = PositiveSampler(set, s).statistics(buckets);
    std::cout << std::left << std::setw(52) << s.toString() << std::right << std::setw(10)
              << st.withOtherImage << std::setw(10) << st.onlySelf << std::setw(10) << st.fallback
              << std::setw(12) << std::fixed << std::setprecision(2) << st.meanCandidates << std::setw(8)
              << st.maxCandidates << "\n";
  }
  std::cout << "\npositive: queries with a metadata positive (another image); self: the candidate set is the "
               "query alone;\nfallback: empty candidate set, the positive is the query itself (MoCo pairs)\n";
  if (!strategyText.empty()) {
    const PairStrategy strategy = PairStrategy::parse(strategyText);
    const PairStatistics st = PositiveSampler(set, strategy).statistics(buckets);
    std::cout << "\ncandidates other than the query, per query, for " << strategy.toString() << ":\n";
    for (std::size_t n = 0; n < st.histogram.size(); ++n) {
      const double share =
          st.queries ? 100.0 * static_cast<double>(st.histogram[n]) / static_cast<double>(st.queries) : 0;
      std::cout << "  " << std::setw(3) << n << (n + 1 == st.histogram.size() ? "+" : " ") << std::setw(8)
                << st.histogram[n] << "  " << std::setw(5) << std::setprecision(1) << share << "%  "
                << std::string(static_cast<std::size_t>(share / 2), '#') << "\n";
    }
  }
  return 0;
}

// ---------------------------------------------------------------------------------------------------------
// pretrain

// Which images are CoMCL's lesion and healthy images and where their boxes come from.
struct LesionChoice {
  std::string label;
  std::string source = "cam";  // cam | stored | detector | none
  std::string detector;        // detector: a TorchScript file
  std::string configFile;      // LesionConfig JSON (CAM settings, filter, ...)
};

struct PretrainOptions {
  DataOptions data;
  std::string run;
  std::string method = "medaug";
  std::string strategy;
  std::string negatives = "default";
  std::string architecture = "resnet18";
  std::string optimizer = "adam";
  std::string schedule = "step";
  std::string device = "auto";
  std::string precision = "fp32";
  std::string configFile;
  int epochs = 20;
  int batchSize = 16;
  int imageSize = 224;
  int queueSize = 24576;
  int workers = 2;
  int checkpointEvery = 0;
  double temperature = 0.2;
  double momentum = 0.999;
  double learningRate = 1e-4;
  double cropScaleMin = -1;
  std::uint64_t seed = 0;
  bool quiet = false;
  std::string monitorLabel;  // empty: no k-NN monitor
  int monitorK = 20;
  // comcl
  LesionChoice lesions;
  std::vector<std::string> ablations;
  double patchFraction = 0.25;
  std::string degradation;  // empty: by the cache's channels
  int channels = 0;         // backbone input channels; 0: the cache's
};

// CoMCL's views for radiographs or fundus photographs ("radiograph" / "fundus"; empty: fundus for a colour
// cache): the degradation set, and for fundus photographs the authors' rotation of up to 180 degrees (a
// fundus has no up).
void chooseViewSettings(PretrainConfig& c, const std::string& name, int cacheChannels) {
  const std::string set = !name.empty() ? name : cacheChannels == 3 ? "fundus" : "radiograph";
  if (set == "fundus") {
    c.comcl.views.degradation = fundusDegradation();
    c.augment.maxRotationDegrees = 180;
  } else {
    c.comcl.views.degradation = radiographDegradation();
  }
}

class ProgressLine {
 public:
  explicit ProgressLine(bool quiet) : quiet_(quiet), tty_(::isatty(STDERR_FILENO) != 0) {}
  void show(const PretrainProgress& p) {
    if (quiet_)
      return;
    const auto now = std::chrono::steady_clock::now();
    const bool last = p.globalStep == p.totalSteps || p.step == p.stepsPerEpoch;
    if (!tty_ && !last && now - lastPrint_ < std::chrono::seconds(10))
      return;
    lastPrint_ = now;
    const int width = 24;
    const auto filled =
        static_cast<int>(width * static_cast<double>(p.globalStep) / static_cast<double>(p.totalSteps));
    std::ostringstream line;
    line << "[" << std::string(static_cast<std::size_t>(filled), '=')
         << std::string(static_cast<std::size_t>(width - filled), ' ') << "] epoch " << p.epoch << "/"
         << p.epochs << " step " << p.step << "/" << p.stepsPerEpoch << "  loss " << std::fixed
         << std::setprecision(4) << p.loss << " (epoch " << p.epochLoss << ")  " << std::setprecision(1)
         << p.imagesPerSecond << " img/s  ETA " << duration(p.etaSeconds) << "  lr " << std::scientific
         << std::setprecision(1) << p.learningRate;
    if (tty_)
      std::cerr << "\r" << line.str() << "\x1b[K" << (last && p.step == p.stepsPerEpoch ? "\n" : "")
                << std::flush;
    else
      std::cerr << line.str() << "\n";
  }

 private:
  bool quiet_;
  bool tty_;
  std::chrono::steady_clock::time_point lastPrint_{};
};

PretrainConfig pretrainConfigFrom(const PretrainOptions& o, const CLI::App& command, int cacheChannels) {
  PretrainConfig c = PretrainConfig::forMethod(o.method, o.imageSize);
  if (!o.configFile.empty()) {
    std::ifstream in(o.configFile);
    if (!in)
      throw std::invalid_argument("cannot read --config " + o.configFile);
    nlohmann::json json;
    in >> json;
    c = PretrainConfig::fromJson(json);
  }
  auto given = [&](const char* name) { return command.count(name) > 0; };
  if (!o.strategy.empty())
    c.pairs = PairStrategy::parse(o.strategy);
  if (given("--negatives"))
    c.moco.negatives = negativeStrategyFromString(o.negatives);
  if (given("--arch"))
    c.moco.architecture = o.architecture;
  if (given("--optimizer"))
    c.optim.optimizer = o.optimizer;
  if (given("--schedule"))
    c.optim.schedule = o.schedule;
  if (given("--device") || o.configFile.empty())
    c.device = o.device;
  if (given("--precision"))
    c.precision = o.precision;
  if (given("--epochs") || o.configFile.empty())
    c.epochs = o.epochs;
  if (given("--batch-size") || o.configFile.empty())
    c.batchSize = o.batchSize;
  if (given("--queue-size") || o.configFile.empty())
    c.moco.queueSize = o.queueSize;
  if (given("--temperature")) {
    c.moco.temperature = o.temperature;
    c.comcl.loss.temperature = o.temperature;  // CoMCL's terms (the two must agree)
  }
  if (given("--patch-fraction"))
    c.comcl.views.patchFraction = o.patchFraction;
  if (given("--channels"))
    c.moco.channels = o.channels;
  else if (o.configFile.empty())
    c.moco.channels = cacheChannels;
  if (c.method == "comcl" && (given("--degradation") || o.configFile.empty()))
    chooseViewSettings(c, o.degradation, cacheChannels);
  for (const std::string& ablation : o.ablations) {
    if (ablation == "no-lesion-term")
      c.comcl.loss.lesionTerm = false;
    else if (ablation == "no-quality-term")
      c.comcl.loss.qualityTerm = false;
    else if (ablation == "no-image-term")
      c.comcl.loss.imageTerm = false;
    else if (ablation == "no-spl")
      c.comcl.loss.beta = 0;
    else if (ablation == "fixed-top-k")
      c.comcl.loss.hardNegatives = HardNegativeMode::FixedTopK;
    else
      throw std::invalid_argument(
          "unknown --ablation \"" + ablation +
          "\"; accepted: no-lesion-term, no-quality-term, no-image-term, no-spl, fixed-top-k");
  }
  if (given("--momentum"))
    c.moco.momentum = o.momentum;
  if (given("--lr"))
    c.optim.learningRate = o.learningRate;
  if (given("--crop-scale-min"))
    c.augment.scaleMin = o.cropScaleMin;
  if (given("--seed"))
    c.seed = o.seed;
  if (given("--workers"))
    c.loaderThreads = o.workers;
  if (given("--checkpoint-every"))
    c.checkpointEverySteps = o.checkpointEvery;
  // The step schedule's milestones are MedAug's epochs 12/18/24; scale them to shorter runs.
  if (c.optim.schedule == "step" && !given("--config") && c.epochs < 20) {
    c.optim.milestones = {std::max(1, c.epochs * 12 / 20), std::max(1, c.epochs * 18 / 20)};
  }
  c.validate();
  return c;
}

// CoMCL's roles: lesion and healthy images of the training patients (the stored split keeps evaluation
// patients out), lesion boxes from `source`.
ComclRoles comclRolesOf(OpenData& data, const LesionChoice& choice, const std::string& device) {
  if (choice.label.empty())
    throw std::invalid_argument(
        "CoMCL needs --lesion-label (the finding whose positive images are lesion images)");
  if (choice.source == "none") {
    const auto split = ensurePatientSplit(*data.index, data.set, SplitConfig{});
    ComclRoles roles = comclRolesFromLabels(data.set, choice.label, &split);
    roles.validate(data.set.size());
    return roles;
  }
  LesionConfig config;
  if (!choice.configFile.empty()) {
    std::ifstream in(choice.configFile);
    if (!in)
      throw std::invalid_argument("cannot read --lesion-config " + choice.configFile);
    nlohmann::json json = nlohmann::json::parse(in);
    json["label"] = choice.label;
    config = LesionConfig::fromJson(json);
  }
  config.label = choice.label;
  config.source = lesionSourceKindFromString(choice.source);
  if (!choice.detector.empty())
    config.detectorPath = choice.detector;
  config.device = device;
  config.validate();
  const LesionProposals proposals = proposeLesions(
      *data.index, data.set, *data.cache, config, [](const std::string& m) { std::cerr << m << "\n"; },
      &interrupted);
  std::cout << "lesion proposals (" << choice.source << "): " << proposals.kept << " boxes kept of "
            << proposals.proposed << " proposed";
  for (const auto& [reason, count] : proposals.dropped)
    std::cout << ", " << count << " " << reason;
  std::cout << "; " << proposals.lesionImagesWithoutBox
            << " lesion images without a box (their patches are cut at random positions)\n";
  ComclRoles roles = toComclRoles(proposals);
  roles.validate(data.set.size());
  return roles;
}

// One line on the synthetic degradations, e.g. "fundus: one of the 7 degrade_eyeq codes per view".
std::string describeDegradation(const DegradationConfig& d) {
  std::ostringstream text;
  if (!d.fundusCodes.empty()) {
    text << "fundus: one of " << d.fundusCodes.size() << " degrade_eyeq codes per view";
  } else {
    text << d.minKinds << "-" << d.maxKinds << " of";
    for (DegradationKind kind : d.kinds)
      text << " " << toString(kind);
    text << " per view";
  }
  text << ", severity " << d.severityMin << "-" << d.severityMax;
  return text.str();
}

void printComclRoles(const ComclPlanner& planner, const ComclRoles& roles, const std::string& label,
                     const std::string& source, const DegradationConfig& degradation) {
  std::cout << "CoMCL roles (" << label << ", training patients): " << roles.lesionImages.size()
            << " lesion images (" << planner.lesionHighQuality() << " high / " << planner.lesionLowQuality()
            << " real low quality), " << roles.healthyImages.size() << " healthy images ("
            << planner.healthyHighQuality() << " high / " << planner.healthyLowQuality()
            << " real low quality); lesion boxes: " << source << ", "
            << roles.lesionImages.size() - static_cast<std::size_t>(planner.lesionImagesWithoutBox())
            << " lesion images with a box\n";
  if (planner.healthyLowQuality() == 0)
    std::cout << "  no real low-quality healthy image: every low-quality view is a synthetic degradation\n";
  std::cout << "  synthetic degradations: " << describeDegradation(degradation) << "\n";
}

struct TrainsetOptions {
  DataOptions data;
  std::string method = "comcl";
  LesionChoice lesions;
  std::string device = "auto";
  int imageSize = 128;
  int batchSize = 16;
  int examples = 8;
  double patchFraction = 0.25;
  std::string degradation;  // empty: by the cache's channels
  std::uint64_t seed = 0;
  std::string sheet;
  std::string json;
};

// What `pretrain --method comcl` would train on, and a contact sheet of example views.
int runTrainset(const TrainsetOptions& o) {
  OpenData data = openData(o.data);
  const ComclRoles roles = comclRolesOf(data, o.lesions, o.device);
  PretrainConfig config = PretrainConfig::forMethod("comcl", o.imageSize);
  config.comcl.views.patchFraction = o.patchFraction;
  config.batchSize = o.batchSize;
  chooseViewSettings(config, o.degradation, data.cache->format().channels);
  const ComclPlanner planner(data.set, roles, config.comcl.views, config.batchSize);
  std::cout << "CoMCL training set of " << data.set.size() << " images, data " << data.set.snapshotId()
            << "\n";
  printComclRoles(planner, roles, o.lesions.label, o.lesions.source, config.comcl.views.degradation);
  const std::int64_t samples = planner.stepsPerEpoch() * config.batchSize;
  const std::int64_t lowQualityViews = samples * config.comcl.views.healthyPerLesion;
  const double realShare = planner.healthyLowQuality() > 0 ? config.comcl.views.realLowQualityShare : 0.0;
  const auto realViews =
      static_cast<std::int64_t>(std::lround(realShare * static_cast<double>(lowQualityViews)));
  std::cout << "per epoch at batch " << config.batchSize << ": " << planner.stepsPerEpoch() << " steps, "
            << samples << " lesion samples -> " << samples << " synthetic degraded lesion copies (V2, I_LQ); "
            << lowQualityViews << " low-quality healthy patches (V4): about " << realViews << " real, "
            << lowQualityViews - realViews << " synthetic\n";
  nlohmann::json summary = {
      {"images", data.set.size()},
      {"dataSnapshot", data.set.snapshotId()},
      {"lesionLabel", o.lesions.label},
      {"lesionSource", o.lesions.source},
      {"lesionImages",
       {{"highQuality", planner.lesionHighQuality()},
        {"lowQuality", planner.lesionLowQuality()},
        {"withoutBox", planner.lesionImagesWithoutBox()}}},
      {"healthyImages",
       {{"highQuality", planner.healthyHighQuality()}, {"lowQuality", planner.healthyLowQuality()}}},
      {"perEpoch",
       {{"batch", config.batchSize},
        {"steps", planner.stepsPerEpoch()},
        {"lesionSamples", samples},
        {"syntheticLesionCopies", samples},
        {"lowQualityHealthyViews", lowQualityViews},
        {"realLowQualityHealthyViews", realViews}}},
      {"views", config.comcl.views.toJson()}};
  if (!o.sheet.empty()) {
#ifdef COMCL_WITH_IMAGING
    const int examples = std::min<int>(o.examples, static_cast<int>(roles.lesionImages.size()));
    const ComclContactSheet sheet = makeComclContactSheet(data.set, *data.cache, roles, config.comcl.views,
                                                          config.augment, examples, o.seed);
    imaging::Image image(static_cast<int>(sheet.pixels.size(1)), static_cast<int>(sheet.pixels.size(0)),
                         static_cast<int>(sheet.pixels.size(2)));
    std::copy(sheet.pixels.data_ptr<float>(), sheet.pixels.data_ptr<float>() + sheet.pixels.numel(),
              image.pixels.begin());
    imaging::writePng(o.sheet, image);
    summary["contactSheet"] = {
        {"file", o.sheet}, {"columns", ComclContactSheet::columns()}, {"rows", sheet.rows}};
    std::cout << "contact sheet: " << o.sheet << " (" << examples << " rows; columns:";
    for (const std::string& column : ComclContactSheet::columns())
      std::cout << " | " << column;
    std::cout << ")\n";
#else
    throw std::invalid_argument("--sheet needs the full build (PNG output); this is a training-only build");
#endif
  }
  if (!o.json.empty()) {
    writeFileAtomically(o.json, summary.dump(2) + "\n");
    std::cout << "summary: " << o.json << "\n";
  }
  return 0;
}

// A CoMCL run's roles: made once and kept in the run directory (lesions.json), so that a resumed run trains
// on exactly the same lesion boxes (lesion proposals need not repeat bit for bit on a GPU).
ComclRoles runComclRoles(OpenData& data, const PretrainOptions& o) {
  const fs::path saved = fs::path(o.run) / "lesions.json";
  if (fs::exists(saved)) {
    nlohmann::json json;
    std::ifstream(saved) >> json;
    if (json.value("label", "") != o.lesions.label || json.value("source", "") != o.lesions.source ||
        json.value("dataSnapshot", "") != data.set.snapshotId()) {
      throw std::invalid_argument("the run in " + o.run + " chose its lesion images with --lesion-label " +
                                  json.value("label", "?") + " --lesion-source " + json.value("source", "?") +
                                  " on data " + json.value("dataSnapshot", "?") +
                                  "; use the same settings or a new run directory");
    }
    std::cout << "lesion roles and boxes of this run: " << saved.string() << "\n";
    return ComclRoles::fromJson(json.at("roles"), data.set.size());
  }
  ComclRoles roles = comclRolesOf(data, o.lesions, o.device);
  fs::create_directories(o.run);
  writeFileAtomically(saved.string(), nlohmann::json{{"label", o.lesions.label},
                                                     {"source", o.lesions.source},
                                                     {"dataSnapshot", data.set.snapshotId()},
                                                     {"roles", roles.toJson()}}
                                              .dump() +
                                          "\n");
  return roles;
}

int runPretrain(const PretrainOptions& o, const CLI::App& command) {
  OpenData data = openData(o.data);
  PretrainConfig config = pretrainConfigFrom(o, command, data.cache->format().channels);
  const auto images = static_cast<int>(data.set.size());
  if (const int fitted = config.queueSizeFor(data.set.size()); fitted != config.moco.queueSize) {
    std::cerr << "note: queue size " << config.moco.queueSize << " exceeds the " << images
              << " images; using " << fitted << " (about half the images)\n";
    config.moco.queueSize = fitted;
  }
  ComclRoles roles;
  if (config.method == "comcl") {
    roles = runComclRoles(data, o);
    printComclRoles(ComclPlanner(data.set, roles, config.comcl.views, config.batchSize), roles,
                    o.lesions.label, o.lesions.source, config.comcl.views.degradation);
  }
  const PairStatistics pairs = PositiveSampler(data.set, config.pairs).statistics();
  std::cout << "pre-training " << config.method << " (" << config.pairs.toString() << ", negatives "
            << toString(config.moco.negatives) << ") on " << images << " images of "
            << data.set.patientKeys().size() << " patients, data " << data.set.snapshotId() << "\n"
            << "  " << pairs.withOtherImage << " queries have a metadata positive, "
            << pairs.onlySelf + pairs.fallback << " pair with themselves\n"
            << "  " << config.moco.architecture << " at " << config.augment.outputSize << " px, "
            << config.moco.channels << (config.moco.channels == 1 ? " channel" : " channels") << ", batch "
            << config.batchSize << ", " << config.epochs << " epochs, queue " << config.moco.queueSize
            << ", T " << config.moco.temperature << ", " << config.optim.optimizer << " lr "
            << config.optim.learningRate << " (" << config.optim.schedule << "), device " << config.device
            << ", " << config.precision << ", seed " << config.seed << "\n"
            << "  studies by " << o.data.studyBy << "; run directory " << o.run
            << " (Ctrl-C stops after the current step; run again to resume)\n";
  EpochMonitor monitor;
  if (!o.monitorLabel.empty()) {
    KnnMonitorConfig knn;
    knn.label = o.monitorLabel;
    knn.input.channels = config.moco.channels;
    knn.input.imageSize = config.augment.outputSize;
    knn.input.mean = config.mean;
    knn.input.stddev = config.stddev;
    knn.batchSize = std::max(config.batchSize, 32);
    knn.k = o.monitorK;
    // The stored patient split (made now where missing), so the monitor never looks at evaluation patients.
    const auto split = ensurePatientSplit(*data.index, data.set, SplitConfig{});
    auto accuracy = knnMonitor(data.set, *data.cache, split, knn);
    monitor = [accuracy, label = o.monitorLabel, k = o.monitorK](ResNet& backbone, int epoch) {
      const double value = accuracy(backbone, epoch);
      std::cout << "  epoch " << epoch << ": k-NN accuracy (" << label << ", k " << k << ", test patients) "
                << std::fixed << std::setprecision(3) << value << std::endl;
      return value;
    };
  }
  Pretrainer trainer(data.set, *data.cache, config, o.run, roles);
  ProgressLine progress(o.quiet);
  InterruptToCancel interrupts;
  const auto started = std::chrono::steady_clock::now();
  const PretrainResult result =
      trainer.run([&](const PretrainProgress& p) { progress.show(p); }, &interrupted, monitor);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  if (result.cancelled) {
    std::cout << "cancelled after step " << result.stepsDone << "; the checkpoint in " << o.run
              << " resumes it (run the same command again)\n";
    return 130;
  }
  std::cout << (result.resumed ? "resumed and finished" : "finished") << " in " << duration(seconds) << " on "
            << result.device << ": " << std::fixed << std::setprecision(1) << result.imagesPerSecond
            << " images/s (data path waited " << std::setprecision(1) << 100 * result.dataWaitShare
            << " % of the time; " << result.imagesPerSecondAfterFirstStep << " images/s after the first step";
  if (result.viewShare >= 0)
    std::cout << "; making views " << 100 * result.viewShare << " % of the step time";
  std::cout << ")\n  loss per epoch:";
  for (double l : result.epochLosses)
    std::cout << " " << std::setprecision(4) << l;
  if (!result.monitor.empty()) {
    std::cout << "\n  k-NN accuracy per epoch (" << o.monitorLabel << "):";
    for (double a : result.monitor)
      std::cout << " " << std::setprecision(3) << a;
  }
  std::cout << "\n  encoder: " << result.encoderDirectory << " (encoder.pth loads with torch.load)\n";
  return 0;
}

// ---------------------------------------------------------------------------------------------------------
// linear-eval / finetune

struct EvalOptions {
  DataOptions data;
  std::string encoder;
  std::string architecture = "resnet18";
  bool random = false;
  std::vector<std::string> labels;
  std::vector<std::string> budgets{"100%"};
  int draws = 5;
  std::uint64_t seed = 0;
  int imageSize = 0;  // 0: the encoder's
  std::string device = "auto";
  int batchSize = 16;
  double trainFraction = 0.7;
  double valFraction = 0.1;
  int steps = 300;
  int epochs = 20;
  double learningRate = 0;  // 0: the mode's default
  std::string jsonOut;
  std::string saveModel;
  int modelVersion = 1;
  bool byQuality = false;
  std::string sweep;  // empty: no sweep
  std::string sweepSeverities = "0,0.25,0.5,0.75,1";
};

// `text` right-aligned in `width` columns (a UTF-8 character such as ± counts as one).
std::string column(const std::string& text, std::size_t width) {
  std::size_t shown = 0;
  for (unsigned char c : text)
    shown += (c & 0xc0) != 0x80 ? 1 : 0;
  return shown >= width ? " " + text : std::string(width - shown, ' ') + text;
}

std::string cell(const std::optional<MeanStd>& value) {
  return value ? formatMeanStd(*value) : std::string("-");
}

// The per-quality-level and degradation-sweep tables of one label and budget.
void printSubsets(const LabelResult& l) {
  auto counts = [&l](const SubsetSummary& s) {
    return std::to_string(s.images) + (l.graded ? "" : " (" + std::to_string(s.positives()) + ")");
  };
  auto row = [&l, &counts](const std::string& name, const SubsetSummary& s) {
    std::cout << "    " << std::left << std::setw(10) << name << std::right << column(counts(s), 12)
              << column(l.graded ? "-" : cell(s.auc), 16) << column(cell(s.accuracy), 16)
              << column(cell(s.kappa), 16) << (s.missing.empty() ? "" : "  (" + s.missing + ")") << "\n";
  };
  auto header = [](const std::string& first) {
    std::cout << "    " << std::left << std::setw(10) << first << std::right << column("test (pos)", 12)
              << column("AUC", 16) << column("accuracy", 16) << column("kappa", 16) << "\n";
  };
  if (!l.byQuality.empty()) {
    std::cout << "  " << l.finding << " " << l.budget << ", per quality level of the test images:\n";
    header("level");
    for (const SubsetSummary& s : l.byQuality)
      row(s.level, s);
  }
  if (l.sweep) {
    std::cout << "  " << l.finding << " " << l.budget << ", test images degraded (" << l.sweep->spec
              << ", seed " << l.sweepSeed << "), head fitted on clean images:\n";
    header("severity");
    for (const SubsetSummary& s : l.sweepResults) {
      std::ostringstream severity;
      severity << s.severity;
      row(severity.str(), s);
    }
  }
}

void printProtocol(const ProtocolResult& r, const std::string& mode) {
  std::cout << "\n"
            << mode << " evaluation of " << r.encoder << " on data " << r.dataSnapshot << ", split "
            << r.splitId << " (patients:";
  for (const auto& [which, n] : r.splitPatients)
    std::cout << " " << which << " " << n;
  std::cout << ")\n"
            << std::left << std::setw(22) << "label" << std::setw(12) << "budget" << std::right
            << std::setw(14) << "train (pos)" << std::setw(14) << "test (pos)" << std::setw(20)
            << "AUC mean ± std" << std::setw(20) << "accuracy" << std::setw(20) << "kappa"
            << "\n";
  for (const LabelResult& l : r.labels) {
    const int pos = l.draws.empty() ? 0 : l.draws.front().trainPositives;
    const int n = l.draws.empty() ? 0 : l.draws.front().trainImages;
    std::cout << std::left << std::setw(22) << l.finding << std::setw(12) << l.budget << std::right
              << std::setw(14) << (std::to_string(n) + (l.graded ? "" : " (" + std::to_string(pos) + ")"))
              << std::setw(14)
              << (std::to_string(l.testImages) +
                  (l.graded ? "" : " (" + std::to_string(l.testPositives) + ")"))
              << std::setw(21) << (l.graded ? std::string("-") : formatMeanStd(l.auc)) << std::setw(21)
              << formatMeanStd(l.accuracy) << std::setw(21)
              << (l.graded ? formatMeanStd(l.kappa) : std::string("-")) << "\n";
  }
  std::cout << "(mean ± sample std over " << (r.labels.empty() ? 0 : r.labels.front().draws.size())
            << " random label draws; test = held-out patients)\n";
  for (const LabelResult& l : r.labels) {
    if (!l.byQuality.empty() || l.sweep)
      printSubsets(l);
  }
}

int runEvaluation(const EvalOptions& o, const std::string& mode) {
  if (o.encoder.empty() == !o.random)
    throw std::invalid_argument("give --encoder DIR (from comcl pretrain) or --random, not both or neither");
  std::optional<DegradationSweep> sweep;
  if (!o.sweep.empty())
    sweep = DegradationSweep::parse(o.sweep, o.sweepSeverities);
  OpenData data = openData(o.data);
  const auto split =
      ensurePatientSplit(*data.index, data.set, SplitConfig{o.trainFraction, o.valFraction, o.seed});
  ProtocolConfig config;
  config.mode = mode;
  config.labels = o.labels;
  config.budgets.clear();
  for (const auto& b : o.budgets)
    config.budgets.push_back(LabelBudget::parse(b));
  config.draws = o.draws;
  config.seed = o.seed;
  config.device = o.device;
  config.batchSize = o.batchSize;
  config.linearSteps = o.steps;
  config.finetuneEpochs = o.epochs;
  config.byQuality = o.byQuality;
  config.sweep = sweep;
  if (o.learningRate > 0) {
    config.linearLearningRate = o.learningRate;
    config.finetuneOptim.learningRate = o.learningRate;
  }
  EncoderSource source;
  source.directory = o.encoder;
  source.architecture = o.architecture;
  source.channels = data.cache->format().channels;
  config.imageSize = o.imageSize > 0 ? o.imageSize : o.random ? 224 : readEncoderInfo(o.encoder).imageSize;
  std::cout << mode << ": " << source.describe() << " at " << config.imageSize << " px, labels";
  for (const auto& l : o.labels)
    std::cout << " " << l;
  std::cout << ", " << o.draws << " draws per budget";
  if (o.byQuality)
    std::cout << ", per quality level";
  if (sweep) {
    std::cout << ", " << sweep->spec << " degradation sweep at";
    for (double s : sweep->severities)
      std::cout << " " << s;
  }
  std::cout << "\n";
  InterruptToCancel interrupts;
  const ProtocolResult result = runProtocol(
      data.set, *data.cache, split, source, config,
      [](const std::string& line) { std::cerr << "  " << line << "\n"; }, &interrupted);
  printProtocol(result, mode);
  if (!o.jsonOut.empty()) {
    std::ofstream out(o.jsonOut);
    out << result.toJson().dump(2) << "\n";
    if (!out)
      throw std::runtime_error("cannot write " + o.jsonOut);
    std::cout << "results: " << o.jsonOut << "\n";
  }
  if (!o.saveModel.empty()) {
    trainAndSaveModel(data.set, *data.cache, split, source, config, result, o.modelVersion, o.saveModel);
    std::cout << "model version " << o.modelVersion
              << " (heads fitted on every labelled training image): " << o.saveModel << "\n";
  }
  return 0;
}

// ---------------------------------------------------------------------------------------------------------
// score

struct ScoreOptions {
  DataOptions data;
  std::string model;
  std::string device = "auto";
  int batchSize = 64;
  std::int64_t limit = 0;
};

int runScore(const ScoreOptions& o) {
  OpenData data = openData(o.data);
  const torch::Device device = parseDevice(o.device);
  std::unique_ptr<Scorer> scorer = loadScorer(o.model, device);
  std::cerr << "scoring with " << scorer->description() << "\n";
  std::cout << "resource_id";
  for (const auto& f : scorer->findings())
    std::cout << "," << f;
  std::cout << "\n" << std::fixed << std::setprecision(5);
  auto count = static_cast<std::int64_t>(data.set.size());
  if (o.limit > 0)
    count = std::min(count, o.limit);
  const auto started = std::chrono::steady_clock::now();
  for (std::int64_t start = 0; start < count; start += o.batchSize) {
    const std::int64_t end = std::min(count, start + o.batchSize);
    std::vector<CachedImageRef> refs;
    for (std::int64_t i = start; i < end; ++i)
      refs.push_back(data.set.images()[static_cast<std::size_t>(i)].cached);
    const torch::Tensor p = scorer->score(loadBatch(*data.cache, refs, device));
    for (std::int64_t i = start; i < end; ++i) {
      std::cout << data.set.images()[static_cast<std::size_t>(i)].resourceId;
      for (std::int64_t f = 0; f < p.size(1); ++f)
        std::cout << "," << p[i - start][f].item<float>();
      std::cout << "\n";
    }
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  std::cerr << "scored " << count << " images in " << std::setprecision(2) << seconds << " s ("
            << std::setprecision(1) << (seconds > 0 ? static_cast<double>(count) / seconds : 0)
            << " images/s)\n";
  return 0;
}

}  // namespace

void addTrainingCommands(CLI::App& app, std::vector<Command>& commands) {
  static DataOptions pairsData;
  static std::string pairsStrategy;
  static int pairsBuckets = 10;
  CLI::App* pairs = app.add_subcommand(
      "pairs",
      "Count MedAug positive pairs under every study x laterality criterion (and detail one strategy)");
  addDataOptions(pairs, pairsData);
  pairs->add_option("--strategy", pairsStrategy,
                    "Show the candidates-per-query distribution of this strategy, e.g. "
                    "same-patient/same-study/all-lateralities");
  pairs->add_option("--buckets", pairsBuckets, "Histogram buckets")->check(CLI::Range(2, 100));
  commands.push_back({pairs, [] { return runPairs(pairsData, pairsStrategy, pairsBuckets); }});

  static PretrainOptions pre;
  CLI::App* pretrain =
      app.add_subcommand("pretrain", "Contrastive pre-training (MoCo v2, MedAug) of an encoder");
  addDataOptions(pretrain, pre.data);
  pretrain->add_option("--run", pre.run, "Run directory (checkpoints, encoder); an existing one is resumed")
      ->required();
  pretrain->add_option("--lesion-label", pre.lesions.label,
                       "comcl: the finding whose positive images are lesion images (0: healthy images)");
  pretrain
      ->add_option(
          "--lesion-source", pre.lesions.source,
          "comcl: where lesion boxes come from: cam (class-activation maps of a supervised model "
          "trained first), stored (comcl import-boxes), detector (--detector), none (random positions)")
      ->capture_default_str()
      ->check(CLI::IsMember({"cam", "stored", "detector", "none"}));
  pretrain->add_option("--detector", pre.lesions.detector,
                       "comcl: TorchScript lesion detector (--lesion-source detector)");
  pretrain->add_option("--lesion-config", pre.lesions.configFile,
                       "comcl: lesion proposal settings (JSON: CAM training, box filter; see comcl lesions)");
  pretrain->add_option(
      "--ablation", pre.ablations,
      "comcl: no-lesion-term, no-quality-term, no-image-term, no-spl, fixed-top-k (repeatable)");
  pretrain->add_option("--patch-fraction", pre.patchFraction, "comcl: patch window side / image side")
      ->check(CLI::Range(0.01, 1.0));
  pretrain
      ->add_option("--degradation", pre.degradation,
                   "comcl: synthetic low-quality views for radiograph or fundus images (default: fundus for "
                   "a colour image cache)")
      ->check(CLI::IsMember({"radiograph", "fundus"}));
  pretrain
      ->add_option(
          "--channels", pre.channels,
          "Backbone input channels, 1 or 3 (default: the image cache's; grey images fill 3 channels, "
          "colour ones become luminance for 1)")
      ->check(CLI::IsMember({1, 3}));
  pretrain->add_option("--method", pre.method, "moco (instance pairs), medaug (metadata pairs) or comcl")
      ->check(CLI::IsMember({"moco", "medaug", "comcl"}))
      ->capture_default_str();
  pretrain->add_option("--strategy", pre.strategy,
                       "MedAug pairs, e.g. same-patient/same-study/all-lateralities (default for medaug)");
  pretrain->add_option("--negatives", pre.negatives,
                       "default, same-laterality-only, reweighted, appended or synthetic");
  pretrain->add_option("--arch", pre.architecture, "Backbone")
      ->check(CLI::IsMember({"resnet18", "resnet50"}));
  pretrain->add_option("--epochs", pre.epochs, "Epochs")->capture_default_str()->check(CLI::Range(1, 100000));
  pretrain->add_option("--batch-size", pre.batchSize, "Images per step")
      ->capture_default_str()
      ->check(CLI::Range(2, 65536));
  pretrain->add_option("--image-size", pre.imageSize, "Training view size (px)")
      ->capture_default_str()
      ->check(CLI::Range(16, 2048));
  pretrain->add_option("--queue-size", pre.queueSize, "MoCo queue length K (capped at about half the images)")
      ->capture_default_str();
  pretrain->add_option("--temperature", pre.temperature, "InfoNCE temperature T");
  pretrain->add_option("--momentum", pre.momentum, "Key encoder momentum m");
  pretrain->add_option("--lr", pre.learningRate, "Learning rate");
  pretrain->add_option("--optimizer", pre.optimizer, "adam or sgd (Nesterov)")
      ->check(CLI::IsMember({"adam", "sgd"}));
  pretrain->add_option("--schedule", pre.schedule, "constant, step or cosine")
      ->check(CLI::IsMember({"constant", "step", "cosine"}));
  pretrain->add_option("--crop-scale-min", pre.cropScaleMin, "Lower bound of the random-resized-crop scale");
  pretrain->add_option("--seed", pre.seed, "Random seed");
  pretrain->add_option("--device", pre.device, "auto, cpu, cuda or cuda:N")->capture_default_str();
  pretrain->add_option("--precision", pre.precision, "fp32, bf16 or fp16 (CUDA autocast)")
      ->check(CLI::IsMember({"fp32", "bf16", "fp16"}));
  pretrain->add_option("--workers", pre.workers, "Data loading threads")->check(CLI::Range(1, 64));
  pretrain->add_option("--checkpoint-every", pre.checkpointEvery,
                       "Checkpoint every N steps (0: every epoch)");
  pretrain->add_option("--config", pre.configFile, "JSON configuration (as in run.json); flags override it");
  pretrain->add_flag("--quiet", pre.quiet, "No progress line");
  pretrain->add_option("--monitor-label", pre.monitorLabel,
                       "After each epoch, k-NN accuracy for this label (train patients as neighbours, test "
                       "patients as queries, the stored split)");
  pretrain->add_option("--monitor-k", pre.monitorK, "Neighbours of the k-NN monitor")
      ->capture_default_str()
      ->check(CLI::Range(1, 100000));
  commands.push_back({pretrain, [pretrain] { return runPretrain(pre, *pretrain); }});

  static TrainsetOptions trainset;
  CLI::App* trainsetCommand = app.add_subcommand(
      "trainset",
      "Show what CoMCL pre-training would use (lesion/healthy, real/synthetic low quality) and a "
      "contact sheet of example views");
  addDataOptions(trainsetCommand, trainset.data);
  trainsetCommand->add_option("--method", trainset.method, "Only comcl builds a quality-aware training set")
      ->check(CLI::IsMember({"comcl"}))
      ->capture_default_str();
  trainsetCommand
      ->add_option("--lesion-label", trainset.lesions.label,
                   "The finding whose positive images are lesion images (0: healthy images)")
      ->required();
  trainsetCommand->add_option("--lesion-source", trainset.lesions.source, "cam, stored, detector or none")
      ->capture_default_str()
      ->check(CLI::IsMember({"cam", "stored", "detector", "none"}));
  trainsetCommand->add_option("--detector", trainset.lesions.detector, "TorchScript lesion detector");
  trainsetCommand->add_option("--lesion-config", trainset.lesions.configFile,
                              "Lesion proposal settings (JSON)");
  trainsetCommand->add_option("--device", trainset.device, "auto, cpu, cuda or cuda:N (lesion proposals)")
      ->capture_default_str();
  trainsetCommand->add_option("--image-size", trainset.imageSize, "View size (px)")
      ->capture_default_str()
      ->check(CLI::Range(8, 1024));
  trainsetCommand->add_option("--batch-size", trainset.batchSize, "Lesion samples per step")
      ->capture_default_str()
      ->check(CLI::Range(2, 65536));
  trainsetCommand->add_option("--patch-fraction", trainset.patchFraction, "Patch window side / image side")
      ->check(CLI::Range(0.01, 1.0));
  trainsetCommand
      ->add_option(
          "--degradation", trainset.degradation,
          "Synthetic low-quality views for radiograph or fundus images (default: fundus for a colour "
          "image cache)")
      ->check(CLI::IsMember({"radiograph", "fundus"}));
  trainsetCommand->add_option("--examples", trainset.examples, "Rows of the contact sheet")
      ->capture_default_str()
      ->check(CLI::Range(2, 64));
  trainsetCommand->add_option("--sheet", trainset.sheet, "Write a contact sheet of example views (PNG)");
  trainsetCommand->add_option("--json", trainset.json, "Write the summary (and the sheet's rows) as JSON");
  trainsetCommand->add_option("--seed", trainset.seed, "Seed of the example draws");
  commands.push_back({trainsetCommand, [] { return runTrainset(trainset); }});

  for (const char* mode : {"linear-eval", "finetune"}) {
    static EvalOptions options[2];
    EvalOptions& o = options[std::string(mode) == "finetune" ? 1 : 0];
    CLI::App* eval = app.add_subcommand(
        mode,
        std::string(mode) == "finetune"
            ? "MedAug protocol, end-to-end fine-tuning: per-label AUC over random label draws"
            : "MedAug protocol, linear probe on the frozen encoder: per-label AUC over random label draws");
    addDataOptions(eval, o.data);
    eval->add_option("--encoder", o.encoder, "Encoder directory written by comcl pretrain");
    eval->add_flag("--random", o.random, "Start from random initialisation (the no-pre-training baseline)");
    eval->add_option("--arch", o.architecture, "Backbone for --random")
        ->check(CLI::IsMember({"resnet18", "resnet50"}));
    eval->add_option("--label", o.labels, "Label to evaluate (repeatable)")->required();
    eval->add_option("--budget", o.budgets,
                     "Label budget: a percentage (1%) or a number of images (repeatable)")
        ->capture_default_str();
    eval->add_option("--draws", o.draws, "Random label draws per budget")
        ->capture_default_str()
        ->check(CLI::Range(1, 1000));
    eval->add_option("--seed", o.seed, "Seed of the split and the draws");
    eval->add_option("--image-size", o.imageSize, "Input size (default: the encoder's)");
    eval->add_option("--device", o.device, "auto, cpu, cuda or cuda:N")->capture_default_str();
    eval->add_option("--batch-size", o.batchSize, "Batch size")->check(CLI::Range(2, 65536));
    eval->add_option("--train-fraction", o.trainFraction, "Share of new patients put in train")
        ->check(CLI::Range(0.01, 0.98));
    eval->add_option("--val-fraction", o.valFraction, "Share of new patients put in val")
        ->check(CLI::Range(0.0, 0.9));
    if (std::string(mode) == "finetune")
      eval->add_option("--epochs", o.epochs, "Fine-tuning epochs")
          ->capture_default_str()
          ->check(CLI::Range(1, 10000));
    else
      eval->add_option("--steps", o.steps, "Optimisation steps of the probe")
          ->capture_default_str()
          ->check(CLI::Range(1, 1000000));
    eval->add_option("--lr", o.learningRate, "Learning rate (default: 1e-2 probe, 1e-4 fine-tuning)");
    eval->add_option("--json", o.jsonOut, "Write the results as JSON");
    eval->add_option("--save-model", o.saveModel,
                     "Also fit on all labelled training images and write a model directory");
    eval->add_option("--model-version", o.modelVersion, "Version number of the saved model")
        ->check(CLI::Range(1, 1000000));
    eval->add_flag("--by-quality", o.byQuality,
                   "Also report AUC, accuracy and kappa per quality level of the test images (good, usable, "
                   "reject, none)");
    CLI::Option* sweepOption = eval->add_option(
        "--sweep", o.sweep,
        "Also score the test images degraded synthetically, with the head fitted on clean images: composite "
        "(one or two radiograph degradations per image) or one kind (blur, noise, lowResolution, ...)");
    eval->add_option("--sweep-severities", o.sweepSeverities,
                     "Severities of the sweep, comma-separated, each in [0, 1]")
        ->capture_default_str()
        ->needs(sweepOption);
    const std::string protocolMode = std::string(mode) == "finetune" ? "finetune" : "linear";
    commands.push_back({eval, [&o, protocolMode] { return runEvaluation(o, protocolMode); }});
  }

  static ScoreOptions score;
  CLI::App* scoreCommand = app.add_subcommand(
      "score", "Score cached images with a model directory: CSV of per-finding probabilities");
  addDataOptions(scoreCommand, score.data);
  scoreCommand->add_option("--model", score.model, "Model directory (model.json + weights.pt)")->required();
  scoreCommand->add_option("--device", score.device, "auto, cpu, cuda or cuda:N")->capture_default_str();
  scoreCommand->add_option("--batch-size", score.batchSize, "Images per forward pass")
      ->capture_default_str()
      ->check(CLI::Range(1, 65536));
  scoreCommand->add_option("--limit", score.limit, "Score only the first N images");
  commands.push_back({scoreCommand, [] { return runScore(score); }});
}

}  // namespace comcl::cli
