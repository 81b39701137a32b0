// The evaluation protocol: a fixed patient split, label budgets, linear and fine-tuned heads measured on
// held-out patients, and the model directory the plugin's scorer loads.
#include "comcl/training/evaluation.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include "archive_fixture.h"
#include "comcl/training/encoder_file.h"
#include "comcl/training/scorer.h"
#include "comcl/training/tensor_batch.h"
#include "split_fixture.h"

namespace comcl::training {
namespace {

using comcl::testing::ArchiveFixture;

ProtocolConfig tinyProtocol(const std::string& mode = "linear") {
  ProtocolConfig c;
  c.mode = mode;
  c.labels = {"finding"};
  c.budgets = {LabelBudget::parse("50%"), LabelBudget::parse("8")};
  c.draws = 3;
  c.imageSize = 32;
  c.device = "cpu";
  c.batchSize = 8;
  c.linearSteps = 100;
  c.finetuneEpochs = 2;
  return c;
}

class EvaluationTest : public comcl::testing::SplitArchiveTest {};

TEST_F(EvaluationTest, ThePatientSplitIsStoredAndNeverMoves) {
  ASSERT_EQ(split_.size(), 20u);
  EXPECT_EQ(fixture_.index().splits(), split_);
  // A different seed and new patients later: earlier patients keep their split.
  fixture_.add({"NEW", "SN", "PA", 1.0});
  const TrainingSet grown = TrainingSet::fromIndex(fixture_.index());
  const auto again = ensurePatientSplit(fixture_.index(), grown, SplitConfig{0.1, 0.1, 99});
  for (const auto& [patient, which] : split_)
    EXPECT_EQ(again.at(patient), which) << patient;
  EXPECT_EQ(again.size(), 21u);
  EXPECT_NE(splitId(again), splitId(split_));
  int train = 0;
  for (const auto& [patient, which] : split_)
    train += which == "train";
  EXPECT_GT(train, 6);  // about 60 % of 20
  EXPECT_LT(train, 18);
}

TEST_F(EvaluationTest, BudgetsParseAsPercentagesOrCounts) {
  EXPECT_DOUBLE_EQ(LabelBudget::parse("1%").fraction, 0.01);
  EXPECT_EQ(LabelBudget::parse("50").count, 50);
  EXPECT_EQ(LabelBudget::parse("10%").toString(), "10%");
  for (const char* bad : {"", "0%", "101%", "1", "x", "5%%", "-3"})
    EXPECT_THROW(LabelBudget::parse(bad), std::invalid_argument) << bad;
}

TEST_F(EvaluationTest, LinearProbeOnAnEasyLabelScoresHighOnHeldOutPatients) {
  const ProtocolResult r = runProtocol(set_, fixture_.cache(), split_, EncoderSource{}, tinyProtocol());
  ASSERT_EQ(r.labels.size(), 2u);
  for (const LabelResult& l : r.labels) {
    ASSERT_EQ(l.draws.size(), 3u);
    EXPECT_FALSE(l.graded);
    EXPECT_GT(l.testImages, 0);
    // Brightness separates the classes: even a random encoder's features carry it.
    EXPECT_GT(l.auc.mean, 0.8) << l.budget;
    EXPECT_EQ(l.auc.count, 3);
  }
  EXPECT_EQ(r.labels[1].draws[0].trainImages, 8);
  EXPECT_EQ(r.labels[1].draws[0].trainPositives, 4);  // stratified: the pool is half positive
  EXPECT_EQ(r.dataSnapshot, set_.snapshotId());
}

TEST_F(EvaluationTest, DrawsDifferButRepeatForTheSameSeed) {
  ProtocolConfig c = tinyProtocol();
  c.budgets = {LabelBudget::parse("4")};
  const auto a = runProtocol(set_, fixture_.cache(), split_, EncoderSource{}, c);
  const auto b = runProtocol(set_, fixture_.cache(), split_, EncoderSource{}, c);
  EXPECT_EQ(a.toJson(), b.toJson());
}

TEST_F(EvaluationTest, GradedLabelsGiveAccuracyAndKappa) {
  for (std::size_t i = 0; i < set_.size(); ++i) {
    const auto& image = set_.images()[i];
    fixture_.index().putLabels(
        {{"instance", image.resourceId, "grade", static_cast<double>(image.patient % 3), "test"}});
  }
  const TrainingSet set = TrainingSet::fromIndex(fixture_.index());
  ProtocolConfig c = tinyProtocol();
  c.labels = {"grade"};
  c.budgets = {LabelBudget::parse("100%")};
  c.draws = 1;
  const auto r = runProtocol(set, fixture_.cache(), split_, EncoderSource{}, c);
  ASSERT_EQ(r.labels.size(), 1u);
  EXPECT_TRUE(r.labels[0].graded);
  EXPECT_EQ(r.labels[0].classes, 3);
  EXPECT_GE(r.labels[0].accuracy.mean, 0.0);
  EXPECT_LE(r.labels[0].kappa.mean, 1.0);
}

TEST_F(EvaluationTest, BadRequestsSayWhatIsWrong) {
  ProtocolConfig c = tinyProtocol();
  c.labels = {"pneumothorax"};
  try {
    runProtocol(set_, fixture_.cache(), split_, EncoderSource{}, c);
    FAIL();
  } catch (const DataError& e) {
    EXPECT_NE(std::string(e.what()).find("finding"), std::string::npos) << e.what();  // lists what exists
  }
  c = tinyProtocol();
  c.budgets = {LabelBudget::parse("1%")};
  try {
    runProtocol(set_, fixture_.cache(), split_, EncoderSource{}, c);
    FAIL();
  } catch (const DataError& e) {
    EXPECT_NE(std::string(e.what()).find("keeps"), std::string::npos) << e.what();
  }
  EXPECT_THROW(
      runProtocol(set_, fixture_.cache(), split_, EncoderSource{"/nonexistent/encoder"}, tinyProtocol()),
      ModelError);
}

TEST_F(EvaluationTest, TheKnnMonitorSeparatesAnEasyLabelOnHeldOutPatients) {
  KnnMonitorConfig config;
  config.label = "finding";
  config.input.imageSize = 32;
  config.batchSize = 8;
  config.k = 1;  // the nearest bright or dark neighbour; larger k mixes in the other class on 40 images
  const auto monitor = knnMonitor(set_, fixture_.cache(), split_, config);
  torch::manual_seed(5);
  const auto backbone = makeBackbone("resnet18", 1, 1);
  // Brightness follows the label, and even a random encoder's features carry it (20 balanced test
  // images: chance gives 0.5, and 17 or more right by chance has odds of about 1 in 800).
  EXPECT_GT(monitor(*backbone, 1), 0.8);
  EXPECT_FALSE(backbone->is_training());

  // The label must exist, and the split must leave labelled train and test patients.
  config.label = "pneumothorax";
  EXPECT_THROW(knnMonitor(set_, fixture_.cache(), split_, config), DataError);
  config.label = "finding";
  auto allTrain = split_;
  for (auto& entry : allTrain)
    entry.second = "train";
  try {
    knnMonitor(set_, fixture_.cache(), allTrain, config);
    FAIL();
  } catch (const DataError& e) {
    EXPECT_NE(std::string(e.what()).find("0 test"), std::string::npos) << e.what();
  }
}

TEST_F(EvaluationTest, FineTuningRunsAndTheSavedModelScoresLikeTheProbe) {
  ProtocolConfig c = tinyProtocol("finetune");
  c.budgets = {LabelBudget::parse("100%")};
  c.draws = 1;
  const auto r = runProtocol(set_, fixture_.cache(), split_, EncoderSource{}, c);
  ASSERT_EQ(r.labels.size(), 1u);
  EXPECT_GE(r.labels[0].auc.mean, 0.0);

  ProtocolConfig linear = tinyProtocol();
  const std::string dir = fixture_.dir().file("model-v3");
  trainAndSaveModel(set_, fixture_.cache(), split_, EncoderSource{}, linear, r, 3, dir);
  const ModelFile file = readModelFile(dir);
  EXPECT_EQ(file.version, 3);
  EXPECT_EQ(file.findings, (std::vector<std::string>{"finding"}));
  EXPECT_EQ(file.training.at("dataSnapshot"), set_.snapshotId());
  EXPECT_TRUE(std::filesystem::exists(dir + "/split.json"));
  EXPECT_TRUE(std::filesystem::exists(dir + "/weights.pth"));
  auto scorer = loadScorer(dir);
  // Scores on held-out patients separate the classes (bright = positive).
  std::vector<CachedImageRef> refs;
  std::vector<int> truth;
  for (std::size_t i = 0; i < set_.size(); ++i) {
    const auto& image = set_.images()[i];
    if (split_.at(set_.patientKeys()[static_cast<std::size_t>(image.patient)]) != "test")
      continue;
    refs.push_back(image.cached);
    truth.push_back(static_cast<int>(*set_.label(i, "finding")));
  }
  const torch::Tensor p = scorer->score(loadBatch(fixture_.cache(), refs)).squeeze(1).to(torch::kDouble);
  EXPECT_GT(rocAuc(std::vector<double>(p.data_ptr<double>(), p.data_ptr<double>() + p.numel()), truth), 0.8);
}

}  // namespace
}  // namespace comcl::training
