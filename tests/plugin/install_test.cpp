// `cmake --install` as the README says, relocated with DESTDIR, then Debian's stock configuration folder
// (/etc/orthanc/*.json) plus the installed comcl.json: Orthanc starts with the plugin loaded from the
// installed plugins folder.
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>

#include "orthanc_process.h"
#include "temp_dir.h"

namespace comcl::testing {
namespace {

namespace fs = std::filesystem;

TEST(Install, DebiansStockConfigurationFolderStartsWithTheInstalledPlugin) {
  const fs::path stock = "/etc/orthanc";
  if (!fs::exists(stock / "orthanc.json"))
    GTEST_SKIP() << "Debian's orthanc package is not installed";
  TempDir root;
  const std::string command = "DESTDIR='" + root.path().string() +
                              "' cmake --install '" COMCL_BUILD_DIR "' > '" + root.file("install.log") +
                              "' 2>&1";
  ASSERT_EQ(std::system(command.c_str()), 0) << command;
  const fs::path plugins = root.path() / fs::path(COMCL_ORTHANC_PLUGINS_DIR).relative_path();
  const fs::path config = root.path() / fs::path(COMCL_ORTHANC_CONFIG_DIR).relative_path() / "comcl.json";
  ASSERT_TRUE(fs::exists(plugins / "libOrthancComcl.so"));
  ASSERT_TRUE(fs::exists(config));

  OrthancProcess::Options options;
  for (const auto& entry : fs::directory_iterator(stock)) {
    if (entry.path().extension() == ".json")
      options.configFiles.push_back(entry.path().string());
  }
  std::sort(options.configFiles.begin(), options.configFiles.end(), [](const auto& a, const auto& b) {
    return fs::path(a).filename() == "orthanc.json" && fs::path(b).filename() != "orthanc.json";
  });
  options.configFiles.push_back(config.string());
  options.plugins = {plugins.string()};  // the folder, as Debian's orthanc.json names its own
  OrthancProcess orthanc(options);

  const HttpResponse plugin = orthanc.client().get("/plugins/comcl");
  ASSERT_EQ(plugin.status, 200) << plugin.body << orthanc.log();
  EXPECT_EQ(plugin.json().at("ID"), "comcl");
  const HttpResponse status = orthanc.client().get("/comcl/status");
  ASSERT_EQ(status.status, 200) << status.body;
  EXPECT_NE(orthanc.log().find("comcl: version " + status.json().at("Version").get<std::string>() +
                               ", device " + status.json().at("Device").get<std::string>() + ", database " +
                               status.json().at("Database").get<std::string>()),
            std::string::npos)
      << orthanc.log();
}

}  // namespace
}  // namespace comcl::testing
