#include "orthanc_api.h"

#include <cstring>
#include <memory>

namespace comcl::plugin {

namespace {

OrthancPluginContext* context = nullptr;

void check(OrthancPluginErrorCode code, const std::string& what) {
  if (code != OrthancPluginErrorCode_Success) {
    throw OrthancCallError(what + ": " + OrthancPluginGetErrorDescription(context, code), code);
  }
}

struct ImageDeleter {
  void operator()(OrthancPluginImage* image) const { OrthancPluginFreeImage(context, image); }
};
using ImagePtr = std::unique_ptr<OrthancPluginImage, ImageDeleter>;

}  // namespace

void setOrthancContext(OrthancPluginContext* orthanc) {
  context = orthanc;
}

OrthancPluginContext* orthancContext() {
  return context;
}

void logInfo(const std::string& message) {
  OrthancPluginLogInfo(context, ("comcl: " + message).c_str());
}
void logWarning(const std::string& message) {
  OrthancPluginLogWarning(context, ("comcl: " + message).c_str());
}
void logError(const std::string& message) {
  OrthancPluginLogError(context, ("comcl: " + message).c_str());
}

OrthancBuffer::~OrthancBuffer() {
  if (buffer_.data != nullptr)
    OrthancPluginFreeMemoryBuffer(context, &buffer_);
}

std::string OrthancBuffer::text() const {
  return buffer_.data == nullptr ? std::string()
                                 : std::string(static_cast<const char*>(buffer_.data), size());
}

nlohmann::json restGetJson(const std::string& uri) {
  OrthancBuffer answer;
  check(OrthancPluginRestApiGet(context, answer.out(), uri.c_str()), "GET " + uri);
  return nlohmann::json::parse(answer.text());
}

std::optional<nlohmann::json> restGetJsonIfExists(const std::string& uri) {
  try {
    return restGetJson(uri);
  } catch (const OrthancCallError& e) {
    if (e.notFound())
      return std::nullopt;
    throw;
  }
}

std::string restPost(const std::string& uri, const void* body, std::size_t size) {
  OrthancBuffer answer;
  check(OrthancPluginRestApiPost(context, answer.out(), uri.c_str(), body, static_cast<uint32_t>(size)),
        "POST " + uri);
  return answer.text();
}

void restPut(const std::string& uri, const std::string& body) {
  OrthancBuffer answer;
  check(OrthancPluginRestApiPut(context, answer.out(), uri.c_str(), body.data(),
                                static_cast<uint32_t>(body.size())),
        "PUT " + uri);
}

void restDelete(const std::string& uri) {
  check(OrthancPluginRestApiDelete(context, uri.c_str()), "DELETE " + uri);
}

std::optional<std::string> dicomOfInstance(const std::string& instanceId) {
  OrthancBuffer dicom;
  const OrthancPluginErrorCode code =
      OrthancPluginGetDicomForInstance(context, dicom.out(), instanceId.c_str());
  if (code == OrthancPluginErrorCode_UnknownResource || code == OrthancPluginErrorCode_InexistentItem)
    return std::nullopt;
  check(code, "reading the DICOM file of instance " + instanceId);
  return dicom.text();
}

std::optional<imaging::ExternalFrame> decodeWithOrthanc(const void* data, std::size_t size) {
  const ImagePtr image(OrthancPluginDecodeDicomImage(context, data, static_cast<uint32_t>(size), 0));
  if (!image)
    return std::nullopt;
  imaging::ExternalFrame frame;
  switch (OrthancPluginGetImagePixelFormat(context, image.get())) {
    case OrthancPluginPixelFormat_Grayscale8:
      frame.kind = imaging::ExternalFrame::Kind::Grey8;
      break;
    case OrthancPluginPixelFormat_Grayscale16:
      frame.kind = imaging::ExternalFrame::Kind::Grey16;
      break;
    case OrthancPluginPixelFormat_SignedGrayscale16:
      frame.kind = imaging::ExternalFrame::Kind::SignedGrey16;
      break;
    case OrthancPluginPixelFormat_RGB24:
      frame.kind = imaging::ExternalFrame::Kind::Rgb24;
      break;
    default:
      return std::nullopt;  // float, 32-bit and RGB48 frames are not radiographs this plugin handles
  }
  frame.width = static_cast<int>(OrthancPluginGetImageWidth(context, image.get()));
  frame.height = static_cast<int>(OrthancPluginGetImageHeight(context, image.get()));
  frame.pitch = OrthancPluginGetImagePitch(context, image.get());
  const auto* pixels = static_cast<const std::uint8_t*>(OrthancPluginGetImageBuffer(context, image.get()));
  frame.bytes.assign(pixels, pixels + frame.pitch * static_cast<std::size_t>(frame.height));
  return frame;
}

}  // namespace comcl::plugin
