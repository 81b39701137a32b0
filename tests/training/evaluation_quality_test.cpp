// CoMCL's evaluation additions to the protocol: metrics per quality level of the test images, and a
// synthetic degradation sweep of the test images scored with the head fitted on clean images.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <functional>
#include <map>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "archive_fixture.h"
#include "comcl/storage/cache_key.h"
#include "comcl/training/evaluation.h"
#include "comcl/training/metrics.h"
#include "split_fixture.h"

namespace comcl::training {
namespace {

using comcl::testing::ArchiveFixture;
using Pixels = std::vector<std::uint8_t>;

// Images with hand-made pixels, a label and a quality flag (none: no quality row), one patient each.
class QualityArchive {
 public:
  explicit QualityArchive(int size = 32) : fixture_(size), size_(size) {}

  void add(const std::string& patient, int label, const Pixels& pixels,
           const std::optional<std::string>& flag, const std::string& split) {
    const int n = count_++;
    storage::InstanceRecord row;
    row.resourceId = "q-" + std::to_string(n);
    row.source = "test";
    row.sopInstanceUid = "1.2.9." + std::to_string(n);
    row.studyInstanceUid = "S" + patient;
    row.patientKey = patient;
    row.viewPosition = "PA";
    row.decodeState = storage::DecodeState::Decoded;
    row.rows = row.cols = row.contentWidth = row.contentHeight = size_;
    const std::int64_t slot = fixture_.index().reserveCacheSlot();
    fixture_.cache().write(slot, storage::cacheKey(row.resourceId), pixels.data());
    fixture_.cache().flush();
    row.cacheSlot = slot;
    std::optional<storage::QualityRecord> quality;
    if (flag) {
      quality.emplace();
      quality->flag = *flag;
    }
    fixture_.index().putInstanceWithQuality(row, quality);
    fixture_.index().putLabels({{"instance", row.resourceId, "finding", static_cast<double>(label), "test"}});
    split_[patient] = split;
  }

  // Dark (negative) or bright (positive) with a soft disc and mild noise: easy to separate.
  Pixels separable(int label) {
    std::normal_distribution<double> noise(0.0, 6.0);
    std::uniform_real_distribution<double> place(0.3, 0.7);
    const double cx = size_ * place(rng_), cy = size_ * place(rng_);
    return image([&](int x, int y) {
      const double d2 = ((x - cx) * (x - cx) + (y - cy) * (y - cy)) / (size_ * size_ * 0.02);
      return 50.0 + 130.0 * label + 50.0 * std::exp(-d2) + noise(rng_);
    });
  }

  // The same pixels for every call: whatever the label, the encoder cannot tell these images apart.
  Pixels constant() const {
    return image([this](int x, int y) { return 90.0 + 60.0 * (x + y) / (2.0 * size_); });
  }

  // The label is the sign of a one-pixel checkerboard (fine detail) over a coarse background whose
  // brightness and disc vary from image to image (nuisance that blur leaves alone).
  Pixels fineDetail(int label) {
    std::uniform_real_distribution<double> brightness(70.0, 150.0), place(0.2, 0.8);
    const double base = brightness(rng_), cx = size_ * place(rng_), cy = size_ * place(rng_);
    const double sign = label ? 1.0 : -1.0;
    return image([&](int x, int y) {
      const double d2 = ((x - cx) * (x - cx) + (y - cy) * (y - cy)) / (size_ * size_ * 0.03);
      return base + 60.0 * std::exp(-d2) + sign * 30.0 * ((x + y) % 2 ? 1.0 : -1.0);
    });
  }

  ArchiveFixture& fixture() { return fixture_; }
  const std::map<std::string, std::string>& split() const { return split_; }
  TrainingSet set() { return TrainingSet::fromIndex(fixture_.index()); }

