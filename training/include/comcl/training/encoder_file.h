// A pre-trained encoder on disk: the backbone the linear probe and fine-tuning start from.
//   encoder.json  {"format": "comcl-encoder", "formatVersion": 1, "architecture": "resnet18", "channels": 1,
//                  "imageSize": 224, "normalisation": {"mean": [0.5], "std": [0.25]}, "method": "medaug",
//                  "pairs": "same-patient/same-studies/all-lateralities", "dataSnapshot": "data-...",
//                  "epochs": 20, "finalLoss": 4.2, "createdAt": "...", "config": {...}}
//   encoder.pt    the backbone's parameters and buffers under torchvision's names (conv1.weight, ...,
//                 fc.weight), as a torch::serialize archive
//   encoder.pth   the same state dict written with torch::pickle_save: `torch.load("encoder.pth")` in Python
//                 gives a dict that torchvision's resnet18 accepts with load_state_dict (fc aside).
// Written atomically (temporary directory, fsync, rename).
#pragma once

#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "comcl/training/resnet.h"

namespace comcl::training {

struct EncoderInfo {
  std::string architecture = "resnet18";
  int channels = 1;
  int imageSize = 224;
  double mean = 0.5;  // images in [0, 1] are normalised as (x - mean) / std before the network
  double stddev = 0.25;
  nlohmann::json details = nlohmann::json::object();  // method, pairs, dataSnapshot, epochs, config, ...
};

// Builds a ResNet for architecture "resnet18"/"resnet50" (ModelError otherwise).
std::shared_ptr<ResNet> makeBackbone(const std::string& architecture, int channels, int outputs);

void saveEncoder(const std::string& directory, const EncoderInfo& info, ResNet& backbone);
// Loads encoder.json + encoder.pt; ModelError naming the file and the problem (missing, unreadable, a tensor
// missing or of the wrong shape).
std::shared_ptr<ResNet> loadEncoder(const std::string& directory, EncoderInfo* info = nullptr);
EncoderInfo readEncoderInfo(const std::string& directory);

}  // namespace comcl::training
