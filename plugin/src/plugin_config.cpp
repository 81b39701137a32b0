#include "plugin_config.h"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <limits>
#include <thread>

namespace comcl::plugin {

namespace {

namespace fs = std::filesystem;
constexpr const char* kSection = "Comcl";

std::string qualified(const std::string& key) {
  return std::string(kSection) + "." + key;
}

std::string absolute(const std::string& path, const std::string& workingDir) {
  const fs::path p(path);
  return (p.is_absolute() ? p : fs::path(workingDir) / p).lexically_normal().string();
}

std::string stringKey(const nlohmann::json& section, const std::string& key) {
  const nlohmann::json& value = section.at(key);
  if (!value.is_string())
    throw ConfigError(qualified(key) + " must be a string, not " + value.type_name());
  if (value.get<std::string>().empty())
    throw ConfigError(qualified(key) + " must not be empty");
  return value.get<std::string>();
}

int integerKey(const nlohmann::json& section, const std::string& key, int low, int high) {
  const nlohmann::json& value = section.at(key);
  if (!value.is_number_integer())
    throw ConfigError(qualified(key) + " must be an integer, not " + value.type_name());
  const auto number = value.get<long long>();
  if (number < low || number > high) {
    throw ConfigError(qualified(key) + " must be between " + std::to_string(low) + " and " +
                      std::to_string(high) + ", not " + std::to_string(number));
  }
  return static_cast<int>(number);
}

// A JSON array of non-empty, distinct strings.
std::set<std::string> stringSetKey(const nlohmann::json& section, const std::string& key) {
  const nlohmann::json& value = section.at(key);
  if (!value.is_array())
    throw ConfigError(qualified(key) + " must be an array of user names, not " + value.type_name());
  std::set<std::string> names;
  for (const nlohmann::json& item : value) {
    if (!item.is_string() || item.get<std::string>().empty())
      throw ConfigError(qualified(key) + " must hold non-empty strings, not " + item.dump());
    names.insert(item.get<std::string>());
  }
  return names;
}

bool booleanKey(const nlohmann::json& section, const std::string& key) {
  const nlohmann::json& value = section.at(key);
  if (!value.is_boolean())
    throw ConfigError(qualified(key) + " must be true or false, not " + value.type_name());
  return value.get<bool>();
}

std::string knownKeysText() {
  std::string text;
  for (const std::string& key : knownConfigKeys())
    text += (text.empty() ? "" : ", ") + key;
  return text;
}

// Orthanc's "UserMetadata" / "UserContentType": which of our names the admin declared.
void readDeclaredNames(const nlohmann::json& orthanc, PluginConfig& config) {
  if (orthanc.contains("UserMetadata") && orthanc.at("UserMetadata").is_object()) {
    for (const char* name : {ResultNames::kQualityFlag, ResultNames::kQualityReasons,
                             ResultNames::kModelVersion, ResultNames::kScores}) {
      if (orthanc.at("UserMetadata").contains(name))
        config.declaredMetadata.insert(name);
    }
  }
  config.attachmentDeclared = orthanc.contains("UserContentType") &&
                              orthanc.at("UserContentType").is_object() &&
                              orthanc.at("UserContentType").contains(ResultNames::kReportAttachment);
}

// "Quality": {"Sharpness": {"Usable": 40, "Reject": 10}, ...}: one object per criterion, both levels
// optional; the result is checked as a whole (imaging::validate) so that a level on the wrong side of the
// other is named.
imaging::QualityThresholds parseQualityThresholds(const nlohmann::json& quality) {
  struct Criterion {
    const char* name;
    double imaging::QualityThresholds::*usable;
    double imaging::QualityThresholds::*reject;
    bool worseBelow;  // the image is worse the lower the measure (sharpness, contrast, ...)
    bool fraction;    // the measure is a fraction in [0, 1]
  };
  using T = imaging::QualityThresholds;
  static const Criterion criteria[] = {
      {"Sharpness", &T::sharpnessUsable, &T::sharpnessReject, true, false},
      {"Noise", &T::noiseUsable, &T::noiseReject, false, false},
      {"BodyClipHigh", &T::bodyClipHighUsable, &T::bodyClipHighReject, false, true},
      {"BodyClipLow", &T::bodyClipLowUsable, &T::bodyClipLowReject, false, true},
      {"Contrast", &T::contrastUsable, &T::contrastReject, true, true},
      {"DynamicRange", &T::dynamicRangeUsable, &T::dynamicRangeReject, true, true},
  };
  const std::string base = "Quality";
  if (!quality.is_object())
    throw ConfigError(qualified(base) + " must be a JSON object, not " + quality.type_name());
  imaging::QualityThresholds thresholds;
  // Names the criterion in the configuration's own terms; imaging::validate() stays the backstop.
  const auto checkLevels = [&](const std::string& criterion, double usable, double reject, bool worseBelow,
                               bool fraction) {
    const std::string key = qualified(base + "." + criterion);
    for (const auto& [name, value] : {std::pair<const char*, double>{"Usable", usable}, {"Reject", reject}}) {
      if (!std::isfinite(value) || value < 0 || (fraction && value > 1)) {
        throw ConfigError(key + "." + name + " must be " +
                          (fraction ? "a fraction between 0 and 1" : "0 or more") + ", not " +
                          std::to_string(value));
      }
    }
    if (worseBelow ? reject > usable : reject < usable) {
      throw ConfigError(key + ": Reject (" + std::to_string(reject) + ") must be " +
                        (worseBelow ? "at or below" : "at or above") + " Usable (" + std::to_string(usable) +
                        "): images are worse the " + (worseBelow ? "lower" : "higher") + " the measure");
    }
  };
  const auto level = [&](const nlohmann::json& levels, const std::string& criterion, const char* key) {
    const nlohmann::json& value = levels.at(key);
    if (!value.is_number())
      throw ConfigError(qualified(base + "." + criterion + "." + key) + " must be a number, not " +
                        value.type_name());
    return value.get<double>();
  };
  for (const auto& item : quality.items()) {
    const std::string& criterion = item.key();
    const nlohmann::json& levels = item.value();
    if (!levels.is_object())
      throw ConfigError(qualified(base + "." + criterion) +
                        " must be an object such as {\"Usable\": 40, \"Reject\": 10}");
    for (const auto& entry : levels.items()) {
      if (entry.key() != "Usable" && entry.key() != "Reject")
        throw ConfigError("unknown configuration key " +
                          qualified(base + "." + criterion + "." + entry.key()) +
                          " (known keys: Usable, Reject)");
    }
    bool known = false;
    for (const Criterion& c : criteria) {
      if (criterion != c.name)
        continue;
      known = true;
      if (levels.contains("Usable"))
        thresholds.*c.usable = level(levels, criterion, "Usable");
      if (levels.contains("Reject"))
        thresholds.*c.reject = level(levels, criterion, "Reject");
      checkLevels(criterion, thresholds.*c.usable, thresholds.*c.reject, c.worseBelow, c.fraction);
    }
    if (criterion == "ShortSide") {
      known = true;
      for (const char* key : {"Usable", "Reject"}) {
        if (!levels.contains(key))
          continue;
        const nlohmann::json& value = levels.at(key);
        if (!value.is_number_integer())
          throw ConfigError(qualified(base + ".ShortSide." + key) + " must be an integer, not " +
                            value.type_name());
        (std::string(key) == "Usable" ? thresholds.shortSideUsable : thresholds.shortSideReject) =
            value.get<int>();
      }
    }
    if (!known)
      throw ConfigError("unknown configuration key " + qualified(base + "." + criterion) +
                        " (known keys: Sharpness, Noise, BodyClipHigh, BodyClipLow, Contrast, DynamicRange, "
                        "ShortSide)");
  }
  try {
    imaging::validate(thresholds);
  } catch (const std::invalid_argument& e) {
    throw ConfigError(qualified(base) + ": " + e.what());
  }
  return thresholds;
}

}  // namespace

const std::set<std::string>& knownConfigKeys() {
  static const std::set<std::string> keys = {
      "DatabasePath", "CachePath",       "ModelDirectory",  "ImageSize",      "ImageChannels",
      "Workers",      "QueueCapacity",   "CatchUpInterval", "ScoreBatchSize", "StructuredReport",
      "Quality",      "PrivilegedUsers", "Labels",          "Promotion",      "RescoreOnActivation",
      "RunDirectory"};
  return keys;
}

PluginConfig parsePluginConfig(const nlohmann::json& orthanc, const std::string& workingDir) {
  PluginConfig config;
  // Orthanc's defaults: IndexDirectory falls back to StorageDirectory, which falls back to OrthancStorage.
  std::string indexDirectory = "OrthancStorage";
  for (const char* key : {"StorageDirectory", "IndexDirectory"}) {
    if (orthanc.contains(key) && orthanc.at(key).is_string())
      indexDirectory = orthanc.at(key).get<std::string>();
  }
  const fs::path home = fs::path(indexDirectory) / "comcl";
  config.databasePath = absolute((home / "comcl.sqlite").string(), workingDir);
  config.modelDirectory = absolute((home / "models").string(), workingDir);
  config.workers = static_cast<int>(std::clamp(std::thread::hardware_concurrency() / 2, 1u, 8u));
  readDeclaredNames(orthanc, config);

  nlohmann::json section = nlohmann::json::object();
  if (orthanc.contains(kSection)) {
    section = orthanc.at(kSection);
    if (!section.is_object()) {
      throw ConfigError(std::string("the \"") + kSection +
                        "\" configuration section must be a JSON object, not " + section.type_name());
    }
  }
  for (const auto& item : section.items()) {
    if (knownConfigKeys().count(item.key()) == 0)
      throw ConfigError("unknown configuration key " + qualified(item.key()) +
                        " (known keys: " + knownKeysText() + ")");
  }
  if (section.contains("DatabasePath"))
    config.databasePath = absolute(stringKey(section, "DatabasePath"), workingDir);
  config.cachePath = (fs::path(config.databasePath).parent_path() / "image-cache.bin").string();
  if (section.contains("CachePath"))
    config.cachePath = absolute(stringKey(section, "CachePath"), workingDir);
  if (section.contains("ModelDirectory"))
    config.modelDirectory = absolute(stringKey(section, "ModelDirectory"), workingDir);
  config.runDirectory = (fs::path(config.databasePath).parent_path() / "runs").string();
  if (section.contains("RunDirectory"))
    config.runDirectory = absolute(stringKey(section, "RunDirectory"), workingDir);
  if (section.contains("Promotion")) {
    config.promotion = stringKey(section, "Promotion");
    if (config.promotion != "always" && config.promotion != "if-better" && config.promotion != "never")
      throw ConfigError(qualified("Promotion") + " must be \"always\", \"if-better\" or \"never\", not \"" +
                        config.promotion + "\"");
  }
  if (section.contains("RescoreOnActivation"))
    config.rescoreOnActivation = booleanKey(section, "RescoreOnActivation");
  if (section.contains("ImageSize"))
    config.imageSize = integerKey(section, "ImageSize", 32, 2048);
  if (section.contains("ImageChannels")) {
    config.imageChannels = integerKey(section, "ImageChannels", 1, 3);
    if (config.imageChannels == 2)
      throw ConfigError(qualified("ImageChannels") + " must be 1 (grey) or 3 (RGB), not 2");
  }
  if (section.contains("Workers"))
    config.workers = integerKey(section, "Workers", 1, 64);
  if (section.contains("QueueCapacity"))
    config.queueCapacity = integerKey(section, "QueueCapacity", 1, 1000000);
  if (section.contains("CatchUpInterval"))
    config.catchUpIntervalSeconds = integerKey(section, "CatchUpInterval", 1, 86400);
  if (section.contains("ScoreBatchSize"))
    config.scoreBatchSize = integerKey(section, "ScoreBatchSize", 1, 4096);
  if (section.contains("StructuredReport"))
    config.structuredReport = booleanKey(section, "StructuredReport");
  if (section.contains("PrivilegedUsers"))
    config.privilegedUsers = stringSetKey(section, "PrivilegedUsers");
  if (section.contains("Labels"))
    config.labels = labelSetFromJson(section.at("Labels"));
  if (section.contains("Quality"))
    config.quality = parseQualityThresholds(section.at("Quality"));
  return config;
}

}  // namespace comcl::plugin
