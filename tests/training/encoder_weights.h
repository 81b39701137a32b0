// Whether two encoder directories (encoder_file.h) hold exactly the same weights: the determinism and resume
// tests of the pre-training methods compare runs with it.
#pragma once

#include <torch/torch.h>

#include <string>

#include "comcl/training/encoder_file.h"
#include "comcl/training/model_io.h"

namespace comcl::testing {

inline bool sameEncoderWeights(const std::string& a, const std::string& b) {
  const auto x = training::stateOf(*training::loadEncoder(a)),
             y = training::stateOf(*training::loadEncoder(b));
  if (x.size() != y.size())
    return false;
  for (std::size_t i = 0; i < x.size(); ++i) {
    if (x[i].name != y[i].name || !torch::equal(x[i].tensor, y[i].tensor))
      return false;
  }
  return true;
}

}  // namespace comcl::testing
