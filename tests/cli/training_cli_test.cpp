// comcl pairs / pretrain / linear-eval / score run as a user would, on the real MHH films: the pair table,
// a short pre-training that resumes and refuses a changed configuration, the evaluation protocol, a model
// the scorer loads, and the exported weights loaded by PyTorch.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <regex>

#include "comcl_process.h"

namespace {

namespace fs = std::filesystem;
using comcl::testing::contains;
using comcl::testing::runComcl;
using comcl::testing::TempDir;
const fs::path kMhh = fs::path(COMCL_SHARED_DATA) / "mhh_covid_cxr";

// The number in the column `column` (0-based, after the name) of the table row that starts with `name`.
long tableValue(const std::string& text, const std::string& name, int column) {
  std::istringstream lines(text);
  std::string line;
  while (std::getline(lines, line)) {
    if (line.rfind(name + " ", 0) != 0)
      continue;
    std::istringstream fields(line.substr(name.size()));
    long value = -1;
    for (int i = 0; i <= column; ++i)
      fields >> value;
    return value;
  }
  return -1;
}

// Debian's python3-torch belongs to the system interpreter (a python3 earlier in PATH may lack it).
const std::string kPython = "/usr/bin/python3";
bool pythonHasTorch() {
  return std::system((kPython + " -c 'import torch, torchvision' > /dev/null 2>&1").c_str()) == 0;
}

class CliTraining : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (!fs::exists(kMhh / "manifest.csv"))
      return;
    dir_ = new TempDir;
    const auto imported = runComcl("import-manifest " + kMhh.string() + " --db " + db());
    ASSERT_EQ(imported.exitCode, 0) << imported.out << imported.err;
  }
  static void TearDownTestSuite() {
    delete dir_;
    dir_ = nullptr;
  }
  void SetUp() override {
    if (!dir_)
      GTEST_SKIP() << "missing " << kMhh;
  }
  static std::string db() { return dir_->file("mhh.sqlite"); }
  static std::string file(const std::string& name) { return dir_->file(name); }
  static std::string tinyPretrain(const std::string& run, const std::string& device = "cpu") {
    return "pretrain --db " + db() + " --run " + run +
           " --method medaug --strategy same-patient/all-studies --epochs 2 --batch-size 16 --image-size 32 "
           "--queue-size 64 --seed 3 --quiet --device " +
           device;
  }
  static TempDir* dir_;
};
TempDir* CliTraining::dir_ = nullptr;

// 71 patients, 37 of them with several films (209 films); every MHH film is its own study.
TEST_F(CliTraining, PairsCountsMetadataPositivesUnderEveryCriterion) {
  const auto r = runComcl("pairs --db " + db() + " --strategy same-patient/all-studies");
  ASSERT_EQ(r.exitCode, 0) << r.err;
  EXPECT_TRUE(contains(r.out, "243 decoded images, 71 patients (37 with several images), 243 studies"))
      << r.out;
  EXPECT_EQ(tableValue(r.out, "same-patient/all-studies/all-lateralities", 0), 209) << r.out;
  EXPECT_EQ(tableValue(r.out, "same-patient/all-studies/all-lateralities", 1), 34);  // patients with one film
  EXPECT_EQ(tableValue(r.out, "same-patient/same-studies/all-lateralities", 0), 0);
  EXPECT_EQ(tableValue(r.out, "same-patient/same-studies/all-lateralities", 1), 243);
  EXPECT_EQ(tableValue(r.out, "same-patient/distinct-studies/all-lateralities", 2), 34);  // falls back
  EXPECT_TRUE(contains(r.out, "candidates other than the query")) << r.out;
  // Grouped by StudyDate instead, 46 films share a day with another film of their patient (22 days).
  const auto byDate = runComcl("pairs --db " + db() + " --study-by date");
  ASSERT_EQ(byDate.exitCode, 0) << byDate.err;
  EXPECT_TRUE(contains(byDate.out, "243 decoded images, 71 patients (37 with several images), 219 studies"))
      << byDate.out;
  EXPECT_EQ(tableValue(byDate.out, "same-patient/same-studies/all-lateralities", 0), 46) << byDate.out;
}

