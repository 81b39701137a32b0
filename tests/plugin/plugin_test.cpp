// The built plugin inside a real Orthanc 1.10.1 on free loopback ports, with HTTP authentication on.
#include <gtest/gtest.h>

#include <filesystem>

#include "comcl/storage/index.h"
#include "comcl/storage/schema.h"
#include "orthanc_process.h"
#include "temp_dir.h"

namespace comcl::testing {
namespace {

namespace fs = std::filesystem;

OrthancProcess::Options withPlugin(nlohmann::json extraConfig = nlohmann::json::object()) {
  OrthancProcess::Options options;
  options.plugins = {COMCL_PLUGIN_PATH};
  options.extraConfig = std::move(extraConfig);
  return options;
}

TEST(Plugin, LoadsLogsItselfAndReportsItsStatus) {
  OrthancProcess orthanc(withPlugin());
  const std::string database = (fs::path(orthanc.storageDir()) / "comcl" / "comcl.sqlite").string();

  const HttpResponse status = orthanc.client().get("/comcl/status");
  ASSERT_EQ(status.status, 200) << status.body;
  const nlohmann::json body = status.json();
  EXPECT_EQ(body.at("Version"), COMCL_VERSION);
  EXPECT_EQ(body.at("Database"), database);
  EXPECT_EQ(body.at("SchemaVersion"), storage::currentSchemaVersion());
  EXPECT_EQ(body.at("Instances"), 0);
  const std::string device = body.at("Device");
  EXPECT_TRUE(device.rfind("cpu", 0) == 0 || device.rfind("cuda", 0) == 0) << device;
  EXPECT_TRUE(fs::exists(database));

  const std::string log = orthanc.log();
  EXPECT_NE(log.find(std::string("comcl: version ") + COMCL_VERSION + ", device " + device + ", database " +
                     database),
            std::string::npos)
      << log;

  const HttpResponse plugin = orthanc.client().get("/plugins/comcl");
  ASSERT_EQ(plugin.status, 200) << plugin.body;
  EXPECT_EQ(plugin.json().at("Version"), COMCL_VERSION);
}

TEST(Plugin, RoutesSitBehindOrthancAuthenticationAndAnswerOnlyGet) {
  OrthancProcess orthanc(withPlugin());
  EXPECT_EQ(orthanc.anonymousClient().get("/comcl/status").status, 401);
  EXPECT_EQ(orthanc.client().post("/comcl/status", "{}").status, 405);
}

TEST(Plugin, ReadsTheConfiguredDatabase) {
  TempDir dir;
  const std::string database = dir.file("elsewhere/index.sqlite");
  fs::create_directories(dir.path() / "elsewhere");
  {
    storage::Index index(database);
    for (const char* id : {"a", "b", "c"}) {
      storage::InstanceRecord r;
      r.resourceId = id;
      r.patientKey = "P1";
      r.studyInstanceUid = "1.2.3";
      r.decodeState = storage::DecodeState::Decoded;
      index.upsertInstance(r);
    }
  }
  OrthancProcess orthanc(withPlugin({{"Comcl", {{"DatabasePath", database}}}}));
  const nlohmann::json body = orthanc.client().get("/comcl/status").json();
  EXPECT_EQ(body.at("Database"), database);
  EXPECT_EQ(body.at("Instances"), 3);
  EXPECT_EQ(body.at("ByDecodeState").at("decoded"), 3);
}

TEST(Plugin, ABadConfigurationStopsStartUpAndNamesTheKey) {
  const std::pair<nlohmann::json, std::string> cases[] = {
      {{{"Comcl", {{"DatabasPath", "/tmp/x.sqlite"}}}}, "unknown configuration key Comcl.DatabasPath"},
      {{{"Comcl", {{"DatabasePath", 7}}}}, "Comcl.DatabasePath must be a string, not number"},
      {{{"Comcl", "yes"}}, "the \"Comcl\" configuration section must be a JSON object"},
      {{{"Comcl", {{"Workers", 0}}}}, "Comcl.Workers must be between 1 and 64, not 0"},
      {{{"Comcl", {{"Quality", {{"Noise", {{"Usable", 9}, {"Reject", 2}}}}}}}},
       "Comcl.Quality.Noise: Reject (2"},
  };
  for (const auto& [config, message] : cases) {
    std::string log;
    const std::optional<int> exit = OrthancProcess::startExpectingFailure(withPlugin(config), log);
    ASSERT_TRUE(exit.has_value()) << "Orthanc started with " << config.dump();
    EXPECT_NE(*exit, 0);
    EXPECT_NE(log.find(message), std::string::npos) << log;
  }
}

TEST(Plugin, StopsCleanlyAndKeepsItsDatabaseAcrossRestarts) {
  OrthancProcess orthanc(withPlugin());
  const std::string database = orthanc.client().get("/comcl/status").json().at("Database");
  orthanc.restart();
  const HttpResponse status = orthanc.client().get("/comcl/status");
  ASSERT_EQ(status.status, 200) << status.body;
  EXPECT_EQ(status.json().at("Database"), database);
  orthanc.stop();
  EXPECT_FALSE(orthanc.running());
  ASSERT_TRUE(orthanc.exitStatus().has_value());
  EXPECT_EQ(*orthanc.exitStatus(), 0) << orthanc.log();
}

}  // namespace
}  // namespace comcl::testing
