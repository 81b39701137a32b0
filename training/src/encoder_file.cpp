#include "comcl/training/encoder_file.h"

#include <filesystem>
#include <fstream>
#include <sstream>

#include "comcl/training/model_io.h"

namespace comcl::training {

namespace fs = std::filesystem;

namespace {

constexpr const char* kFormat = "comcl-encoder";
constexpr int kFormatVersion = 1;

nlohmann::json toJson(const EncoderInfo& info) {
  nlohmann::json json = info.details;
  json["format"] = kFormat;
  json["formatVersion"] = kFormatVersion;
  json["architecture"] = info.architecture;
  json["channels"] = info.channels;
  json["imageSize"] = info.imageSize;
  json["normalisation"] = {{"mean", {info.mean}}, {"std", {info.stddev}}};
  if (!json.contains("createdAt"))
    json["createdAt"] = utcNow();
  return json;
}

}  // namespace

std::shared_ptr<ResNet> makeBackbone(const std::string& architecture, int channels, int outputs) {
  if (architecture == "resnet18")
    return std::make_shared<ResNet>(18, channels, outputs);
  if (architecture == "resnet50")
    return std::make_shared<ResNet>(50, channels, outputs);
  throw ModelError("unknown backbone \"" + architecture + "\" (known: resnet18, resnet50)");
}

void saveEncoder(const std::string& directory, const EncoderInfo& info, ResNet& backbone) {
  writeDirectoryAtomically(directory, [&](const fs::path& temp) {
    writeFileAtomically((temp / "encoder.json").string(), toJson(info).dump(2) + "\n");
    torch::serialize::OutputArchive archive;
    writeState(archive, backbone);
    saveArchiveAtomically(archive, (temp / "encoder.pt").string());
    exportStateDict(backbone, (temp / "encoder.pth").string());
  });
}

EncoderInfo readEncoderInfo(const std::string& directory) {
  const fs::path path = fs::path(directory) / "encoder.json";
  std::ifstream in(path);
  if (!in)
    throw ModelError(path.string() + " is missing: not an encoder directory (comcl pretrain writes one)");
  nlohmann::json json;
  try {
    in >> json;
  } catch (const std::exception& e) {
    throw ModelError("cannot parse " + path.string() + ": " + firstLine(e.what()));
  }
  try {
    if (json.value("format", "") != kFormat)
      throw ModelError("format is not \"comcl-encoder\"");
    if (json.value("formatVersion", 0) != kFormatVersion)
      throw ModelError("unsupported formatVersion " + json.value("formatVersion", nlohmann::json()).dump());
    EncoderInfo info;
    info.architecture = json.at("architecture").get<std::string>();
    info.channels = json.at("channels").get<int>();
    info.imageSize = json.at("imageSize").get<int>();
    info.mean = json.at("normalisation").at("mean").at(0).get<double>();
    info.stddev = json.at("normalisation").at("std").at(0).get<double>();
    if (info.channels != 1 && info.channels != 3)
      throw ModelError("channels must be 1 or 3");
    if (info.imageSize < 8 || !(info.stddev > 0))
      throw ModelError("imageSize or normalisation out of range");
    for (const char* key :
         {"format", "formatVersion", "architecture", "channels", "imageSize", "normalisation"})
      json.erase(key);
    info.details = json;
    return info;
  } catch (const ModelError& e) {
    throw ModelError(path.string() + ": " + e.what());
  } catch (const std::exception& e) {
    throw ModelError(path.string() + ": " + firstLine(e.what()));
  }
}

std::shared_ptr<ResNet> loadEncoder(const std::string& directory, EncoderInfo* infoOut) {
  const EncoderInfo info = readEncoderInfo(directory);
  std::shared_ptr<ResNet> backbone = makeBackbone(info.architecture, info.channels, 1);
  const std::string weights = (fs::path(directory) / "encoder.pt").string();
  torch::serialize::InputArchive archive;
  loadArchive(archive, weights);
  try {
    readStateStrict(archive, *backbone);
  } catch (const ModelError& e) {
    throw ModelError(weights + " does not match " + info.architecture + ": " + e.what());
  }
  if (infoOut)
    *infoOut = info;
  return backbone;
}

}  // namespace comcl::training