TEST_F(CliTraining, PretrainsResumesAFinishedRunAndRefusesAChangedOne) {
  const std::string run = file("run-a");
  const auto first = runComcl(tinyPretrain(run));
  ASSERT_EQ(first.exitCode, 0) << first.out << first.err;
  EXPECT_TRUE(contains(first.out, "209 queries have a metadata positive")) << first.out;
  EXPECT_TRUE(contains(first.out, "finished in")) << first.out;
  EXPECT_TRUE(fs::exists(run + "/encoder/encoder.pt"));
  const auto again = runComcl(tinyPretrain(run));
  ASSERT_EQ(again.exitCode, 0) << again.out << again.err;
  EXPECT_TRUE(contains(again.out, "resumed and finished")) << again.out;
  const auto changed = runComcl(tinyPretrain(run) + " --temperature 0.5");
  EXPECT_EQ(changed.exitCode, 1);
  EXPECT_TRUE(contains(changed.err, "another configuration")) << changed.err;
  EXPECT_TRUE(contains(changed.err, "temperature")) << changed.err;

  if (!pythonHasTorch())
    GTEST_SKIP() << "python3-torch/python3-torchvision not installed: the PyTorch export is not checked";
  // PyTorch users load the exported backbone into torchvision's ResNet-18 (one input channel, one output).
  const std::string script = file("load.py");
  std::ofstream(script) << "import sys, torch, torchvision\n"
                           "state = torch.load(sys.argv[1])\n"
                           "net = torchvision.models.resnet18(num_classes=1)\n"
                           "net.conv1 = torch.nn.Conv2d(1, 64, 7, 2, 3, bias=False)\n"
                           "net.load_state_dict(state, strict=True)\n"
                           "print('loaded', len(state), tuple(state['conv1.weight'].shape))\n";
  const std::string command =
      kPython + " " + script + " " + run + "/encoder/encoder.pth > " + file("py.out") + " 2>&1";
  EXPECT_EQ(std::system(command.c_str()), 0) << comcl::testing::readText(file("py.out"));
  EXPECT_TRUE(contains(comcl::testing::readText(file("py.out")), "loaded 122 (64, 1, 7, 7)"))
      << comcl::testing::readText(file("py.out"));
}

TEST_F(CliTraining, PretrainReportsAKnnMonitorPerEpoch) {
  const auto r = runComcl(tinyPretrain(file("run-knn")) + " --monitor-label icu_ever --monitor-k 10");
  ASSERT_EQ(r.exitCode, 0) << r.out << r.err;
  for (const char* epoch : {"epoch 1", "epoch 2"}) {
    const std::regex line(std::string("  ") + epoch + ": k-NN accuracy \\(icu_ever, k 10, test patients\\) " +
                          "(0\\.[0-9]{3}|1\\.000)\n");
    EXPECT_TRUE(std::regex_search(r.out, line)) << r.out;
  }
  EXPECT_TRUE(contains(r.out, "k-NN accuracy per epoch (icu_ever):")) << r.out;
  const auto missing = runComcl(tinyPretrain(file("run-knn2")) + " --monitor-label effusion");
  EXPECT_EQ(missing.exitCode, 1);
  EXPECT_TRUE(contains(missing.err, "no image carries the label 'effusion'")) << missing.err;
}

TEST_F(CliTraining, LinearEvaluationSavesAModelThatScoresTheCache) {
  const std::string run = file("run-b");
  ASSERT_EQ(runComcl(tinyPretrain(run)).exitCode, 0);
  const std::string model = file("model-v1"), json = file("eval.json");
  const auto r = runComcl("linear-eval --db " + db() + " --encoder " + run +
                          "/encoder --label icu_ever --budget 50% --draws 2 --steps 50 --device cpu --json " +
                          json + " --save-model " + model + " --model-version 1");
  ASSERT_EQ(r.exitCode, 0) << r.out << r.err;
  EXPECT_TRUE(std::regex_search(r.out, std::regex("icu_ever +50% .* [01]\\.[0-9]{3} ± [0-9]\\.[0-9]{3}")))
      << r.out;
  const auto results = nlohmann::json::parse(comcl::testing::readText(json));
  EXPECT_EQ(results["labels"][0]["auc"]["n"], 2);
  EXPECT_EQ(results["labels"][0]["finding"], "icu_ever");
  const auto score = runComcl("score --db " + db() + " --model " + model + " --limit 20 --device cpu");
  ASSERT_EQ(score.exitCode, 0) << score.err;
  std::istringstream lines(score.out);
  std::string line;
  std::getline(lines, line);
  EXPECT_EQ(line, "resource_id,icu_ever");
  int rows = 0;
  while (std::getline(lines, line)) {
    EXPECT_TRUE(std::regex_match(line, std::regex("manifest:mhh_covid_cxr/[0-9a-f]+,[01]\\.[0-9]{5}")))
        << line;
    ++rows;
  }
  EXPECT_EQ(rows, 20);
  EXPECT_TRUE(contains(score.err, "scored 20 images")) << score.err;
}

