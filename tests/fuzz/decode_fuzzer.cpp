// libFuzzer target: arbitrary bytes through the decoder, normalisation and quality metrics. Whatever the
// input, the outcome must be an outcome (no crash, no sanitizer report, no exception). See docs/testing.md.
#include <dcmtk/config/osconfig.h>
#include <dcmtk/oflog/oflog.h>

#include <cstddef>
#include <cstdint>

#include "comcl/imaging/decode.h"
#include "comcl/imaging/quality.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static const bool quiet = [] {
    OFLog::configure(OFLogger::OFF_LOG_LEVEL);
    return true;
  }();
  (void)quiet;
  comcl::imaging::DecodeOptions options;
  options.size = 64;
  options.maxPixels = std::size_t{1} << 22;  // keeps each run small; the limit itself is tested elsewhere
  const comcl::imaging::DecodeResult r = comcl::imaging::decodeBuffer(data, size, options);
  if (r.outcome == comcl::imaging::DecodeOutcome::Decoded) {
    comcl::imaging::measureQuality(r.image, r.report.content);
    (void)comcl::imaging::quantise(r.image, 8);
  }
  return 0;
}
