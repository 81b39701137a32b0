// Calibration of the quality flags (docs/quality.md): measures every image the way the ingest step does
// (decode, normalise, letterbox to the cache size, measureQuality inside the content rectangle), flags it
// with the given or default thresholds, prints one CSV row per image and a summary per data set: counts per
// flag and per reason, percentiles of every metric and, for a synthetic archive, the confusion between its
// ground-truth degradation and the flags.
//
// usage: calibrate_quality [--data DIR] [--synth DIR] [--set FIELD=VALUE]... [--size N] [--csv FILE]
//                          [--png-as-stored] [--dump DIR] [DICOM file or folder]...
//   --data DIR    a shared data root: the PNGs listed in DIR/*/manifest.csv (column `file`) and every .dcm
//                 file below DIR (one data set per folder of DICOM files' manifest or parent folder)
//   --synth DIR   a synthetic archive (comcl synth): its manifest.csv gives the ground truth per file
//   --set         overrides one threshold, e.g. --set sharpnessUsable=30 (field names of QualityThresholds)
//   --csv FILE    writes the CSV there instead of standard output (the summary goes to standard error
//                 unless --csv is given, then to standard output)
//   --png-as-stored  measures PNGs as stored; by default they get the decoder's percentile window first, as
//                 the same pixels stored as DICOM without a window would (decode.h)
//   --dump DIR    also writes each cache image as DIR/<data set>__<folder>__<file stem>.png (to look at)
#include <dcmtk/config/osconfig.h>
#include <dcmtk/oflog/oflog.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iomanip>
#include <iostream>
#include <map>
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "comcl/imaging/codecs.h"
#include "comcl/imaging/decode.h"
#include "comcl/imaging/png.h"
#include "comcl/imaging/quality.h"
#include "comcl/imaging/quality_flags.h"
#include "comcl/imaging/resize.h"

namespace fs = std::filesystem;
using namespace comcl::imaging;

namespace {

// ---------------------------------------------------------------------------------------------------------
// CSV input (RFC 4180: quoted fields may hold commas, quotes and newlines)

using CsvRow = std::map<std::string, std::string>;

std::vector<std::vector<std::string>> parseCsv(const std::string& text) {
  std::vector<std::vector<std::string>> rows;
  std::vector<std::string> row;
  std::string field;
  bool quoted = false;
  bool any = false;
  for (std::size_t i = 0; i < text.size(); ++i) {
    const char c = text[i];
    if (quoted) {
      if (c == '"' && i + 1 < text.size() && text[i + 1] == '"') {
        field += '"';
        ++i;
      } else if (c == '"') {
        quoted = false;
      } else {
        field += c;
      }
      continue;
    }
    if (c == '"') {
      quoted = true;
      any = true;
    } else if (c == ',') {
      row.push_back(std::move(field));
      field.clear();
      any = true;
    } else if (c == '\n' || c == '\r') {
      if (c == '\r' && i + 1 < text.size() && text[i + 1] == '\n') {
        ++i;
      }
      if (any || !field.empty()) {
        row.push_back(std::move(field));
        rows.push_back(std::move(row));
      }
      row.clear();
      field.clear();
      any = false;
    } else {
      field += c;
      any = true;
    }
  }
  if (any || !field.empty()) {
    row.push_back(std::move(field));
    rows.push_back(std::move(row));
  }
  return rows;
}

std::vector<CsvRow> readManifest(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    throw std::runtime_error("cannot read " + path.string());
  }
  std::stringstream buffer;
  buffer << in.rdbuf();
  const auto rows = parseCsv(buffer.str());
  std::vector<CsvRow> out;
  for (std::size_t r = 1; r < rows.size(); ++r) {
    CsvRow row;
    for (std::size_t c = 0; c < rows[0].size() && c < rows[r].size(); ++c) {
      row[rows[0][c]] = rows[r][c];
    }
    out.push_back(std::move(row));
  }
  return out;
}

std::string csvField(const std::string& text) {
  if (text.find_first_of(",\"\n") == std::string::npos) {
    return text;
  }
  std::string out = "\"";
  for (char c : text) {
    out += c == '"' ? std::string("\"\"") : std::string(1, c);
  }
  return out + "\"";
}

// ---------------------------------------------------------------------------------------------------------
// Inputs and measurements

struct Input {
  std::string dataset;
  fs::path path;
  std::string view;
  std::string truth;  // synthetic ground truth (degradation), else empty
};

struct Measurement {
  Input input;
  bool ok = false;
  std::string error;
  int rows = 0;
  int cols = 0;
  QualityMetrics metrics;
  QualityAssessment assessment;
};

