// The "Comcl" configuration section: defaults from Orthanc's own settings, strict checking of every key.
#include "plugin_config.h"

#include <gtest/gtest.h>

namespace comcl::plugin {
namespace {

using nlohmann::json;

std::string errorFor(const json& orthanc) {
  try {
    parsePluginConfig(orthanc, "/srv/orthanc");
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "";
}

TEST(PluginConfig, DatabaseDefaultsToTheOrthancIndexDirectory) {
  EXPECT_EQ(parsePluginConfig(json{{"IndexDirectory", "/var/lib/orthanc/db"}}, "/").databasePath,
            "/var/lib/orthanc/db/comcl/comcl.sqlite");
  EXPECT_EQ(parsePluginConfig(json{{"StorageDirectory", "/data/orthanc"}}, "/").databasePath,
            "/data/orthanc/comcl/comcl.sqlite");
  EXPECT_EQ(parsePluginConfig(json{{"StorageDirectory", "/a"}, {"IndexDirectory", "/b"}}, "/").databasePath,
            "/b/comcl/comcl.sqlite");
  EXPECT_EQ(parsePluginConfig(json::object(), "/srv/orthanc").databasePath,
            "/srv/orthanc/OrthancStorage/comcl/comcl.sqlite");
}

TEST(PluginConfig, DatabasePathCanBeSetAndRelativePathsAreResolved) {
  EXPECT_EQ(parsePluginConfig(json{{"Comcl", {{"DatabasePath", "/x/y.sqlite"}}}}, "/w").databasePath,
            "/x/y.sqlite");
  EXPECT_EQ(parsePluginConfig(json{{"Comcl", {{"DatabasePath", "db/../c.sqlite"}}}}, "/w").databasePath,
            "/w/c.sqlite");
  EXPECT_EQ(parsePluginConfig(json{{"Comcl", json::object()}}, "/w").databasePath,
            "/w/OrthancStorage/comcl/comcl.sqlite");
}

TEST(PluginConfig, BadSectionsNameTheKey) {
  EXPECT_EQ(errorFor(json{{"Comcl", {{"DatabasPath", "/x"}}}}),
            "unknown configuration key Comcl.DatabasPath (known keys: DatabasePath)");
  EXPECT_EQ(errorFor(json{{"Comcl", {{"DatabasePath", 42}}}}),
            "Comcl.DatabasePath must be a string, not number");
  EXPECT_EQ(errorFor(json{{"Comcl", {{"DatabasePath", ""}}}}), "Comcl.DatabasePath must not be empty");
  EXPECT_EQ(errorFor(json{{"Comcl", json::array()}}),
            "the \"Comcl\" configuration section must be a JSON object, not array");
}

}  // namespace
}  // namespace comcl::plugin