// The supervised-only baseline (random start, fine-tuned) with CoMCL's per-quality and sweep reports.
TEST_F(CliTraining, EvaluationReportsQualityLevelsAndADegradationSweep) {
  const std::string json = file("eval-quality.json");
  const auto r = runComcl("finetune --db " + db() +
                          " --random --label icu_ever --budget 100% --draws 1 --epochs 1 --image-size 32 "
                          "--device cpu --by-quality --sweep blur --sweep-severities 0,1 --json " +
                          json);
  ASSERT_EQ(r.exitCode, 0) << r.out << r.err;
  EXPECT_TRUE(contains(r.out, ", per quality level, blur degradation sweep at 0 1")) << r.out;
  EXPECT_TRUE(contains(r.out, "icu_ever 100%, per quality level of the test images:")) << r.out;
  EXPECT_TRUE(
      contains(r.out, "icu_ever 100%, test images degraded (blur, seed 0), head fitted on clean images:"))
      << r.out;
  const auto results = nlohmann::json::parse(comcl::testing::readText(json));
  const auto& label = results["labels"][0];
  ASSERT_GE(label["byQuality"].size(), 4u) << label.dump(1);
  EXPECT_EQ(label["byQuality"][0]["level"], "good");
  EXPECT_EQ(label["byQuality"][3]["level"], "none");
  int images = 0;
  for (const auto& level : label["byQuality"])
    images += level["images"].get<int>();
  EXPECT_EQ(images, label["testImages"].get<int>());
  EXPECT_EQ(label["sweep"]["spec"], "blur");
  ASSERT_EQ(label["sweep"]["severities"].size(), 2u);
  EXPECT_EQ(label["sweep"]["severities"][0]["auc"]["mean"], label["auc"]["mean"]);  // severity 0 is clean
  EXPECT_EQ(label["sweep"]["severities"][1]["severity"], 1.0);
  EXPECT_EQ(results["labels"][0]["draws"][0]["sweep"].size(), 2u);

  const std::string eval =
      "linear-eval --db " + db() + " --random --label icu_ever --image-size 32 --device cpu";
  const auto kind = runComcl(eval + " --sweep fog");
  EXPECT_EQ(kind.exitCode, 1);
  EXPECT_TRUE(contains(kind.err, "unknown degradation sweep \"fog\"")) << kind.err;
  const auto severity = runComcl(eval + " --sweep composite --sweep-severities 0,2");
  EXPECT_EQ(severity.exitCode, 1);
  EXPECT_TRUE(contains(severity.err, "sweep severity 2 is outside [0, 1]")) << severity.err;
  const auto alone = runComcl(eval + " --sweep-severities 0,1");
  EXPECT_NE(alone.exitCode, 0);
  EXPECT_TRUE(contains(alone.err, "--sweep")) << alone.err;
}