// The metrics in CSV / summary order, with how to read each from QualityMetrics.
const std::vector<std::pair<const char*, double QualityMetrics::*>> kMetrics = {
    {"sharpness", &QualityMetrics::sharpness},         {"noise", &QualityMetrics::noise},
    {"contrast", &QualityMetrics::contrast},           {"clipLow", &QualityMetrics::clipLow},
    {"clipHigh", &QualityMetrics::clipHigh},           {"dynamicRange", &QualityMetrics::dynamicRange},
    {"meanIntensity", &QualityMetrics::meanIntensity}, {"bodyClipLow", &QualityMetrics::bodyClipLow},
    {"bodyClipHigh", &QualityMetrics::bodyClipHigh},   {"bodyMean", &QualityMetrics::bodyMean},
};

// Threshold fields by name, for --set.
const std::map<std::string, std::function<void(QualityThresholds&, double)>>& thresholdSetters() {
  static const std::map<std::string, std::function<void(QualityThresholds&, double)>> setters = {
      {"sharpnessUsable", [](QualityThresholds& t, double v) { t.sharpnessUsable = v; }},
      {"sharpnessReject", [](QualityThresholds& t, double v) { t.sharpnessReject = v; }},
      {"noiseUsable", [](QualityThresholds& t, double v) { t.noiseUsable = v; }},
      {"noiseReject", [](QualityThresholds& t, double v) { t.noiseReject = v; }},
      {"bodyClipHighUsable", [](QualityThresholds& t, double v) { t.bodyClipHighUsable = v; }},
      {"bodyClipHighReject", [](QualityThresholds& t, double v) { t.bodyClipHighReject = v; }},
      {"bodyClipLowUsable", [](QualityThresholds& t, double v) { t.bodyClipLowUsable = v; }},
      {"bodyClipLowReject", [](QualityThresholds& t, double v) { t.bodyClipLowReject = v; }},
      {"contrastUsable", [](QualityThresholds& t, double v) { t.contrastUsable = v; }},
      {"contrastReject", [](QualityThresholds& t, double v) { t.contrastReject = v; }},
      {"dynamicRangeUsable", [](QualityThresholds& t, double v) { t.dynamicRangeUsable = v; }},
      {"dynamicRangeReject", [](QualityThresholds& t, double v) { t.dynamicRangeReject = v; }},
      {"shortSideUsable", [](QualityThresholds& t, double v) { t.shortSideUsable = static_cast<int>(v); }},
      {"shortSideReject", [](QualityThresholds& t, double v) { t.shortSideReject = static_cast<int>(v); }},
  };
  return setters;
}

// The decoder's percentile window (decode.h: a DICOM without a VOI LUT or window): the `clip` and 1 - clip
// quantiles of the 8- or 16-bit levels map to 0 and 1, linearly, clamped. Applied to PNGs so that they are
// measured as the same pixels would be once stored as DICOM.
void percentileWindow(Image& image, double clip) {
  constexpr int kLevels = 65536;
  std::vector<std::size_t> histogram(kLevels, 0);
  for (float v : image.pixels) {
    ++histogram[static_cast<std::size_t>(std::lround(std::clamp(static_cast<double>(v), 0.0, 1.0) * 65535))];
  }
  const double count = static_cast<double>(image.pixels.size());
  double seen = 0;
  int lo = 0;
  int hi = 0;
  bool haveLo = false;
  for (int level = 0; level < kLevels; ++level) {
    const auto n = histogram[static_cast<std::size_t>(level)];
    if (n == 0) {
      continue;
    }
    seen += static_cast<double>(n);
    if (!haveLo && seen > clip * count) {
      lo = level;
      haveLo = true;
    }
    hi = level;
    if (seen >= (1.0 - clip) * count) {
      break;
    }
  }
  const double low = lo / 65535.0;
  const double width = std::max((hi - lo) / 65535.0, 1e-6);
  for (float& v : image.pixels) {
    v = static_cast<float>(std::clamp((static_cast<double>(v) - low) / width, 0.0, 1.0));
  }
}

