// Where the engine runs: the first CUDA device when LibTorch was built with CUDA and one is visible, else
// CPU.
#pragma once

#include <torch/types.h>

#include <string>

namespace comcl::training {

torch::Device preferredDevice();
// "cpu", or "cuda:0 (NVIDIA H100 ...)"-style text for logs and status pages.
std::string describeDevice(const torch::Device& device);
// "auto" (preferredDevice), "cpu", "cuda" or "cuda:N". Throws std::invalid_argument for other text, and for
// CUDA when this LibTorch has no CUDA support or no GPU is visible (the message says which).
torch::Device parseDevice(const std::string& text);

}  // namespace comcl::training
