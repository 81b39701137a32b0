#include "comcl/training/model_io.h"

#include <fcntl.h>
#include <torch/serialize.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <ctime>
#include <fstream>
#include <map>
#include <random>
#include <set>
#include <sstream>

namespace comcl::training {

namespace fs = std::filesystem;

namespace {

[[noreturn]] void ioError(const std::string& what, const fs::path& path) {
  throw ModelError("cannot " + what + " " + path.string() + ": " + std::strerror(errno));
}

void writeText(const fs::path& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(text.data(), static_cast<std::streamsize>(text.size()));
  out.close();
  if (!out)
    ioError("write", path);
}

// Renames without replacing: a plain rename() would silently replace an empty directory created meanwhile.
void renameNoReplace(const fs::path& from, const fs::path& to) {
  if (::renameat2(AT_FDCWD, from.c_str(), AT_FDCWD, to.c_str(), RENAME_NOREPLACE) == 0)
    return;
  if (errno == EEXIST || errno == ENOTEMPTY)
    throw ModelError("refusing to overwrite the existing directory " + to.string());
  if (errno != EINVAL && errno != ENOSYS)
    ioError("rename " + from.string() + " to", to);
  // A file system without RENAME_NOREPLACE: check, then rename (rename refuses a non-empty target).
  if (fs::exists(to))
    throw ModelError("refusing to overwrite the existing directory " + to.string());
  if (::rename(from.c_str(), to.c_str()) != 0)
    ioError("rename " + from.string() + " to", to);
}

// A unique temporary name beside `path`.
fs::path temporaryBeside(const fs::path& path) {
  std::random_device random;
  return path.parent_path() / ("." + path.filename().string() + ".tmp-" + std::to_string(::getpid()) + "-" +
                               std::to_string(random()));
}

}  // namespace

void fsyncPath(const fs::path& path, bool directory) {
  const int fd = ::open(path.c_str(), (directory ? O_RDONLY | O_DIRECTORY : O_RDONLY) | O_CLOEXEC);
  if (fd < 0)
    ioError("open", path);
  const int status = ::fsync(fd);
  const int savedErrno = errno;
  ::close(fd);
  if (status != 0) {
    errno = savedErrno;
    ioError("fsync", path);
  }
}

std::string utcNow() {
  const std::time_t now = std::chrono::system_clock::to_time_t(std::chrono::system_clock::now());
  std::tm utc{};
  gmtime_r(&now, &utc);
  char text[32];
  std::strftime(text, sizeof text, "%Y-%m-%dT%H:%M:%SZ", &utc);
  return text;
}

std::string firstLine(const std::string& text) {
  return text.substr(0, text.find('\n'));
}

std::string shapeText(const torch::Tensor& tensor) {
  std::ostringstream out;
  out << tensor.sizes();
  return out.str();
}

std::vector<NamedTensor> stateOf(torch::nn::Module& network) {
  std::vector<NamedTensor> state;
  for (const auto& item : network.named_parameters(true))
    state.push_back({item.key(), item.value(), false});
  for (const auto& item : network.named_buffers(true))
    state.push_back({item.key(), item.value(), true});
  return state;
}

void readStateStrict(torch::serialize::InputArchive& archive, torch::nn::Module& network) {
  const std::vector<NamedTensor> state = stateOf(network);
  std::set<std::string> expected;
  torch::NoGradGuard noGrad;
  for (const NamedTensor& item : state) {
    expected.insert(item.name);
    torch::Tensor stored;
    if (!archive.try_read(item.name, stored, item.isBuffer))
      throw ModelError("tensor \"" + item.name + "\" is missing");
    if (!stored.sizes().equals(item.tensor.sizes())) {
      throw ModelError("tensor \"" + item.name + "\" has shape " + shapeText(stored) +
                       " but the architecture needs " + shapeText(item.tensor));
    }
    item.tensor.copy_(stored);
  }
  for (const std::string& key : archive.keys()) {
    if (expected.count(key) == 0)
      throw ModelError("tensor \"" + key + "\" is not part of the architecture");
  }
}

std::string stateMismatch(torch::nn::Module& network, torch::nn::Module& reference) {
  std::map<std::string, torch::Tensor> given;
  for (const NamedTensor& item : stateOf(network))
    given.emplace(item.name, item.tensor);
  for (const NamedTensor& item : stateOf(reference)) {
    const auto it = given.find(item.name);
    if (it == given.end())
      return "the network has no tensor \"" + item.name + "\"";
    if (!it->second.sizes().equals(item.tensor.sizes())) {
      return "tensor \"" + item.name + "\" has shape " + shapeText(it->second) +
             " but the architecture needs " + shapeText(item.tensor);
    }
    given.erase(it);
  }
  if (!given.empty())
    return "tensor \"" + given.begin()->first + "\" is not part of the architecture";
  return {};
}

void writeState(torch::serialize::OutputArchive& archive, torch::nn::Module& module) {
  torch::NoGradGuard noGrad;
  for (const NamedTensor& item : stateOf(module))
    archive.write(item.name, item.tensor.detach().to(torch::kCPU), item.isBuffer);
}

void loadArchive(torch::serialize::InputArchive& archive, const std::string& path, torch::Device device) {
  std::error_code error;
  if (!fs::exists(path, error))
    throw ModelError(path + " is missing");
  try {
    archive.load_from(path, device);
  } catch (const std::exception& e) {
    throw ModelError("cannot read " + path + ": " + firstLine(e.what()));
  }
}

void exportStateDict(torch::nn::Module& module, const std::string& path) {
  writeFileAtomically(path, pickledStateDict(module));
}

std::string pickledStateDict(torch::nn::Module& module) {
  c10::Dict<std::string, torch::Tensor> dict;
  {
    torch::NoGradGuard noGrad;
    for (const NamedTensor& item : stateOf(module))
      dict.insert(item.name, item.tensor.detach().to(torch::kCPU).contiguous());
  }
  const std::vector<char> bytes = torch::pickle_save(torch::IValue(dict));
  return std::string(bytes.begin(), bytes.end());
}

namespace {

// Writes `path` through a temporary file beside it: write(temp) fills it, it is fsynced and renamed over
// `path`, then the directory is fsynced. The temporary file goes when anything fails.
void replaceAtomically(const std::string& path, const std::function<void(const fs::path& temp)>& write) {
  const fs::path target(path);
  const fs::path temp = temporaryBeside(target);
  try {
    write(temp);
    fsyncPath(temp, false);
    if (::rename(temp.c_str(), target.c_str()) != 0)
      ioError("rename " + temp.string() + " to", target);
  } catch (...) {
    std::error_code error;
    fs::remove(temp, error);
    throw;
  }
  fsyncPath(target.parent_path().empty() ? fs::path(".") : target.parent_path(), true);
}

}  // namespace

void writeFileAtomically(const std::string& path, const std::string& bytes) {
  replaceAtomically(path, [&](const fs::path& temp) { writeText(temp, bytes); });
}

void saveArchiveAtomically(torch::serialize::OutputArchive& archive, const std::string& path) {
  replaceAtomically(path, [&](const fs::path& temp) {
    try {
      archive.save_to(temp.string());
    } catch (const std::exception& e) {
      throw ModelError("cannot write " + temp.string() + ": " + firstLine(e.what()));
    }
  });
}

void writeDirectoryAtomically(const std::string& directory,
                              const std::function<void(const fs::path& temp)>& fill) {
  const fs::path target = fs::absolute(fs::path(directory)).lexically_normal();
  const fs::path name = target.filename().empty() ? target.parent_path().filename() : target.filename();
  const fs::path parent =
      target.filename().empty() ? target.parent_path().parent_path() : target.parent_path();
  const fs::path finalPath = parent / name;
  std::error_code error;
  if (fs::exists(finalPath, error))
    throw ModelError("refusing to overwrite the existing directory " + finalPath.string());
  fs::create_directories(parent, error);
  if (error)
    throw ModelError("cannot create " + parent.string() + ": " + error.message());
  const fs::path temp = temporaryBeside(finalPath);
  if (!fs::create_directory(temp, error) || error)
    throw ModelError("cannot create " + temp.string() + ": " + error.message());
  try {
    fill(temp);
    for (const auto& entry : fs::directory_iterator(temp))
      fsyncPath(entry.path(), entry.is_directory());
    fsyncPath(temp, true);
    renameNoReplace(temp, finalPath);
  } catch (...) {
    fs::remove_all(temp, error);
    throw;
  }
  fsyncPath(parent, true);
}

}  // namespace comcl::training