Measurement measure(const Input& input, int size, bool windowPngs, const QualityThresholds& thresholds,
                    const std::string& dumpDir) {
  Measurement m;
  m.input = input;
  Image cacheImage;
  Rect content;
  try {
    if (input.path.extension() == ".png") {
      Image native = toGrey(readPng(input.path.string()));
      if (windowPngs) {
        percentileWindow(native, DecodeOptions{}.percentileClip);
      }
      m.rows = native.height;
      m.cols = native.width;
      Letterboxed boxed = letterbox(native, size);
      cacheImage = std::move(boxed.image);
      content = boxed.content;
    } else {
      DecodeOptions options;
      options.size = size;
      options.keepColour = false;
      DecodeResult result = decodeFile(input.path.string(), options);
      if (result.outcome != DecodeOutcome::Decoded) {
        m.error = std::string(toString(result.outcome)) + ": " + result.reason;
        return m;
      }
      m.rows = result.metadata.rows;
      m.cols = result.metadata.cols;
      if (m.input.view.empty() && result.metadata.viewPosition) {
        m.input.view = *result.metadata.viewPosition;
      }
      cacheImage = std::move(result.image);
      content = result.report.content;
    }
  } catch (const std::exception& e) {
    m.error = e.what();
    return m;
  }
  m.metrics = measureQuality(cacheImage, content);
  m.assessment = assessQuality(m.metrics, m.rows, m.cols, thresholds);
  m.ok = true;
  if (!dumpDir.empty()) {
    std::string name = input.dataset + "__" + input.path.parent_path().filename().string() + "__" +
                       input.path.stem().string() + ".png";
    std::replace(name.begin(), name.end(), '/', '_');
    writePng((fs::path(dumpDir) / name).string(), cacheImage);
  }
  return m;
}

// PNGs of every manifest below root, and every DICOM file below root.
std::vector<Input> sharedDataInputs(const fs::path& root) {
  std::vector<Input> inputs;
  std::vector<fs::path> folders;
  for (const auto& entry : fs::directory_iterator(root)) {
    if (entry.is_directory()) {
      folders.push_back(entry.path());
    }
  }
  std::sort(folders.begin(), folders.end());
  for (const fs::path& folder : folders) {
    const std::string name = folder.filename().string();
    if (fs::exists(folder / "manifest.csv")) {
      for (const CsvRow& row : readManifest(folder / "manifest.csv")) {
        const auto file = row.find("file");
        if (file != row.end() && fs::path(file->second).extension() == ".png") {
          const auto view = row.find("view");
          inputs.push_back({name, folder / file->second, view == row.end() ? "" : view->second, ""});
        }
      }
    }
    std::vector<fs::path> dicoms;
    for (const auto& entry : fs::recursive_directory_iterator(folder)) {
      if (entry.is_regular_file() && entry.path().extension() == ".dcm") {
        dicoms.push_back(entry.path());
      }
    }
    std::sort(dicoms.begin(), dicoms.end());
    for (const fs::path& dicom : dicoms) {
      inputs.push_back({name + "/dicom", dicom, "", ""});
    }
  }
  return inputs;
}

std::vector<Input> synthInputs(const fs::path& root) {
  std::vector<Input> inputs;
  for (const CsvRow& row : readManifest(root / "manifest.csv")) {
    inputs.push_back({"synthetic:" + root.filename().string(), root / row.at("file"), row.at("view"),
                      row.at("degradation")});
  }
  return inputs;
}

// ---------------------------------------------------------------------------------------------------------
// Output

void writeCsv(std::ostream& out, const std::vector<Measurement>& measurements) {
  out << "dataset,file,view,truth,rows,cols";
  for (const auto& [name, field] : kMetrics) {
    out << ',' << name;
  }
  out << ",flag,reasons\n";
  for (const Measurement& m : measurements) {
    out << csvField(m.input.dataset) << ',' << csvField(m.input.path.string()) << ','
        << csvField(m.input.view) << ',' << m.input.truth << ',' << m.rows << ',' << m.cols;
    for (const auto& [name, field] : kMetrics) {
      out << ',' << std::setprecision(5) << m.metrics.*field;
    }
    std::string reasons;
    for (const std::string& r : m.assessment.reasons) {
      reasons += (reasons.empty() ? "" : ";") + r;
    }
    out << ',' << (m.ok ? toString(m.assessment.flag) : "error") << ',' << csvField(m.ok ? reasons : m.error)
        << '\n';
  }
}

double percentile(std::vector<double> values, double fraction) {
  std::sort(values.begin(), values.end());
  const double position = fraction * static_cast<double>(values.size() - 1);
  const std::size_t below = static_cast<std::size_t>(std::floor(position));
  const std::size_t above = std::min(values.size() - 1, below + 1);
  const double t = position - static_cast<double>(below);
  return values[below] * (1 - t) + values[above] * t;
}

