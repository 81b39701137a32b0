// PNG output of normalised images (libpng).
#pragma once

#include <string>

#include "comcl/imaging/image.h"

namespace comcl::imaging {

// Writes a grey or RGB image as an 8- or 16-bit PNG. Throws std::runtime_error with the reason on failure.
void writePng(const std::string& path, const Image& image, int bitsPerSample = 8);
// Reads an 8- or 16-bit grey or RGB PNG (for tests and for importing PNG-only data sets).
Image readPng(const std::string& path);

}  // namespace comcl::imaging
