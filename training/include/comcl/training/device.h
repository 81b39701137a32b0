// Where the engine runs: the first CUDA device when LibTorch was built with CUDA and one is visible, else
// CPU.
#pragma once

#include <torch/types.h>

#include <string>

namespace comcl::training {

torch::Device preferredDevice();
// "cpu", or "cuda:0 (NVIDIA H100 ...)"-style text for logs and status pages.
std::string describeDevice(const torch::Device& device);

}  // namespace comcl::training
