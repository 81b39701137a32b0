// PNG output of normalised images (libpng).
#pragma once

#include <string>

#include "comcl/imaging/image.h"

namespace comcl::imaging {

// Writes a grey or RGB image as an 8- or 16-bit PNG (samples quantised as by quantise()). Throws
// std::runtime_error with the path and the reason on failure; a partly written file is removed.
void writePng(const std::string& path, const Image& image, int bitsPerSample = 8);
// Reads an 8- or 16-bit grey or RGB PNG (for tests and for importing PNG-only data sets). Grey+alpha and
// RGBA lose their alpha, palette images become RGB and 1/2/4-bit grey is expanded; the result has 1 or 3
// channels in [0, 1]. Throws std::runtime_error with the path and the reason (not a PNG, truncated, ...).
Image readPng(const std::string& path);

}  // namespace comcl::imaging
