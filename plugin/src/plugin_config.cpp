#include "plugin_config.h"

#include <filesystem>
#include <set>

namespace comcl::plugin {

namespace {

namespace fs = std::filesystem;
constexpr const char* kSection = "Comcl";

std::string absolute(const std::string& path, const std::string& workingDir) {
  const fs::path p(path);
  return (p.is_absolute() ? p : fs::path(workingDir) / p).lexically_normal().string();
}

std::string stringKey(const nlohmann::json& section, const char* key) {
  const nlohmann::json& value = section.at(key);
  if (!value.is_string()) {
    throw ConfigError(std::string(kSection) + "." + key + " must be a string, not " + value.type_name());
  }
  if (value.get<std::string>().empty())
    throw ConfigError(std::string(kSection) + "." + key + " must not be empty");
  return value.get<std::string>();
}

}  // namespace

PluginConfig parsePluginConfig(const nlohmann::json& orthanc, const std::string& workingDir) {
  PluginConfig config;
  // Orthanc's defaults: IndexDirectory falls back to StorageDirectory, which falls back to OrthancStorage.
  std::string indexDirectory = "OrthancStorage";
  for (const char* key : {"StorageDirectory", "IndexDirectory"}) {
    if (orthanc.contains(key) && orthanc.at(key).is_string())
      indexDirectory = orthanc.at(key).get<std::string>();
  }
  config.databasePath = absolute((fs::path(indexDirectory) / "comcl" / "comcl.sqlite").string(), workingDir);

  if (!orthanc.contains(kSection))
    return config;
  const nlohmann::json& section = orthanc.at(kSection);
  if (!section.is_object()) {
    throw ConfigError(std::string("the \"") + kSection +
                      "\" configuration section must be a JSON object, not " + section.type_name());
  }
  static const std::set<std::string> known = {"DatabasePath"};
  for (const auto& item : section.items()) {
    if (known.count(item.key()) == 0) {
      throw ConfigError(std::string("unknown configuration key ") + kSection + "." + item.key() +
                        " (known keys: DatabasePath)");
    }
  }
  if (section.contains("DatabasePath"))
    config.databasePath = absolute(stringKey(section, "DatabasePath"), workingDir);
  return config;
}

}  // namespace comcl::plugin
