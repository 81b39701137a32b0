// Decode + normalise + cache throughput on a list of DICOM files, in the calling thread (run it under
// `taskset -c 0` for one core). The same work as bench/decode_pipeline.py: read the file, decode the first
// frame, modality LUT, VOI window (header, else percentile), MONOCHROME1 inversion, letterbox to the cache
// size with an anti-aliased filter, quantise, write into the memory-mapped image cache.
//
// usage: bench_decode [--size 256] [--passes 3] [--cache /tmp/x.images] [--default-allocator] FILE...
// prints one JSON object per pass and a summary line with the best pass.
#include <dcmtk/config/osconfig.h>
#include <dcmtk/oflog/oflog.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <string>
#include <vector>

#include "comcl/imaging/batch_allocator.h"
#include "comcl/imaging/codecs.h"
#include "comcl/imaging/decode.h"
#include "comcl/storage/cache_key.h"
#include "comcl/storage/image_cache.h"

using namespace comcl;

int main(int argc, char** argv) {
  int size = 256;
  int passes = 3;
  std::string cachePath = "/tmp/comcl-bench-decode.images";
  bool defaultAllocator = false;
  std::vector<std::string> files;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--size" && i + 1 < argc) {
      size = std::stoi(argv[++i]);
    } else if (arg == "--passes" && i + 1 < argc) {
      passes = std::stoi(argv[++i]);
    } else if (arg == "--default-allocator") {
      defaultAllocator = true;
    } else if (arg == "--cache" && i + 1 < argc) {
      cachePath = argv[++i];
    } else {
      files.push_back(arg);
    }
  }
  if (files.empty()) {
    std::cerr << "usage: bench_decode [--size N] [--passes N] [--cache PATH] FILE...\n";
    return 2;
  }
  std::remove(cachePath.c_str());
  storage::ImageCache cache(cachePath, storage::CacheFormat{size, 8});
  imaging::DecodeOptions options;
  options.size = size;
  options.keepColour = false;
  imaging::registerDicomDecoders();
  // As the comcl tool does; --default-allocator measures glibc's defaults instead.
  if (!defaultAllocator)
    imaging::tuneAllocatorForBatchDecoding();
  OFLog::configure(OFLogger::OFF_LOG_LEVEL);  // as in the comcl tool: outcomes carry the reasons

  double best = 0;
  for (int pass = 0; pass < passes; ++pass) {
    int decoded = 0, skipped = 0;
    double megapixels = 0;
    const auto start = std::chrono::steady_clock::now();
    for (std::size_t i = 0; i < files.size(); ++i) {
      const imaging::DecodeResult r = imaging::decodeFile(files[i], options);
      if (r.outcome != imaging::DecodeOutcome::Decoded) {
        ++skipped;
        continue;
      }
      const std::vector<std::uint8_t> pixels = imaging::quantise(r.image, 8);
      cache.write(static_cast<std::int64_t>(i), storage::cacheKey(files[i]), pixels.data());
      megapixels += r.metadata.rows * static_cast<double>(r.metadata.cols) / 1e6;
      ++decoded;
    }
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    const double rate = decoded / seconds;
    best = std::max(best, rate);
    std::printf(
        "{\"impl\": \"comcl-cpp\", \"pass\": %d, \"images\": %d, \"skipped\": %d, \"seconds\": %.4f, "
        "\"images_per_s\": %.2f, \"source_megapixels_per_s\": %.2f}\n",
        pass, decoded, skipped, seconds, rate, megapixels / seconds);
  }
  std::printf("best images/s: %.2f\n", best);
  std::remove(cachePath.c_str());
  return 0;
}
