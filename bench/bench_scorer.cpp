// The scorer (what `comcl score` and the plugin run on cached images) against the bare forward pass of the
// same network, on the CPU, single process, LibTorch using every core (torch_threads in the context).
//
//   BM_BareForward:     buildNetwork(resnet18) in eval mode under NoGradGuard, forward on a preloaded float
//                       tensor [B, 1, S, S] that is already resized to S and normalised; no sigmoid.
//   BM_ScorerFromCache: per iteration loadBatch(cache, B refs cycling through the N cached slots), then
//                       Scorer::score (bilinear resize 256 -> S, normalisation, forward, sigmoid, copy to
//                       the CPU), the scorer loaded with loadScorer from a model directory written by
//                       writeModelDirectory for the same network and weights.
// Both for input size S in {64, 224} and batch B in {1, 32}; items_per_second reads as images/s. The ratio
// ScorerFromCache / BareForward (images/s, same S and B) is the figure docs/benchmarks.md reports: the
// share of the bare network's throughput that the scorer keeps after reading, resizing and normalising.
//
// Setup, once: a temp directory (removed at exit) with an image cache of N = 256 synthetic 256x256 8-bit
// images (a deterministic pattern plus seeded noise) and one model directory per S: {"name": "resnet18"},
// 1 channel, 2 findings, normalisation mean 0.5 std 0.25, version 1, fresh weights.
//
//   build-plugin/bench/bench_scorer --benchmark_min_time=2 [google benchmark flags]
// Each benchmark runs for at least 2 s unless --benchmark_min_time is given. One untimed warm-up call per
// case precedes the timed iterations.
#include <benchmark/benchmark.h>
#include <torch/torch.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <map>
#include <memory>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "comcl/storage/cache_key.h"
#include "comcl/storage/image_cache.h"
#include "comcl/training/scorer.h"
#include "comcl/training/tensor_batch.h"

namespace {

using comcl::training::CachedImageRef;
using comcl::training::ModelFile;
using comcl::training::Scorer;
using comcl::training::ScoringNetwork;

constexpr int kImages = 256;     // N, the cached images the scorer cycles through
constexpr int kCacheSize = 256;  // cache images are kCacheSize x kCacheSize, 8-bit
constexpr double kMean = 0.5;
constexpr double kStd = 0.25;

// One model version for one input size: the directory, the scorer loaded from it, and the network it was
// written from (the same weights), for the bare forward pass.
struct Model {
  std::unique_ptr<Scorer> scorer;
  std::shared_ptr<ScoringNetwork> network;
  std::set<std::int64_t> warmScorer;  // batch sizes that had their untimed warm-up call
  std::set<std::int64_t> warmBare;
};

class Fixture {
 public:
  Fixture()
      : dir_(std::filesystem::temp_directory_path() / ("comcl-bench-scorer-" + std::to_string(::getpid()) +
                                                       "-" + std::to_string(std::random_device()()))) {
    std::filesystem::create_directories(dir_);
    cache_ = std::make_unique<comcl::storage::ImageCache>((dir_ / "images.cache").string(),
                                                          comcl::storage::CacheFormat{kCacheSize, 8});
    std::mt19937 random(20240601);
    std::normal_distribution<double> noise(0.0, 12.0);
    std::vector<std::uint8_t> pixels(static_cast<std::size_t>(kCacheSize) * kCacheSize);
    for (int i = 0; i < kImages; ++i) {
      // A bright ellipse ("body") on a dark background, with stripes ("ribs") whose phase depends on i.
      for (int y = 0; y < kCacheSize; ++y) {
        for (int x = 0; x < kCacheSize; ++x) {
          const double u = (x - kCacheSize / 2.0) / (kCacheSize * 0.4);
          const double v = (y - kCacheSize / 2.0) / (kCacheSize * 0.45);
          const double body = u * u + v * v < 1.0 ? 150.0 + 40.0 * std::sin(0.2 * y + 0.1 * i) : 20.0;
          const double value = std::clamp(body + noise(random), 0.0, 255.0);
          pixels[static_cast<std::size_t>(y) * kCacheSize + static_cast<std::size_t>(x)] =
              static_cast<std::uint8_t>(value);
        }
      }
      const std::uint64_t key = comcl::storage::cacheKey("bench-scorer-" + std::to_string(i));
      cache_->write(i, key, pixels.data());
      refs_.push_back(CachedImageRef{i, key});
    }
    cache_->flush();
  }

  ~Fixture() {
    models_.clear();
    cache_.reset();
    std::error_code ignored;
    std::filesystem::remove_all(dir_, ignored);
  }

  Fixture(const Fixture&) = delete;
  Fixture& operator=(const Fixture&) = delete;

  const comcl::storage::ImageCache& cache() const { return *cache_; }
  const std::vector<CachedImageRef>& refs() const { return refs_; }

