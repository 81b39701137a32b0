// Index at scale: builds a database of 1,000,000 synthetic instance rows (about 10k patients x 5 studies x
// 2 series x 10 images, Orthanc-style resource ids, DICOM-style UIDs) once, reports the insert rate and the
// file size, then times the per-patient and per-study queries the pair samplers and the REST API use.
//
//   bench_index [--rows=N] [--batch=N] [google benchmark flags]
#include <benchmark/benchmark.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <random>
#include <string>
#include <vector>

#include "comcl/storage/index.h"

namespace {

using comcl::storage::DecodeState;
using comcl::storage::Index;
using comcl::storage::InstanceRecord;

constexpr const char* kUidRoot = "1.2.826.0.1.3680043.8.498.";

struct Corpus {
  std::vector<std::string> patients;
  std::vector<std::string> studies;
  std::int64_t rows = 0;
};

class Generator {
 public:
  explicit Generator(std::uint64_t seed) : random_(seed) {}

  std::string uid() {
    // Root + 20-odd random digits, like the UIDs modalities derive from their serial and a timestamp.
    return kUidRoot + std::to_string(random_() % 1000000000000ULL) + "." +
           std::to_string(random_() % 100000000ULL);
  }
  std::string orthancId() {
    // Orthanc public ids: a SHA-1 in five dash-separated groups of eight hex digits.
    static const char* hex = "0123456789abcdef";
    std::string id;
    for (int group = 0; group < 5; ++group) {
      if (group) {
        id += '-';
      }
      std::uint64_t bits = random_();
      for (int i = 0; i < 8; ++i, bits >>= 4) {
        id += hex[bits & 15];
      }
    }
    return id;
  }
  int between(int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(random_); }
  std::mt19937_64& random() { return random_; }

 private:
  std::mt19937_64 random_;
};

std::uintmax_t fileSize(const std::string& path) {
  std::error_code ec;
  const auto size = std::filesystem::file_size(path, ec);
  return ec ? 0 : size;
}

Corpus build(Index& index, std::int64_t targetRows, std::size_t batchSize) {
  static const char* views[] = {"PA", "AP", "LL", "RL", "AP"};
  static const char* laterality[] = {"L", "R", "B"};
  Generator gen(20240601);
  Corpus corpus;
  std::vector<InstanceRecord> batch;
  batch.reserve(batchSize);
  std::int64_t slot = 0;
  double insertSeconds = 0;
  const auto flush = [&] {
    const auto start = std::chrono::steady_clock::now();
    index.upsertInstances(batch);
    insertSeconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    batch.clear();
  };
  while (corpus.rows < targetRows) {
    const std::string patient = "PAT" + std::to_string(1000000 + corpus.patients.size());
    corpus.patients.push_back(patient);
    const int studies = gen.between(3, 7);
    for (int s = 0; s < studies && corpus.rows < targetRows; ++s) {
      const std::string study = gen.uid();
      corpus.studies.push_back(study);
      const std::string date = std::to_string(20100101 + gen.between(0, 13) * 10000 +
                                              gen.between(0, 11) * 100 + gen.between(0, 27));
      for (int se = 0; se < 2 && corpus.rows < targetRows; ++se) {
        const std::string series = gen.uid();
        const int images = gen.between(5, 15);
        for (int i = 0; i < images && corpus.rows < targetRows; ++i) {
          InstanceRecord r;
          r.resourceId = gen.orthancId();
          r.source = "orthanc";
          r.sopInstanceUid = gen.uid();
          r.seriesInstanceUid = series;
          r.studyInstanceUid = study;
          r.sopClassUid = "1.2.840.10008.5.1.4.1.1.1.1";
          r.patientKey = patient;
          r.studyDate = date;
          r.viewPosition = views[gen.between(0, 4)];
          r.laterality = laterality[gen.between(0, 2)];
          r.modality = gen.between(0, 1) ? "DX" : "CR";
          r.bodyPart = "CHEST";
          r.rows = 2048 + gen.between(0, 1000);
          r.cols = 2048 + gen.between(0, 1000);
          r.frames = 1;
          r.bitsStored = 12;
          r.transferSyntaxUid = "1.2.840.10008.1.2.1";
          r.photometric = "MONOCHROME2";
          const int roll = gen.between(0, 99);
          r.decodeState = roll < 95   ? DecodeState::Decoded
                          : roll < 98 ? DecodeState::Skipped
                                      : DecodeState::Failed;
          if (r.decodeState == DecodeState::Decoded) {
            r.cacheSlot = slot++;
            r.contentWidth = 256;
            r.contentHeight = 200;
            r.contentY = 28;
          } else {
            r.decodeReason = r.decodeState == DecodeState::Skipped ? "not an image" : "truncated pixel data";
          }
          if (gen.between(0, 19) == 0) {
            r.metadataIssues = "missing BodyPartExamined";
          }
          batch.push_back(std::move(r));
          ++corpus.rows;
          if (batch.size() == batchSize) {
            flush();
          }
        }
      }
    }
  }
  if (!batch.empty()) {
    flush();
  }
  std::printf("inserted %lld rows (%zu patients, %zu studies) in %.2f s in batches of %zu: %.0f rows/s\n",
              static_cast<long long>(corpus.rows), corpus.patients.size(), corpus.studies.size(),
              insertSeconds, batchSize, static_cast<double>(corpus.rows) / insertSeconds);
  return corpus;
}

std::int64_t parseFlag(int& argc, char** argv, const char* name, std::int64_t fallback) {
  const std::size_t length = std::strlen(name);
  for (int i = 1; i < argc; ++i) {
    if (std::strncmp(argv[i], name, length) == 0) {
      const std::int64_t value = std::atoll(argv[i] + length);
      for (int j = i; j + 1 < argc; ++j) {
        argv[j] = argv[j + 1];
      }
      --argc;
      return value;
    }
  }
  return fallback;
}

template <typename Query>
void queryBenchmark(benchmark::State& state, Index& index, const std::vector<std::string>& keys,
                    Query query) {
  std::mt19937_64 random(7);
  std::uniform_int_distribution<std::size_t> pick(0, keys.size() - 1);
  std::int64_t rows = 0;
  for (auto _ : state) {
    auto result = (index.*query)(keys[pick(random)]);
    rows += static_cast<std::int64_t>(result.size());
    benchmark::DoNotOptimize(result);
  }
  state.counters["rows/query"] =
      benchmark::Counter(static_cast<double>(rows), benchmark::Counter::kAvgIterations);
}

}  // namespace

