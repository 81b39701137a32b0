#include "comcl/training/metrics.h"

#include <torch/utils.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <iomanip>
#include <locale>
#include <numeric>
#include <sstream>
#include <stdexcept>
#include <tuple>

namespace comcl::training {

namespace {

void require(bool condition, const std::string& message) {
  if (!condition)
    throw std::invalid_argument(message);
}

std::string shapeOf(const torch::Tensor& tensor) {
  std::ostringstream text;
  text << tensor.sizes();
  return text.str();
}

void requireSameNonEmptySize(std::size_t predicted, std::size_t truth, const char* what) {
  require(predicted == truth, std::string(what) + ": " + std::to_string(predicted) + " predictions but " +
                                  std::to_string(truth) + " truths");
  require(predicted > 0, std::string(what) + " of no values");
}

// Rows scaled to unit L2 norm in float32; an all-zero row stays zero (similarity 0 to everything).
torch::Tensor unitRows(const torch::Tensor& features, torch::Device device) {
  torch::Tensor asFloat = features.to(device, torch::kFloat32);
  return asFloat / asFloat.square().sum(1, /*keepdim=*/true).sqrt().clamp_min(1e-12);
}

// Checks that `labels` is a 1-D integer tensor of `count` classes in 0..numClasses-1.
void requireClassLabels(const torch::Tensor& labels, std::int64_t count, int numClasses, const char* name) {
  require(labels.dim() == 1 && labels.size(0) == count,
          std::string(name) + " must have shape [" + std::to_string(count) + "], not " + shapeOf(labels));
  require(at::isIntegralType(labels.scalar_type(), /*includeBool=*/false),
          std::string(name) + " must hold integer classes");
  if (count == 0)
    return;
  const auto lowest = labels.min().item<std::int64_t>();
  const auto highest = labels.max().item<std::int64_t>();
  require(lowest >= 0 && highest < numClasses, std::string(name) + " must lie in 0.." +
                                                   std::to_string(numClasses - 1) + ", found " +
                                                   std::to_string(lowest) + ".." + std::to_string(highest));
}

}  // namespace

double rocAuc(const std::vector<double>& scores, const std::vector<int>& labels) {
  require(scores.size() == labels.size(), "rocAuc: " + std::to_string(scores.size()) + " scores but " +
                                              std::to_string(labels.size()) + " labels");
  std::size_t positives = 0;
  for (std::size_t i = 0; i < labels.size(); ++i) {
    require(labels[i] == 0 || labels[i] == 1,
            "rocAuc: label " + std::to_string(i) + " is " + std::to_string(labels[i]) + ", not 0 or 1");
    require(!std::isnan(scores[i]), "rocAuc: score " + std::to_string(i) + " is NaN");
    positives += static_cast<std::size_t>(labels[i]);
  }
  const std::size_t negatives = labels.size() - positives;
  require(positives > 0 && negatives > 0, "rocAuc needs both classes, got " + std::to_string(positives) +
                                              " positives and " + std::to_string(negatives) + " negatives");

  std::vector<std::size_t> order(scores.size());
  std::iota(order.begin(), order.end(), std::size_t{0});
  std::sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) { return scores[a] < scores[b]; });

  // Each run of equal scores at sorted positions [begin, end) shares the average of ranks begin+1..end, which
  // is what makes a positive–negative tie count one half in U.
  double positiveRankSum = 0;
  for (std::size_t begin = 0; begin < order.size();) {
    std::size_t end = begin;
    std::size_t positivesInRun = 0;
    while (end < order.size() && scores[order[end]] == scores[order[begin]]) {
      positivesInRun += static_cast<std::size_t>(labels[order[end]]);
      ++end;
    }
    const double averageRank = (static_cast<double>(begin + 1) + static_cast<double>(end)) / 2.0;
    positiveRankSum += averageRank * static_cast<double>(positivesInRun);
    begin = end;
  }
  const double p = static_cast<double>(positives);
  const double n = static_cast<double>(negatives);
  const double u = positiveRankSum - p * (p + 1.0) / 2.0;
  return u / (p * n);
}

