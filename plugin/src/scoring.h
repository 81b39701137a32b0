// Diagnosis scores for cached images with the active model version. One device lock serialises every use of
// the model (background batches here, on-demand scoring for a study, later training), so the GPU or the CPU
// threads of LibTorch are never shared by two forward passes at once. No Orthanc dependency.
#pragma once

#include <torch/types.h>

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "comcl/storage/image_cache.h"
#include "comcl/storage/index.h"
#include "comcl/training/scorer.h"

namespace comcl::plugin {

// The index value naming the active model version (Index::activateModelVersion sets it).
constexpr const char* kActiveModelKey = storage::kActiveModelVersionKey;

struct ActiveModel {
  int version = 0;
  std::string description;
  std::vector<std::string> findings;
};

struct ScoringStats {
  std::int64_t imagesScored = 0;
  std::int64_t batches = 0;
  double forwardSeconds = 0;   // inside Scorer::score only
  double pipelineSeconds = 0;  // reading the cache, the forward pass and storing the predictions
};

class ScoringService {
 public:
  using Logger = std::function<void(const std::string&)>;
  ScoringService(storage::Index& index, const storage::ImageCache& cache, std::string modelDirectory,
                 torch::Device device, int batchSize, Logger log);
  ~ScoringService();
  ScoringService(const ScoringService&) = delete;
  ScoringService& operator=(const ScoringService&) = delete;

  // Loads the version the index names as active, if it is not the loaded one. A model that fails to load
  // leaves no model active (lastError() says why); the images still get their quality.
  std::optional<ActiveModel> refresh();
  std::optional<ActiveModel> activeModel() const;
  std::string lastError() const;

  // Background scoring in batches, for freshly ingested images (decoded rows only; others are ignored).
  void enqueue(const storage::InstanceRecord& row);
  // Scores now, on the calling thread, the decoded rows that lack predictions of the active model; returns
  // how many were scored (0 without a model).
  std::size_t scoreMissing(const std::vector<storage::InstanceRecord>& rows);

  std::size_t pending() const;
  ScoringStats stats() const;
  // Waits until the background queue is empty (tests and benchmarks).
  void drain();
  void stop();

 private:
  struct Item {
    std::int64_t rowId;
    std::int64_t slot;
    std::uint64_t key;
  };
  static std::optional<Item> itemOf(const storage::InstanceRecord& row);  // decoded rows with a cache slot
  void run();
  // Requires deviceMutex_. Scores `items` with the loaded model and stores the predictions.
  void scoreLocked(const std::vector<Item>& items);
  std::optional<ActiveModel> refreshLocked();

  storage::Index& index_;
  const storage::ImageCache& cache_;
  const std::string modelDirectory_;
  const torch::Device device_;
  const std::size_t batchSize_;
  const Logger log_;

  mutable std::mutex deviceMutex_;  // the model and everything that runs it
  std::unique_ptr<training::Scorer> scorer_;
  std::optional<ActiveModel> model_;
  std::optional<int> failedVersion_;  // not retried until the active version changes
  std::string lastError_;
  ScoringStats stats_;

  mutable std::mutex queueMutex_;
  std::condition_variable queueChanged_;
  std::deque<Item> queue_;
  std::size_t inFlight_ = 0;
  bool stopping_ = false;
  std::thread thread_;
};

}  // namespace comcl::plugin
