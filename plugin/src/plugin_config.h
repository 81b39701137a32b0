// The plugin's configuration section ("Comcl" in Orthanc's merged configuration), checked strictly: an
// unknown key, a wrong type or an impossible value stops start-up with a message naming the key, rather
// than running on a silent default.
#pragma once

#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>

namespace comcl::plugin {

class ConfigError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct PluginConfig {
  std::string databasePath;  // the comcl index (SQLite); its image cache lies beside it
};

// `orthanc` is Orthanc's whole merged configuration. Relative paths are resolved against `workingDir`
// (Orthanc's own current directory), so that the log shows where the database really is.
PluginConfig parsePluginConfig(const nlohmann::json& orthanc, const std::string& workingDir);

}  // namespace comcl::plugin