int main(int argc, char** argv) {
  const std::int64_t rows = parseFlag(argc, argv, "--rows=", 1000000);
  const auto batch = static_cast<std::size_t>(parseFlag(argc, argv, "--batch=", 10000));
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) {
    return 1;
  }

  const auto dir =
      std::filesystem::temp_directory_path() /
      ("comcl-bench-index-" + std::to_string(::getpid()) + "-" + std::to_string(std::random_device()()));
  std::filesystem::create_directories(dir);
  const std::string path = (dir / "index.db").string();
  int status = 0;
  try {
    Index index(path);
    const Corpus corpus = build(index, rows, batch);
    index.connection().execScript("PRAGMA wal_checkpoint(TRUNCATE)");
    std::printf("database %s: %.1f MiB (%.0f bytes/row), WAL %.1f MiB after checkpoint\n", path.c_str(),
                static_cast<double>(fileSize(path)) / (1 << 20),
                static_cast<double>(fileSize(path)) / static_cast<double>(corpus.rows),
                static_cast<double>(fileSize(path + "-wal")) / (1 << 20));
    std::fflush(stdout);

    benchmark::RegisterBenchmark(("instancesOfPatient/rows:" + std::to_string(corpus.rows)).c_str(),
                                 [&](benchmark::State& state) {
                                   queryBenchmark(state, index, corpus.patients, &Index::instancesOfPatient);
                                 })
        ->Unit(benchmark::kMicrosecond);
    benchmark::RegisterBenchmark(("instancesOfStudy/rows:" + std::to_string(corpus.rows)).c_str(),
                                 [&](benchmark::State& state) {
                                   queryBenchmark(state, index, corpus.studies, &Index::instancesOfStudy);
                                 })
        ->Unit(benchmark::kMicrosecond);
    benchmark::RegisterBenchmark(("findInstance/rows:" + std::to_string(corpus.rows)).c_str(),
                                 [&](benchmark::State& state) {
                                   // Point lookups by a resource id that exists (the ids are random, so
                                   // re-derive a few by query).
                                   std::vector<std::string> ids;
                                   for (std::size_t i = 0; i < corpus.studies.size();
                                        i += corpus.studies.size() / 1000 + 1) {
                                     for (const auto& r : index.instancesOfStudy(corpus.studies[i])) {
                                       ids.push_back(r.resourceId);
                                     }
                                   }
                                   std::mt19937_64 random(11);
                                   std::uniform_int_distribution<std::size_t> pick(0, ids.size() - 1);
                                   for (auto _ : state) {
                                     benchmark::DoNotOptimize(index.findInstance(ids[pick(random)]));
                                   }
                                 })
        ->Unit(benchmark::kMicrosecond);
    benchmark::RunSpecifiedBenchmarks();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_index: %s\n", e.what());
    status = 1;
  }
  benchmark::Shutdown();
  std::error_code ignored;
  std::filesystem::remove_all(dir, ignored);
  return status;
}
