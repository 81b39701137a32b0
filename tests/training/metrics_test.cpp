// Evaluation metrics against values worked out by hand (the arithmetic is in the comments) and against
// brute-force definitions, never against the implementation itself.
#include "comcl/training/metrics.h"

#include <gtest/gtest.h>
#include <torch/cuda.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <numeric>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

namespace comcl::training {
namespace {

// Runs `call`, expects std::invalid_argument, and checks that its message contains `fragment`.
void expectInvalidArgument(const std::function<void()>& call, const std::string& fragment = "") {
  try {
    call();
    ADD_FAILURE() << "no std::invalid_argument thrown (expected one mentioning '" << fragment << "')";
  } catch (const std::invalid_argument& error) {
    EXPECT_NE(std::string(error.what()).find(fragment), std::string::npos)
        << "message '" << error.what() << "' does not mention '" << fragment << "'";
  }
}

// ---------------------------------------------------------------------------------------------------------
// ROC AUC

TEST(MetricsRocAuc, HandExampleWithATieBetweenAPositiveAndANegative) {
  // Positives: 0.4, 0.9. Negatives: 0.1, 0.4, 0.8.
  // Pairs: 0.4 vs 0.1 -> 1, 0.4 vs 0.4 -> 0.5 (tie), 0.4 vs 0.8 -> 0; 0.9 beats all three -> 3.
  // AUC = (1 + 0.5 + 0 + 3) / (2 * 3) = 4.5 / 6 = 0.75.
  // Same by ranks: 0.1 -> 1, 0.4 and 0.4 -> 2.5 each, 0.8 -> 4, 0.9 -> 5; positive rank sum 2.5 + 5 = 7.5;
  // U = 7.5 - 2*3/2 = 4.5.
  EXPECT_DOUBLE_EQ(rocAuc({0.1, 0.4, 0.4, 0.8, 0.9}, {0, 1, 0, 0, 1}), 0.75);
}

TEST(MetricsRocAuc, HandExampleWithATieRunOfPositivesAndNegatives) {
  // Positives: 1, 1. Negatives: 3, 1, 2. Each positive loses to 3 and 2 and ties the negative 1 -> 0.5 each.
  // AUC = (0.5 + 0.5) / (2 * 3) = 1/6. By ranks: the three 1s share rank 2, 2 -> 4, 3 -> 5;
  // positive rank sum 4, U = 4 - 2*3/2 = 1.
  EXPECT_NEAR(rocAuc({3, 1, 1, 1, 2}, {0, 1, 1, 0, 0}), 1.0 / 6.0, 1e-15);
}

TEST(MetricsRocAuc, PerfectReversedAndUninformativeScores) {
  // Every positive above every negative: 4 of 4 pairs right.
  EXPECT_DOUBLE_EQ(rocAuc({0.1, 0.2, 0.8, 0.9}, {0, 0, 1, 1}), 1.0);
  // Every positive below every negative: 0 of 4 pairs right.
  EXPECT_DOUBLE_EQ(rocAuc({0.1, 0.2, 0.8, 0.9}, {1, 1, 0, 0}), 0.0);
  // All scores equal: every one of the 4 pairs is a tie, 4 * 0.5 / 4 = 0.5.
  EXPECT_DOUBLE_EQ(rocAuc({0.3, 0.3, 0.3, 0.3}, {1, 0, 1, 0}), 0.5);
  // Interleaved P N P N by score ascending (0.1 P, 0.2 N, 0.3 P, 0.4 N): the pairs right are
  // P0.3 > N0.2 only -> 1 of 4 = 0.25.
  EXPECT_DOUBLE_EQ(rocAuc({0.1, 0.2, 0.3, 0.4}, {1, 0, 1, 0}), 0.25);
  // Infinite scores are ordered like any other.
  const double inf = std::numeric_limits<double>::infinity();
  EXPECT_DOUBLE_EQ(rocAuc({-inf, inf}, {0, 1}), 1.0);
}

TEST(MetricsRocAuc, InvariantToMonotoneTransformsOfTheScores) {
  std::mt19937 random(7);
  std::uniform_int_distribution<int> level(0, 9);  // few levels, so plenty of ties
  std::bernoulli_distribution coin(0.4);
  std::vector<double> scores;
  std::vector<int> labels;
  for (int i = 0; i < 300; ++i) {
    scores.push_back(0.1 * level(random));
    labels.push_back(coin(random) ? 1 : 0);
  }
  const double auc = rocAuc(scores, labels);
  auto transformed = [&](double (*f)(double)) {
    std::vector<double> out;
    for (double s : scores)
      out.push_back(f(s));
    return rocAuc(out, labels);
  };
  // Strictly increasing transforms keep the order and the ties, hence the ranks, hence the AUC exactly.
  EXPECT_DOUBLE_EQ(transformed([](double s) { return std::exp(s); }), auc);
  EXPECT_DOUBLE_EQ(transformed([](double s) { return 3.0 * s - 7.0; }), auc);
  EXPECT_DOUBLE_EQ(transformed([](double s) { return s * s * s; }), auc);
  EXPECT_DOUBLE_EQ(transformed([](double s) { return std::atan(s - 0.5); }), auc);
  // A decreasing transform swaps wins and losses and keeps ties: AUC becomes 1 - AUC.
  EXPECT_NEAR(transformed([](double s) { return -s; }), 1.0 - auc, 1e-12);
}

TEST(MetricsRocAuc, EqualsTheFractionOfCorrectlyOrderedPairsOnRandomData) {
  std::mt19937 random(2024);
  for (int trial = 0; trial < 20; ++trial) {
    const int n = 2 + trial * 13;
    const int levels = trial % 2 == 0 ? 5 : 1000000;  // many ties, then almost none
    std::uniform_int_distribution<int> level(0, levels - 1);
    std::bernoulli_distribution coin(0.3);
    std::vector<double> scores;
    std::vector<int> labels;
    for (int i = 0; i < n; ++i) {
      scores.push_back(level(random) / static_cast<double>(levels));
      labels.push_back(coin(random) ? 1 : 0);
    }
    labels[0] = 1;  // both classes present
    labels[1] = 0;

    double correctPairs = 0;
    double pairs = 0;
    for (int p = 0; p < n; ++p) {
      for (int q = 0; q < n; ++q) {
        if (labels[p] != 1 || labels[q] != 0)
          continue;
        pairs += 1;
        correctPairs += scores[p] > scores[q] ? 1.0 : (scores[p] == scores[q] ? 0.5 : 0.0);
      }
    }
    EXPECT_NEAR(rocAuc(scores, labels), correctPairs / pairs, 1e-12) << "trial " << trial << ", n " << n;
  }
}

TEST(MetricsRocAuc, RejectsOneClassMismatchedSizesBadLabelsAndNaN) {
  expectInvalidArgument([] { rocAuc({0.1, 0.2, 0.3}, {1, 1, 1}); }, "3 positives and 0 negatives");
  expectInvalidArgument([] { rocAuc({0.1, 0.2}, {0, 0}); }, "0 positives and 2 negatives");
  expectInvalidArgument([] { rocAuc({}, {}); }, "0 positives and 0 negatives");
  expectInvalidArgument([] { rocAuc({0.1, 0.2}, {0, 1, 1}); }, "2 scores but 3 labels");
  expectInvalidArgument([] { rocAuc({0.1, 0.2, 0.3}, {0, 1, 2}); }, "not 0 or 1");
  expectInvalidArgument([] { rocAuc({0.1, std::nan(""), 0.3}, {0, 1, 0}); }, "NaN");
}

// ---------------------------------------------------------------------------------------------------------
// Accuracy

TEST(MetricsAccuracy, FractionOfEqualEntries) {
  // Entries 0, 1 and 3 agree, entry 2 does not: 3 / 4.
  EXPECT_DOUBLE_EQ(accuracy({1, 2, 3, 4}, {1, 2, 0, 4}), 0.75);
  EXPECT_DOUBLE_EQ(accuracy({0, 0}, {0, 0}), 1.0);
  EXPECT_DOUBLE_EQ(accuracy({0, 1, 2}, {1, 2, 0}), 0.0);
}

TEST(MetricsAccuracy, RejectsEmptyAndMismatchedInputs) {
  expectInvalidArgument([] { accuracy({}, {}); }, "no values");
  expectInvalidArgument([] { accuracy({1, 2}, {1}); }, "2 predictions but 1 truths");
}

// ---------------------------------------------------------------------------------------------------------
// Quadratic-weighted kappa

TEST(MetricsKappa, ThreeClassHandExample) {
  // truth     = 0 0 1 1 2 2
  // predicted = 0 1 1 2 2 2
  // Weights (i-j)^2 / (K-1)^2 with K = 3: |i-j| = 1 -> 0.25, |i-j| = 2 -> 1.
  // Observed counts O (rows truth, columns predicted):
  //   [1 1 0]
  //   [0 1 1]
  //   [0 0 2]
  // Row sums r = (2, 2, 2), column sums c = (1, 2, 3), N = 6.
  // Observed weighted disagreement: O01 * 0.25 + O12 * 0.25 = 0.5.
  // Expected counts E_ij = r_i c_j / N = c_j / 3:
  //   [1/3 2/3 1]
  //   [1/3 2/3 1]
  //   [1/3 2/3 1]
  // Expected weighted disagreement:
  //   row 0: 0.25 * 2/3 + 1 * 1       = 7/6
  //   row 1: 0.25 * 1/3 + 0.25 * 1    = 2/6
  //   row 2: 1 * 1/3 + 0.25 * 2/3     = 3/6     total 12/6 = 2
  // kappa = 1 - 0.5 / 2 = 0.75.
  const std::vector<int> truth = {0, 0, 1, 1, 2, 2};
  const std::vector<int> predicted = {0, 1, 1, 2, 2, 2};
  EXPECT_NEAR(quadraticWeightedKappa(predicted, truth, 3), 0.75, 1e-12);
  // Swapping the raters transposes O and swaps r and c; the symmetric weights give the same kappa.
  EXPECT_NEAR(quadraticWeightedKappa(truth, predicted, 3), 0.75, 1e-12);
}

TEST(MetricsKappa, ReversedRatingsGiveMinusOne) {
  // truth 0 1 2, predicted 2 1 0: observed disagreement 1 + 0 + 1 = 2.
  // r = c = (1, 1, 1), N = 3, so E_ij = 1/3 and the expected disagreement is 1/3 times the sum of all
  // weights (0 + .25 + 1 + .25 + 0 + .25 + 1 + .25 + 0 = 3) = 1. kappa = 1 - 2 / 1 = -1.
  EXPECT_NEAR(quadraticWeightedKappa({2, 1, 0}, {0, 1, 2}, 3), -1.0, 1e-12);
}

TEST(MetricsKappa, PerfectAgreementIsOneAndAConstantPredictorIsZero) {
  EXPECT_DOUBLE_EQ(quadraticWeightedKappa({0, 1, 2, 3, 4, 2}, {0, 1, 2, 3, 4, 2}, 5), 1.0);
  // truth 0 1 2, predicted 1 1 1: observed 0.25 + 0 + 0.25 = 0.5; c = (0, 3, 0), r = (1, 1, 1), so
  // E_i1 = 1 and the expected disagreement is 0.25 + 0 + 0.25 = 0.5: kappa = 1 - 0.5 / 0.5 = 0.
  EXPECT_NEAR(quadraticWeightedKappa({1, 1, 1}, {0, 1, 2}, 3), 0.0, 1e-12);
  // truth all 0, predicted all 2: observed 4 * 1 = 4; E_02 = 4 * 4 / 4 = 4 with weight 1 -> 4: kappa 0.
  EXPECT_NEAR(quadraticWeightedKappa({2, 2, 2, 2}, {0, 0, 0, 0}, 3), 0.0, 1e-12);
}

TEST(MetricsKappa, DegenerateCaseWhereEveryoneUsesOneClassCountsAsAgreement) {
  // Everything in class 1: expected disagreement 0 and observed 0 -> 0/0, documented as 1.0.
  EXPECT_DOUBLE_EQ(quadraticWeightedKappa({1, 1, 1}, {1, 1, 1}, 4), 1.0);
  EXPECT_DOUBLE_EQ(quadraticWeightedKappa({0}, {0}, 2), 1.0);
}

TEST(MetricsKappa, RejectsClassesOutOfRangeAndBadInputs) {
  expectInvalidArgument([] { quadraticWeightedKappa({0, 3}, {0, 1}, 3); }, "class 3 outside 0..2");
  expectInvalidArgument([] { quadraticWeightedKappa({0, 1}, {-1, 1}, 3); }, "class -1 outside 0..2");
  expectInvalidArgument([] { quadraticWeightedKappa({0, 0}, {0, 0}, 1); }, "at least 2 classes");
  expectInvalidArgument([] { quadraticWeightedKappa({}, {}, 3); }, "no values");
  expectInvalidArgument([] { quadraticWeightedKappa({0, 1}, {0}, 3); }, "2 predictions but 1 truths");
}

// ---------------------------------------------------------------------------------------------------------
// Mean ± standard deviation

TEST(MetricsMeanStd, SampleStandardDeviationWithNMinusOne) {
  // Mean (2+4+4+4+5+5+7+9) / 8 = 40 / 8 = 5. Squared deviations 9+1+1+1+0+0+4+16 = 32.
  // Sample std = sqrt(32 / 7) = 2.1380899353 (the population std would be sqrt(32 / 8) = 2).
  const MeanStd result = meanStd({2, 4, 4, 4, 5, 5, 7, 9});
  EXPECT_DOUBLE_EQ(result.mean, 5.0);
  EXPECT_NEAR(result.std, 2.1380899353, 1e-10);
  EXPECT_EQ(result.count, 8);
}

TEST(MetricsMeanStd, SingleValueHasZeroSpreadAndEmptyThrows) {
  const MeanStd single = meanStd({3.5});
  EXPECT_DOUBLE_EQ(single.mean, 3.5);
  EXPECT_DOUBLE_EQ(single.std, 0.0);
  EXPECT_EQ(single.count, 1);
  expectInvalidArgument([] { meanStd({}); }, "no values");
}

TEST(MetricsMeanStd, FormatsWithTheRequestedDecimals) {
  // The literals below are UTF-8, as is the ± the function writes.
  EXPECT_EQ(formatMeanStd({0.74151, 0.03120, 5}), "0.742 ± 0.031");
  EXPECT_EQ(formatMeanStd({0.74151, 0.03120, 5}, 1), "0.7 ± 0.0");
  EXPECT_EQ(formatMeanStd({12.6, 3.4, 2}, 0), "13 ± 3");
  EXPECT_EQ(formatMeanStd({1.0, 0.0, 1}, 2), "1.00 ± 0.00");
  expectInvalidArgument([] { formatMeanStd({1.0, 0.0, 1}, -1); }, "negative");
}

// ---------------------------------------------------------------------------------------------------------
// Weighted k-nearest neighbours

torch::Tensor floats(std::vector<float> values, std::int64_t rows, std::int64_t cols) {
  return torch::tensor(values, torch::kFloat32).reshape({rows, cols});
}

torch::Tensor classes(std::vector<std::int64_t> values) {
  return torch::tensor(values, torch::kLong);
}

// Training set of the hand examples, deliberately not unit length:
//   (2, 0)     class 0 -> unit (1, 0)
//   (3, 4)     class 1 -> unit (0.6, 0.8)
//   (0.4, 0.3) class 1 -> unit (0.8, 0.6)
// Query (0.5, 0) -> unit (1, 0): cosines 1, 0.6, 0.8.
// Query (0, 2)   -> unit (0, 1): cosines 0, 0.8, 0.6.
struct HandExample {
  torch::Tensor train = floats({2, 0, 3, 4, 0.4f, 0.3f}, 3, 2);
  torch::Tensor labels = classes({0, 1, 1});
  torch::Tensor queries = floats({0.5f, 0, 0, 2}, 2, 2);
};

TEST(MetricsKnn, HandExampleWhereTheNumberOfNeighboursChangesTheWinner) {
  const HandExample example;
  // Temperature 1: weight = exp(cosine).
  // k = 1: query A's nearest is (2,0) class 0 -> [1, 0]; query B's nearest is (3,4) class 1 -> [0, 1].
  torch::Tensor k1 = knnClassScores(example.train, example.labels, example.queries, 2, 1, 1.0);
  ASSERT_EQ(k1.sizes(), (std::vector<std::int64_t>{2, 2}));
  EXPECT_EQ(k1.scalar_type(), torch::kFloat32);
  EXPECT_TRUE(k1.device().is_cpu());
  EXPECT_NEAR(k1[0][0].item<float>(), 1.0, 1e-6);
  EXPECT_NEAR(k1[0][1].item<float>(), 0.0, 1e-6);
  EXPECT_NEAR(k1[1][0].item<float>(), 0.0, 1e-6);
  EXPECT_NEAR(k1[1][1].item<float>(), 1.0, 1e-6);

  // k = 2, query A: neighbours cos 1 (class 0) and cos 0.8 (class 1).
  // e^1 = 2.718282, e^0.8 = 2.225541, total 4.943823 -> [0.549834, 0.450166]: class 0 still wins.
  torch::Tensor k2 = knnClassScores(example.train, example.labels, example.queries, 2, 2, 1.0);
  EXPECT_NEAR(k2[0][0].item<float>(), 0.549834, 1e-5);
  EXPECT_NEAR(k2[0][1].item<float>(), 0.450166, 1e-5);

  // k = 3, query A: add cos 0.6 (class 1), e^0.6 = 1.822119; total 6.765942.
  // class 0: 2.718282 / 6.765942 = 0.401760; class 1: (2.225541 + 1.822119) / 6.765942 = 0.598240:
  // the two weaker class-1 neighbours together now outvote the nearest one.
  // Query B: weights e^0 = 1 (class 0), e^0.8 + e^0.6 = 4.047660 (class 1); total 5.047660
  // -> [0.198112, 0.801888].
  torch::Tensor k3 = knnClassScores(example.train, example.labels, example.queries, 2, 3, 1.0);
  EXPECT_NEAR(k3[0][0].item<float>(), 0.401760, 1e-5);
  EXPECT_NEAR(k3[0][1].item<float>(), 0.598240, 1e-5);
  EXPECT_NEAR(k3[1][0].item<float>(), 0.198112, 1e-5);
  EXPECT_NEAR(k3[1][1].item<float>(), 0.801888, 1e-5);
}

TEST(MetricsKnn, LowerTemperatureSharpensTheVoteWithoutOverflowing) {
  const HandExample example;
  // Temperature 0.1, query A, k = 3: e^10 = 22026.47, e^6 = 403.43, e^8 = 2980.96; total 25410.85;
  // class 0 = 22026.47 / 25410.85 = 0.866813.
  torch::Tensor sharp = knnClassScores(example.train, example.labels, example.queries, 2, 3, 0.1);
  EXPECT_NEAR(sharp[0][0].item<float>(), 0.866813, 1e-5);
  // Temperature 0.01: e^100 alone is beyond float32, but the scores are ratios: class 1 gets
  // (e^60 + e^80) / (e^100 + e^60 + e^80) ~ e^-20 = 2.1e-9, so class 0 ~ 1.
  torch::Tensor sharpest = knnClassScores(example.train, example.labels, example.queries, 2, 3, 0.01);
  EXPECT_TRUE(torch::isfinite(sharpest).all().item<bool>());
  EXPECT_NEAR(sharpest[0][0].item<float>(), 1.0, 1e-6);
  EXPECT_NEAR(sharpest[0][1].item<float>(), 0.0, 1e-6);
}

TEST(MetricsKnn, KIsClampedToTheTrainingSetSize) {
  const HandExample example;
  torch::Tensor k3 = knnClassScores(example.train, example.labels, example.queries, 2, 3, 1.0);
  torch::Tensor k200 = knnClassScores(example.train, example.labels, example.queries, 2, 200, 1.0);
  EXPECT_TRUE(torch::allclose(k200, k3));
  // Same hand values as k = 3 above.
  EXPECT_NEAR(k200[0][1].item<float>(), 0.598240, 1e-5);
}

TEST(MetricsKnn, ClassesWithoutNeighboursScoreZeroAndRowsSumToOne) {
  const HandExample example;
  // Four classes, only 0 and 1 used: classes 2 and 3 get no votes.
  torch::Tensor scores = knnClassScores(example.train, example.labels, example.queries, 4, 3, 1.0);
  ASSERT_EQ(scores.sizes(), (std::vector<std::int64_t>{2, 4}));
  EXPECT_EQ(scores.select(1, 2).abs().max().item<float>(), 0.0f);
  EXPECT_EQ(scores.select(1, 3).abs().max().item<float>(), 0.0f);
  EXPECT_TRUE(torch::allclose(scores.sum(1), torch::ones({2})));
  // No queries: an empty [0, classes] result.
  torch::Tensor none = knnClassScores(example.train, example.labels, torch::zeros({0, 2}), 4);
  EXPECT_EQ(none.sizes(), (std::vector<std::int64_t>{0, 4}));
}

TEST(MetricsKnn, AccuracyUsesTheTopVote) {
  const HandExample example;
  const torch::Tensor truth = classes({0, 1});
  // k = 1: query A -> class 0 (right), query B -> class 1 (right): 2 / 2.
  EXPECT_DOUBLE_EQ(knnAccuracy(example.train, example.labels, example.queries, truth, 2, 1, 1.0), 1.0);
  // k = 3: query A -> class 1 (0.598, wrong), query B -> class 1 (right): 1 / 2.
  EXPECT_DOUBLE_EQ(knnAccuracy(example.train, example.labels, example.queries, truth, 2, 3, 1.0), 0.5);
}

TEST(MetricsKnn, AccuracyBreaksTiesTowardTheLowerClass) {
  // Query (1, 1) is equally close (cos 0.7071) to (1, 0) class 1 and (0, 1) class 0: the votes are
  // [0.5, 0.5], and the tie goes to class 0 even though the class-1 neighbour comes first.
  const torch::Tensor train = floats({1, 0, 0, 1}, 2, 2);
  const torch::Tensor labels = classes({1, 0});
  const torch::Tensor query = floats({1, 1}, 1, 2);
  torch::Tensor scores = knnClassScores(train, labels, query, 2, 2, 0.1);
  EXPECT_NEAR(scores[0][0].item<float>(), 0.5, 1e-6);
  EXPECT_NEAR(scores[0][1].item<float>(), 0.5, 1e-6);
  EXPECT_DOUBLE_EQ(knnAccuracy(train, labels, query, classes({0}), 2, 2, 0.1), 1.0);
  EXPECT_DOUBLE_EQ(knnAccuracy(train, labels, query, classes({1}), 2, 2, 0.1), 0.0);
}

TEST(MetricsKnn, RejectsBadShapesLabelsAndArguments) {
  const HandExample example;
  const auto& train = example.train;
  const auto& labels = example.labels;
  const auto& queries = example.queries;
  expectInvalidArgument([&] { knnClassScores(torch::zeros({3}), labels, queries, 2); }, "[N, D]");
  expectInvalidArgument([&] { knnClassScores(train, labels, torch::zeros({2, 3}), 2); }, "query features");
  expectInvalidArgument([&] { knnClassScores(train, classes({0, 1}), queries, 2); }, "training labels");
  expectInvalidArgument([&] { knnClassScores(train, labels.view({3, 1}), queries, 2); }, "training labels");
  expectInvalidArgument([&] { knnClassScores(train, labels.to(torch::kFloat32), queries, 2); }, "integer");
  expectInvalidArgument([&] { knnClassScores(train, classes({0, 1, 2}), queries, 2); }, "0..1, found 0..2");
  expectInvalidArgument([&] { knnClassScores(train, classes({0, -1, 1}), queries, 2); }, "found -1..1");
  expectInvalidArgument([&] { knnClassScores(torch::zeros({0, 2}), classes({}), queries, 2); }, "empty");
  expectInvalidArgument([&] { knnClassScores(train, labels, queries, 2, 0); }, "k must be at least 1");
  expectInvalidArgument([&] { knnClassScores(train, labels, queries, 2, 3, 0.0); }, "temperature");
  expectInvalidArgument([&] { knnAccuracy(train, labels, queries, classes({0}), 2); }, "query labels");
  expectInvalidArgument([&] { knnAccuracy(train, labels, queries, classes({0, 2}), 2); }, "query labels");
  expectInvalidArgument(
      [&] {
        knnAccuracy(train, labels, torch::zeros({0, 2}), classes({}), 2);
      },
      "no queries");
}

// Brute-force weighted kNN in double precision, straight from the definition.
std::vector<std::vector<double>> referenceKnn(const std::vector<std::vector<double>>& train,
                                              const std::vector<int>& labels,
                                              const std::vector<std::vector<double>>& queries, int numClasses,
                                              int k, double temperature, std::vector<bool>& ambiguous) {
  auto unit = [](std::vector<double> v) {
    const double norm = std::sqrt(std::inner_product(v.begin(), v.end(), v.begin(), 0.0));
    for (double& x : v)
      x /= norm;
    return v;
  };
  std::vector<std::vector<double>> unitTrain;
  for (const auto& t : train)
    unitTrain.push_back(unit(t));
  std::vector<std::vector<double>> result;
  for (const auto& q : queries) {
    const std::vector<double> u = unit(q);
    std::vector<std::pair<double, int>> similarities;
    for (std::size_t i = 0; i < unitTrain.size(); ++i)
      similarities.emplace_back(std::inner_product(u.begin(), u.end(), unitTrain[i].begin(), 0.0), labels[i]);
    std::sort(similarities.begin(), similarities.end(), std::greater<>());
    // A near tie at the cut could let float32 pick a different k-th neighbour; such queries are skipped.
    ambiguous.push_back(similarities[static_cast<std::size_t>(k) - 1].first -
                            similarities[static_cast<std::size_t>(k)].first <
                        1e-5);
    std::vector<double> votes(static_cast<std::size_t>(numClasses), 0.0);
    for (int j = 0; j < k; ++j) {
      const auto& [similarity, label] = similarities[static_cast<std::size_t>(j)];
      votes[static_cast<std::size_t>(label)] += std::exp(similarity / temperature);
    }
    const double total = std::accumulate(votes.begin(), votes.end(), 0.0);
    for (double& v : votes)
      v /= total;
    result.push_back(votes);
  }
  return result;
}

TEST(MetricsKnn, MatchesABruteForceReferenceAcrossQueryChunks) {
  // 2100 queries span three chunks of up to 1024 rows.
  constexpr int kTrain = 40, kQueries = 2100, kDims = 5, kClasses = 3, kNeighbours = 7;
  constexpr double kTemperature = 0.2;
  std::mt19937 random(11);
  std::normal_distribution<double> gaussian(0.0, 1.0);
  std::uniform_int_distribution<int> anyClass(0, kClasses - 1);
  auto randomRows = [&](int rows) {
    std::vector<std::vector<double>> out(static_cast<std::size_t>(rows), std::vector<double>(kDims));
    for (auto& row : out)
      for (double& x : row)
        x = gaussian(random);
    return out;
  };
  auto toTensor = [](const std::vector<std::vector<double>>& rows) {
    std::vector<float> flat;
    for (const auto& row : rows)
      for (double x : row)
        flat.push_back(static_cast<float>(x));
    return floats(flat, static_cast<std::int64_t>(rows.size()), kDims);
  };
  const auto train = randomRows(kTrain);
  const auto queries = randomRows(kQueries);
  std::vector<int> labels;
  std::vector<std::int64_t> labels64;
  for (int i = 0; i < kTrain; ++i) {
    labels.push_back(anyClass(random));
    labels64.push_back(labels.back());
  }
  // Round the reference's inputs to float like the tensors, so both start from the same numbers.
  auto asFloats = [](std::vector<std::vector<double>> rows) {
    for (auto& row : rows)
      for (double& x : row)
        x = static_cast<float>(x);
    return rows;
  };
  std::vector<bool> ambiguous;
  const auto expected = referenceKnn(asFloats(train), labels, asFloats(queries), kClasses, kNeighbours,
                                     kTemperature, ambiguous);
  const torch::Tensor scores = knnClassScores(toTensor(train), classes(labels64), toTensor(queries), kClasses,
                                              kNeighbours, kTemperature);
  ASSERT_EQ(scores.sizes(), (std::vector<std::int64_t>{kQueries, kClasses}));
  const auto actual = scores.accessor<float, 2>();
  int compared = 0;
  for (int q = 0; q < kQueries; ++q) {
    if (ambiguous[static_cast<std::size_t>(q)])
      continue;
    ++compared;
    for (int c = 0; c < kClasses; ++c)
      ASSERT_NEAR(actual[q][c], expected[static_cast<std::size_t>(q)][static_cast<std::size_t>(c)], 1e-4)
          << "query " << q << ", class " << c;
  }
  EXPECT_GT(compared, kQueries * 9 / 10);
}

TEST(MetricsKnn, CudaFeaturesGiveTheSameScoresOnTheCpu) {
  if (!torch::cuda::is_available())
    GTEST_SKIP() << "no CUDA device";
  const HandExample example;
  const torch::Device cuda(torch::kCUDA);
  torch::Tensor onGpu =
      knnClassScores(example.train.to(cuda), example.labels.to(cuda), example.queries.to(cuda), 2, 3, 1.0);
  EXPECT_TRUE(onGpu.device().is_cpu());
  EXPECT_NEAR(onGpu[0][1].item<float>(), 0.598240, 1e-5);
  EXPECT_NEAR(onGpu[1][1].item<float>(), 0.801888, 1e-5);
}

}  // namespace
}  // namespace comcl::training