// CoMCL on the MHH films with `death` as the lesion label: the training set summary and its contact sheet,
// a short pre-training run, and the messages for a label without healthy images and a missing label.
TEST_F(CliTraining, ComclShowsItsTrainingSetAndPretrains) {
  const std::string sheet = file("comcl-views.png"), json = file("comcl-trainset.json");
  const auto shown = runComcl("trainset --method comcl --db " + db() +
                              " --lesion-label death --lesion-source none --image-size 32 --batch-size 8 "
                              "--examples 4 --sheet " +
                              sheet + " --json " + json);
  ASSERT_EQ(shown.exitCode, 0) << shown.out << shown.err;
  EXPECT_TRUE(contains(shown.out, "CoMCL roles (death, training patients)")) << shown.out;
  EXPECT_TRUE(contains(shown.out, "synthetic degraded lesion copies")) << shown.out;
  ASSERT_TRUE(fs::exists(sheet));
  std::ifstream in(sheet, std::ios::binary);
  char magic[4] = {};
  in.read(magic, 4);
  EXPECT_EQ(std::string(magic + 1, 3), "PNG");
  const auto summary = nlohmann::json::parse(std::ifstream(json));
  const int lesion = summary.at("lesionImages").at("highQuality").get<int>() +
                     summary.at("lesionImages").at("lowQuality").get<int>();
  EXPECT_GT(lesion, 8);
  EXPECT_LT(lesion, 48);  // training patients only, of the 48 films labelled death = 1
  EXPECT_EQ(summary.at("contactSheet").at("rows").size(), 4u);
  EXPECT_EQ(summary.at("perEpoch").at("lesionSamples").get<int>() % 8, 0);

  const auto trained =
      runComcl("pretrain --db " + db() + " --run " + file("comcl-run") +
               " --method comcl --lesion-label death --lesion-source none --epochs 1 "
               "--batch-size 8 --image-size 32 --queue-size 32 --seed 2 --quiet --device cpu");
  ASSERT_EQ(trained.exitCode, 0) << trained.out << trained.err;
  EXPECT_TRUE(contains(trained.out, "making views")) << trained.out;
  EXPECT_TRUE(fs::exists(file("comcl-run") + "/encoder/encoder.pth"));
  EXPECT_TRUE(fs::exists(file("comcl-run") + "/lesions.json"));  // the roles a resume reuses
  const auto otherLabel =
      runComcl("pretrain --db " + db() + " --run " + file("comcl-run") +
               " --method comcl --lesion-label icu_ever --lesion-source none --epochs 1 "
               "--batch-size 8 --image-size 32 --queue-size 32 --seed 2 --quiet --device cpu");
  EXPECT_NE(otherLabel.exitCode, 0);
  EXPECT_TRUE(contains(otherLabel.err, "use the same settings or a new run directory")) << otherLabel.err;

  const auto noHealthy = runComcl("pretrain --db " + db() + " --run " + file("comcl-bad") +
                                  " --method comcl --lesion-label covid19 --lesion-source none --device cpu");
  EXPECT_NE(noHealthy.exitCode, 0);
  EXPECT_TRUE(contains(noHealthy.err, "healthy images")) << noHealthy.err;
  const auto noLabel = runComcl("pretrain --db " + db() + " --run " + file("comcl-bad") + " --method comcl");
  EXPECT_NE(noLabel.exitCode, 0);
  EXPECT_TRUE(contains(noLabel.err, "--lesion-label")) << noLabel.err;
  EXPECT_FALSE(fs::exists(file("comcl-bad") + "/checkpoint.pt"));
}

// Lesion boxes for CoMCL: boxes imported from a CSV (a bad row reported, the others kept) feed
// `--lesion-source stored`; `--lesion-source cam` trains a small supervised model first (CPU-sized settings
// from --lesion-config).
TEST_F(CliTraining, ComclTakesStoredBoxesAndClassActivationMaps) {
  const std::string csv = file("boxes.csv");
  {
    std::ofstream out(csv);
    out << "file,x0,y0,x1,y1\n";
    for (const char* image : {"40954b81", "924f9c14", "b4e9a53a", "a3111116", "7929f04a", "981e154a",
                              "b37c225f", "e104f46d", "7940dea2", "430f21e7", "85540916", "d2c83bde"})
      out << "images/" << image << ".png,120,100,160,140\n";  // MHH films labelled death = 1, 313 x 256 px
    out << "images/40954b81.png,120,100,400,140\n";           // beyond the film's 313 columns
  }
  const auto imported = runComcl("import-boxes " + csv + " --db " + db() + " --finding death");
  EXPECT_EQ(imported.exitCode, 1) << imported.out << imported.err;  // a row failed; the good ones are kept
  EXPECT_TRUE(contains(imported.out, "12 boxes on 12 images")) << imported.out;
  EXPECT_TRUE(contains(imported.out + imported.err, "1 rows failed")) << imported.out << imported.err;
  const auto stored = runComcl("trainset --method comcl --db " + db() +
                               " --lesion-label death --lesion-source stored --image-size 32 --batch-size 8");
  ASSERT_EQ(stored.exitCode, 0) << stored.out << stored.err;
  std::smatch kept;
  ASSERT_TRUE(
      std::regex_search(stored.out, kept, std::regex(R"(lesion proposals \(stored\): (\d+) boxes kept)")))
      << stored.out;
  EXPECT_GT(std::stoi(kept[1]), 0);
  EXPECT_LE(std::stoi(kept[1]), 12);  // boxes of held-out patients are not used

  const std::string config = file("cam.json");
  std::ofstream(config) << R"({"camImageSize": 64, "camEpochs": 1, "batchSize": 32})";
  const auto cam = runComcl("trainset --method comcl --db " + db() +
                            " --lesion-label death --lesion-source cam --lesion-config " + config +
                            " --image-size 32 --batch-size 8 --device cpu");
  ASSERT_EQ(cam.exitCode, 0) << cam.out << cam.err;
  EXPECT_TRUE(contains(cam.out, "lesion proposals (cam)")) << cam.out;
  const auto badDetector = runComcl("trainset --method comcl --db " + db() +
                                    " --lesion-label death --lesion-source detector --detector " + csv);
  EXPECT_NE(badDetector.exitCode, 0);
  EXPECT_TRUE(contains(badDetector.err, csv)) << badDetector.err;  // names the file that is no TorchScript
}

