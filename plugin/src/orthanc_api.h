// Thin RAII layer over the Orthanc plugin SDK calls the plugin makes from its own threads: memory buffers,
// strings, decoded images, and the internal REST API. Nothing here throws into Orthanc: the callers
// (which catch everything at the C boundary) get exceptions or empty results.
#pragma once

#include <orthanc/OrthancCPlugin.h>

#include <cstddef>
#include <nlohmann/json.hpp>
#include <optional>
#include <stdexcept>
#include <string>

#include "comcl/imaging/decode.h"

namespace comcl::plugin {

// The context Orthanc handed to OrthancPluginInitialize; set once, before any other call here.
void setOrthancContext(OrthancPluginContext* context);
OrthancPluginContext* orthancContext();

void logInfo(const std::string& message);
void logWarning(const std::string& message);
void logError(const std::string& message);

// A buffer Orthanc allocated for us; freed on destruction.
class OrthancBuffer {
 public:
  OrthancBuffer() = default;
  ~OrthancBuffer();
  OrthancBuffer(const OrthancBuffer&) = delete;
  OrthancBuffer& operator=(const OrthancBuffer&) = delete;
  OrthancPluginMemoryBuffer* out() { return &buffer_; }  // for SDK calls that fill it
  const void* data() const { return buffer_.data; }
  std::size_t size() const { return buffer_.size; }
  std::string text() const;

 private:
  OrthancPluginMemoryBuffer buffer_{nullptr, 0};
};

// An error answer of Orthanc's internal REST API (the SDK gives an error code, not the HTTP status).
class OrthancCallError : public std::runtime_error {
 public:
  OrthancCallError(const std::string& what, OrthancPluginErrorCode code)
      : std::runtime_error(what), code_(code) {}
  OrthancPluginErrorCode code() const { return code_; }
  bool notFound() const { return code_ == OrthancPluginErrorCode_UnknownResource; }

 private:
  OrthancPluginErrorCode code_;
};

// Orthanc's internal REST API (same routes as over HTTP, no authentication, no HTTP server involved).
// Each throws OrthancCallError when Orthanc answers with an error.
nlohmann::json restGetJson(const std::string& uri);
// nullopt when the resource does not exist (deleted meanwhile); other errors throw.
std::optional<nlohmann::json> restGetJsonIfExists(const std::string& uri);
std::string restPost(const std::string& uri, const void* body, std::size_t size);
void restPut(const std::string& uri, const std::string& body);
void restDelete(const std::string& uri);

// The DICOM file of an instance by its Orthanc id; nullopt when it no longer exists.
std::optional<std::string> dicomOfInstance(const std::string& instanceId);

// Frame 1 of a DICOM file decoded by Orthanc's own decoders (orthanc-gdcm adds JPEG 2000 and others): the
// stored values, without rescale, as the imaging fallback expects. nullopt when Orthanc cannot decode it.
std::optional<imaging::ExternalFrame> decodeWithOrthanc(const void* data, std::size_t size);

}  // namespace comcl::plugin
