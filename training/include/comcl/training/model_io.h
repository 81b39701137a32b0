// Files the training engine writes and reads: atomic writes (temporary name, fsync, rename), state dicts
// (parameters and buffers by name) checked strictly against a module, and the PyTorch-loadable export. Shared
// by model directories (scorer.h), encoders (encoder_file.h) and checkpoints (pretrain.h).
#pragma once

#include <torch/nn/module.h>
#include <torch/serialize/input-archive.h>
#include <torch/serialize/output-archive.h>

#include <filesystem>
#include <functional>
#include <stdexcept>
#include <string>
#include <vector>

namespace comcl::training {

// A model, encoder or checkpoint file that cannot be read or written, or a network that does not match it.
class ModelError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct NamedTensor {
  std::string name;
  torch::Tensor tensor;
  bool isBuffer = false;
};
// Every parameter, then every buffer, by its dotted name.
std::vector<NamedTensor> stateOf(torch::nn::Module& module);
// Why `module` does not have exactly the tensors (names and shapes) of `reference`, or "" when it does.
std::string stateMismatch(torch::nn::Module& module, torch::nn::Module& reference);

// Writes the module's state into `archive` (CPU copies).
void writeState(torch::serialize::OutputArchive& archive, torch::nn::Module& module);
// Copies the tensors of `archive` into `module` (on the module's device), refusing (ModelError) any that is
// missing, extra or misshapen, naming it and both shapes.
void readStateStrict(torch::serialize::InputArchive& archive, torch::nn::Module& module);
// Loads `path` into an archive, its tensors placed on `device`; ModelError "cannot read PATH: ..." for a
// missing or corrupt file.
void loadArchive(torch::serialize::InputArchive& archive, const std::string& path,
                 torch::Device device = torch::kCPU);

// The module's state as a name -> tensor dict written with torch::pickle_save, which Python reads with
// torch.load(path) (a plain dict of tensors; torchvision's load_state_dict accepts it).
void exportStateDict(torch::nn::Module& module, const std::string& path);
std::string pickledStateDict(torch::nn::Module& module);  // the bytes exportStateDict writes

// Atomic replacement of one file: the bytes go to a temporary file beside `path`, are fsynced, and renamed
// over `path`; the directory is fsynced. An earlier file at `path` stays intact if anything fails.
void writeFileAtomically(const std::string& path, const std::string& bytes);
void saveArchiveAtomically(torch::serialize::OutputArchive& archive, const std::string& path);
// Creates `directory` atomically: fill() writes the files into a fresh temporary directory beside it, which
// is fsynced and renamed into place. Refuses (ModelError) an existing `directory`; removes the temporary
// directory when fill() or the rename fails.
void writeDirectoryAtomically(const std::string& directory,
                              const std::function<void(const std::filesystem::path& temp)>& fill);

void fsyncPath(const std::filesystem::path& path, bool directory);
std::string utcNow();  // "2024-05-01T12:00:00Z"
std::string firstLine(const std::string& text);
std::string shapeText(const torch::Tensor& tensor);

}  // namespace comcl::training
