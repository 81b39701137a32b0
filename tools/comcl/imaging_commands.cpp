// comcl decode / index / synth: the DICOM side of the command-line tool (DCMTK).
#include <dcmtk/config/osconfig.h>
#include <dcmtk/oflog/oflog.h>

#include <CLI/CLI.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/thread_pool.hpp>
#include <chrono>
#include <filesystem>
#include <iomanip>
#include <iostream>
#include <mutex>
#include <sstream>
#include <thread>

#include "comcl/imaging/batch_allocator.h"
#include "comcl/imaging/decode.h"
#include "comcl/imaging/ingest.h"
#include "comcl/imaging/png.h"
#include "comcl/imaging/synth.h"
#include "comcl/storage/image_cache.h"
#include "comcl/storage/index.h"
#include "commands.h"

namespace fs = std::filesystem;

namespace comcl::cli {
namespace {

std::string formatNumber(double value) {
  std::ostringstream out;
  out << std::setprecision(6) << value;
  return out.str();
}

std::string orNone(const std::optional<std::string>& value) {
  return value && !value->empty() ? *value : "(none)";
}

void printDecodeReport(const std::string& file, const imaging::DecodeResult& r, const std::string& outPath,
                       int bits) {
  const auto& m = r.metadata;
  const auto& rep = r.report;
  std::cout << "file:              " << file << "\n"
            << "SOP class:         "
            << (m.sopClassName.empty() ? m.sopClassUid : m.sopClassName + " (" + m.sopClassUid + ")") << "\n"
            << "transfer syntax:   " << m.transferSyntaxName << " (" << m.transferSyntaxUid << ")\n"
            << "photometric:       " << m.photometric
            << (rep.inverted ? " (inverted so that bright = dense)" : "") << "\n"
            << "pixels:            " << m.cols << " x " << m.rows << ", " << m.samplesPerPixel
            << " sample(s), " << m.bitsStored << " of " << m.bitsAllocated << " bits, "
            << (m.pixelRepresentation ? "signed" : "unsigned") << ", " << m.frames << " frame(s)"
            << (m.frames > 1 ? " (first used)" : "") << "\n"
            << "rescale:           slope " << formatNumber(rep.rescaleSlope) << ", intercept "
            << formatNumber(rep.rescaleIntercept)
            << (rep.modalityLutSequence ? " (modality LUT sequence)" : "") << "\n"
            << "window:            " << rep.windowSource;
  if (rep.windowWidth > 0) {
    std::cout << ", center " << formatNumber(rep.windowCenter) << ", width " << formatNumber(rep.windowWidth);
  }
  std::cout << "\n"
            << "output:            " << rep.outputWidth << " x " << rep.outputHeight << ", "
            << (r.image.channels == 3 ? "RGB" : "grey") << ", " << bits << "-bit PNG -> " << outPath << "\n";
  if (rep.content.width != rep.outputWidth || rep.content.height != rep.outputHeight) {
    std::cout << "letterbox:         image " << rep.content.width << " x " << rep.content.height << " at ("
              << rep.content.x << ", " << rep.content.y << "), black padding\n";
  }
  std::cout << "patient/study:     PatientID " << orNone(m.patientId) << ", StudyDate " << orNone(m.studyDate)
            << ", StudyInstanceUID " << (m.studyInstanceUid.empty() ? "(none)" : m.studyInstanceUid) << "\n"
            << "view:              " << orNone(m.viewPosition) << ", laterality " << orNone(m.laterality)
            << ", modality " << orNone(m.modality) << ", body part " << orNone(m.bodyPart) << "\n";
  if (!m.missing.empty()) {
    std::cout << "missing tags:      ";
    for (std::size_t i = 0; i < m.missing.size(); ++i)
      std::cout << (i ? ", " : "") << m.missing[i];
    std::cout << "\n";
  }
  if (!r.reason.empty())
    std::cout << "note:              " << r.reason << "\n";
}

int runDecode(const std::string& file, const std::string& out, int size, int bits, bool grey) {
  imaging::DecodeOptions options;
  options.size = size;
  options.keepColour = !grey;
  const imaging::DecodeResult r = imaging::decodeFile(file, options);
  if (r.outcome != imaging::DecodeOutcome::Decoded) {
    std::cerr << "comcl decode: " << file << ": " << imaging::toString(r.outcome) << ": " << r.reason << "\n";
    return r.outcome == imaging::DecodeOutcome::Skipped ? 3 : 2;
  }
  imaging::writePng(out, r.image, bits);
  printDecodeReport(file, r, out, bits);
  return 0;
}

std::vector<std::string> listFiles(const std::string& dir) {
  std::vector<std::string> files;
  for (auto it = fs::recursive_directory_iterator(dir, fs::directory_options::skip_permission_denied);
       it != fs::recursive_directory_iterator(); ++it) {
    if (it->is_regular_file())
      files.push_back(it->path().string());
  }
  std::sort(files.begin(), files.end());
  return files;
}

int runIndex(const std::string& dir, const std::string& dbPath, std::string cachePath,
             const storage::CacheFormat& format, unsigned jobs, bool replace) {
  if (!fs::is_directory(dir)) {
    std::cerr << "comcl index: " << dir << " is not a directory\n";
    return 2;
  }
  if (cachePath.empty())
    cachePath = dbPath + ".images";
  storage::Index index(dbPath);
  storage::ImageCache cache(cachePath, format);
  imaging::IngestOptions options;
  options.replaceExisting = replace;
  imaging::Ingestor ingestor(index, cache, options);

  const auto started = std::chrono::steady_clock::now();
  const std::vector<std::string> files = listFiles(dir);
  std::mutex resultsMutex;
  std::vector<std::pair<std::string, imaging::IngestOutcome>> problems;
  std::int64_t added = 0, unchanged = 0, replaced = 0;
  std::vector<std::string> errors;

  // Decoding runs on a pool; index and cache serialise their own writes.
  boost::asio::thread_pool pool(jobs);
  for (const std::string& file : files) {
    boost::asio::post(pool, [&, file] {
      try {
        imaging::IngestOutcome o = ingestor.ingestFile(file);
        std::lock_guard<std::mutex> lock(resultsMutex);
        if (o.alreadyIndexed) {
          ++unchanged;
        } else if (o.replaced) {
          ++replaced;
        } else {
          ++added;
        }
        if (o.state != storage::DecodeState::Decoded)
          problems.emplace_back(file, std::move(o));
      } catch (const std::exception& e) {  // storage errors: report and go on with the next file
        std::lock_guard<std::mutex> lock(resultsMutex);
        errors.push_back(file + ": " + e.what());
      }
    });
  }
  pool.join();
  cache.flush();
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();

  std::sort(problems.begin(), problems.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
  const storage::IndexSummary s = index.summary();
  std::cout << "indexed " << files.size() << " files from " << dir << " in " << std::fixed
            << std::setprecision(2) << seconds << " s (" << std::setprecision(1)
            << (seconds > 0 ? files.size() / seconds : 0.0) << " files/s, " << jobs << " worker(s))\n"
            << "  this run:    " << added << " new, " << replaced << " replaced, " << unchanged
            << " already indexed, " << errors.size() << " errors\n"
            << "  database:    " << dbPath << "\n"
            << "  image cache: " << cachePath << " (" << storage::describe(format) << ")\n"
            << "index totals:\n"
            << "  files:       " << s.files << "\n"
            << "  images:      " << s.images << " decoded\n"
            << "  patients:    " << s.patients << "\n"
            << "  studies:     " << s.studies << "\n"
            << "  series:      " << s.series << "\n";
  printCounts("states", s.byState);
  printCounts("views", s.views);
  printCounts("modalities", s.modalities);
  if (!s.metadataIssues.empty())
    printCounts("metadata", s.metadataIssues);
  if (!problems.empty()) {
    std::cout << "not decoded in this run:\n";
    for (const auto& [file, o] : problems) {
      std::cout << "  " << file << ": " << storage::toString(o.state) << ": " << o.reason << "\n";
    }
  }
  for (const auto& e : errors)
    std::cerr << "comcl index: error: " << e << "\n";
  return errors.empty() ? 0 : 1;
}

template <typename T, typename Parse>
std::vector<T> parseList(const std::vector<std::string>& names, Parse parse) {
  std::vector<T> values;
  for (const auto& n : names)
    values.push_back(parse(n));
  return values;
}

int runSynth(imaging::SynthOptions options, const std::vector<std::string>& encodings,
             const std::vector<std::string>& degradations) {
  if (!encodings.empty())
    options.encodings = parseList<imaging::Encoding>(encodings, imaging::encodingFromString);
  if (!degradations.empty()) {
    options.degradations = parseList<imaging::Degradation>(degradations, imaging::degradationFromString);
  }
  const auto started = std::chrono::steady_clock::now();
  const std::vector<imaging::SynthImage> images = imaging::writeSyntheticArchive(options);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  std::map<std::string, std::int64_t> byDegradation, byEncoding;
  int lesions = 0;
  for (const auto& im : images) {
    ++byDegradation[imaging::toString(im.degradation)];
    ++byEncoding[imaging::toString(im.encoding)];
    lesions += im.lesion ? 1 : 0;
  }
  std::cout << "wrote " << images.size() << " images for " << options.patients << " patients to "
            << options.outputDir << " in " << std::fixed << std::setprecision(2) << seconds << " s (seed "
            << options.seed << ")\n"
            << "  manifest:     " << (fs::path(options.outputDir) / "manifest.csv").string()
            << ", manifest.json\n"
            << "  with lesion:  " << lesions << "\n";
  printCounts("degradations", byDegradation, 14);
  printCounts("encodings", byEncoding, 14);
  return 0;
}

}  // namespace

void printCounts(const std::string& title, const std::map<std::string, std::int64_t>& counts, int width) {
  std::cout << "  " << std::left << std::setw(width) << (title + ":") << std::right;
  if (counts.empty())
    std::cout << "(none)";
  bool first = true;
  for (const auto& [name, count] : counts) {
    std::cout << (first ? "" : ", ") << (name.empty() ? "(missing)" : name) << " " << count;
    first = false;
  }
  std::cout << "\n";
}

void addIndexTargetOptions(CLI::App* command, std::string& db, std::string& cache,
                           storage::CacheFormat& format) {
  command->add_option("--db", db, "SQLite index database")->capture_default_str();
  command->add_option("--cache", cache, "Image cache file (default: DB path + .images)");
  command->add_option("--size", format.size, "Cache image size")
      ->capture_default_str()
      ->check(CLI::Range(16, 4096));
  command->add_option("--bits", format.bitsPerSample, "Cache depth")
      ->capture_default_str()
      ->check(CLI::IsMember({8, 16}));
  command
      ->add_option("--channels", format.channels,
                   "Cache channels: 1 (grey radiographs; colour becomes luminance) or 3 (colour photographs "
                   "such as fundus images; grey images fill all three)")
      ->capture_default_str()
      ->check(CLI::IsMember({1, 3}));
}

void addImagingCommands(CLI::App& app, std::vector<Command>& commands) {
  // Options live as long as the process: the commands run after parsing, from main().
  struct Options {
    std::string decodeFile, decodeOut;
    int decodeSize = 256, decodeBits = 8;
    bool decodeGrey = false;
    std::string indexDir, indexDb = "comcl.sqlite", indexCache;
    storage::CacheFormat indexFormat;
    unsigned indexJobs = std::max(1u, std::thread::hardware_concurrency());
    bool indexReplace = false;
    imaging::SynthOptions synthOptions;
    std::vector<std::string> synthEncodings, synthDegradations;
    bool noLateral = false;
  };
  static Options o;

  CLI::App* decode =
      app.add_subcommand("decode", "Decode one DICOM file to the normalised image the system trains on");
  decode->add_option("file", o.decodeFile, "DICOM file")->required()->check(CLI::ExistingFile);
  decode->add_option("--out", o.decodeOut, "PNG to write")->required();
  decode->add_option("--size", o.decodeSize, "Letterbox into SIZE x SIZE (0: native size)")
      ->check(CLI::Range(0, 8192));
  decode->add_option("--bits", o.decodeBits, "PNG depth")->check(CLI::IsMember({8, 16}));
  decode->add_flag("--grey", o.decodeGrey, "Convert colour images to luminance");

  CLI::App* index =
      app.add_subcommand("index", "Index a folder of DICOM files into the database and image cache");
  index->add_option("dir", o.indexDir, "Folder to walk (recursively)")->required();
  addIndexTargetOptions(index, o.indexDb, o.indexCache, o.indexFormat);
  index->add_option("-j,--jobs", o.indexJobs, "Decoding threads")
      ->capture_default_str()
      ->check(CLI::Range(1u, 256u));
  index->add_flag("--replace", o.indexReplace, "Re-decode and replace instances that are already indexed");

  CLI::App* synth =
      app.add_subcommand("synth", "Write a synthetic DICOM archive with a ground-truth manifest");
  synth->add_option("--out", o.synthOptions.outputDir, "Output folder")->required();
  synth->add_option("--patients", o.synthOptions.patients, "Number of patients")
      ->capture_default_str()
      ->check(CLI::Range(1, 1000000));
  synth->add_option("--studies", o.synthOptions.studiesPerPatient, "Studies per patient")
      ->capture_default_str()
      ->check(CLI::Range(1, 1000));
  synth->add_option("--size", o.synthOptions.size, "Image rows")
      ->capture_default_str()
      ->check(CLI::Range(32, 4096));
  synth->add_option("--seed", o.synthOptions.seed, "Random seed")->capture_default_str();
  synth->add_option("--lesion-fraction", o.synthOptions.lesionFraction, "Share of patients with a lesion")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 1.0));
  synth->add_option("--degraded-fraction", o.synthOptions.degradedFraction, "Share of degraded images")
      ->capture_default_str()
      ->check(CLI::Range(0.0, 1.0));
  synth
      ->add_option(
          "--encodings", o.synthEncodings,
          "Encodings to draw from: Mono2Uint16, Mono1Uint16, Mono2Uint8, Mono2Int16Rescale, BigEndian, "
          "Deflate, JpegLossless, JpegLsLossless, Rle, JpegBaseline")
      ->delimiter(',');
  synth
      ->add_option("--degradations", o.synthDegradations,
                   "Degradations to draw from: Blur, Noise, Underexposed, Overexposed, LowResolution, "
                   "JpegArtefacts")
      ->delimiter(',');
  synth->add_flag("--no-lateral", o.noLateral, "Frontal views only");

  commands.push_back({decode, [] {
                        imaging::tuneAllocatorForBatchDecoding();
                        return runDecode(o.decodeFile, o.decodeOut, o.decodeSize, o.decodeBits, o.decodeGrey);
                      }});
  commands.push_back({index, [] {
                        imaging::tuneAllocatorForBatchDecoding();
                        return runIndex(o.indexDir, o.indexDb, o.indexCache, o.indexFormat, o.indexJobs,
                                        o.indexReplace);
                      }});
  commands.push_back({synth, [] {
                        o.synthOptions.lateralViews = !o.noLateral;
                        return runSynth(o.synthOptions, o.synthEncodings, o.synthDegradations);
                      }});
}

void quietDicomToolkit(bool verbose) {
  if (!verbose)
    OFLog::configure(OFLogger::OFF_LOG_LEVEL);  // our reasons already say what went wrong
}

}  // namespace comcl::cli
