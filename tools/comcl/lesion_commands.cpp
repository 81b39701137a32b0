// comcl import-boxes / lesions: lesion boxes supplied with the labels, and a look at the lesion proposals
// CoMCL would train on. LibTorch and the index only, so these commands exist in a training-only build too.
#include <unistd.h>

#include <fstream>
#include <iomanip>
#include <iostream>

#include "comcl/storage/image_cache.h"
#include "comcl/storage/index.h"
#include "comcl/training/dataset.h"
#include "comcl/training/lesions.h"
#include "commands.h"

namespace comcl::cli {

namespace {

using namespace comcl::training;

int runImportBoxes(const std::string& csv, const std::string& db, const BoxImportOptions& options) {
  if (::access(db.c_str(), F_OK) != 0) {
    std::cerr << "comcl import-boxes: no such database: " << db << "\n";
    return 2;
  }
  storage::Index index(db);
  BoxImportReport r;
  try {
    r = importLesionBoxes(index, csv, options);
  } catch (const LesionError& e) {
    std::cerr << "comcl import-boxes: " << e.what() << "\n";
    return 2;
  }
  std::cout << "lesion boxes from " << r.path << " (" << r.rows << " rows)\n"
            << "  stored:      " << r.stored << " boxes on " << r.images << " images (matched by "
            << r.matchColumn << "), " << r.failures.size() << " rows failed\n"
            << "  source:      " << r.source << "\n"
            << "  database:    " << db << "\n";
  for (const auto& [finding, count] : r.byFinding)
    std::cout << "  " << finding << ": " << count << " boxes\n";
  for (const BoxImportFailure& f : r.failures)
    std::cerr << "comcl import-boxes: row " << f.row << " (line " << f.line << "): " << f.reason << "\n";
  return r.failures.empty() ? 0 : 1;
}

struct LesionsOptions {
  std::string db = "comcl.sqlite";
  std::string cache;
  std::string studyBy = "uid";
  std::string source = "cam";
  std::string configFile;
  std::string json;
  LesionConfig config;
};

int runLesions(LesionsOptions& o) {
  if (::access(o.db.c_str(), F_OK) != 0) {
    std::cerr << "comcl lesions: no index at " << o.db << "\n";
    return 2;
  }
  LesionConfig config = o.config;
  if (!o.configFile.empty()) {
    std::ifstream in(o.configFile);
    if (!in) {
      std::cerr << "comcl lesions: cannot read " << o.configFile << "\n";
      return 2;
    }
    nlohmann::json json = nlohmann::json::parse(in);
    if (!json.contains("label"))
      json["label"] = config.label;
    config = LesionConfig::fromJson(json);
  } else {
    config.source = lesionSourceKindFromString(o.source);
  }
  storage::Index index(o.db);
  const TrainingSet set = TrainingSet::fromIndex(index, studyGroupingFromString(o.studyBy));
  const std::string cachePath = o.cache.empty() ? o.db + ".images" : o.cache;
  const storage::ImageCache cache(cachePath, storage::ImageCache::formatOf(cachePath));
  LesionProposals proposals;
  try {
    proposals = proposeLesions(index, set, cache, config,
                               [](const std::string& message) { std::cerr << message << "\n"; });
  } catch (const LesionError& e) {
    std::cerr << "comcl lesions: " << e.what() << "\n";
    return 1;
  }
  const nlohmann::json summary = proposals.summary();
  std::cout << summary.dump(2) << "\n";
  if (!o.json.empty()) {
    nlohmann::json boxes = nlohmann::json::object();
    for (int i : proposals.lesionImages) {
      nlohmann::json list = nlohmann::json::array();
      for (const LesionBox& b : proposals.boxes[static_cast<std::size_t>(i)])
        list.push_back(b.toJson());
      boxes[set.images()[static_cast<std::size_t>(i)].resourceId] = list;
    }
    std::ofstream out(o.json);
    out << nlohmann::json{{"config", config.toJson()}, {"summary", summary}, {"boxes", boxes}}.dump(2)
        << "\n";
    if (!out) {
      std::cerr << "comcl lesions: cannot write " << o.json << "\n";
      return 1;
    }
  }
  return 0;
}

}  // namespace

void addLesionCommands(CLI::App& app, std::vector<Command>& commands) {
  // Options live as long as the process: the commands run after parsing, from main().
  struct Options {
    std::string csv, db;
    BoxImportOptions import;
    LesionsOptions lesions;
  };
  static Options o;

  CLI::App* importBoxes = app.add_subcommand(
      "import-boxes",
      "Store lesion boxes (original image pixels) from a CSV file for CoMCL's lesion patches");
  importBoxes
      ->add_option(
          "csv", o.csv,
          "CSV with resource_id, sop_instance_uid or file; x0, y0, x1, y1; optional confidence, finding")
      ->required();
  importBoxes->add_option("--db", o.db, "SQLite index database")->required();
  importBoxes->add_option("--finding", o.import.finding, "Finding of rows without a finding column or cell");
  importBoxes->add_option("--source", o.import.source,
                          "Source stored with the boxes (default: boxes:<file name>)");
  commands.push_back({importBoxes, [] { return runImportBoxes(o.csv, o.db, o.import); }});

  LesionsOptions& l = o.lesions;
  CLI::App* lesions = app.add_subcommand(
      "lesions",
      "Propose CoMCL's lesion boxes (CAM, stored boxes or a TorchScript detector) and print a summary");
  lesions->add_option("--db", l.db, "SQLite index database")->capture_default_str();
  lesions->add_option("--cache", l.cache, "Image cache file (default: DB path + .images)");
  lesions->add_option("--study-by", l.studyBy, "uid or date")->check(CLI::IsMember({"uid", "date"}));
  lesions->add_option("--label", l.config.label, "Finding whose positive images are lesion images")
      ->required();
  lesions->add_option("--source", l.source, "cam, stored or detector")
      ->check(CLI::IsMember({"cam", "stored", "detector"}))
      ->capture_default_str();
  lesions->add_option("--detector", l.config.detectorPath, "TorchScript detector (--source detector)");
  lesions->add_option("--cam-epochs", l.config.camEpochs, "CAM model epochs")->capture_default_str();
  lesions->add_option("--cam-size", l.config.camImageSize, "CAM model image size")->capture_default_str();
  lesions->add_option("--device", l.config.device, "auto, cpu, cuda or cuda:N")->capture_default_str();
  lesions->add_option("--seed", l.config.seed, "Seed")->capture_default_str();
  lesions->add_option("--config", l.configFile,
                      "LesionConfig as JSON (replaces the options above but --label)");
  lesions->add_option("--json", l.json, "Write the config, the summary and every kept box to this JSON file");
  commands.push_back({lesions, [] { return runLesions(o.lesions); }});
}

}  // namespace comcl::cli
