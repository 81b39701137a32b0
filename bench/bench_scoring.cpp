// Scoring throughput of the plugin's pipeline against the bare forward pass of the same model, in one run
// (docs/benchmarks.md, "Orthanc plugin (issue 3)"). No Orthanc: the plugin's core (ScoringService) with the
// same Index, ImageCache and Ingestor the plugin's engine builds.
//
//   (a) bare forward: Scorer::score on preloaded float batches [B, 1, S, S];
//   (b) end to end:   DICOM bytes (preloaded in memory) -> Ingestor (decode, quality, cache, index row) on W
//                     worker threads -> ScoringService::enqueue -> batched forward -> predictions stored; the
//                     clock stops when ScoringService::drain() returns; throughput = N / wall time;
//   (c) ingest only:  (b) without an active model (what decode + cache + index alone sustain).
// The variants are interleaved within every pass: a, then b and c for each W.
//
// usage: bench_scoring --work DIR [--images 1024] [--rows 512] [--width 32] [--depth 5] [--input 256]
//                      [--batch 32] [--torch-threads 2] [--workers 1,2] [--passes 3] [--seed 7]
// DIR must not exist or be empty (the synthetic files, model and per-run databases go there).
// Prints one JSON object per measurement and a summary per variant (median, min, max).
#include <torch/torch.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "comcl/imaging/ingest.h"
#include "comcl/imaging/synth.h"
#include "comcl/storage/image_cache.h"
#include "comcl/storage/index.h"
#include "comcl/training/scorer.h"
#include "scoring.h"

