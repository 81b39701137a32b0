#include "comcl/training/device.h"

#include <torch/cuda.h>

#include <stdexcept>

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

torch::Device parseDevice(const std::string& text) {
  if (text == "auto")
    return preferredDevice();
  if (text == "cpu")
    return torch::Device(torch::kCPU);
  if (text.rfind("cuda", 0) != 0)
    throw std::invalid_argument("unknown device \"" + text + "\"; accepted: auto, cpu, cuda, cuda:N");
  torch::Device device(torch::kCPU);
  try {
    device = torch::Device(text);
  } catch (const std::exception&) {
    throw std::invalid_argument("unknown device \"" + text + "\"; accepted: auto, cpu, cuda, cuda:N");
  }
  if (!torch::cuda::is_available()) {
    throw std::invalid_argument("device " + text +
                                " requested, but this LibTorch has no CUDA support or no GPU is visible; use "
                                "--device cpu or auto");
  }
  const auto index = device.has_index() ? static_cast<std::size_t>(device.index()) : 0u;
  if (index >= torch::cuda::device_count()) {
    throw std::invalid_argument("device " + text + " requested, but only " +
                                std::to_string(torch::cuda::device_count()) + " CUDA device(s) are visible");
  }
  return device;
}

}  // namespace comcl::training
