// The Orthanc entry points of comcl: configuration, the change callback, the REST routes and metrics, all
// handed to the Engine. No exception crosses the C boundary: every entry point and callback catches
// everything. REST routes are registered without Orthanc's global lock: they only read the index or wait
// for the plugin's own threads.
#include <orthanc/OrthancCPlugin.h>

#include <cctype>
#include <filesystem>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <regex>
#include <string>

#include "comcl/training/device.h"
#include "engine.h"
#include "http_auth.h"
#include "orthanc_api.h"
#include "plugin_config.h"

namespace {

using comcl::plugin::Engine;
using comcl::plugin::logError;
using comcl::plugin::logWarning;

std::unique_ptr<Engine> engine;

OrthancPluginContext* context() {
  return comcl::plugin::orthancContext();
}

void answerJson(OrthancPluginRestOutput* output, const nlohmann::json& body) {
  const std::string text = body.dump(2);
  OrthancPluginAnswerBuffer(context(), output, text.data(), static_cast<uint32_t>(text.size()),
                            "application/json");
}

// Errors are JSON too: {"HttpStatus": ..., "Message": ...} and, for some, more fields (`extra`).
void answerError(OrthancPluginRestOutput* output, uint16_t status, const std::string& message,
                 const nlohmann::json& extra = nlohmann::json::object()) {
  nlohmann::json body = {{"HttpStatus", status}, {"Message", message}};
  body.update(extra);
  const std::string text = body.dump(2);
  OrthancPluginSendHttpStatus(context(), output, status, text.data(), static_cast<uint32_t>(text.size()));
}

class HttpError : public std::runtime_error {
 public:
  HttpError(uint16_t status, const std::string& message, nlohmann::json extra = nlohmann::json::object())
      : std::runtime_error(message), status_(status), extra_(std::move(extra)) {}
  uint16_t status() const { return status_; }
  const nlohmann::json& extra() const { return extra_; }