namespace {

namespace fs = std::filesystem;
using namespace comcl;
using Clock = std::chrono::steady_clock;

struct Options {
  std::string work;
  int images = 1024;
  int rows = 512;
  int width = 32;
  int depth = 5;
  int input = 256;
  int batch = 32;
  int torchThreads = 2;
  std::vector<int> workers = {1, 2};
  int passes = 3;
  std::uint64_t seed = 7;
};

double secondsSince(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

std::vector<int> parseList(const std::string& text) {
  std::vector<int> values;
  std::stringstream in(text);
  std::string item;
  while (std::getline(in, item, ','))
    values.push_back(std::stoi(item));
  return values;
}

Options parse(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    const auto next = [&]() -> std::string {
      if (i + 1 >= argc)
        throw std::invalid_argument(arg + " needs a value");
      return argv[++i];
    };
    if (arg == "--work")
      o.work = next();
    else if (arg == "--images")
      o.images = std::stoi(next());
    else if (arg == "--rows")
      o.rows = std::stoi(next());
    else if (arg == "--width")
      o.width = std::stoi(next());
    else if (arg == "--depth")
      o.depth = std::stoi(next());
    else if (arg == "--input")
      o.input = std::stoi(next());
    else if (arg == "--batch")
      o.batch = std::stoi(next());
    else if (arg == "--torch-threads")
      o.torchThreads = std::stoi(next());
    else if (arg == "--workers")
      o.workers = parseList(next());
    else if (arg == "--passes")
      o.passes = std::stoi(next());
    else if (arg == "--seed")
      o.seed = std::stoull(next());
    else
      throw std::invalid_argument("unknown argument " + arg);
  }
  if (o.work.empty())
    throw std::invalid_argument("--work DIR is required");
  if (o.images < 2 || o.batch < 1 || o.passes < 1 || o.workers.empty())
    throw std::invalid_argument("--images >= 2, --batch >= 1, --passes >= 1, --workers not empty");
  return o;
}

// Multiply-accumulates of the convolutions of tiny-cnn (3x3, stride 2, padding 1; the head is negligible).
double tinyCnnGflops(int width, int depth, int input) {
  double macs = 0;
  int in = 1;
  int out = width;
  int side = input;
  for (int block = 0; block < depth; ++block) {
    side = (side + 1) / 2;
    macs += static_cast<double>(side) * side * in * out * 9.0;
    in = out;
    out *= 2;
  }
  return 2.0 * macs / 1e9;
}

std::string readFile(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

void emit(const nlohmann::json& line) {
  std::cout << line.dump() << std::endl;
}

// (a): images per second of scorer.score on preloaded batches covering `images` images.
double bareForward(training::Scorer& scorer, const std::vector<torch::Tensor>& batches, int images,
                   int batch) {
  scorer.score(batches[0]);  // warm-up (allocations, LibTorch's first-call work)
  const int count = (images + batch - 1) / batch;
  const auto start = Clock::now();
  for (int i = 0; i < count; ++i)
    scorer.score(batches[static_cast<std::size_t>(i) % batches.size()]);
  return count * batch / secondsSince(start);
}

struct EndToEnd {
  double seconds = 0;
  std::int64_t decoded = 0;
  plugin::ScoringStats stats;
};

// (b) and (c): a fresh index and cache, the model registered (withModel) as the plugin's registry does.
EndToEnd endToEnd(const Options& o, const std::vector<std::string>& files, int workers, bool withModel,
                  const fs::path& runDir, const fs::path& modelsDir) {
  fs::remove_all(runDir);
  fs::create_directories(runDir);
  storage::Index index((runDir / "comcl.sqlite").string());
  storage::ImageCache cache((runDir / "image-cache.bin").string(), storage::CacheFormat{o.input, 8});
  imaging::Ingestor ingestor(index, cache);
  if (withModel) {
    storage::ModelVersionRecord record;
    record.version = 1;
    record.method = "bench";
    record.path = "v1";  // relative to the model directory, as the plugin's registry stores it
    record.status = "active";
    index.putModelVersion(record);
    index.setValue(plugin::kActiveModelKey, "1");
  }
  plugin::ScoringService scoring(index, cache, modelsDir.string(), torch::kCPU, o.batch,
                                 [](const std::string& message) { std::cerr << message << "\n"; });
  scoring.refresh();  // the plugin loads the model at start-up, before any instance arrives

  std::atomic<std::size_t> nextFile{0};
  std::atomic<std::int64_t> decoded{0};
  const auto start = Clock::now();
  std::vector<std::thread> threads;
  for (int w = 0; w < workers; ++w) {
    threads.emplace_back([&] {
      for (std::size_t i = nextFile++; i < files.size(); i = nextFile++) {
        const imaging::IngestOutcome outcome = ingestor.ingest(files[i].data(), files[i].size(), "bench");
        if (outcome.state == storage::DecodeState::Decoded && !outcome.alreadyIndexed) {
          ++decoded;
          if (const auto row = index.instanceById(outcome.instanceId))
            scoring.enqueue(*row);
        }
      }
    });
  }
  for (std::thread& thread : threads)
    thread.join();
  scoring.drain();
  EndToEnd result;
  result.seconds = secondsSince(start);
  result.decoded = decoded.load();
  result.stats = scoring.stats();
  scoring.stop();
  return result;
}

struct Summary {
  std::vector<double> values;
  nlohmann::json json() const {
    std::vector<double> v = values;
    std::sort(v.begin(), v.end());
    const double median = v.size() % 2 ? v[v.size() / 2] : (v[v.size() / 2 - 1] + v[v.size() / 2]) / 2;
    return {{"median", median}, {"min", v.front()}, {"max", v.back()}, {"n", v.size()}};
  }
};

}  // namespace

int main(int argc, char** argv) {
  Options o;
  try {
    o = parse(argc, argv);
  } catch (const std::exception& e) {
    std::cerr
        << "bench_scoring: " << e.what() << "\n"
        << "usage: bench_scoring --work DIR [--images N] [--rows N] [--width N] [--depth N] [--input N] "
           "[--batch N] [--torch-threads N] [--workers 1,2] [--passes N] [--seed N]\n";
    return 2;
  }
  const fs::path work(o.work);
  if (fs::exists(work) && !fs::is_empty(work)) {
    std::cerr << "bench_scoring: " << work << " is not empty\n";
    return 2;
  }
  torch::set_num_threads(o.torchThreads);

  // Synthetic films, uncompressed 16-bit, no degradation; frontal + lateral per study.
  imaging::SynthOptions synth;
  synth.outputDir = (work / "dicom").string();
  synth.patients = (o.images + 1) / 2;
  synth.studiesPerPatient = 1;
  synth.size = o.rows;
  synth.degradedFraction = 0;
  synth.encodings = {imaging::Encoding::Mono2Uint16, imaging::Encoding::Mono1Uint16};
  synth.seed = o.seed;
  const auto synthStart = Clock::now();
  const std::vector<imaging::SynthImage> images = imaging::writeSyntheticArchive(synth);
  std::vector<std::string> files;
  std::size_t bytes = 0;
  for (std::size_t i = 0; i < images.size() && files.size() < static_cast<std::size_t>(o.images); ++i) {
    files.push_back(readFile(fs::path(synth.outputDir) / images[i].file));
    bytes += files.back().size();
  }
  fs::remove_all(synth.outputDir);  // the bytes are in memory now

  // The model: tiny-cnn, freshly initialised (the weights do not change the cost).
  training::ModelFile model;
  model.version = 1;
  model.architecture = {{"name", "tiny-cnn"}, {"params", {{"width", o.width}, {"depth", o.depth}}}};
  model.inputSize = o.input;
  model.channels = 1;
  model.findings = {"finding-a", "finding-b"};
  model.mean = {0.5};
  model.stddev = {0.25};
  model.method = "bench";
  const fs::path modelsDir = work / "models";
  {
    const std::shared_ptr<training::ScoringNetwork> network =
        training::buildNetwork(model.architecture, model.channels, static_cast<int>(model.findings.size()));
    training::writeModelDirectory((modelsDir / "v1").string(), model, *network);
  }
  std::unique_ptr<training::Scorer> scorer = training::loadScorer((modelsDir / "v1").string());

  const double gflops = tinyCnnGflops(o.width, o.depth, o.input);
  emit({{"setup",
         {{"images", files.size()},
          {"megabytesOfDicom", static_cast<double>(bytes) / 1e6},
          {"synthSeconds", secondsSince(synthStart)},
          {"rows", o.rows},
          {"model", scorer->description()},
          {"width", o.width},
          {"depth", o.depth},
          {"inputSize", o.input},
          {"gflopPerImage", gflops},
          {"batch", o.batch},
          {"torchThreads", torch::get_num_threads()},
          {"torchInteropThreads", torch::get_num_interop_threads()},
          {"hardwareThreads", std::thread::hardware_concurrency()}}}});

  torch::manual_seed(static_cast<std::uint64_t>(o.seed));
  std::vector<torch::Tensor> batches;
  for (int i = 0; i < 4; ++i)
    batches.push_back(torch::rand({o.batch, 1, o.input, o.input}));

  std::map<std::string, Summary> summaries;
  for (int pass = 1; pass <= o.passes; ++pass) {
    const double bare = bareForward(*scorer, batches, static_cast<int>(files.size()), o.batch);
    summaries["bare_forward_images_per_s"].values.push_back(bare);
    emit({{"pass", pass},
          {"variant", "bare-forward"},
          {"imagesPerSecond", bare},
          {"msPerImage", 1000.0 / bare},
          {"gflopPerSecond", bare * gflops}});
    for (const int w : o.workers) {
      for (const bool withModel : {true, false}) {
        const EndToEnd run =
            endToEnd(o, files, w, withModel,
                     work / ("run-" + std::to_string(pass) + "-w" + std::to_string(w)), modelsDir);
        const double rate = static_cast<double>(files.size()) / run.seconds;
        const std::string variant =
            std::string(withModel ? "end-to-end" : "ingest-only") + "-w" + std::to_string(w);
        summaries[variant + "_images_per_s"].values.push_back(rate);
        nlohmann::json line = {{"pass", pass},
                               {"variant", variant},
                               {"workers", w},
                               {"seconds", run.seconds},
                               {"imagesPerSecond", rate},
                               {"decoded", run.decoded},
                               {"imagesScored", run.stats.imagesScored},
                               {"batches", run.stats.batches},
                               {"forwardSeconds", run.stats.forwardSeconds},
                               {"pipelineSeconds", run.stats.pipelineSeconds}};
        if (withModel) {
          line["fractionOfBareForward"] = rate / bare;
          summaries[variant + "_fraction"].values.push_back(rate / bare);
          summaries[variant + "_forward_s"].values.push_back(run.stats.forwardSeconds);
          summaries[variant + "_pipeline_s"].values.push_back(run.stats.pipelineSeconds);
          summaries[variant + "_wall_s"].values.push_back(run.seconds);
          if (run.stats.imagesScored != static_cast<std::int64_t>(files.size()))
            std::cerr << "bench_scoring: scored " << run.stats.imagesScored << " of " << files.size() << "\n";
        }
        emit(line);
        fs::remove_all(work / ("run-" + std::to_string(pass) + "-w" + std::to_string(w)));
      }
    }
  }
  nlohmann::json summary = nlohmann::json::object();
  for (const auto& [name, values] : summaries)
    summary[name] = values.json();
  emit({{"summary", summary}});
  return 0;
}
