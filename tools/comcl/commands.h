// The comcl command-line tool is a set of subcommands registered by modules: the DICOM side (decode, index,
// synth, imports) needs DCMTK; the training side (pairs, pretrain, evaluation, score) needs only LibTorch, so
// that a training-only build on a GPU machine still has a CLI.
#pragma once

#include <CLI/CLI.hpp>
#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "comcl/storage/image_cache.h"

namespace comcl::cli {

// A parsed subcommand and what running it means; run() returns the process exit code.
struct Command {
  CLI::App* subcommand = nullptr;
  std::function<int()> run;
};

#ifdef COMCL_WITH_IMAGING
void addImagingCommands(CLI::App& app, std::vector<Command>& commands);
// "  title: a 1, b 2" with the title padded to `width` characters (summaries of index and import).
void printCounts(const std::string& title, const std::map<std::string, std::int64_t>& counts, int width = 13);
// --db, --cache, --size, --bits: where a command that writes images puts them.
void addIndexTargetOptions(CLI::App* command, std::string& db, std::string& cache,
                           storage::CacheFormat& format);
void addImportCommands(CLI::App& app, std::vector<Command>& commands);
// Silences DCMTK's logger unless --verbose (our own messages already say what went wrong).
void quietDicomToolkit(bool verbose);
#endif
void addTrainingCommands(CLI::App& app, std::vector<Command>& commands);
// import-boxes and lesions (CoMCL's lesion boxes); LibTorch only, like the training commands.
void addLesionCommands(CLI::App& app, std::vector<Command>& commands);

}  // namespace comcl::cli