// The reason a synthetic degradation should produce ("" for none and for JPEG artefacts, which no rule is
// meant to catch).
std::string expectedReason(const std::string& degradation) {
  static const std::map<std::string, std::string> expected = {{"Blur", "blurred"},
                                                              {"Noise", "noisy"},
                                                              {"Underexposed", "underexposed"},
                                                              {"Overexposed", "overexposed"},
                                                              {"LowResolution", "low-resolution"}};
  const auto it = expected.find(degradation);
  return it == expected.end() ? "" : it->second;
}

void writeSummary(std::ostream& out, const std::vector<Measurement>& measurements,
                  const QualityThresholds& thresholds) {
  std::vector<std::string> datasets;
  for (const Measurement& m : measurements) {
    if (std::find(datasets.begin(), datasets.end(), m.input.dataset) == datasets.end()) {
      datasets.push_back(m.input.dataset);
    }
  }
  out << "thresholds (change with --set FIELD=VALUE, fields of QualityThresholds):\n  blurred: sharpness < "
      << thresholds.sharpnessUsable << " usable, < " << thresholds.sharpnessReject
      << " reject\n  noisy: noise > " << thresholds.noiseUsable << " usable, > " << thresholds.noiseReject
      << " reject\n  underexposed: bodyClipHigh > " << thresholds.bodyClipHighUsable << " usable, > "
      << thresholds.bodyClipHighReject << " reject\n  overexposed: bodyClipLow > "
      << thresholds.bodyClipLowUsable << " usable, > " << thresholds.bodyClipLowReject
      << " reject\n  low-contrast: contrast < " << thresholds.contrastUsable << " usable, < "
      << thresholds.contrastReject << " reject; dynamicRange < " << thresholds.dynamicRangeUsable
      << " usable, < " << thresholds.dynamicRangeReject << " reject\n  low-resolution: short side < "
      << thresholds.shortSideUsable << " usable, < " << thresholds.shortSideReject << " reject\n";

  const std::vector<double> fractions = {0.01, 0.05, 0.10, 0.25, 0.50, 0.75, 0.90, 0.95, 0.99};
  for (const std::string& dataset : datasets) {
    std::vector<const Measurement*> ok;
    int errors = 0;
    for (const Measurement& m : measurements) {
      if (m.input.dataset == dataset) {
        if (m.ok) {
          ok.push_back(&m);
        } else {
          ++errors;
        }
      }
    }
    std::map<QualityFlag, int> flags;
    std::map<std::string, int> reasons;
    for (const Measurement* m : ok) {
      ++flags[m->assessment.flag];
      for (const std::string& r : m->assessment.reasons) {
        ++reasons[r];
      }
    }
    out << "\n== " << dataset << ": " << ok.size() << " measured, " << errors << " not decoded\n";
    out << "flags:";
    for (QualityFlag f : {QualityFlag::Good, QualityFlag::Usable, QualityFlag::Reject}) {
      out << ' ' << toString(f) << ' ' << flags[f];
    }
    out << "\nreasons:";
    for (const std::string& r : qualityReasons()) {
      out << ' ' << r << ' ' << reasons[r];
    }
    out << '\n';
    if (ok.empty()) {
      continue;
    }
    out << std::left << std::setw(14) << "metric";
    for (double f : fractions) {
      out << std::right << std::setw(9) << ("p" + std::to_string(static_cast<int>(std::lround(f * 100))));
    }
    out << '\n';
    for (const auto& [name, field] : kMetrics) {
      std::vector<double> values;
      for (const Measurement* m : ok) {
        values.push_back(m->metrics.*field);
      }
      out << std::left << std::setw(14) << name << std::right;
      for (double f : fractions) {
        out << std::setw(9) << std::setprecision(4) << percentile(values, f);
      }
      out << '\n';
    }
    std::vector<double> sides;
    for (const Measurement* m : ok) {
      sides.push_back(std::min(m->rows, m->cols));
    }
    out << std::left << std::setw(14) << "shortSide" << std::right;
    for (double f : fractions) {
      out << std::setw(9) << std::setprecision(4) << percentile(sides, f);
    }
    out << '\n';

    // Ground truth against flags (synthetic archives).
    std::map<std::string, std::map<std::string, int>> confusion;
    std::map<std::string, std::pair<int, int>>
        matched;  // images with the expected reason / with one expected
    std::map<std::string, std::map<std::string, int>> reasonsByTruth;
    for (const Measurement* m : ok) {
      if (m->input.truth.empty()) {
        continue;
      }
      ++confusion[m->input.truth][toString(m->assessment.flag)];
      for (const std::string& r : m->assessment.reasons) {
        ++reasonsByTruth[m->input.truth][r];
      }
      const std::string expected = expectedReason(m->input.truth);
      if (!expected.empty()) {
        auto& [hit, total] = matched[m->input.truth];
        ++total;
        const auto& rs = m->assessment.reasons;
        hit += std::find(rs.begin(), rs.end(), expected) != rs.end() ? 1 : 0;
      }
    }
    if (!confusion.empty()) {
      out << "ground truth -> flag (good / usable / reject), expected reason found, all reasons:\n";
      for (const auto& [truth, counts] : confusion) {
        out << "  " << std::left << std::setw(14) << truth << std::right;
        for (const char* f : {"good", "usable", "reject"}) {
          const auto it = counts.find(f);
          out << std::setw(5) << (it == counts.end() ? 0 : it->second);
        }
        const auto hit = matched.find(truth);
        if (hit != matched.end()) {
          out << "   " << expectedReason(truth) << ' ' << hit->second.first << '/' << hit->second.second;
        } else {
          out << "   (no expected reason)";
        }
        out << "   [";
        bool first = true;
        for (const auto& [r, n] : reasonsByTruth[truth]) {
          out << (first ? "" : ", ") << r << ' ' << n;
          first = false;
        }
        out << "]\n";
      }
    }
  }
}