  // The model for input size `size`, written and loaded on first use.
  Model& model(int size) {
    auto found = models_.find(size);
    if (found != models_.end()) {
      return found->second;
    }
    ModelFile file;
    file.version = 1;
    file.architecture = {{"name", "resnet18"}};
    file.inputSize = size;
    file.channels = 1;
    file.findings = {"finding-a", "finding-b"};
    file.mean = {kMean};
    file.stddev = {kStd};
    file.method = "bench";
    Model model;
    model.network = comcl::training::buildNetwork(file.architecture, file.channels,
                                                  static_cast<int>(file.findings.size()));
    const std::string directory = (dir_ / ("model-" + std::to_string(size))).string();
    comcl::training::writeModelDirectory(directory, file, *model.network);
    model.scorer = comcl::training::loadScorer(directory);
    model.network->eval();
    return models_.emplace(size, std::move(model)).first->second;
  }

 private:
  std::filesystem::path dir_;
  std::unique_ptr<comcl::storage::ImageCache> cache_;
  std::vector<CachedImageRef> refs_;
  std::map<int, Model> models_;
};

Fixture& fixture() {
  static Fixture instance;  // destroyed (and the temp directory removed) at exit
  return instance;
}

std::vector<CachedImageRef> refsFrom(std::size_t first, std::int64_t count) {
  const auto& refs = fixture().refs();
  std::vector<CachedImageRef> batch;
  batch.reserve(static_cast<std::size_t>(count));
  for (std::int64_t i = 0; i < count; ++i) {
    batch.push_back(refs[(first + static_cast<std::size_t>(i)) % refs.size()]);
  }
  return batch;
}

void BM_BareForward(benchmark::State& state) {
  const auto size = static_cast<int>(state.range(0));
  const std::int64_t batch = state.range(1);
  Model& model = fixture().model(size);
  torch::NoGradGuard noGrad;
  model.network->eval();
  // The first B cached images, resized and normalised as the scorer does, outside the timed loop.
  namespace F = torch::nn::functional;
  torch::Tensor input = comcl::training::loadBatch(fixture().cache(), refsFrom(0, batch));
  input = F::interpolate(input, F::InterpolateFuncOptions()
                                    .size(std::vector<std::int64_t>{size, size})
                                    .mode(torch::kBilinear)
                                    .align_corners(false));
  input = ((input - kMean) / kStd).contiguous();
  if (model.warmBare.insert(batch).second) {
    benchmark::DoNotOptimize(model.network->forward(input));
  }
  for (auto _ : state) {
    torch::Tensor logits = model.network->forward(input);
    benchmark::DoNotOptimize(logits.data_ptr());
  }
  state.SetItemsProcessed(state.iterations() * batch);
}

void BM_ScorerFromCache(benchmark::State& state) {
  const auto size = static_cast<int>(state.range(0));
  const std::int64_t batch = state.range(1);
  Model& model = fixture().model(size);
  const auto& cache = fixture().cache();
  if (model.warmScorer.insert(batch).second) {
    benchmark::DoNotOptimize(model.scorer->score(comcl::training::loadBatch(cache, refsFrom(0, batch))));
  }
  std::size_t next = 0;
  std::vector<CachedImageRef> refs(static_cast<std::size_t>(batch));
  for (auto _ : state) {
    for (std::size_t i = 0; i < refs.size(); ++i) {
      refs[i] = fixture().refs()[(next + i) % kImages];
    }
    next = (next + refs.size()) % kImages;
    torch::Tensor scores = model.scorer->score(comcl::training::loadBatch(cache, refs));
    benchmark::DoNotOptimize(scores.data_ptr());
  }
  state.SetItemsProcessed(state.iterations() * batch);
}

bool hasFlag(int argc, char** argv, const char* prefix) {
  for (int i = 1; i < argc; ++i) {
    if (std::strncmp(argv[i], prefix, std::strlen(prefix)) == 0) {
      return true;
    }
  }
  return false;
}

}  // namespace

int main(int argc, char** argv) {
  const bool minTimeGiven = hasFlag(argc, argv, "--benchmark_min_time");
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) {
    return 1;
  }
  const int cores = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  torch::set_num_threads(cores);
  benchmark::AddCustomContext("torch_threads", std::to_string(torch::get_num_threads()) + " (all " +
                                                   std::to_string(cores) + " cores), single process");
  benchmark::AddCustomContext("libtorch", TORCH_VERSION);
  benchmark::AddCustomContext("model", "resnet18, 1 channel, 2 findings, fresh weights, CPU, float32");
  benchmark::AddCustomContext("cache", std::to_string(kImages) + " images " + std::to_string(kCacheSize) +
                                           "x" + std::to_string(kCacheSize) + " 8-bit");

  int status = 0;
  try {
    fixture();  // build the cache before anything is timed
    for (auto* bench : {benchmark::RegisterBenchmark("BM_BareForward", BM_BareForward),
                        benchmark::RegisterBenchmark("BM_ScorerFromCache", BM_ScorerFromCache)}) {
      bench->ArgNames({"size", "batch"})
          ->ArgsProduct({{64, 224}, {1, 32}})
          ->Unit(benchmark::kMillisecond)
          ->UseRealTime();
      if (!minTimeGiven) {
        bench->MinTime(2.0);  // a 2-core machine: long enough for several batches of 32 at 224 px
      }
    }
    benchmark::RunSpecifiedBenchmarks();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_scorer: %s\n", e.what());
    status = 1;
  }
  benchmark::Shutdown();
  return status;
}