 private:
  Pixels image(const std::function<double(int, int)>& value) const {
    Pixels pixels(static_cast<std::size_t>(size_ * size_));
    for (int y = 0; y < size_; ++y)
      for (int x = 0; x < size_; ++x)
        pixels[static_cast<std::size_t>(y * size_ + x)] =
            static_cast<std::uint8_t>(std::clamp(std::round(value(x, y)), 0.0, 255.0));
    return pixels;
  }

  ArchiveFixture fixture_;
  int size_;
  int count_ = 0;
  std::mt19937 rng_{11};
  std::map<std::string, std::string> split_;
};

ProtocolConfig probeConfig(int imageSize = 32) {
  ProtocolConfig c;
  c.labels = {"finding"};
  c.budgets = {LabelBudget::parse("100%")};
  c.draws = 2;
  c.imageSize = imageSize;
  c.device = "cpu";
  c.batchSize = 8;
  c.linearSteps = 100;
  c.finetuneEpochs = 1;
  return c;
}

const SubsetSummary& level(const LabelResult& r, const std::string& name) {
  for (const SubsetSummary& s : r.byQuality) {
    if (s.level == name)
      return s;
  }
  throw std::runtime_error("no level " + name);
}

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

TEST(ScoreSubset, UsesExactlyTheRowsAndSaysWhyAMetricIsMissing) {
  const torch::Tensor logits = torch::tensor({2.0f, -1.0f, 0.5f, -3.0f, 1.0f, -0.2f}).reshape({6, 1});
  const std::vector<int> truth{1, 0, 1, 0, 0, 1};
  // Rows 0, 1, 4, 5: positives score 2 and -0.2, negatives -1 and 1: three of four pairs ranked right.
  const SubsetScore s = scoreSubset(logits, truth, 2, {0, 1, 4, 5});
  EXPECT_EQ(s.images, 4);
  EXPECT_EQ(s.classCounts, (std::vector<int>{2, 2}));
  EXPECT_EQ(s.positives(), 2);
  ASSERT_TRUE(s.auc);
  EXPECT_DOUBLE_EQ(*s.auc, 0.75);
  EXPECT_DOUBLE_EQ(*s.auc, rocAuc({2.0, -1.0, 1.0, -0.2}, {1, 0, 0, 1}));
  ASSERT_TRUE(s.accuracy && s.kappa);
  EXPECT_DOUBLE_EQ(*s.accuracy, 0.5);  // predicted 1 0 1 0 for 1 0 0 1
  EXPECT_NEAR(*s.kappa, 0.0, 1e-12);   // agreement no better than the marginals give
  EXPECT_TRUE(s.missing.empty());

  const SubsetScore positives = scoreSubset(logits, truth, 2, {0, 2});
  EXPECT_FALSE(positives.auc);
  EXPECT_TRUE(contains(positives.missing, "only positives (2 images)")) << positives.missing;
  ASSERT_TRUE(positives.accuracy);
  EXPECT_DOUBLE_EQ(*positives.accuracy, 1.0);

  const SubsetScore none = scoreSubset(logits, truth, 2, {});
  EXPECT_EQ(none.images, 0);
  EXPECT_FALSE(none.auc || none.accuracy || none.kappa);
  EXPECT_EQ(none.missing, "no test images");

  // Graded: argmax classes, no AUC.
  const torch::Tensor graded = torch::tensor({0.f, 1.f, 0.f, 0.f, 0.f, 1.f, 1.f, 0.f, 0.f}).reshape({3, 3});
  const SubsetScore g = scoreSubset(graded, {1, 2, 2}, 3, {0, 1, 2});
  EXPECT_FALSE(g.auc);
  EXPECT_EQ(g.classCounts, (std::vector<int>{0, 1, 2}));
  EXPECT_DOUBLE_EQ(*g.accuracy, 2.0 / 3.0);
  EXPECT_DOUBLE_EQ(*g.kappa, quadraticWeightedKappa({1, 2, 0}, {1, 2, 2}, 3));

  EXPECT_THROW(scoreSubset(logits, truth, 2, {6}), std::invalid_argument);
  EXPECT_THROW(scoreSubset(logits, {1, 0}, 2, {0}), std::invalid_argument);
}

// Train on separable images; test images at each level: good and unflagged ones separable, reject ones
// identical whatever their label, usable ones all positive.
TEST(EvaluationByQuality, EachLevelIsScoredOnItsOwnImages) {
  QualityArchive a;
  int patient = 0;
  auto add = [&](int label, const Pixels& pixels, const std::optional<std::string>& flag, const char* split) {
    a.add("P" + std::to_string(patient++), label, pixels, flag, split);
  };
  for (int i = 0; i < 16; ++i)
    add(i % 2, a.separable(i % 2), "good", "train");
  for (int i = 0; i < 8; ++i)
    add(i % 2, a.separable(i % 2), "good", "test");
  for (int i = 0; i < 6; ++i)
    add(i % 2, a.constant(), "reject", "test");
  for (int i = 0; i < 3; ++i)
    add(1, a.separable(1), "usable", "test");
  for (int i = 0; i < 4; ++i)
    add(i % 2, a.separable(i % 2), std::nullopt, "test");

  ProtocolConfig c = probeConfig();
  c.byQuality = true;
  const TrainingSet set = a.set();
  const ProtocolResult result = runProtocol(set, a.fixture().cache(), a.split(), EncoderSource{}, c);
  ASSERT_EQ(result.labels.size(), 1u);
  const LabelResult& r = result.labels[0];
  ASSERT_EQ(r.byQuality.size(), 4u);
  std::vector<std::string> names;
  for (const auto& s : r.byQuality)
    names.push_back(s.level);
  EXPECT_EQ(names, (std::vector<std::string>{"good", "usable", "reject", "none"}));
  int images = 0;
  for (const auto& s : r.byQuality)
    images += s.images;
  EXPECT_EQ(images, r.testImages);
  EXPECT_EQ(r.testImages, 21);

  const SubsetSummary& good = level(r, "good");
  EXPECT_EQ(good.images, 8);
  EXPECT_EQ(good.positives(), 4);
  ASSERT_TRUE(good.auc);
  EXPECT_GT(good.auc->mean, 0.95);
  EXPECT_EQ(good.auc->count, 2);

  // Identical images get identical scores: every positive-negative pair ties (AUC exactly 1/2), one class is
  // predicted for all six (accuracy 3/6) and kappa is 0. Any image of another level would break the ties.
  const SubsetSummary& reject = level(r, "reject");
  EXPECT_EQ(reject.images, 6);
  EXPECT_EQ(reject.positives(), 3);
  ASSERT_TRUE(reject.auc && reject.accuracy && reject.kappa);
  EXPECT_DOUBLE_EQ(reject.auc->mean, 0.5);
  EXPECT_DOUBLE_EQ(reject.auc->std, 0.0);
  EXPECT_DOUBLE_EQ(reject.accuracy->mean, 0.5);
  EXPECT_NEAR(reject.kappa->mean, 0.0, 1e-12);
  EXPECT_GT(good.auc->mean, reject.auc->mean + 0.4);

  const SubsetSummary& usable = level(r, "usable");
  EXPECT_EQ(usable.images, 3);
  EXPECT_EQ(usable.positives(), 3);
  EXPECT_FALSE(usable.auc);
  EXPECT_TRUE(contains(usable.missing, "only positives (3 images)")) << usable.missing;
  ASSERT_TRUE(usable.accuracy);

  EXPECT_EQ(level(r, "none").images, 4);
  EXPECT_EQ(level(r, "none").positives(), 2);

  // The JSON carries the summary and each draw's values, null with the reason where undefined.
  const nlohmann::json json = r.toJson();
  ASSERT_EQ(json.at("byQuality").size(), 4u);
  EXPECT_EQ(json["byQuality"][1]["level"], "usable");
  EXPECT_TRUE(json["byQuality"][1]["auc"].is_null());
  EXPECT_EQ(json["byQuality"][1]["positives"], 3);
  EXPECT_TRUE(contains(json["byQuality"][1]["missing"].get<std::string>(), "only positives"));
  EXPECT_DOUBLE_EQ(json["byQuality"][2]["auc"]["mean"].get<double>(), 0.5);
  ASSERT_EQ(json["draws"].size(), 2u);
  EXPECT_EQ(json["draws"][0]["byQuality"][2]["level"], "reject");
  EXPECT_DOUBLE_EQ(json["draws"][0]["byQuality"][2]["auc"].get<double>(), 0.5);
  EXPECT_FALSE(json.contains("sweep"));
}

class SweepTest : public comcl::testing::SplitArchiveTest {};

// The degraded test images are the clean ones at severity 0, so a sweep's first point is the clean result.
void expectSeverityZeroIsTheCleanResult(const ProtocolResult& result, std::size_t severities) {
  for (const LabelResult& l : result.labels) {
    ASSERT_TRUE(l.sweep);
    ASSERT_EQ(l.sweepResults.size(), severities);
    EXPECT_EQ(l.sweepResults[0].severity, 0.0);
    for (const DrawResult& d : l.draws) {
      ASSERT_EQ(d.sweep.size(), severities);
      ASSERT_TRUE(d.sweep[0].auc && d.sweep[0].accuracy);
      EXPECT_EQ(*d.sweep[0].auc, d.auc);
      EXPECT_EQ(*d.sweep[0].accuracy, d.accuracy);
      EXPECT_EQ(d.sweep[0].images, l.testImages);
      EXPECT_EQ(d.sweep[0].positives(), l.testPositives);
    }
    ASSERT_TRUE(l.sweepResults[0].auc);
    EXPECT_EQ(l.sweepResults[0].auc->mean, l.auc.mean);
    EXPECT_EQ(l.sweepResults[0].auc->std, l.auc.std);
    EXPECT_EQ(l.sweepResults[0].accuracy->mean, l.accuracy.mean);
  }
}

TEST_F(SweepTest, SeverityZeroReproducesTheCleanResultExactly) {
  ProtocolConfig c = probeConfig();
  c.budgets = {LabelBudget::parse("50%"), LabelBudget::parse("100%")};
  c.sweep = DegradationSweep{"composite", {0, 0.5, 1}};
  c.byQuality = true;
  const ProtocolResult linear = runProtocol(set_, fixture_.cache(), split_, EncoderSource{}, c);
  ASSERT_EQ(linear.labels.size(), 2u);
  expectSeverityZeroIsTheCleanResult(linear, 3);
  // Without quality flags every test image is at level "none", which then is the whole test set.
  const SubsetSummary& none = level(linear.labels[0], "none");
  EXPECT_EQ(none.images, linear.labels[0].testImages);
  EXPECT_EQ(none.auc->mean, linear.labels[0].auc.mean);

  const nlohmann::json json = linear.labels[0].toJson();
  EXPECT_EQ(json.at("sweep").at("spec"), "composite");
  EXPECT_EQ(json["sweep"]["seed"], 0);
  ASSERT_EQ(json["sweep"]["severities"].size(), 3u);
  EXPECT_EQ(json["sweep"]["severities"][2]["severity"], 1.0);
  EXPECT_EQ(json["sweep"]["severities"][0]["auc"]["mean"], json["auc"]["mean"]);
  EXPECT_EQ(json["draws"][1]["sweep"][0]["auc"], json["draws"][1]["auc"]);

  // Fine-tuning (a random start: the supervised-only baseline) scores each draw's network on the sweep.
  ProtocolConfig f = probeConfig();
  f.mode = "finetune";
  f.draws = 1;
  f.sweep = DegradationSweep{"blur", {0, 1}};
  f.byQuality = true;
  const ProtocolResult finetuned = runProtocol(set_, fixture_.cache(), split_, EncoderSource{}, f);
  expectSeverityZeroIsTheCleanResult(finetuned, 2);
  EXPECT_EQ(finetuned.labels[0].byQuality.size(), 4u);
}

TEST_F(SweepTest, GradedLabelsGetAccuracyAndKappaPerLevelAndSeverity) {
  for (std::size_t i = 0; i < set_.size(); ++i) {
    const auto& image = set_.images()[i];
    fixture_.index().putLabels(
        {{"instance", image.resourceId, "grade", static_cast<double>(image.patient % 3), "test"}});
  }
  const TrainingSet set = TrainingSet::fromIndex(fixture_.index());
  ProtocolConfig c = probeConfig();
  c.labels = {"grade"};
  c.draws = 1;
  c.byQuality = true;
  c.sweep = DegradationSweep{"composite", {0, 1}};
  const ProtocolResult r = runProtocol(set, fixture_.cache(), split_, EncoderSource{}, c);
  const LabelResult& l = r.labels.at(0);
  ASSERT_TRUE(l.graded);
  const SubsetSummary& none = level(l, "none");
  ASSERT_EQ(none.classCounts.size(), 3u);
  EXPECT_EQ(none.classCounts[0] + none.classCounts[1] + none.classCounts[2], l.testImages);
  EXPECT_FALSE(none.auc);
  ASSERT_TRUE(none.kappa && l.sweepResults.at(0).kappa);
  EXPECT_EQ(none.kappa->mean, l.kappa.mean);
  EXPECT_EQ(l.sweepResults[0].kappa->mean, l.kappa.mean);
  EXPECT_EQ(l.sweepResults[0].accuracy->mean, l.accuracy.mean);
  const nlohmann::json json = l.toJson();
  EXPECT_TRUE(json["byQuality"][3].contains("classCounts"));
  EXPECT_FALSE(json["byQuality"][3].contains("auc"));
  EXPECT_FALSE(json["sweep"]["severities"][1].contains("auc"));
  EXPECT_TRUE(json["sweep"]["severities"][1]["kappa"].contains("mean"));
}

TEST_F(SweepTest, TheSameImageIsDegradedTheSameWayInAnyBatch) {
  const torch::Tensor images = torch::rand({3, 1, 32, 32}, torch::TensorOptions().dtype(torch::kFloat));
  const SweepDegrader composite(DegradationSweep{}, 7);
  const torch::Tensor all = composite(images, {"a", "b", "c"}, 0.75);
  const torch::Tensor alone = composite(images.narrow(0, 1, 1), {"b"}, 0.75);
  EXPECT_TRUE(torch::equal(all.narrow(0, 1, 1), alone));
  EXPECT_FALSE(torch::equal(all, images));
  EXPECT_TRUE(torch::equal(composite(images, {"a", "b", "c"}, 0.0), images));
  // Another seed degrades differently; the severity only changes the strength of the same draws.
  const SweepDegrader other(DegradationSweep{}, 8);
  EXPECT_FALSE(torch::equal(other(images, {"a", "b", "c"}, 0.75), all));
  const SweepDegrader blur(DegradationSweep{"blur", {0, 1}}, 7);
  const double weak = (blur(images, {"a", "b", "c"}, 0.5) - images).abs().sum().item<double>();
  const double strong = (blur(images, {"a", "b", "c"}, 1.0) - images).abs().sum().item<double>();
  EXPECT_GT(weak, 0.0);
  EXPECT_GT(strong, weak);
  EXPECT_THROW(composite(images, {"a"}, 0.5), std::invalid_argument);
}

// The label lives in one-pixel detail; blur of growing severity wipes it out, so AUC falls towards chance.
TEST(EvaluationSweep, BlurLowersTheAucOfALabelCarriedByFineDetail) {
  // Blur's sigma is 1 % of the image height at severity 1: 0.32 px at 32 px would leave a one-pixel
  // checkerboard nearly intact, 1.28 px at 128 px wipes it out.
  QualityArchive a(128);
  for (int i = 0; i < 60; ++i)
    a.add("P" + std::to_string(i), i % 2, a.fineDetail(i % 2), "good", i < 30 ? "train" : "test");
  ProtocolConfig c = probeConfig(128);
  c.draws = 1;
  c.linearSteps = 200;
  c.sweep = DegradationSweep{"blur", {0, 0.5, 1}};
  const TrainingSet set = a.set();
  const ProtocolResult r = runProtocol(set, a.fixture().cache(), a.split(), EncoderSource{}, c);
  const auto& points = r.labels.at(0).sweepResults;
  ASSERT_EQ(points.size(), 3u);
  const double clean = points[0].auc->mean, half = points[1].auc->mean, full = points[2].auc->mean;
  EXPECT_GT(clean, 0.9);
  EXPECT_LT(half, clean - 0.1) << "AUC at severity 0, 0.5, 1: " << clean << " " << half << " " << full;
  EXPECT_LT(full, half - 0.1) << "AUC at severity 0, 0.5, 1: " << clean << " " << half << " " << full;
}

TEST(EvaluationSweep, BadSweepsNameTheValue) {
  auto message = [](const std::function<void()>& call) {
    try {
      call();
    } catch (const std::invalid_argument& e) {
      return std::string(e.what());
    }
    return std::string("(no exception)");
  };
  EXPECT_EQ(parseSeverities("0, 0.25,1"), (std::vector<double>{0, 0.25, 1}));
  EXPECT_TRUE(contains(message([] { parseSeverities(""); }), "at least one severity"));
  EXPECT_TRUE(contains(message([] { parseSeverities("0,1.5"); }), "1.5 is outside [0, 1]"));
  EXPECT_TRUE(contains(message([] { parseSeverities("-0.25"); }), "-0.25 is outside [0, 1]"));
  EXPECT_TRUE(contains(message([] { parseSeverities("0,abc"); }), "\"abc\""));
  EXPECT_TRUE(contains(message([] { parseSeverities("0,,1"); }), "\"\""));
  EXPECT_TRUE(contains(message([] { parseSeverities("0.5x"); }), "\"0.5x\""));
  EXPECT_TRUE(contains(message([] { DegradationSweep::parse("sharpen", "0,1"); }), "\"sharpen\""));
  EXPECT_TRUE(contains(message([] { DegradationSweep::parse("sharpen", "0,1"); }), "blur"));  // the choices
  EXPECT_TRUE(contains(message([] { DegradationSweep{"blur", {}}.validate(); }), "at least one severity"));
  EXPECT_TRUE(contains(message([] { DegradationSweep{"blur", {0, NAN}}.validate(); }), "nan"));
  EXPECT_TRUE(contains(message([] {
                         SweepDegrader(DegradationSweep{}, 0)(torch::zeros({1, 1, 8, 8}), {"a"}, 2);
                       }),
                       "2 is outside"));
  EXPECT_EQ(DegradationSweep::parse("noise", "0,1").spec, "noise");

  // The protocol refuses a bad sweep before doing any work.
  ArchiveFixture fixture;
  fixture.addPatients(4, 1);
  const TrainingSet set = TrainingSet::fromIndex(fixture.index());
  const auto split = ensurePatientSplit(fixture.index(), set, SplitConfig{0.5, 0.0, 1});
  ProtocolConfig c = probeConfig();
  c.sweep = DegradationSweep{"composite", {0, 3}};
  EXPECT_TRUE(contains(message([&] { runProtocol(set, fixture.cache(), split, EncoderSource{}, c); }),
                       "sweep severity 3 is outside [0, 1]"));
  c.sweep = DegradationSweep{"fog", {0}};
  EXPECT_TRUE(
      contains(message([&] { runProtocol(set, fixture.cache(), split, EncoderSource{}, c); }), "fog"));
}

}  // namespace
}  // namespace comcl::training