double accuracy(const std::vector<int>& predicted, const std::vector<int>& truth) {
  requireSameNonEmptySize(predicted.size(), truth.size(), "accuracy");
  std::size_t equal = 0;
  for (std::size_t i = 0; i < predicted.size(); ++i)
    equal += predicted[i] == truth[i] ? 1 : 0;
  return static_cast<double>(equal) / static_cast<double>(predicted.size());
}

double quadraticWeightedKappa(const std::vector<int>& predicted, const std::vector<int>& truth,
                              int numClasses) {
  require(numClasses >= 2,
          "quadraticWeightedKappa needs at least 2 classes, not " + std::to_string(numClasses));
  requireSameNonEmptySize(predicted.size(), truth.size(), "quadraticWeightedKappa");
  const auto classes = static_cast<std::size_t>(numClasses);
  std::vector<double> observed(classes * classes, 0.0);
  std::vector<double> truthCounts(classes, 0.0);
  std::vector<double> predictedCounts(classes, 0.0);
  for (std::size_t i = 0; i < truth.size(); ++i) {
    for (int value : {truth[i], predicted[i]}) {
      require(value >= 0 && value < numClasses, "quadraticWeightedKappa: class " + std::to_string(value) +
                                                    " outside 0.." + std::to_string(numClasses - 1));
    }
    const auto t = static_cast<std::size_t>(truth[i]);
    const auto p = static_cast<std::size_t>(predicted[i]);
    observed[t * classes + p] += 1.0;
    truthCounts[t] += 1.0;
    predictedCounts[p] += 1.0;
  }

  // The 1/(K-1)^2 weight normalisation and the 1/N of both matrices cancel in the ratio, so both sums are
  // kept in whole counts: observed = sum (i-j)^2 O_ij, expected * N = sum (i-j)^2 r_i c_j. Whole counts
  // also make the degenerate "expected == 0" test exact.
  const double total = static_cast<double>(truth.size());
  double observedDisagreement = 0;
  double expectedDisagreementTimesTotal = 0;
  for (std::size_t i = 0; i < classes; ++i) {
    for (std::size_t j = 0; j < classes; ++j) {
      const double distance = static_cast<double>(i) - static_cast<double>(j);
      const double weight = distance * distance;
      observedDisagreement += weight * observed[i * classes + j];
      expectedDisagreementTimesTotal += weight * truthCounts[i] * predictedCounts[j];
    }
  }
  if (expectedDisagreementTimesTotal == 0)
    return observedDisagreement == 0 ? 1.0 : 0.0;
  return 1.0 - total * observedDisagreement / expectedDisagreementTimesTotal;
}

MeanStd meanStd(const std::vector<double>& values) {
  require(!values.empty(), "meanStd of no values");
  const double count = static_cast<double>(values.size());
  MeanStd result;
  result.count = static_cast<int>(values.size());
  // Two passes: subtracting the mean first avoids the cancellation of the sum-of-squares formula.
  result.mean = std::accumulate(values.begin(), values.end(), 0.0) / count;
  if (values.size() > 1) {
    double squaredDeviations = 0;
    for (double value : values)
      squaredDeviations += (value - result.mean) * (value - result.mean);
    result.std = std::sqrt(squaredDeviations / (count - 1.0));
  }
  return result;
}

std::string formatMeanStd(const MeanStd& value, int digits) {
  require(digits >= 0, "formatMeanStd: negative number of digits " + std::to_string(digits));
  std::ostringstream text;
  text.imbue(std::locale::classic());  // a report reads "0.742", never "0,742"
  text << std::fixed << std::setprecision(digits) << value.mean << " \xC2\xB1 " << value.std;  // UTF-8 ±
  return text.str();
}

