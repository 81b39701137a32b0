// The model registry behind /comcl/models: listing, one version with its model.json, activation and
// rollback (a version whose files do not load is refused and nothing changes), the PyTorch weights.
#include "model_registry.h"

#include <gtest/gtest.h>
#include <torch/serialize.h>

#include <filesystem>

#include "comcl/training/model_io.h"
#include "comcl/training/scorer.h"
#include "temp_dir.h"

namespace comcl::plugin {
namespace {

namespace fs = std::filesystem;

class ModelRegistryTest : public ::testing::Test {
 protected:
  // Writes a tiny model as version `version` under `directory` (relative: inside the model directory) and
  // registers it as a candidate. Returns its network.
  std::shared_ptr<training::ScoringNetwork> addModel(int version, const std::string& directory) {
    training::ModelFile file;
    file.version = version;
    file.architecture = {{"name", "tiny-cnn"}, {"params", {{"width", 4}, {"depth", 2}}}};
    file.inputSize = 16;
    file.findings = {"effusion"};
    file.method = "medaug";
    torch::manual_seed(version);
    auto network = training::buildNetwork(file.architecture, 1, 1);
    const fs::path path(directory);
    training::writeModelDirectory((path.is_relative() ? models() / path : path).string(), file, *network);
    index_.putModelVersion({version, std::nullopt, "medaug", directory, "candidate", R"({"auc": 0.7})", ""});
    return network;
  }
  fs::path models() const { return dir_.path() / "models"; }

  comcl::testing::TempDir dir_;
  storage::Index index_{(dir_.path() / "index.sqlite").string()};
  ModelRegistry registry_{index_, models().string()};
};

TEST_F(ModelRegistryTest, ListsDescribesAndActivatesVersionsWithRollback) {
  EXPECT_EQ(registry_.list(), (nlohmann::json{{"Active", nullptr}, {"Models", nlohmann::json::array()}}));
  addModel(1, "v1");
  addModel(2, (dir_.path() / "elsewhere" / "v2").string());  // an absolute path stays as it is

  const nlohmann::json listed = registry_.list();
  ASSERT_EQ(listed.at("Models").size(), 2u);
  EXPECT_EQ(listed.at("Models")[0].at("Path"), (models() / "v1").string());
  EXPECT_EQ(listed.at("Models")[1].at("Path"), (dir_.path() / "elsewhere" / "v2").string());
  EXPECT_EQ(listed.at("Models")[0].at("Metrics").at("auc"), 0.7);
  EXPECT_FALSE(listed.at("Models")[0].at("Active").get<bool>());

  const auto one = registry_.describe(1);
  ASSERT_TRUE(one);
  EXPECT_EQ(one->at("Model").at("findings"), nlohmann::json::array({"effusion"}));
  EXPECT_EQ(one->at("Weights"), "/comcl/models/1/weights");
  EXPECT_FALSE(registry_.describe(7));
  EXPECT_FALSE(registry_.activate(7));

  EXPECT_EQ(registry_.activate(1), (nlohmann::json{{"Active", 1}, {"Previous", nullptr}}));
  EXPECT_EQ(registry_.activate(2), (nlohmann::json{{"Active", 2}, {"Previous", 1}}));
  EXPECT_EQ(registry_.list().at("Active"), 2);
  EXPECT_EQ(registry_.describe(1)->at("Status"), "retired");
  EXPECT_EQ(registry_.activate(1), (nlohmann::json{{"Active", 1}, {"Previous", 2}}));  // rollback
  EXPECT_TRUE(registry_.describe(1)->at("Active").get<bool>());
  EXPECT_EQ(index_.value(storage::kActiveModelVersionKey), "1");
}

TEST_F(ModelRegistryTest, AVersionWhoseFilesDoNotLoadIsRefusedAndNothingChanges) {
  addModel(1, "v1");
  registry_.activate(1);
  index_.putModelVersion({2, std::nullopt, "medaug", "missing", "candidate", "{}", ""});
  addModel(3, "v3");
  fs::remove(models() / "v3" / "weights.pt");

  EXPECT_THROW(registry_.activate(2), ModelUnusable);
  EXPECT_THROW(registry_.activate(3), ModelUnusable);
  EXPECT_EQ(registry_.list().at("Active"), 1);
  EXPECT_EQ(registry_.describe(1)->at("Status"), "active");
  EXPECT_EQ(registry_.describe(3)->at("Status"), "candidate");
  EXPECT_TRUE(registry_.describe(2)->contains("ModelError"));
  EXPECT_THROW(registry_.weights(3), ModelUnusable);
}

TEST_F(ModelRegistryTest, WeightsAreATorchLoadableDictOfTheModelsTensors) {
  const auto network = addModel(1, "v1");
  const std::optional<std::string> bytes = registry_.weights(1);
  ASSERT_TRUE(bytes);
  const torch::IValue loaded = torch::pickle_load(std::vector<char>(bytes->begin(), bytes->end()));
  ASSERT_TRUE(loaded.isGenericDict());
  const auto dict = loaded.toGenericDict();
  const std::vector<training::NamedTensor> state = training::stateOf(*network);
  ASSERT_EQ(dict.size(), state.size());
  for (const training::NamedTensor& t : state)
    EXPECT_TRUE(torch::equal(dict.at(t.name).toTensor(), t.tensor)) << t.name;
  EXPECT_FALSE(registry_.weights(5));
}

}  // namespace
}  // namespace comcl::plugin