 private:
  uint16_t status_;
  nlohmann::json extra_;
};

// Orthanc's public ids: five dash-separated groups of eight lower-case hex digits.
std::string orthancId(const OrthancPluginHttpRequest* request, const char* what) {
  static const std::regex pattern("[0-9a-f]{8}(-[0-9a-f]{8}){4}");
  const std::string id = request->groupsCount > 0 ? request->groups[0] : "";
  if (!std::regex_match(id, pattern))
    throw HttpError(400, "'" + id + "' is not an Orthanc " + what + " id (five groups of 8 hex digits)");
  return id;
}

// The request body as JSON; 400 with `notJson` when it is not JSON.
nlohmann::json jsonBody(const OrthancPluginHttpRequest* request, const std::string& notJson) {
  const auto* bytes = static_cast<const char*>(request->body);
  const nlohmann::json body = nlohmann::json::parse(bytes, bytes + request->bodySize, nullptr, false);
  if (body.is_discarded())
    throw HttpError(400, notJson);
  return body;
}

void requireMethod(const OrthancPluginHttpRequest* request, OrthancPluginHttpMethod method) {
  if (request->method != method)
    throw HttpError(405, method == OrthancPluginHttpMethod_Get ? "GET" : "POST");
}

// Runs a route body, turning every failure into a JSON error answer.
template <typename Body>
OrthancPluginErrorCode serve(OrthancPluginRestOutput* output, const OrthancPluginHttpRequest* request,
                             const char* route, Body body) noexcept {
  try {
    if (!engine)
      throw HttpError(503, "comcl is not running");
    body(output, request);
  } catch (const HttpError& e) {
    if (e.status() == 405) {
      OrthancPluginSendMethodNotAllowed(context(), output, e.what());  // the message is the allowed method
    } else {
      answerError(output, e.status(), e.what(), e.extra());
    }
  } catch (const std::exception& e) {
    logError(std::string(route) + ": " + e.what());
    answerError(output, 500, e.what());
  } catch (...) {
    return OrthancPluginErrorCode_InternalError;
  }
  return OrthancPluginErrorCode_Success;
}

OrthancPluginErrorCode serveStatus(OrthancPluginRestOutput* output, const char*,
                                   const OrthancPluginHttpRequest* request) noexcept {
  return serve(output, request, "GET /comcl/status", [](auto* out, auto* req) {
    requireMethod(req, OrthancPluginHttpMethod_Get);
    answerJson(out, engine->status());
  });
}

OrthancPluginErrorCode serveStudy(OrthancPluginRestOutput* output, const char*,
                                  const OrthancPluginHttpRequest* request) noexcept {
  return serve(output, request, "GET /comcl/studies/{id}", [](auto* out, auto* req) {
    requireMethod(req, OrthancPluginHttpMethod_Get);
    const std::string id = orthancId(req, "study");
    const auto json = engine->studyJson(id);
    if (!json)
      throw HttpError(404, "comcl knows no study " + id);
    answerJson(out, *json);
  });
}

OrthancPluginErrorCode serveScore(OrthancPluginRestOutput* output, const char*,
                                  const OrthancPluginHttpRequest* request) noexcept {
  return serve(output, request, "POST /comcl/studies/{id}/score", [](auto* out, auto* req) {
    requireMethod(req, OrthancPluginHttpMethod_Post);
    const std::string id = orthancId(req, "study");
    bool force = false;
    if (req->bodySize > 0) {
      const nlohmann::json body =
          jsonBody(req, "the body must be a JSON object such as {\"Force\": true}, or empty");
      if (!body.is_object())
        throw HttpError(400, std::string("the body must be a JSON object, not ") + body.type_name());
      for (const auto& item : body.items()) {
        if (item.key() != "Force")
          throw HttpError(400, "unknown field '" + item.key() + "' (known: Force)");
        if (!item.value().is_boolean())
          throw HttpError(400, std::string("Force must be true or false, not ") + item.value().type_name());
        force = item.value().get<bool>();
      }
    }
    const comcl::plugin::AnnotationResult result = engine->annotateNow(id, force);
    switch (result.outcome) {
      case comcl::plugin::AnnotationOutcome::NotFound:
        throw HttpError(404, result.message);
      case comcl::plugin::AnnotationOutcome::Failed:
        throw HttpError(500, "annotation failed: " + result.message);
      default:
        answerJson(
            out,
            {{"Study", id}, {"Outcome", comcl::plugin::toString(result.outcome)}, {"Report", result.report}});
    }
  });
}

OrthancPluginErrorCode serveInstance(OrthancPluginRestOutput* output, const char*,
                                     const OrthancPluginHttpRequest* request) noexcept {
  return serve(output, request, "GET /comcl/instances/{id}", [](auto* out, auto* req) {
    requireMethod(req, OrthancPluginHttpMethod_Get);
    const std::string id = orthancId(req, "instance");
    const auto json = engine->instanceJson(id);
    if (!json)
      throw HttpError(404, "comcl knows no instance " + id);
    answerJson(out, *json);
  });
}

OrthancPluginErrorCode serveQualitySummary(OrthancPluginRestOutput* output, const char*,
                                           const OrthancPluginHttpRequest* request) noexcept {
  return serve(output, request, "GET /comcl/quality/summary", [](auto* out, auto* req) {
    requireMethod(req, OrthancPluginHttpMethod_Get);
    answerJson(out, engine->qualitySummary());
  });
}

// A request header's value (names compared without case), or empty.
std::optional<std::string> header(const OrthancPluginHttpRequest* request, const std::string& name) {
  for (uint32_t i = 0; i < request->headersCount; ++i) {
    std::string key = request->headersKeys[i];
    for (char& c : key)
      c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    if (key == name)
      return std::string(request->headersValues[i]);
  }
  return std::nullopt;
}

// The HTTP Basic user of a request (empty without one).
std::optional<std::string> requestUser(const OrthancPluginHttpRequest* request) {
  const std::optional<std::string> authorization = header(request, "authorization");
  return authorization ? comcl::plugin::basicAuthUser(*authorization) : std::nullopt;
}

// Refuses (403) a request whose HTTP Basic user is not in Comcl.PrivilegedUsers, when that list is set.
// Orthanc has checked the password already; read routes stay open to every user it lets in.
void requirePrivileged(const OrthancPluginHttpRequest* request, const std::string& action) {
  const auto& allowed = engine->config().privilegedUsers;
  if (!allowed)
    return;
  const std::optional<std::string> user = requestUser(request);
  if (!user || allowed->count(*user) == 0) {
    throw HttpError(403, (user ? "user '" + *user + "'" : std::string("a request without a user name")) +
                             " may not " + action + " (Comcl.PrivilegedUsers names who may)");
  }
}

// Where REST labels came from: "rest:<user>", or "rest" without a user name.
std::string labelSource(const OrthancPluginHttpRequest* request) {
  const std::optional<std::string> user = requestUser(request);
  return user ? "rest:" + *user : "rest";
}

OrthancPluginErrorCode serveStudyLabels(OrthancPluginRestOutput* output, const char*,
                                        const OrthancPluginHttpRequest* request) noexcept {
  return serve(output, request, "/comcl/studies/{id}/labels", [](auto* out, auto* req) {
    if (req->method != OrthancPluginHttpMethod_Get && req->method != OrthancPluginHttpMethod_Put) {
      OrthancPluginSendMethodNotAllowed(context(), out, "GET,PUT");
      return;
    }
    const std::string id = orthancId(req, "study");
    const std::optional<std::string> uid = engine->studyInstanceUidOf(id);
    if (!uid)
      throw HttpError(404, "comcl knows no study " + id);
    if (req->method == OrthancPluginHttpMethod_Get) {
      answerJson(out, engine->labels().get(*uid));
      return;
    }
    requirePrivileged(req, "label studies");
    const std::string shape =
        "the body must be {\"Labels\": {\"name\": value, ...}} and/or {\"Boxes\": [{\"SOPInstanceUID\", "
        "\"Finding\", \"Box\": [x0, y0, x1, y1]}, ...]}";
    const nlohmann::json body = jsonBody(req, shape);
    if (!body.is_object() || body.empty())
      throw HttpError(400, shape);
    for (const auto& item : body.items()) {
      if (item.key() != "Labels" && item.key() != "Boxes")
        throw HttpError(400, "unknown field '" + item.key() + "': " + shape);
    }
    nlohmann::json result = {{"StudyInstanceUID", *uid}, {"Stored", 0}, {"BoxesStored", 0}};
    nlohmann::json problems = nlohmann::json::array();
    if (body.contains("Labels")) {
      const nlohmann::json labels = engine->labels().put(*uid, body.at("Labels"), labelSource(req));
      result["Stored"] = labels.at("Stored");
      problems.insert(problems.end(), labels.at("Problems").begin(), labels.at("Problems").end());
    }
    if (body.contains("Boxes")) {
      const nlohmann::json boxes = engine->labels().putBoxes(*uid, body.at("Boxes"), labelSource(req));
      result["BoxesStored"] = boxes.at("Stored");
      problems.insert(problems.end(), boxes.at("Problems").begin(), boxes.at("Problems").end());
    }
    result["Problems"] = problems;
    if (result.at("Stored") == 0 && result.at("BoxesStored") == 0 && !problems.empty())
      throw HttpError(400, "nothing stored: " + problems[0].get<std::string>());
    answerJson(out, result);
  });
}

OrthancPluginErrorCode serveLabels(OrthancPluginRestOutput* output, const char*,
                                   const OrthancPluginHttpRequest* request) noexcept {
  return serve(output, request, "POST /comcl/labels", [](auto* out, auto* req) {
    requireMethod(req, OrthancPluginHttpMethod_Post);
    requirePrivileged(req, "label studies");
    if (header(req, "content-type").value_or("").rfind("text/csv", 0) == 0) {
      try {
        answerJson(
            out, engine->labels().importCsv(
                     std::string_view(static_cast<const char*>(req->body), req->bodySize), labelSource(req)));
      } catch (const std::invalid_argument& e) {
        throw HttpError(400, e.what());
      }
      return;
    }
    const nlohmann::json rows = jsonBody(req,
                                         "the body must be JSON (an array of {\"StudyInstanceUID\": ..., "
                                         "\"Labels\": {...}}) or CSV sent as Content-Type: text/csv");
    if (!rows.is_array())
      throw HttpError(400, std::string("the body must be a JSON array of rows, not ") + rows.type_name());
    answerJson(out, engine->labels().importRows(rows, labelSource(req)));
  });
}

// A model version from the route's first group: a positive integer.
int modelVersion(const OrthancPluginHttpRequest* request) {
  static const std::regex pattern("[1-9][0-9]{0,8}");
  const std::string text = request->groupsCount > 0 ? request->groups[0] : "";
  if (!std::regex_match(text, pattern))
    throw HttpError(400, "'" + text + "' is not a model version (a positive integer)");
  return std::stoi(text);
}

HttpError unknownModel(int version) {
  return HttpError(
      404, "model version " + std::to_string(version) + " is not in the registry (GET /comcl/models)");
}

OrthancPluginErrorCode serveModels(OrthancPluginRestOutput* output, const char*,
                                   const OrthancPluginHttpRequest* request) noexcept {
  return serve(output, request, "GET /comcl/models", [](auto* out, auto* req) {
    requireMethod(req, OrthancPluginHttpMethod_Get);
    answerJson(out, engine->models().list());
  });
}

OrthancPluginErrorCode serveModel(OrthancPluginRestOutput* output, const char*,
                                  const OrthancPluginHttpRequest* request) noexcept {
  return serve(output, request, "GET /comcl/models/{v}", [](auto* out, auto* req) {
    requireMethod(req, OrthancPluginHttpMethod_Get);
    const int version = modelVersion(req);
    const auto json = engine->models().describe(version);
    if (!json)
      throw unknownModel(version);
    answerJson(out, *json);
  });
}

OrthancPluginErrorCode serveModelActivation(OrthancPluginRestOutput* output, const char*,
                                            const OrthancPluginHttpRequest* request) noexcept {
  return serve(output, request, "POST /comcl/models/{v}/activate", [](auto* out, auto* req) {
    requireMethod(req, OrthancPluginHttpMethod_Post);
    const int version = modelVersion(req);
    requirePrivileged(req, "activate models");
    try {
      const auto json = engine->activateModel(version);
      if (!json)
        throw unknownModel(version);
      answerJson(out, *json);
    } catch (const comcl::plugin::ModelUnusable& e) {
      throw HttpError(409, e.what());  // the registry holds it, but its files do not load
    }
  });
}

OrthancPluginErrorCode serveModelWeights(OrthancPluginRestOutput* output, const char*,
                                         const OrthancPluginHttpRequest* request) noexcept {
  return serve(output, request, "GET /comcl/models/{v}/weights", [](auto* out, auto* req) {
    requireMethod(req, OrthancPluginHttpMethod_Get);
    const int version = modelVersion(req);
    std::optional<std::string> bytes;
    try {
      bytes = engine->models().weights(version);
    } catch (const comcl::plugin::ModelUnusable& e) {
      throw HttpError(409, e.what());
    }
    if (!bytes)
      throw unknownModel(version);
    OrthancPluginAnswerBuffer(context(), out, bytes->data(), static_cast<uint32_t>(bytes->size()),
                              "application/octet-stream");
  });
}

OrthancPluginErrorCode serveTrain(OrthancPluginRestOutput* output, const char*,
                                  const OrthancPluginHttpRequest* request) noexcept {
  return serve(output, request, "POST /comcl/train", [](auto* out, auto* req) {
    requireMethod(req, OrthancPluginHttpMethod_Post);
    requirePrivileged(req, "train models");
    const nlohmann::json body =
        req->bodySize == 0
            ? nlohmann::json::object()
            : jsonBody(req, "the body must be a JSON object such as {\"Method\": \"medaug\"}, or empty");
    comcl::plugin::TrainRequest training;
    try {
      training = comcl::plugin::TrainRequest::fromJson(body, engine->config().labels);
    } catch (const std::invalid_argument& e) {
      throw HttpError(400, e.what());
    }
    training.requestedBy = requestUser(req).value_or("");
    try {
      answerJson(out, engine->startTraining(std::move(training)));
    } catch (const comcl::plugin::TrainingBusy& e) {
      throw HttpError(409, e.what(),
                      {{"RunId", e.runId()},
                       {"JobId", e.jobId().empty() ? nlohmann::json() : nlohmann::json(e.jobId())}});
    }
  });
}

OrthancPluginErrorCode serveRuns(OrthancPluginRestOutput* output, const char*,
                                 const OrthancPluginHttpRequest* request) noexcept {
  return serve(output, request, "GET /comcl/runs", [](auto* out, auto* req) {
    requireMethod(req, OrthancPluginHttpMethod_Get);
    answerJson(out, engine->training().runs());
  });
}

OrthancPluginErrorCode serveRun(OrthancPluginRestOutput* output, const char*,
                                const OrthancPluginHttpRequest* request) noexcept {
  return serve(output, request, "GET /comcl/runs/{id}", [](auto* out, auto* req) {
    requireMethod(req, OrthancPluginHttpMethod_Get);
    static const std::regex pattern("[1-9][0-9]{0,17}");
    const std::string text = req->groupsCount > 0 ? req->groups[0] : "";
    if (!std::regex_match(text, pattern))
      throw HttpError(400, "'" + text + "' is not a training run id (a positive integer)");
    const auto json = engine->training().run(std::stoll(text));
    if (!json)
      throw HttpError(404, "there is no training run " + text + " (GET /comcl/runs)");
    answerJson(out, *json);
  });
}

OrthancPluginErrorCode serveRescore(OrthancPluginRestOutput* output, const char*,
                                    const OrthancPluginHttpRequest* request) noexcept {
  return serve(output, request, "POST /comcl/rescore", [](auto* out, auto* req) {
    requireMethod(req, OrthancPluginHttpMethod_Post);
    requirePrivileged(req, "re-score the archive");
    answerJson(out, engine->startRescoring());
  });
}

OrthancPluginErrorCode onChange(OrthancPluginChangeType change, OrthancPluginResourceType level,
                                const char* resourceId) noexcept {
  try {
    if (!engine)
      return OrthancPluginErrorCode_Success;
    if (change == OrthancPluginChangeType_OrthancStarted) {
      engine->start();
    } else if (change == OrthancPluginChangeType_OrthancStopped) {
      engine->stop();
    } else {
      engine->onChange(change, level, resourceId == nullptr ? "" : resourceId);
    }
  } catch (const std::exception& e) {
    logError(std::string("change callback: ") + e.what());
  } catch (...) {
  }
  return OrthancPluginErrorCode_Success;  // never fail Orthanc's change processing because of us
}

void refreshMetrics() noexcept {
  try {
    if (engine)
      engine->publishMetrics();
  } catch (...) {
  }
}

nlohmann::json orthancConfiguration() {
  char* text = OrthancPluginGetConfiguration(context());
  if (text == nullptr)
    throw comcl::plugin::ConfigError("Orthanc did not give its configuration");
  const std::unique_ptr<char, void (*)(char*)> owned(text,
                                                     [](char* p) { OrthancPluginFreeString(context(), p); });
  return nlohmann::json::parse(owned.get());
}

}  // namespace

