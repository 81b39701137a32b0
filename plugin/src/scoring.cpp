#include "scoring.h"

#include <chrono>
#include <filesystem>

#include "comcl/storage/cache_key.h"
#include "comcl/training/tensor_batch.h"

namespace comcl::plugin {

namespace {

double secondsSince(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

}  // namespace

ScoringService::ScoringService(storage::Index& index, const storage::ImageCache& cache,
                               std::string modelDirectory, torch::Device device, int batchSize, Logger log)
    : index_(index),
      cache_(cache),
      modelDirectory_(std::move(modelDirectory)),
      device_(device),
      batchSize_(static_cast<std::size_t>(std::max(1, batchSize))),
      log_(std::move(log)) {
  thread_ = std::thread([this] { run(); });
}

ScoringService::~ScoringService() {
  stop();
}

void ScoringService::stop() {
  {
    std::lock_guard lock(queueMutex_);
    if (stopping_ && !thread_.joinable())
      return;
    stopping_ = true;
    queue_.clear();  // not lost: the annotation scores what lacks predictions
  }
  queueChanged_.notify_all();
  if (thread_.joinable())
    thread_.join();
}

std::optional<ActiveModel> ScoringService::refresh() {
  std::lock_guard lock(deviceMutex_);
  return refreshLocked();
}

std::optional<ActiveModel> ScoringService::refreshLocked() {
  std::optional<int> wanted;
  if (const auto value = index_.value(kActiveModelKey); value && !value->empty()) {
    try {
      wanted = std::stoi(*value);
    } catch (const std::exception&) {
      lastError_ = "the index names an invalid active model version '" + *value + "'";
    }
  }
  if (wanted == (model_ ? std::optional<int>(model_->version) : std::nullopt))
    return model_;
  if (wanted && wanted == failedVersion_)
    return std::nullopt;
  scorer_.reset();
  model_.reset();
  if (!wanted) {
    log_("no diagnosis model is active: studies get quality flags only");
    return std::nullopt;
  }
  try {
    const auto record = index_.modelVersion(*wanted);
    if (!record)
      throw std::runtime_error("model version " + std::to_string(*wanted) + " is not in the registry");
    std::filesystem::path path(record->path);
    if (path.is_relative())
      path = std::filesystem::path(modelDirectory_) / path;
    std::unique_ptr<training::Scorer> loaded = training::loadScorer(path.string(), device_);
    if (loaded->modelVersion() != *wanted) {
      throw std::runtime_error(path.string() + " holds model version " +
                               std::to_string(loaded->modelVersion()) + ", not " + std::to_string(*wanted));
    }
    ActiveModel active{*wanted, loaded->description(), loaded->findings()};
    scorer_ = std::move(loaded);
    model_ = active;
    failedVersion_.reset();
    lastError_.clear();
    log_("diagnosis model " + active.description + " is active");
  } catch (const std::exception& e) {
    failedVersion_ = wanted;
    lastError_ = std::string("cannot load model version ") + std::to_string(*wanted) + ": " + e.what();
    log_(lastError_);
  }
  return model_;
}

std::optional<ActiveModel> ScoringService::activeModel() const {
  std::lock_guard lock(deviceMutex_);
  return model_;
}

std::string ScoringService::lastError() const {
  std::lock_guard lock(deviceMutex_);
  return lastError_;
}

std::optional<ScoringService::Item> ScoringService::itemOf(const storage::InstanceRecord& row) {
  if (row.decodeState != storage::DecodeState::Decoded || !row.cacheSlot)
    return std::nullopt;  // nothing cached to score
  return Item{row.id, *row.cacheSlot, storage::cacheKey(row.resourceId)};
}

void ScoringService::enqueue(const storage::InstanceRecord& row) {
  const std::optional<Item> item = itemOf(row);
  if (!item)
    return;
  {
    std::lock_guard lock(queueMutex_);
    if (stopping_)
      return;
    queue_.push_back(*item);
  }
  queueChanged_.notify_all();
}

std::size_t ScoringService::pending() const {
  std::lock_guard lock(queueMutex_);
  return queue_.size() + inFlight_;
}

ScoringStats ScoringService::stats() const {
  std::lock_guard lock(deviceMutex_);
  return stats_;
}

void ScoringService::drain() {
  std::unique_lock lock(queueMutex_);
  queueChanged_.wait(lock, [&] { return stopping_ || (queue_.empty() && inFlight_ == 0); });
}

void ScoringService::run() {
  for (;;) {
    std::vector<Item> batch;
    {
      std::unique_lock lock(queueMutex_);
      queueChanged_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
      if (stopping_)
        return;
      while (!queue_.empty() && batch.size() < batchSize_) {
        batch.push_back(queue_.front());
        queue_.pop_front();
      }
      inFlight_ = batch.size();
    }
    try {
      std::lock_guard device(deviceMutex_);
      if (refreshLocked())
        scoreLocked(batch);
    } catch (const std::exception& e) {
      log_(std::string("scoring a batch of ") + std::to_string(batch.size()) + " images failed: " + e.what());
    }
    {
      std::lock_guard lock(queueMutex_);
      inFlight_ = 0;
    }
    queueChanged_.notify_all();
  }
}

void ScoringService::scoreLocked(const std::vector<Item>& items) {
  if (!scorer_ || items.empty())
    return;
  const auto start = std::chrono::steady_clock::now();
  std::vector<training::CachedImageRef> refs;
  refs.reserve(items.size());
  for (const Item& item : items)
    refs.push_back({item.slot, item.key});
  const torch::Tensor images =
      training::loadBatch(cache_, refs, device_);  // the scorer takes 1 or 3 channels
  const auto forwardStart = std::chrono::steady_clock::now();
  const torch::Tensor probabilities = scorer_->score(images).to(torch::kCPU, torch::kDouble).contiguous();
  const double forward = secondsSince(forwardStart);
  const auto* values = probabilities.data_ptr<double>();
  const std::vector<std::string>& findings = model_->findings;
  std::vector<storage::PredictionRecord> predictions;
  predictions.reserve(items.size() * findings.size());
  for (std::size_t i = 0; i < items.size(); ++i) {
    for (std::size_t f = 0; f < findings.size(); ++f)
      predictions.push_back({items[i].rowId, model_->version, findings[f], values[i * findings.size() + f]});
  }
  index_.putPredictions(predictions);
  stats_.imagesScored += static_cast<std::int64_t>(items.size());
  stats_.batches += 1;
  stats_.forwardSeconds += forward;
  stats_.pipelineSeconds += secondsSince(start);
}

std::size_t ScoringService::scoreMissing(const std::vector<storage::InstanceRecord>& rows) {
  std::lock_guard device(deviceMutex_);
  if (!refreshLocked())
    return 0;
  std::vector<Item> missing;
  for (const storage::InstanceRecord& row : rows) {
    const std::optional<Item> item = itemOf(row);
    if (item && index_.predictionsOfModel(row.id, model_->version).empty())
      missing.push_back(*item);
  }
  for (std::size_t begin = 0; begin < missing.size(); begin += batchSize_) {
    const auto end = std::min(missing.size(), begin + batchSize_);
    scoreLocked(std::vector<Item>(missing.begin() + static_cast<std::ptrdiff_t>(begin),
                                  missing.begin() + static_cast<std::ptrdiff_t>(end)));
  }
  return missing.size();
}

}  // namespace comcl::plugin
