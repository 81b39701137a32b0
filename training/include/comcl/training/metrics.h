// Evaluation metrics for the training engine: ROC AUC, accuracy, quadratic-weighted kappa, mean ± std over
// repeated runs, and the weighted k-nearest-neighbour monitor used to follow self-supervised pretraining.
#pragma once

#include <torch/types.h>

#include <string>
#include <vector>

namespace comcl::training {

// Area under the ROC curve of `scores` for binary `labels` (1 positive, 0 negative), computed as the
// Mann–Whitney U statistic with average ranks, so a tie between a positive and a negative counts one half.
// Throws std::invalid_argument (the message says how many positives and negatives there were) when either
// class is absent, when the sizes differ, or when a label is not 0/1 or a score is NaN.
double rocAuc(const std::vector<double>& scores, const std::vector<int>& labels);

// Fraction of equal entries. Throws std::invalid_argument for empty or differently sized inputs.
double accuracy(const std::vector<int>& predicted, const std::vector<int>& truth);

// Cohen's kappa with quadratic weights w_ij = (i-j)^2 / (K-1)^2 over classes 0..K-1 (K = numClasses >= 2):
// 1 - observed weighted disagreement / disagreement expected from the two marginals alone.
// Degenerate case: the expected disagreement is 0 only when every truth and every prediction fall in one
// and the same class; kappa is then 0/0, and this returns 1.0 when the observed disagreement is also 0
// (always so in exact arithmetic: the raters agree perfectly) and 0.0 otherwise.
// Throws std::invalid_argument for a class outside 0..K-1, numClasses < 2, empty or different-size inputs.
double quadraticWeightedKappa(const std::vector<int>& predicted, const std::vector<int>& truth,
                              int numClasses);

struct MeanStd {
  double mean = 0;
  double std = 0;
  int count = 0;
};

// Mean and sample standard deviation (n-1 denominator; 0 for a single value). Throws std::invalid_argument
// for an empty vector.
MeanStd meanStd(const std::vector<double>& values);

// "0.742 ± 0.031" with `digits` decimals (UTF-8 ±, '.' as the decimal point whatever the locale).
// Throws std::invalid_argument for negative digits.
std::string formatMeanStd(const MeanStd& value, int digits = 3);

// Weighted k-nearest-neighbour classifier (Wu et al. 2018, the monitor used by MoCo and MedAug): the
// features are L2-normalised here (not assumed), similarity is the cosine, and the k most similar training
// features vote for their class with weight exp(similarity / temperature). Returns [M, numClasses] float32
// vote totals normalised to sum to 1 per row, on the CPU; the computation runs on trainFeatures' device.
// k is clamped to the number of training features; which of several equally similar neighbours makes the
// cut at rank k is unspecified. Queries are processed in chunks so memory stays bounded for large M.
// Throws std::invalid_argument for mismatched shapes, labels outside 0..numClasses-1, an empty training
// set, k < 1, numClasses < 1 or a temperature that is not positive.
torch::Tensor knnClassScores(const torch::Tensor& trainFeatures /*[N,D]*/,
                             const torch::Tensor& trainLabels /*[N] integer*/,
                             const torch::Tensor& queryFeatures /*[M,D]*/, int numClasses, int k = 200,
                             double temperature = 0.1);

// Top-1 accuracy of knnClassScores on labelled queries (ties broken toward the lower class index).
// Throws std::invalid_argument as knnClassScores does, and for no queries or query labels that do not
// match the queries or lie outside 0..numClasses-1.
double knnAccuracy(const torch::Tensor& trainFeatures, const torch::Tensor& trainLabels,
                   const torch::Tensor& queryFeatures, const torch::Tensor& queryLabels, int numClasses,
                   int k = 200, double temperature = 0.1);

}  // namespace comcl::training