extern "C" {

ORTHANC_PLUGINS_API int32_t OrthancPluginInitialize(OrthancPluginContext* orthanc) {
  comcl::plugin::setOrthancContext(orthanc);
  try {
    if (OrthancPluginCheckVersion(orthanc) == 0) {
      logError(std::string("this Orthanc (") + orthanc->orthancVersion + ") is older than the plugin SDK " +
               std::to_string(ORTHANC_PLUGINS_MINIMAL_MAJOR_NUMBER) + "." +
               std::to_string(ORTHANC_PLUGINS_MINIMAL_MINOR_NUMBER) + "." +
               std::to_string(ORTHANC_PLUGINS_MINIMAL_REVISION_NUMBER) + " it was built with");
      return -1;
    }
    OrthancPluginSetDescription(orthanc, "comcl: contrastive learning from the hospital's own radiographs");

    comcl::plugin::PluginConfig config =
        comcl::plugin::parsePluginConfig(orthancConfiguration(), std::filesystem::current_path());
    std::filesystem::create_directories(std::filesystem::path(config.databasePath).parent_path());
    std::filesystem::create_directories(std::filesystem::path(config.cachePath).parent_path());
    const torch::Device device = comcl::training::preferredDevice();
    const std::string deviceText = comcl::training::describeDevice(device);
    const std::string database = config.databasePath;
    engine = std::make_unique<Engine>(std::move(config), deviceText, device);

    OrthancPluginRegisterOnChangeCallback(orthanc, onChange);
    OrthancPluginRegisterRefreshMetricsCallback(orthanc, refreshMetrics);
    OrthancPluginRegisterRestCallbackNoLock(orthanc, "/comcl/status", serveStatus);
    OrthancPluginRegisterRestCallbackNoLock(orthanc, "/comcl/studies/([^/]+)", serveStudy);
    OrthancPluginRegisterRestCallbackNoLock(orthanc, "/comcl/studies/([^/]+)/score", serveScore);
    OrthancPluginRegisterRestCallbackNoLock(orthanc, "/comcl/instances/([^/]+)", serveInstance);
    OrthancPluginRegisterRestCallbackNoLock(orthanc, "/comcl/quality/summary", serveQualitySummary);
    OrthancPluginRegisterRestCallbackNoLock(orthanc, "/comcl/studies/([^/]+)/labels", serveStudyLabels);
    OrthancPluginRegisterRestCallbackNoLock(orthanc, "/comcl/labels", serveLabels);
    OrthancPluginRegisterRestCallbackNoLock(orthanc, "/comcl/models", serveModels);
    OrthancPluginRegisterRestCallbackNoLock(orthanc, "/comcl/models/([^/]+)", serveModel);
    OrthancPluginRegisterRestCallbackNoLock(orthanc, "/comcl/models/([^/]+)/activate", serveModelActivation);
    OrthancPluginRegisterRestCallbackNoLock(orthanc, "/comcl/models/([^/]+)/weights", serveModelWeights);
    OrthancPluginRegisterRestCallbackNoLock(orthanc, "/comcl/train", serveTrain);
    OrthancPluginRegisterRestCallbackNoLock(orthanc, "/comcl/runs", serveRuns);
    OrthancPluginRegisterRestCallbackNoLock(orthanc, "/comcl/runs/([^/]+)", serveRun);
    OrthancPluginRegisterRestCallbackNoLock(orthanc, "/comcl/rescore", serveRescore);
    logWarning(std::string("version ") + COMCL_VERSION + ", device " + deviceText + ", database " + database);
    return 0;
  } catch (const std::exception& e) {
    logError(std::string("cannot start: ") + e.what());
  } catch (...) {
    logError("cannot start: unknown error");
  }
  engine.reset();
  return -1;
}

ORTHANC_PLUGINS_API void OrthancPluginFinalize() {
  try {
    if (engine)
      comcl::plugin::logInfo("stopping");
    engine.reset();
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
