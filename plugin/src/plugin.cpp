// The Orthanc entry points of comcl. This first version loads into Orthanc, checks its configuration
// section, opens the comcl index and answers GET /comcl/status; ingest, annotation and training arrive with
// the next issues. No exception crosses the C boundary: every entry point and callback catches everything.
#include <orthanc/OrthancCPlugin.h>

#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "comcl/storage/index.h"
#include "comcl/storage/schema.h"
#include "comcl/training/device.h"
#include "plugin_config.h"

namespace {

using comcl::plugin::PluginConfig;

OrthancPluginContext* context = nullptr;

struct PluginState {
  PluginConfig config;
  std::string device;
  std::unique_ptr<comcl::storage::Index> index;
};
std::unique_ptr<PluginState> state;

void logInfo(const std::string& message) {
  OrthancPluginLogInfo(context, ("comcl: " + message).c_str());
}
void logWarning(const std::string& message) {
  OrthancPluginLogWarning(context, ("comcl: " + message).c_str());
}
void logError(const std::string& message) {
  OrthancPluginLogError(context, ("comcl: " + message).c_str());
}

void answerJson(OrthancPluginRestOutput* output, const nlohmann::json& body) {
  const std::string text = body.dump(2);
  OrthancPluginAnswerBuffer(context, output, text.data(), static_cast<uint32_t>(text.size()),
                            "application/json");
}

// Errors are JSON too: {"HttpStatus": ..., "Message": ...}.
void answerError(OrthancPluginRestOutput* output, uint16_t status, const std::string& message) {
  const std::string text = nlohmann::json{{"HttpStatus", status}, {"Message", message}}.dump(2);
  OrthancPluginSendHttpStatus(context, output, status, text.data(), static_cast<uint32_t>(text.size()));
}

nlohmann::json statusJson() {
  const comcl::storage::IndexSummary summary = state->index->summary();
  return {{"Version", COMCL_VERSION},
          {"Device", state->device},
          {"Database", state->config.databasePath},
          {"SchemaVersion", comcl::storage::currentSchemaVersion()},
          {"Instances", summary.files},
          {"Images", summary.images},
          {"Patients", summary.patients},
          {"Studies", summary.studies},
          {"ByDecodeState", summary.byState}};
}

// Runs concurrently (registered without Orthanc's global REST lock): the index serialises its own calls.
OrthancPluginErrorCode serveStatus(OrthancPluginRestOutput* output, const char* /*url*/,
                                   const OrthancPluginHttpRequest* request) noexcept {
  try {
    if (request->method != OrthancPluginHttpMethod_Get) {
      OrthancPluginSendMethodNotAllowed(context, output, "GET");
      return OrthancPluginErrorCode_Success;
    }
    answerJson(output, statusJson());
    return OrthancPluginErrorCode_Success;
  } catch (const std::exception& e) {
    logError(std::string("GET /comcl/status: ") + e.what());
    answerError(output, 500, e.what());
    return OrthancPluginErrorCode_Success;
  } catch (...) {
    return OrthancPluginErrorCode_InternalError;
  }
}

nlohmann::json orthancConfiguration() {
  char* text = OrthancPluginGetConfiguration(context);
  if (text == nullptr)
    throw comcl::plugin::ConfigError("Orthanc did not give its configuration");
  const std::unique_ptr<char, void (*)(char*)> owned(text,
                                                     [](char* p) { OrthancPluginFreeString(context, p); });
  return nlohmann::json::parse(owned.get());
}

}  // namespace

extern "C" {

ORTHANC_PLUGINS_API int32_t OrthancPluginInitialize(OrthancPluginContext* orthanc) {
  context = orthanc;
  try {
    if (OrthancPluginCheckVersion(context) == 0) {
      logError(std::string("this Orthanc (") + context->orthancVersion + ") is older than the plugin SDK " +
               std::to_string(ORTHANC_PLUGINS_MINIMAL_MAJOR_NUMBER) + "." +
               std::to_string(ORTHANC_PLUGINS_MINIMAL_MINOR_NUMBER) + "." +
               std::to_string(ORTHANC_PLUGINS_MINIMAL_REVISION_NUMBER) + " it was built with");
      return -1;
    }
    OrthancPluginSetDescription(context, "comcl: contrastive learning from the hospital's own radiographs");

    auto started = std::make_unique<PluginState>();
    started->config =
        comcl::plugin::parsePluginConfig(orthancConfiguration(), std::filesystem::current_path());
    std::filesystem::create_directories(std::filesystem::path(started->config.databasePath).parent_path());
    started->index = std::make_unique<comcl::storage::Index>(started->config.databasePath);
    started->device = comcl::training::describeDevice(comcl::training::preferredDevice());
    state = std::move(started);

    OrthancPluginRegisterRestCallbackNoLock(context, "/comcl/status", serveStatus);
    logWarning(std::string("version ") + COMCL_VERSION + ", device " + state->device + ", database " +
               state->config.databasePath);
    return 0;
  } catch (const std::exception& e) {
    logError(std::string("cannot start: ") + e.what());
  } catch (...) {
    logError("cannot start: unknown error");
  }
  state.reset();
  return -1;
}

ORTHANC_PLUGINS_API void OrthancPluginFinalize() {
  try {
    if (state)
      logInfo("stopping");
    state.reset();
  } catch (...) {  // nothing may escape into Orthanc
  }
}

ORTHANC_PLUGINS_API const char* OrthancPluginGetName() {
  return "comcl";
}

ORTHANC_PLUGINS_API const char* OrthancPluginGetVersion() {
  return COMCL_VERSION;
}
}
