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
  EXPECT_EQ(errorFor(json{{"Comcl", {{"DatabasPath", "/x"}}}})
                .rfind("unknown configuration key Comcl.DatabasPath (known keys: ", 0),
            0u);
  EXPECT_EQ(errorFor(json{{"Comcl", {{"DatabasePath", 42}}}}),
            "Comcl.DatabasePath must be a string, not number");
  EXPECT_EQ(errorFor(json{{"Comcl", {{"DatabasePath", ""}}}}), "Comcl.DatabasePath must not be empty");
  EXPECT_EQ(errorFor(json{{"Comcl", json::array()}}),
            "the \"Comcl\" configuration section must be a JSON object, not array");
}

TEST(PluginConfig, NumbersAndSwitchesAreCheckedWithTheirRange) {
  const PluginConfig config = parsePluginConfig(
      json{
          {"Comcl", {{"Workers", 3}, {"QueueCapacity", 10}, {"ImageSize", 128}, {"StructuredReport", true}}}},
      "/");
  EXPECT_EQ(config.workers, 3);
  EXPECT_EQ(config.queueCapacity, 10);
  EXPECT_EQ(config.imageSize, 128);
  EXPECT_TRUE(config.structuredReport);
  EXPECT_EQ(errorFor(json{{"Comcl", {{"Workers", 0}}}}), "Comcl.Workers must be between 1 and 64, not 0");
  EXPECT_EQ(errorFor(json{{"Comcl", {{"Workers", "4"}}}}), "Comcl.Workers must be an integer, not string");
  EXPECT_EQ(errorFor(json{{"Comcl", {{"QueueCapacity", 2.5}}}}),
            "Comcl.QueueCapacity must be an integer, not number");
  EXPECT_EQ(errorFor(json{{"Comcl", {{"StructuredReport", "yes"}}}}),
            "Comcl.StructuredReport must be true or false, not string");
  EXPECT_EQ(errorFor(json{{"Comcl", {{"ImageSize", 4}}}}),
            "Comcl.ImageSize must be between 32 and 2048, not 4");
}

TEST(PluginConfig, CacheAndModelsLieBesideTheDatabaseUnlessSet) {
  const PluginConfig config = parsePluginConfig(json{{"Comcl", {{"DatabasePath", "/d/x.sqlite"}}}}, "/");
  EXPECT_EQ(config.cachePath, "/d/image-cache.bin");
  EXPECT_EQ(parsePluginConfig(json{{"IndexDirectory", "/i"}}, "/").modelDirectory, "/i/comcl/models");
  EXPECT_EQ(parsePluginConfig(json{{"Comcl", {{"CachePath", "c.bin"}}}}, "/w").cachePath, "/w/c.bin");
}

TEST(PluginConfig, QualityThresholdsOverrideTheDefaultsAndAreValidated) {
  const PluginConfig config = parsePluginConfig(
      json{{"Comcl", {{"Quality", {{"Sharpness", {{"Usable", 55.5}}}, {"ShortSide", {{"Reject", 100}}}}}}}},
      "/");
  EXPECT_DOUBLE_EQ(config.quality.sharpnessUsable, 55.5);
  EXPECT_EQ(config.quality.shortSideReject, 100);
  EXPECT_DOUBLE_EQ(config.quality.noiseUsable, imaging::QualityThresholds{}.noiseUsable);

  EXPECT_NE(errorFor(json{{"Comcl", {{"Quality", {{"Sharpnes", {{"Usable", 1}}}}}}}})
                .find("unknown configuration key Comcl.Quality.Sharpnes"),
            std::string::npos);
  EXPECT_NE(errorFor(json{{"Comcl", {{"Quality", {{"Noise", {{"Max", 1}}}}}}}})
                .find("unknown configuration key Comcl.Quality.Noise.Max"),
            std::string::npos);
  EXPECT_EQ(errorFor(json{{"Comcl", {{"Quality", {{"Noise", {{"Usable", "4"}}}}}}}}),
            "Comcl.Quality.Noise.Usable must be a number, not string");
  // The reject level on the wrong side of the usable level: named by the validation.
  const std::string wrongSide =
      errorFor(json{{"Comcl", {{"Quality", {{"Sharpness", {{"Usable", 5}, {"Reject", 50}}}}}}}});
  EXPECT_EQ(wrongSide.rfind("Comcl.Quality: ", 0), 0u) << wrongSide;
  EXPECT_NE(wrongSide.find("harpness"), std::string::npos) << wrongSide;
}

TEST(PluginConfig, DeclaredResultNamesAreReadFromOrthancsOwnSections) {
  const PluginConfig none = parsePluginConfig(json::object(), "/");
  EXPECT_TRUE(none.declaredMetadata.empty());
  EXPECT_FALSE(none.attachmentDeclared);
  const PluginConfig some = parsePluginConfig(
      json{{"UserMetadata", {{"ComclQuality", 4201}, {"Other", 5000}}},
           {"UserContentType", {{"comcl-report", json::array({4200, "application/json"})}}}},
      "/");
  EXPECT_EQ(some.declaredMetadata, std::set<std::string>{"ComclQuality"});
  EXPECT_TRUE(some.attachmentDeclared);
}

}  // namespace
}  // namespace comcl::plugin
