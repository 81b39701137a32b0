// The Detector lesion source: a TorchScript module run on the lesion images (contract in lesions.h).
#include <torch/script.h>

#include <filesystem>
#include <sstream>
#include <string>
#include <vector>

#include "comcl/training/tensor_batch.h"
#include "image_ops.h"
#include "lesion_sources.h"

namespace comcl::training::detail {

namespace {

namespace F = torch::nn::functional;

std::string shapeText(const torch::Tensor& t) {
  std::ostringstream text;
  text << "[";
  for (std::int64_t d = 0; d < t.dim(); ++d)
    text << (d ? ", " : "") << t.size(d);
  text << "]";
  return text.str();
}

// The loader's message without LibTorch's C++ backtrace (its first line is the reason).
std::string reasonOf(const c10::Error& e) {
  std::string text = e.what_without_backtrace();
  if (const auto end = text.find('\n'); end != std::string::npos)
    text.resize(end);
  return text;
}

class Detector {
 public:
  Detector(const LesionConfig& config, torch::Device device)
      : path_(config.detectorPath), size_(config.detectorImageSize) {
    if (!std::filesystem::is_regular_file(path_))
      throw LesionError("cannot load the lesion detector " + path_ + ": no such file");
    try {
      module_ = torch::jit::load(path_, device);
    } catch (const c10::Error& e) {
      throw LesionError("cannot load the lesion detector " + path_ +
                        " (is it a TorchScript file saved with " + "torch.jit.save?): " + reasonOf(e));
    } catch (const std::exception& e) {
      throw LesionError("cannot load the lesion detector " + path_ + ": " + e.what());
    }
    module_.eval();
  }

  // Candidate boxes of each image of the batch, normalised.
  std::vector<std::vector<LesionBox>> run(const torch::Tensor& batch) {
    const std::int64_t count = batch.size(0);
    torch::jit::IValue output;
    try {
      output = module_.forward({batch});
    } catch (const c10::Error& e) {
      throw LesionError("the lesion detector " + path_ + " failed on a batch of shape " + shapeText(batch) +
                        ": " + reasonOf(e));
    } catch (const std::exception& e) {  // e.g. torch::jit::JITException from a failed assert or raise
      std::string reason = e.what();
      if (const auto end = reason.find('\n'); end != std::string::npos)
        reason.resize(end);
      throw LesionError("the lesion detector " + path_ + " failed on a batch of shape " + shapeText(batch) +
                        ": " + reason);
    }
    const std::string expected =
        "a Tensor [B, M, 5] or a List[Tensor] of B tensors [M_i, 5] (B = " + std::to_string(count) +
        " images, rows x0, y0, x1, y1, score)";
    std::vector<torch::Tensor> perImage;
    if (output.isTensor()) {
      const torch::Tensor t = output.toTensor();
      if (t.dim() != 3 || t.size(0) != count || t.size(2) != 5)
        throw LesionError("the lesion detector " + path_ + " returned a tensor of shape " + shapeText(t) +
                          "; expected " + expected);
      for (std::int64_t b = 0; b < count; ++b)
        perImage.push_back(t[b]);
    } else if (output.isTensorList() || output.isList()) {
      std::vector<torch::jit::IValue> items;
      if (output.isTensorList()) {
        for (const torch::Tensor& t : output.toTensorVector())
          items.emplace_back(t);
      } else {
        for (const torch::jit::IValue& item : output.toListRef())
          items.push_back(item);
      }
      if (static_cast<std::int64_t>(items.size()) != count)
        throw LesionError("the lesion detector " + path_ + " returned a list of " +
                          std::to_string(items.size()) + " items; expected " + expected);
      for (const torch::jit::IValue& item : items) {
        if (!item.isTensor())
          throw LesionError("the lesion detector " + path_ + " returned a list holding a " + item.tagKind() +
                            "; expected " + expected);
        const torch::Tensor t = item.toTensor();
        if (t.dim() != 2 || t.size(1) != 5)
          throw LesionError("the lesion detector " + path_ + " returned a list holding a tensor of shape " +
                            shapeText(t) + "; expected " + expected);
        perImage.push_back(t);
      }
    } else {
      throw LesionError("the lesion detector " + path_ + " returned a " + output.tagKind() + "; expected " +
                        expected);
    }

    std::vector<std::vector<LesionBox>> boxes(static_cast<std::size_t>(count));
    const auto side = static_cast<float>(size_);
    for (std::int64_t b = 0; b < count; ++b) {
      const torch::Tensor rows =
          perImage[static_cast<std::size_t>(b)].to(torch::kCPU, torch::kFloat).contiguous();
      if (rows.numel() > 0 && !torch::isfinite(rows).all().item<bool>())
        throw LesionError("the lesion detector " + path_ + " returned NaN or infinite values (image " +
                          std::to_string(b) + " of a batch of " + std::to_string(count) + ", shape " +
                          shapeText(rows) + ")");
      const float* v = rows.data_ptr<float>();
      for (std::int64_t m = 0; m < rows.size(0); ++m, v += 5) {
        if (!(v[4] > 0))
          continue;  // padding
        boxes[static_cast<std::size_t>(b)].push_back(
            {v[0] / side, v[1] / side, v[2] / side, v[3] / side, v[4]});
      }
    }
    return boxes;
  }

 private:
  std::string path_;
  int size_;
  torch::jit::Module module_;
};

}  // namespace

std::vector<std::vector<LesionBox>> detectorCandidates(const LesionRun& run, const std::vector<int>& images,
                                                       nlohmann::json& details) {
  const LesionConfig& config = run.config;
  Detector detector(config, run.device);
  torch::NoGradGuard noGrad;
  std::vector<std::vector<LesionBox>> candidates;
  candidates.reserve(images.size());
  const auto batch = static_cast<std::size_t>(config.batchSize);
  for (std::size_t start = 0; start < images.size(); start += batch) {
    run.checkCancel();
    const std::vector<int> chunk(
        images.begin() + static_cast<std::ptrdiff_t>(start),
        images.begin() + static_cast<std::ptrdiff_t>(std::min(images.size(), start + batch)));
    const std::int64_t side = config.detectorImageSize;
    const torch::Tensor x =
        detail::resizedTo(
            loadBatch(run.cache, run.set.cachedRefs(chunk), run.device, config.detectorChannels), side)
            .contiguous();
    for (std::vector<LesionBox>& boxes : detector.run(x))
      candidates.push_back(std::move(boxes));
    run.report("lesion proposals: detector ran on " + std::to_string(candidates.size()) + " of " +
               std::to_string(images.size()) + " lesion images");
  }
  details = {{"detector", config.detectorPath}, {"detectorImageSize", config.detectorImageSize}};
  return candidates;
}

}  // namespace comcl::training::detail
