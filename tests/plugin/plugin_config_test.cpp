// The "Comcl" configuration section: defaults from Orthanc's own settings, strict checking of every key.
#include "plugin_config.h"

#include <gtest/gtest.h>

#include <fstream>

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
  EXPECT_EQ(parsePluginConfig(json{{"Comcl", {{"ImageChannels", 3}}}}, "/").imageChannels, 3);
  EXPECT_EQ(parsePluginConfig(json::object(), "/").imageChannels, 1);
  EXPECT_EQ(errorFor(json{{"Comcl", {{"ImageChannels", 2}}}}),
            "Comcl.ImageChannels must be 1 (grey) or 3 (RGB), not 2");
  EXPECT_FALSE(parsePluginConfig(json::object(), "/").privilegedUsers);
  EXPECT_EQ(
      parsePluginConfig(json{{"Comcl", {{"PrivilegedUsers", {"alice", "carol"}}}}}, "/").privilegedUsers,
      (std::set<std::string>{"alice", "carol"}));
  EXPECT_EQ(errorFor(json{{"Comcl", {{"PrivilegedUsers", "alice"}}}}),
            "Comcl.PrivilegedUsers must be an array of user names, not string");
  EXPECT_EQ(errorFor(json{{"Comcl", {{"PrivilegedUsers", {"alice", ""}}}}}),
            "Comcl.PrivilegedUsers must hold non-empty strings, not \"\"");
}

TEST(PluginConfig, CacheAndModelsLieBesideTheDatabaseUnlessSet) {
  const PluginConfig config = parsePluginConfig(json{{"Comcl", {{"DatabasePath", "/d/x.sqlite"}}}}, "/");
  EXPECT_EQ(config.cachePath, "/d/image-cache.bin");
  EXPECT_EQ(parsePluginConfig(json{{"IndexDirectory", "/i"}}, "/").modelDirectory, "/i/comcl/models");
  EXPECT_EQ(parsePluginConfig(json{{"Comcl", {{"CachePath", "c.bin"}}}}, "/w").cachePath, "/w/c.bin");
}

TEST(PluginConfig, TrainingKeysHaveDefaultsAndAreChecked) {
  const PluginConfig defaults = parsePluginConfig(json{{"Comcl", {{"DatabasePath", "/d/x.sqlite"}}}}, "/");
  EXPECT_EQ(defaults.promotion, "if-better");
  EXPECT_TRUE(defaults.rescoreOnActivation);
  EXPECT_EQ(defaults.runDirectory, "/d/runs");
  const PluginConfig set = parsePluginConfig(
      json{{"Comcl", {{"Promotion", "never"}, {"RescoreOnActivation", false}, {"RunDirectory", "r"}}}}, "/w");
  EXPECT_EQ(set.promotion, "never");
  EXPECT_FALSE(set.rescoreOnActivation);
  EXPECT_EQ(set.runDirectory, "/w/r");
  EXPECT_EQ(errorFor(json{{"Comcl", {{"Promotion", "sometimes"}}}}),
            "Comcl.Promotion must be \"always\", \"if-better\" or \"never\", not \"sometimes\"");
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
  EXPECT_EQ(wrongSide.rfind("Comcl.Quality.Sharpness: Reject (50", 0), 0u) << wrongSide;
  EXPECT_NE(wrongSide.find("at or below Usable (5"), std::string::npos) << wrongSide;
  EXPECT_EQ(errorFor(json{{"Comcl", {{"Quality", {{"BodyClipLow", {{"Usable", 1.5}}}}}}}})
                .rfind("Comcl.Quality.BodyClipLow.Usable must be a fraction between 0 and 1", 0),
            0u);
  EXPECT_EQ(errorFor(json{{"Comcl", {{"Quality", {{"Noise", {{"Reject", -1}}}}}}}})
                .rfind("Comcl.Quality.Noise.Reject must be 0 or more", 0),
            0u);
}

TEST(PluginConfig, TheShippedConfigurationFileIsValidAndItsCommentedValuesAreTheDefaults) {
  std::ifstream in(COMCL_SOURCE_DIR "/config/comcl.json");
  ASSERT_TRUE(in);
  const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const json shipped = json::parse(text, nullptr, true, /*ignore_comments=*/true);
  EXPECT_NO_THROW(parsePluginConfig(shipped, "/"));
  // Uncommenting the "Quality" example must not change anything.
  const std::string::size_type start = text.find("// \"Quality\" : {");
  ASSERT_NE(start, std::string::npos);
  std::string example = text.substr(start, text.find("// }", start) + 4 - start);
  for (std::string::size_type at = example.find("//"); at != std::string::npos; at = example.find("//", at)) {
    const bool lineStart = at == 0 || example.rfind('\n', at) == example.find_last_not_of(' ', at - 1);
    example.erase(at, lineStart ? 2 : example.find('\n', at) - at);
  }
  const json quality = json::parse("{" + example + "}").at("Quality");
  const imaging::QualityThresholds fromFile =
      parsePluginConfig(json{{"Comcl", {{"Quality", quality}}}}, "/").quality;
  const imaging::QualityThresholds defaults;
  EXPECT_DOUBLE_EQ(fromFile.sharpnessUsable, defaults.sharpnessUsable);
  EXPECT_DOUBLE_EQ(fromFile.sharpnessReject, defaults.sharpnessReject);
  EXPECT_DOUBLE_EQ(fromFile.noiseUsable, defaults.noiseUsable);
  EXPECT_DOUBLE_EQ(fromFile.noiseReject, defaults.noiseReject);
  EXPECT_DOUBLE_EQ(fromFile.bodyClipHighUsable, defaults.bodyClipHighUsable);
  EXPECT_DOUBLE_EQ(fromFile.bodyClipHighReject, defaults.bodyClipHighReject);
  EXPECT_DOUBLE_EQ(fromFile.bodyClipLowUsable, defaults.bodyClipLowUsable);
  EXPECT_DOUBLE_EQ(fromFile.bodyClipLowReject, defaults.bodyClipLowReject);
  EXPECT_DOUBLE_EQ(fromFile.contrastUsable, defaults.contrastUsable);
  EXPECT_DOUBLE_EQ(fromFile.contrastReject, defaults.contrastReject);
  EXPECT_DOUBLE_EQ(fromFile.dynamicRangeUsable, defaults.dynamicRangeUsable);
  EXPECT_DOUBLE_EQ(fromFile.dynamicRangeReject, defaults.dynamicRangeReject);
  EXPECT_EQ(fromFile.shortSideUsable, defaults.shortSideUsable);
  EXPECT_EQ(fromFile.shortSideReject, defaults.shortSideReject);
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