int usage() {
  std::cerr
      << "usage: calibrate_quality [--data DIR] [--synth DIR] [--set FIELD=VALUE]... [--size N]\n"
         "                         [--csv FILE] [--png-as-stored] [--dump DIR] [DICOM file or folder]...\n";
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  int size = 256;
  std::string csvPath;
  std::string dumpDir;
  bool windowPngs = true;
  QualityThresholds thresholds;
  std::vector<Input> inputs;
  try {
    for (int i = 1; i < argc; ++i) {
      const std::string arg = argv[i];
      const bool hasValue = i + 1 < argc;
      if (arg == "--data" && hasValue) {
        const auto more = sharedDataInputs(argv[++i]);
        inputs.insert(inputs.end(), more.begin(), more.end());
      } else if (arg == "--synth" && hasValue) {
        const auto more = synthInputs(argv[++i]);
        inputs.insert(inputs.end(), more.begin(), more.end());
      } else if (arg == "--set" && hasValue) {
        const std::string assignment = argv[++i];
        const std::size_t eq = assignment.find('=');
        const auto setter = thresholdSetters().find(assignment.substr(0, eq));
        if (eq == std::string::npos || setter == thresholdSetters().end()) {
          std::cerr << "unknown threshold in --set " << assignment << '\n';
          return usage();
        }
        setter->second(thresholds, std::stod(assignment.substr(eq + 1)));
      } else if (arg == "--size" && hasValue) {
        size = std::stoi(argv[++i]);
      } else if (arg == "--csv" && hasValue) {
        csvPath = argv[++i];
      } else if (arg == "--dump" && hasValue) {
        dumpDir = argv[++i];
        fs::create_directories(dumpDir);
      } else if (arg == "--png-as-stored") {
        windowPngs = false;
      } else if (arg == "-h" || arg == "--help" || arg.rfind("--", 0) == 0) {
        return usage();
      } else if (fs::is_directory(arg)) {
        std::vector<fs::path> files;
        for (const auto& entry : fs::recursive_directory_iterator(arg)) {
          if (entry.is_regular_file() && entry.path().extension() == ".dcm") {
            files.push_back(entry.path());
          }
        }
        std::sort(files.begin(), files.end());
        for (const fs::path& file : files) {
          inputs.push_back({"files", file, "", ""});
        }
      } else {
        inputs.push_back({"files", arg, "", ""});
      }
    }
    validate(thresholds);
  } catch (const std::exception& e) {
    std::cerr << "calibrate_quality: " << e.what() << '\n';
    return 2;
  }
  if (inputs.empty()) {
    return usage();
  }
  registerDicomDecoders();
  OFLog::configure(OFLogger::OFF_LOG_LEVEL);

  std::vector<Measurement> measurements;
  measurements.reserve(inputs.size());
  for (const Input& input : inputs) {
    measurements.push_back(measure(input, size, windowPngs, thresholds, dumpDir));
  }
  if (csvPath.empty()) {
    writeCsv(std::cout, measurements);
    writeSummary(std::cerr, measurements, thresholds);
  } else {
    std::ofstream csv(csvPath);
    writeCsv(csv, measurements);
    if (!csv) {
      std::cerr << "calibrate_quality: cannot write " << csvPath << '\n';
      return 1;
    }
    writeSummary(std::cout, measurements, thresholds);
  }
  return 0;
}