// A colour image cache (fundus photographs; here the MHH films stored as RGB): `--channels 3` at import,
// then trainset and pretrain pick the fundus degradations and a 3-channel backbone by themselves, and the
// contact sheet is an RGB PNG.
TEST_F(CliTraining, ComclTrainsOnAColourImageCache) {
  const std::string colourDb = file("colour.sqlite");
  const auto imported = runComcl("import-manifest " + kMhh.string() + " --db " + colourDb + " --channels 3");
  ASSERT_EQ(imported.exitCode, 0) << imported.out << imported.err;
  EXPECT_TRUE(contains(imported.out, "256x256 8-bit RGB")) << imported.out;
  const auto grey = runComcl("import-manifest " + kMhh.string() + " --db " + colourDb);
  EXPECT_NE(grey.exitCode, 0);  // the cache's format is fixed when it is created
  EXPECT_TRUE(contains(grey.err, "256x256 8-bit RGB")) << grey.err;

  const std::string sheet = file("colour-views.png");
  const auto shown = runComcl("trainset --method comcl --db " + colourDb +
                              " --lesion-label death --lesion-source none --image-size 32 --batch-size 8 "
                              "--examples 2 --sheet " +
                              sheet);
  ASSERT_EQ(shown.exitCode, 0) << shown.out << shown.err;
  EXPECT_TRUE(contains(shown.out, "synthetic degradations: fundus: one of 7 degrade_eyeq codes"))
      << shown.out;
  std::ifstream in(sheet, std::ios::binary);
  std::vector<char> header(26);
  in.read(header.data(), 26);
  EXPECT_EQ(static_cast<int>(header[25]), 2);  // IHDR colour type 2: RGB

  const std::string run = file("colour-run");
  const auto trained =
      runComcl("pretrain --db " + colourDb + " --run " + run +
               " --method comcl --lesion-label death --lesion-source none --epochs 1 "
               "--batch-size 8 --image-size 32 --queue-size 32 --seed 2 --quiet --device cpu");
  ASSERT_EQ(trained.exitCode, 0) << trained.out << trained.err;
  EXPECT_TRUE(contains(trained.out, "32 px, 3 channels")) << trained.out;
  const auto encoder = nlohmann::json::parse(std::ifstream(run + "/encoder/encoder.json"));
  EXPECT_EQ(encoder.at("channels").get<int>(), 3);
  const auto radiograph = runComcl(
      "trainset --method comcl --db " + colourDb +
      " --lesion-label death --lesion-source none --image-size 32 --batch-size 8 --degradation radiograph");
  ASSERT_EQ(radiograph.exitCode, 0) << radiograph.out << radiograph.err;
  EXPECT_TRUE(contains(radiograph.out, "synthetic degradations: 1-2 of")) << radiograph.out;
}

TEST_F(CliTraining, BadRequestsSayWhatIsWrongAndExitNonZero) {
  const auto missing =
      runComcl("pretrain --db " + file("nothing.sqlite") + " --run " + file("r") + " --device cpu");
  EXPECT_EQ(missing.exitCode, 1);
  EXPECT_TRUE(contains(missing.err, "no index at")) << missing.err;
  const auto label =
      runComcl("linear-eval --db " + db() + " --random --label effusion --image-size 32 --device cpu");
  EXPECT_EQ(label.exitCode, 1);
  EXPECT_TRUE(contains(label.err, "no image carries the label 'effusion'")) << label.err;
  EXPECT_TRUE(contains(label.err, "icu_ever")) << label.err;
  // 57 negatives: 1 % of those in the training split is less than one image.
  const auto budget = runComcl("linear-eval --db " + db() +
                               " --random --label icu_ever --budget 1% --image-size 32 --device cpu");
  EXPECT_EQ(budget.exitCode, 1);
  EXPECT_TRUE(contains(budget.err, "negative image(s) of 'icu_ever'")) << budget.err;
  const auto strategy = runComcl("pairs --db " + db() + " --strategy same-study");
  EXPECT_EQ(strategy.exitCode, 1);
  EXPECT_TRUE(contains(strategy.err, "accepted:")) << strategy.err;
  const auto cuda = runComcl(tinyPretrain(file("run-c"), "cuda"));
  if (cuda.exitCode != 0) {
    EXPECT_EQ(cuda.exitCode, 1);
    EXPECT_TRUE(contains(cuda.err, "no CUDA support or no GPU")) << cuda.err;
  }
}

}  // namespace