torch::Tensor knnClassScores(const torch::Tensor& trainFeatures, const torch::Tensor& trainLabels,
                             const torch::Tensor& queryFeatures, int numClasses, int k, double temperature) {
  require(trainFeatures.dim() == 2, "knn: training features must be [N, D], not " + shapeOf(trainFeatures));
  require(queryFeatures.dim() == 2 && queryFeatures.size(1) == trainFeatures.size(1),
          "knn: query features must be [M, " + std::to_string(trainFeatures.size(1)) + "], not " +
              shapeOf(queryFeatures));
  require(trainFeatures.size(0) > 0, "knn: the training set is empty");
  require(numClasses >= 1, "knn: numClasses must be at least 1, not " + std::to_string(numClasses));
  require(k >= 1, "knn: k must be at least 1, not " + std::to_string(k));
  require(temperature > 0, "knn: temperature must be positive, not " + std::to_string(temperature));
  const std::int64_t trainCount = trainFeatures.size(0);
  requireClassLabels(trainLabels, trainCount, numClasses, "knn: training labels");

  torch::NoGradGuard noGrad;
  const torch::Device device = trainFeatures.device();
  const torch::Tensor trainUnitTransposed = unitRows(trainFeatures, device).t().contiguous();  // [D, N]
  const torch::Tensor labels = trainLabels.to(device, torch::kLong);
  const std::int64_t neighbours = std::min<std::int64_t>(k, trainCount);
  const std::int64_t queryCount = queryFeatures.size(0);

  // The [rows, N] similarity block is the only large temporary: cap it at 2^26 floats (256 MiB) and at
  // 1024 rows so memory does not grow with M (or with N beyond what fits).
  constexpr std::int64_t kMaxChunkRows = 1024;
  constexpr std::int64_t kMaxSimilarityElements = std::int64_t{1} << 26;
  const std::int64_t chunkRows =
      std::max<std::int64_t>(1, std::min(kMaxChunkRows, kMaxSimilarityElements / trainCount));

  torch::Tensor scores =
      torch::empty({queryCount, numClasses}, torch::TensorOptions().dtype(torch::kFloat32));
  for (std::int64_t start = 0; start < queryCount; start += chunkRows) {
    const std::int64_t rows = std::min(chunkRows, queryCount - start);
    const torch::Tensor queries = unitRows(queryFeatures.narrow(0, start, rows), device);
    torch::Tensor topSimilarity;
    torch::Tensor topIndex;
    std::tie(topSimilarity, topIndex) = torch::mm(queries, trainUnitTransposed)
                                            .topk(neighbours, /*dim=*/1, /*largest=*/true, /*sorted=*/true);
    // exp(s / T) overflows float32 once s / T passes ~88 (T = 0.01 is enough); subtracting each row's best
    // similarity scales the row by a constant, which the per-row normalisation below removes again.
    const torch::Tensor weights = ((topSimilarity - topSimilarity.narrow(1, 0, 1)) / temperature).exp();
    torch::Tensor votes = torch::zeros({rows, numClasses}, weights.options());
    votes.scatter_add_(1, labels.take(topIndex), weights);
    votes.div_(votes.sum(1, /*keepdim=*/true));
    scores.narrow(0, start, rows).copy_(votes);
  }
  return scores;
}

double knnAccuracy(const torch::Tensor& trainFeatures, const torch::Tensor& trainLabels,
                   const torch::Tensor& queryFeatures, const torch::Tensor& queryLabels, int numClasses,
                   int k, double temperature) {
  require(queryFeatures.dim() == 2, "knn: query features must be [M, D], not " + shapeOf(queryFeatures));
  require(queryFeatures.size(0) > 0, "knnAccuracy of no queries");
  requireClassLabels(queryLabels, queryFeatures.size(0), numClasses, "knn: query labels");
  const torch::Tensor scores =
      knnClassScores(trainFeatures, trainLabels, queryFeatures, numClasses, k, temperature);
  const torch::Tensor truth = queryLabels.to(torch::kCPU, torch::kLong).contiguous();
  const auto score = scores.accessor<float, 2>();
  const auto label = truth.accessor<std::int64_t, 1>();
  std::int64_t correct = 0;
  for (std::int64_t row = 0; row < score.size(0); ++row) {
    // Strictly greater only: on equal votes the lower class index keeps the lead.
    std::int64_t best = 0;
    for (std::int64_t c = 1; c < numClasses; ++c) {
      if (score[row][c] > score[row][best])
        best = c;
    }
    correct += best == label[row] ? 1 : 0;
  }
  return static_cast<double>(correct) / static_cast<double>(score.size(0));
}

}  // namespace comcl::training
