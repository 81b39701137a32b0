#include "comcl/training/device.h"

#include <torch/cuda.h>

namespace comcl::training {

torch::Device preferredDevice() {
  return torch::cuda::is_available() ? torch::Device(torch::kCUDA, 0) : torch::Device(torch::kCPU);
}

std::string describeDevice(const torch::Device& device) {
  std::string text = device.str();
  if (device.is_cuda())
    text += " (" + std::to_string(torch::cuda::device_count()) + " CUDA device(s) visible)";
  return text;
}

}  // namespace comcl::training
