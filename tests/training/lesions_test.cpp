// CoMCL's lesion proposals: the authors' box filter, original -> cache coordinates, the stored, detector and
// CAM sources, the messages when the labels cannot make lesion and healthy images, and boxes from CSV.
#include "comcl/training/lesions.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <torch/cuda.h>
#include <torch/script.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <functional>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "comcl/storage/cache_key.h"
#include "comcl/training/comcl_views.h"
#include "temp_dir.h"

namespace comcl::training {
namespace {

using ::testing::AllOf;
using ::testing::HasSubstr;
using ::testing::ThrowsMessage;

// An index and image cache with images painted by the test.
class Archive {
 public:
  explicit Archive(int size = 64)
      : index_(std::make_unique<storage::Index>(dir_.file("index.sqlite"))),
        cache_(std::make_unique<storage::ImageCache>(dir_.file("index.images"),
                                                     storage::CacheFormat{size, 8})) {}

  // Adds a decoded image whose pixel (x, y) is paint(x, y) (0..255); its own patient unless given; an
  // instance label "Nodule" when set. `edit` may change the row (size, content rectangle) before it is
  // stored.
  std::string add(const std::function<double(int, int)>& paint, std::optional<double> label,
                  const std::string& patient = "",
                  const std::function<void(storage::InstanceRecord&)>& edit = {}) {
    const int n = count_++;
    storage::InstanceRecord row;
    row.resourceId = "img-" + std::to_string(n);
    row.source = "/data/set/" + std::to_string(n) + ".png";
    row.sopInstanceUid = "1.2.3." + std::to_string(n);
    row.studyInstanceUid = "1.2.4." + std::to_string(n);
    row.patientKey = patient.empty() ? "P" + std::to_string(n) : patient;
    row.decodeState = storage::DecodeState::Decoded;
    const int size = cache_->format().size;
    row.rows = row.cols = row.contentWidth = row.contentHeight = size;
    if (edit)
      edit(row);
    std::vector<std::uint8_t> pixels(cache_->imageBytes());
    for (int y = 0; y < size; ++y)
      for (int x = 0; x < size; ++x)
        pixels[static_cast<std::size_t>(y * size + x)] =
            static_cast<std::uint8_t>(std::clamp(paint(x, y), 0.0, 255.0));
    const std::int64_t slot = index_->reserveCacheSlot();
    cache_->write(slot, storage::cacheKey(row.resourceId), pixels.data());
    cache_->flush();
    row.cacheSlot = slot;
    index_->upsertInstance(row);
    if (label)
      index_->putLabels({{"instance", row.resourceId, "Nodule", *label, "test"}});
    return row.resourceId;
  }
  std::string add(std::optional<double> label, const std::string& patient = "") {
    return add([](int, int) { return 80.0; }, label, patient);
  }
  // Every patient of the index in split "train" (so that no image is held out).
  void allTrain() {
    std::vector<std::pair<std::string, std::string>> splits;
    for (const auto& r : index_->decodedInstances())
      if (!index_->splitOf(*r.patientKey))
        splits.emplace_back(*r.patientKey, "train");
    index_->assignSplits(splits, 0);
  }
  TrainingSet set() { return TrainingSet::fromIndex(*index_); }
  storage::Index& index() { return *index_; }
  storage::ImageCache& cache() { return *cache_; }
  comcl::testing::TempDir& dir() { return dir_; }

 private:
  comcl::testing::TempDir dir_;
  std::unique_ptr<storage::Index> index_;
  std::unique_ptr<storage::ImageCache> cache_;
  int count_ = 0;
};

LesionBox box(float x0, float y0, float x1, float y1, float confidence = 0.9F) {
  return {x0, y0, x1, y1, confidence};
}

LesionConfig config(LesionSourceKind source) {
  LesionConfig c;
  c.label = "Nodule";
  c.source = source;
  c.device = "cpu";
  c.batchSize = 4;
  return c;
}

double iou(const LesionBox& a, const LesionBox& b) {
  const double w = std::max(0.0, static_cast<double>(std::min(a.x1, b.x1) - std::max(a.x0, b.x0)));
  const double h = std::max(0.0, static_cast<double>(std::min(a.y1, b.y1) - std::max(a.y0, b.y0)));
  const double inter = w * h;
  return inter /
         (static_cast<double>(a.width()) * a.height() + static_cast<double>(b.width()) * b.height() - inter);
}

// ---------------------------------------------------------------------------------------------------------
// Filter

TEST(LesionFilter, EachRuleDropsWhatItShouldWithItsReason) {
  const LesionFilter
      f;  // the authors' rule at 512 px: w, h <= 128, >= 5 px from the border, confidence > 0.5
  const float px = 1.0F / 512;
  EXPECT_EQ(f.rejects(box(0.3F, 0.3F, 0.4F, 0.4F)), "");
  // Size: 128 px is kept, 129 px is too large, in either direction.
  EXPECT_EQ(f.rejects(box(100 * px, 100 * px, 228 * px, 228 * px)), "");
  EXPECT_EQ(f.rejects(box(100 * px, 100 * px, 229 * px, 150 * px)), "too large");
  EXPECT_EQ(f.rejects(box(100 * px, 100 * px, 150 * px, 229 * px)), "too large");
  // Border: 5 px from an edge is kept, 4 px is near the border, on every side.
  EXPECT_EQ(f.rejects(box(5 * px, 5 * px, 50 * px, 50 * px)), "");
  EXPECT_EQ(f.rejects(box(4 * px, 100 * px, 50 * px, 150 * px)), "near border");
  EXPECT_EQ(f.rejects(box(100 * px, 4 * px, 150 * px, 50 * px)), "near border");
  EXPECT_EQ(f.rejects(box(450 * px, 100 * px, 508 * px, 150 * px)), "near border");
  EXPECT_EQ(f.rejects(box(450 * px, 450 * px, 500 * px, 507 * px)), "");
  EXPECT_EQ(f.rejects(box(450 * px, 450 * px, 500 * px, 508 * px)), "near border");
  // Confidence must exceed 0.5.
  EXPECT_EQ(f.rejects(box(0.3F, 0.3F, 0.4F, 0.4F, 0.5F)), "low confidence");
  EXPECT_EQ(f.rejects(box(0.3F, 0.3F, 0.4F, 0.4F, 0.51F)), "");
  // Outside the image, empty, not finite.
  EXPECT_EQ(f.rejects(box(0.9F, 0.3F, 1.1F, 0.4F)), "outside image");
  EXPECT_EQ(f.rejects(box(-0.01F, 0.3F, 0.1F, 0.4F)), "outside image");
  EXPECT_EQ(f.rejects(box(0.3F, 0.3F, 0.3F, 0.4F)), "empty");
  EXPECT_EQ(f.rejects(box(0.3F, 0.4F, 0.35F, 0.3F)), "empty");
  EXPECT_EQ(f.rejects(box(std::nanf(""), 0.3F, 0.4F, 0.4F)), "outside image");
  // Too small only when asked for.
  LesionFilter small = f;
  small.minSideFraction = 0.05;
  EXPECT_EQ(small.rejects(box(0.3F, 0.3F, 0.32F, 0.4F)), "too small");
  EXPECT_EQ(small.rejects(box(0.3F, 0.3F, 0.4F, 0.32F)), "too small");
  EXPECT_EQ(small.rejects(box(0.3F, 0.3F, 0.36F, 0.36F)), "");
  EXPECT_EQ(f.rejects(box(0.3F, 0.3F, 0.3001F, 0.3001F)), "");
}

TEST(LesionFilter, TheImageIsTheContentRectangleNotThePadding) {
  const LesionFilter f;
  const ContentRect content{0.0F, 0.25F, 1.0F, 0.75F};  // a wide image letterboxed: padding above and below
  EXPECT_EQ(f.rejects(box(0.3F, 0.1F, 0.4F, 0.2F), content), "outside image");  // in the padding
  EXPECT_EQ(f.rejects(box(0.3F, 0.2F, 0.4F, 0.3F), content), "outside image");  // across its edge
  EXPECT_EQ(f.rejects(box(0.3F, 0.252F, 0.4F, 0.3F), content), "near border");  // 1 px below its top
  EXPECT_EQ(f.rejects(box(0.3F, 0.26F, 0.4F, 0.3F), content), "");
  EXPECT_EQ(f.rejects(box(0.3F, 0.7F, 0.4F, 0.749F), content), "near border");
}

TEST(LesionFilter, JsonRoundTripAndBadValuesNameTheField) {
  LesionFilter f;
  f.maxSideFraction = 0.5;
  f.minSideFraction = 0.01;
  f.borderMarginFraction = 0;
  f.minConfidence = 0.9;
  const LesionFilter back = LesionFilter::fromJson(f.toJson());
  EXPECT_EQ(back.toJson(), f.toJson());
  EXPECT_THAT(
      [] {
        LesionFilter::fromJson({{"maxSideFraction", 1.5}});
      },
      ThrowsMessage<std::invalid_argument>(HasSubstr("maxSideFraction")));
  EXPECT_THAT(
      [] {
        LesionFilter::fromJson({{"minConfidence", "high"}});
      },
      ThrowsMessage<std::invalid_argument>(HasSubstr("minConfidence")));
  EXPECT_THAT(
      [] {
        LesionFilter::fromJson({{"minSideFraction", 0.3}});
      },
      ThrowsMessage<std::invalid_argument>(HasSubstr("must not exceed maxSideFraction")));
  EXPECT_THAT(
      [] {
        LesionFilter::fromJson({{"maxSide", 0.3}});
      },
      ThrowsMessage<std::invalid_argument>(HasSubstr("unknown key \"maxSide\"")));
}

TEST(LesionConfig, JsonRoundTripAndBadValuesNameTheField) {
  LesionConfig c = config(LesionSourceKind::Detector);
  c.detectorPath = "/models/det.pt";
  c.camImageSize = 96;
  c.maxBoxesPerImage = 2;
  c.trainPatientsOnly = false;
  c.split.seed = 7;
  c.seed = 11;
  c.filter.minConfidence = 0.9;
  const LesionConfig back = LesionConfig::fromJson(c.toJson());
  EXPECT_EQ(back.toJson(), c.toJson());
  EXPECT_EQ(back.source, LesionSourceKind::Detector);
  EXPECT_EQ(back.filter.minConfidence, 0.9);

  EXPECT_EQ(toString(LesionSourceKind::Cam), "cam");
  EXPECT_EQ(lesionSourceKindFromString("stored"), LesionSourceKind::Stored);
  EXPECT_THROW(lesionSourceKindFromString("boxes"), std::invalid_argument);
  EXPECT_THAT(
      [] {
        LesionConfig::fromJson({{"source", "cam"}});
      },
      ThrowsMessage<std::invalid_argument>(HasSubstr("label")));
  EXPECT_THAT(
      [] {
        LesionConfig::fromJson({{"label", "N"}, {"source", "detector"}});
      },
      ThrowsMessage<std::invalid_argument>(HasSubstr("detectorPath")));
  EXPECT_THAT(
      [] {
        LesionConfig::fromJson({{"label", "N"}, {"camEpochs", 1.5}});
      },
      ThrowsMessage<std::invalid_argument>(HasSubstr("camEpochs")));
  EXPECT_THAT(
      [] {
        LesionConfig::fromJson({{"label", "N"}, {"camThreshold", 0}});
      },
      ThrowsMessage<std::invalid_argument>(HasSubstr("camThreshold")));
  EXPECT_THAT(
      [] {
        LesionConfig::fromJson({{"label", "N"}, {"filter", {{"minConfidence", 2}}}});
      },
      ThrowsMessage<std::invalid_argument>(HasSubstr("minConfidence")));
  EXPECT_THAT(
      [] {
        LesionConfig::fromJson({{"label", "N"}, {"camEpoch", 3}});
      },
      ThrowsMessage<std::invalid_argument>(HasSubstr("unknown key \"camEpoch\"")));
}

// ---------------------------------------------------------------------------------------------------------
// Coordinates

TEST(LesionCoordinates, OriginalPixelsMapIntoThePaddedCacheImage) {
  // A 400 x 200 image letterboxed into 256 x 256: 256 x 128 at (0, 64).
  storage::InstanceRecord r;
  r.resourceId = "wide";
  r.cols = 400;
  r.rows = 200;
  r.contentX = 0;
  r.contentY = 64;
  r.contentWidth = 256;
  r.contentHeight = 128;
  const ContentRect c = contentRectOf(r, 256);
  EXPECT_FLOAT_EQ(c.x0, 0);
  EXPECT_FLOAT_EQ(c.y0, 0.25F);
  EXPECT_FLOAT_EQ(c.x1, 1);
  EXPECT_FLOAT_EQ(c.y1, 0.75F);

  storage::LesionBoxRecord b;
  b.resourceId = "wide";
  b.finding = "Nodule";
  b.x0 = 100;
  b.y0 = 50;
  b.x1 = 200;
  b.y1 = 150;
  b.confidence = 0.8;
  const LesionBox m = toCacheBox(b, r, 256);
  EXPECT_FLOAT_EQ(m.x0, 0.25F);
  EXPECT_FLOAT_EQ(m.x1, 0.5F);
  EXPECT_FLOAT_EQ(m.y0, (64 + 32) / 256.0F);
  EXPECT_FLOAT_EQ(m.y1, (64 + 96) / 256.0F);
  EXPECT_FLOAT_EQ(m.confidence, 0.8F);

  // A tall image with its content rectangle recorded off-centre: the record is what counts.
  storage::InstanceRecord tall = r;
  tall.cols = 100;
  tall.rows = 300;
  tall.contentX = 10;
  tall.contentY = 0;
  tall.contentWidth = 40;
  tall.contentHeight = 120;
  b.x0 = 0;
  b.y0 = 0;
  b.x1 = 100;
  b.y1 = 300;  // the whole image
  const LesionBox whole = toCacheBox(b, tall, 120);
  EXPECT_FLOAT_EQ(whole.x0, 10 / 120.0F);
  EXPECT_FLOAT_EQ(whole.x1, 50 / 120.0F);
  EXPECT_FLOAT_EQ(whole.y0, 0);
  EXPECT_FLOAT_EQ(whole.y1, 1);

  // Rows without a content rectangle get the letterbox's.
  storage::InstanceRecord old = r;
  old.contentX = old.contentY = old.contentWidth = old.contentHeight = 0;
  const ContentRect fallback = contentRectOf(old, 256);
  EXPECT_FLOAT_EQ(fallback.y0, 0.25F);
  EXPECT_FLOAT_EQ(fallback.y1, 0.75F);
  old.cols = old.rows = 0;
  EXPECT_FLOAT_EQ(contentRectOf(old, 256).x1, 1);

  // Boxes outside the original image are refused, naming the instance.
  b.x1 = 401;
  b.y1 = 150;
  EXPECT_THAT([&] { toCacheBox(b, r, 256); },
              ThrowsMessage<LesionError>(
                  AllOf(HasSubstr("instance wide"), HasSubstr("outside the image of 400x200"))));
  b.x0 = 10;
  b.x1 = 5;
  EXPECT_THROW(toCacheBox(b, r, 256), LesionError);
}

// ---------------------------------------------------------------------------------------------------------
// Lesion and healthy images

TEST(LesionProposals, WithoutLesionImagesTheMessageSaysWhatToDo) {
  Archive a;
  a.add(0.0);
  a.add(0.0);
  a.add(std::nullopt);
  const TrainingSet set = a.set();
  EXPECT_THAT(
      [&] { proposeLesions(a.index(), set, a.cache(), config(LesionSourceKind::Stored)); },
      ThrowsMessage<LesionError>(::testing::StrEq(
          "CoMCL needs some images labelled positive for 'Nodule' (lesion images); none of the 3 images has "
          "one. Label some, or pre-train with --method medaug, which needs no labels.")));
  LesionConfig other = config(LesionSourceKind::Stored);
  other.label = "Mass";
  EXPECT_THAT([&] { proposeLesions(a.index(), set, a.cache(), other); },
              ThrowsMessage<LesionError>(HasSubstr("positive for 'Mass'")));
}

TEST(LesionProposals, WithoutHealthyImagesTheMessageSaysWhatToDo) {
  Archive a;
  a.add(1.0);
  a.add(-1.0);  // uncertain is not healthy
  const TrainingSet set = a.set();
  EXPECT_THAT([&] { proposeLesions(a.index(), set, a.cache(), config(LesionSourceKind::Stored)); },
              ThrowsMessage<LesionError>(AllOf(HasSubstr("labelled 0 for 'Nodule' (healthy images"),
                                               HasSubstr("none of the 2 images has one"),
                                               HasSubstr("--method medaug"))));
}

TEST(LesionProposals, HeldOutPatientsGiveNoLesionOrHealthyImages) {
  Archive a;
  a.add(1.0, "train-1");
  a.add(0.0, "train-2");
  a.add(1.0, "test-1");
  a.add(0.0, "test-1");
  a.add(std::nullopt, "train-3");
  a.index().assignSplits(
      {{"train-1", "train"}, {"train-2", "train"}, {"train-3", "train"}, {"test-1", "test"}}, 0);
  const TrainingSet set = a.set();
  const LesionProposals p = proposeLesions(a.index(), set, a.cache(), config(LesionSourceKind::Stored));
  EXPECT_EQ(p.lesionImages, std::vector<int>{0});
  EXPECT_EQ(p.healthyImages, std::vector<int>{1});
  EXPECT_EQ(p.details.at("heldOutLabelledImages"), 2);

  LesionConfig everyone = config(LesionSourceKind::Stored);
  everyone.trainPatientsOnly = false;
  const LesionProposals all = proposeLesions(a.index(), set, a.cache(), everyone);
  EXPECT_EQ(all.lesionImages, (std::vector<int>{0, 2}));
  EXPECT_EQ(all.healthyImages, (std::vector<int>{1, 3}));

  // Positives only among held-out patients: the message says so.
  Archive b;
  b.add(0.0, "train-1");
  b.add(1.0, "test-1");
  b.index().assignSplits({{"train-1", "train"}, {"test-1", "test"}}, 0);
  const TrainingSet bs = b.set();
  EXPECT_THAT(
      [&] { proposeLesions(b.index(), bs, b.cache(), config(LesionSourceKind::Stored)); },
      ThrowsMessage<LesionError>(AllOf(HasSubstr("among the training patients"), HasSubstr("held-out"))));
}

// ---------------------------------------------------------------------------------------------------------
// Stored boxes

storage::LesionBoxRecord stored(const std::string& resource, double x0, double y0, double x1, double y1,
                                double confidence = 1) {
  storage::LesionBoxRecord b;
  b.resourceId = resource;
  b.finding = "Nodule";
  b.x0 = x0;
  b.y0 = y0;
  b.x1 = x1;
  b.y1 = y1;
  b.confidence = confidence;
  b.source = "reader";
  return b;
}

TEST(LesionProposals, StoredBoxesRoundTripIntoCacheCoordinatesThroughTheFilter) {
  Archive a(64);
  // A 1000 x 500 original letterboxed into 64 x 64: content 64 x 32 at (0, 16).
  auto wide = [](storage::InstanceRecord& r) {
    r.cols = 1000;
    r.rows = 500;
    r.contentX = 0;
    r.contentY = 16;
    r.contentWidth = 64;
    r.contentHeight = 32;
  };
  const std::string lesion = a.add([](int, int) { return 90.0; }, 1.0, "", wide);
  const std::string bare = a.add(1.0);  // a lesion image without boxes
  const std::string healthy = a.add(0.0);
  a.allTrain();
  a.index().putLesionBoxes({
      stored(lesion, 100, 100, 200, 150),       // kept: (0.1, 0.35) - (0.2, 0.4)
      stored(lesion, 0, 100, 100, 150),         // on the image's left edge: near border
      stored(lesion, 300, 100, 700, 150),       // 400 px of 1000 = 0.4 of the square: too large
      stored(lesion, 500, 200, 600, 250, 0.3),  // low confidence
      stored(healthy, 10, 10, 20, 20),          // not a lesion image
  });
  const TrainingSet set = a.set();
  const LesionProposals p = proposeLesions(a.index(), set, a.cache(), config(LesionSourceKind::Stored));
  EXPECT_EQ(p.source, "stored");
  EXPECT_EQ(p.lesionImages, (std::vector<int>{0, 1}));
  EXPECT_EQ(p.healthyImages, std::vector<int>{2});
  ASSERT_EQ(p.boxes.size(), 3u);
  ASSERT_EQ(p.boxes[0].size(), 1u);
  EXPECT_FLOAT_EQ(p.boxes[0][0].x0, 0.1F);
  EXPECT_FLOAT_EQ(p.boxes[0][0].x1, 0.2F);
  EXPECT_FLOAT_EQ(p.boxes[0][0].y0, (16 + 100 * 32 / 500.0F) / 64);
  EXPECT_FLOAT_EQ(p.boxes[0][0].y1, (16 + 150 * 32 / 500.0F) / 64);
  EXPECT_FLOAT_EQ(p.boxes[0][0].confidence, 1);
  EXPECT_TRUE(p.boxes[1].empty());
  EXPECT_TRUE(p.boxes[2].empty());
  EXPECT_EQ(p.proposed, 5);
  EXPECT_EQ(p.kept, 1);
  EXPECT_EQ(p.dropped,
            (std::map<std::string, int>{
                {"near border", 1}, {"too large", 1}, {"low confidence", 1}, {"not a lesion image", 1}}));
  EXPECT_EQ(p.lesionImagesWithoutBox, 1);
  const nlohmann::json summary = p.summary();
  EXPECT_EQ(summary.at("kept"), 1);
  EXPECT_EQ(summary.at("lesionImages"), 2);
  EXPECT_EQ(summary.at("boxesPerLesionImage"), (nlohmann::json{{"0", 1}, {"1", 1}}));
  EXPECT_EQ(summary.at("dropped").at("too large"), 1);

  // The same images and boxes as CoMCL's view roles.
  const ComclRoles roles = toComclRoles(p);
  EXPECT_NO_THROW(roles.validate(set.size()));
  EXPECT_EQ(roles.lesionImages, p.lesionImages);
  EXPECT_EQ(roles.healthyImages, p.healthyImages);
  ASSERT_EQ(roles.boxes.size(), 3u);
  ASSERT_EQ(roles.boxes[0].size(), 1u);
  EXPECT_EQ(roles.boxes[0][0].x0, p.boxes[0][0].x0);
  EXPECT_EQ(roles.boxes[0][0].y1, p.boxes[0][0].y1);
  EXPECT_TRUE(roles.boxes[1].empty());
}

// ---------------------------------------------------------------------------------------------------------
// Detector

std::string saveModule(comcl::testing::TempDir& dir, const std::string& name, const std::string& source) {
  torch::jit::Module m("Detector");
  m.define(source);
  const std::string path = dir.file(name);
  m.save(path);
  return path;
}

// Two boxes per image in the input's pixels (score = the brightest input value, so [0, 1] input gives a
// score <= 1) and a padding row; refuses input that is not [B, 3, S, S].
const char* const kTensorDetector = R"(
def forward(self, x):
    assert x.dim() == 4 and x.size(1) == 3 and x.size(2) == x.size(3)
    s = float(x.size(2))
    top = float(x.max())
    one = torch.tensor([0.30 * s, 0.30 * s, 0.40 * s, 0.40 * s, top])
    two = torch.tensor([0.50 * s, 0.50 * s, 0.60 * s, 0.60 * s, 0.7])
    three = torch.tensor([0.60 * s, 0.20 * s, 0.70 * s, 0.30 * s, 0.6])
    pad = torch.zeros(5)
    return torch.stack([two, one, pad, three]).unsqueeze(0).repeat(x.size(0), 1, 1)
)";

const char* const kListDetector = R"(
def forward(self, x) -> List[Tensor]:
    s = float(x.size(2))
    out: List[Tensor] = []
    for i in range(x.size(0)):
        out.append(torch.tensor([[0.30 * s, 0.30 * s, 0.40 * s, 0.40 * s, 0.9], [0.0, 0.0, 0.0, 0.0, 0.0]]))
    return out
)";

class DetectorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    archive_.add([](int, int) { return 255.0; }, 1.0);
    archive_.add([](int, int) { return 255.0; }, 1.0);
    archive_.add(0.0);
    archive_.allTrain();
    set_ = archive_.set();
  }
  LesionConfig detector(const std::string& path) {
    LesionConfig c = config(LesionSourceKind::Detector);
    c.detectorPath = path;
    c.detectorImageSize = 100;
    return c;
  }
  LesionProposals propose(const LesionConfig& c) {
    return proposeLesions(archive_.index(), set_, archive_.cache(), c);
  }
  Archive archive_;
  TrainingSet set_;
};

TEST_F(DetectorTest, ATensorOutputGivesNormalisedBoxesRankedAndLimited) {
  LesionConfig c = detector(saveModule(archive_.dir(), "tensor.pt", kTensorDetector));
  c.maxBoxesPerImage = 2;
  const LesionProposals p = propose(c);
  EXPECT_EQ(p.source, "detector");
  EXPECT_EQ(p.proposed, 6);  // three boxes on each of two lesion images; the padding row is no box
  EXPECT_EQ(p.kept, 4);
  EXPECT_EQ(p.dropped, (std::map<std::string, int>{{"over the per-image limit", 2}}));
  for (int i : {0, 1}) {
    const auto& boxes = p.boxes[static_cast<std::size_t>(i)];
    ASSERT_EQ(boxes.size(), 2u);
    EXPECT_FLOAT_EQ(boxes[0].confidence, 1.0F);  // the brightest pixel, 255, in [0, 1]: highest first
    EXPECT_NEAR(boxes[0].x0, 0.30F, 1e-6);
    EXPECT_NEAR(boxes[0].y1, 0.40F, 1e-6);
    EXPECT_FLOAT_EQ(boxes[1].confidence, 0.7F);
    EXPECT_NEAR(boxes[1].x0, 0.50F, 1e-6);
  }
  EXPECT_TRUE(p.boxes[2].empty());
  EXPECT_EQ(p.details.at("detector"), c.detectorPath);
}

TEST_F(DetectorTest, AListOutputIsAcceptedToo) {
  const LesionProposals p = propose(detector(saveModule(archive_.dir(), "list.pt", kListDetector)));
  EXPECT_EQ(p.proposed, 2);
  EXPECT_EQ(p.kept, 2);
  ASSERT_EQ(p.boxes[1].size(), 1u);
  EXPECT_NEAR(p.boxes[1][0].x1, 0.40F, 1e-6);
  EXPECT_FLOAT_EQ(p.boxes[1][0].confidence, 0.9F);
}

TEST_F(DetectorTest, AMissingFileOrAFileThatIsNotTorchScriptIsRefusedNamingThePath) {
  const std::string missing = archive_.dir().file("nowhere.pt");
  EXPECT_THAT([&] { propose(detector(missing)); },
              ThrowsMessage<LesionError>(
                  AllOf(HasSubstr("cannot load the lesion detector " + missing), HasSubstr("no such file"))));
  archive_.dir().write("junk.pt", {'n', 'o', 't', ' ', 'a', ' ', 'm', 'o', 'd', 'e', 'l'});
  const std::string junk = archive_.dir().file("junk.pt");
  EXPECT_THAT([&] { propose(detector(junk)); },
              ThrowsMessage<LesionError>(
                  AllOf(HasSubstr("cannot load the lesion detector " + junk), HasSubstr("TorchScript"))));
}

TEST_F(DetectorTest, AWrongOutputIsRefusedNamingTheShapeItGotAndTheShapeExpected) {
  struct Case {
    const char* source;
    const char* message;
  };
  const std::vector<Case> cases = {
      {"def forward(self, x):\n    return x.sum(1)\n", "returned a tensor of shape [2, 100, 100]"},
      {"def forward(self, x):\n    return torch.zeros(x.size(0), 3, 4)\n",
       "returned a tensor of shape [2, 3, 4]"},
      {"def forward(self, x):\n    return torch.zeros(x.size(0) + 1, 3, 5)\n",
       "returned a tensor of shape [3, 3, 5]"},
      {"def forward(self, x):\n    return [torch.zeros(1, 5)]\n", "returned a list of 1 items"},
      {"def forward(self, x):\n    return [torch.zeros(1, 5), torch.zeros(5)]\n",
       "returned a list holding a tensor of shape [5]"},
      {"def forward(self, x):\n    return 3\n", "returned a Int"},
      {"def forward(self, x):\n    return torch.full([x.size(0), 1, 5], float('nan'))\n", "NaN or infinite"},
      {"def forward(self, x):\n    assert x.size(1) == 1\n    return torch.zeros(x.size(0), 1, 5)\n",
       "failed on a batch of shape [2, 3, 100, 100]"},
  };
  int n = 0;
  for (const Case& c : cases) {
    const std::string path = saveModule(archive_.dir(), "bad" + std::to_string(n++) + ".pt", c.source);
    try {
      propose(detector(path));
      ADD_FAILURE() << "accepted: " << c.source;
    } catch (const LesionError& e) {
      EXPECT_THAT(e.what(), HasSubstr(c.message)) << c.source;
      if (std::string(c.message).rfind("returned a", 0) == 0) {
        EXPECT_THAT(e.what(),
                    HasSubstr("expected a Tensor [B, M, 5] or a List[Tensor] of B tensors [M_i, 5] (B = 2"));
      }
    }
  }
}

TEST_F(DetectorTest, RunsOnCudaLikeOnTheCpu) {
  if (!torch::cuda::is_available())
    GTEST_SKIP() << "no CUDA device";
  LesionConfig c = detector(saveModule(archive_.dir(), "tensor.pt", kTensorDetector));
  const LesionProposals cpu = propose(c);
  c.device = "cuda";
  const LesionProposals cuda = propose(c);
  EXPECT_EQ(cuda.summary(), cpu.summary());
  for (std::size_t i = 0; i < cpu.boxes.size(); ++i) {
    ASSERT_EQ(cuda.boxes[i].size(), cpu.boxes[i].size());
    for (std::size_t k = 0; k < cpu.boxes[i].size(); ++k)
      EXPECT_EQ(cuda.boxes[i][k].toJson(), cpu.boxes[i][k].toJson());
  }
}

TEST_F(DetectorTest, ABoxOvershootingTheImageByRoundingIsKeptOnItsEdge) {
  LesionConfig c = detector(saveModule(archive_.dir(), "edge.pt", R"(
def forward(self, x):
    s = float(x.size(2))
    return torch.tensor([[[0.5 * s, 0.5 * s, 1.00005 * s, 1.00005 * s, 0.9]]]).repeat(x.size(0), 1, 1)
)"));
  c.filter.borderMarginFraction = 0;
  c.filter.maxSideFraction = 1;
  const LesionProposals p = propose(c);
  ASSERT_EQ(p.boxes[0].size(), 1u);
  EXPECT_EQ(p.boxes[0][0].x1, 1.0F);
  EXPECT_EQ(p.boxes[0][0].y1, 1.0F);
  EXPECT_NO_THROW(toComclRoles(p).validate(set_.size()));
}

TEST_F(DetectorTest, ACancelledRunStops) {
  const std::atomic<bool> cancel{true};
  const LesionConfig c = detector(saveModule(archive_.dir(), "tensor.pt", kTensorDetector));
  EXPECT_THAT([&] { proposeLesions(archive_.index(), set_, archive_.cache(), c, {}, &cancel); },
              ThrowsMessage<LesionError>(HasSubstr("cancelled")));
}

// ---------------------------------------------------------------------------------------------------------
// CAM

// Positive images carry a bright blob centred at (0.3, 0.35) of the image, radius 0.1; every image has
// noise. The CAM box of a positive image must overlap the blob's box.
class CamTest : public ::testing::Test {
 protected:
  static constexpr int kSize = 64;
  void SetUp() override {
    for (int n = 0; n < 24; ++n) {
      const bool positive = n % 2 == 0;
      auto rng = std::make_shared<std::mt19937>(static_cast<unsigned>(n) + 1u);
      archive_.add(
          [positive, rng](int x, int y) {
            std::normal_distribution<double> noise(0.0, 10.0);
            const double dx = (x + 0.5) / kSize - 0.3, dy = (y + 0.5) / kSize - 0.35;
            const double blob = positive && dx * dx + dy * dy < 0.01 ? 120.0 : 0.0;
            return 70.0 + blob + noise(*rng);
          },
          positive ? 1.0 : 0.0);
    }
    archive_.allTrain();
    set_ = archive_.set();
  }
  LesionConfig cam() {
    LesionConfig c = config(LesionSourceKind::Cam);
    c.camImageSize = 96;  // 3 x 3 maps
    c.camEpochs = 4;
    c.batchSize = 8;
    c.seed = 5;
    c.maxBoxesPerImage = 1;
    return c;
  }
  Archive archive_{kSize};
  TrainingSet set_;
};

TEST_F(CamTest, TheCamBoxOfAPositiveImageCoversItsBlob) {
  std::vector<std::string> messages;
  const LesionProposals p = proposeLesions(archive_.index(), set_, archive_.cache(), cam(),
                                           [&](const std::string& m) { messages.push_back(m); });
  EXPECT_EQ(p.source, "cam");
  EXPECT_EQ(p.lesionImages.size(), 12u);
  EXPECT_EQ(p.healthyImages.size(), 12u);
  EXPECT_EQ(p.details.at("camTrainImages"), 24);
  EXPECT_FALSE(messages.empty());
  // The blob's box is 0.2 wide; CAM regions span cells of a third of the image and are shrunk to the
  // filter's 0.25 around their centroid: containing the blob gives an IoU of 0.64.
  const LesionBox blob{0.2F, 0.25F, 0.4F, 0.45F, 1};
  double sum = 0;
  int withBox = 0;
  for (int i : p.lesionImages) {
    const auto& boxes = p.boxes[static_cast<std::size_t>(i)];
    if (boxes.empty())
      continue;
    ++withBox;
    sum += iou(boxes[0], blob);
    EXPECT_LE(boxes[0].x0, 0.3F);  // contains the blob's centre
    EXPECT_GE(boxes[0].x1, 0.3F);
    EXPECT_LE(boxes[0].y0, 0.35F);
    EXPECT_GE(boxes[0].y1, 0.35F);
    EXPECT_GT(boxes[0].confidence, 0.5F);
    EXPECT_LE(boxes[0].confidence, 1);
  }
  ASSERT_GE(withBox, 10) << p.summary().dump();
  EXPECT_GT(sum / withBox, 0.5) << "mean IoU of the CAM boxes with the blob; " << p.summary().dump();
}

TEST_F(CamTest, ASeedRepeatsOnTheCpu) {
  LesionConfig c = cam();
  c.camEpochs = 1;
  c.camImageSize = 64;
  c.camShrinkToMaxSide = false;
  const LesionProposals a = proposeLesions(archive_.index(), set_, archive_.cache(), c);
  const LesionProposals b = proposeLesions(archive_.index(), set_, archive_.cache(), c);
  ASSERT_EQ(a.kept, b.kept);
  EXPECT_EQ(a.dropped, b.dropped);
  int dropped = 0;
  for (const auto& [reason, count] : a.dropped)
    dropped += count;
  EXPECT_EQ(a.kept + dropped, a.proposed);
  for (std::size_t i = 0; i < a.boxes.size(); ++i) {
    ASSERT_EQ(a.boxes[i].size(), b.boxes[i].size());
    for (std::size_t k = 0; k < a.boxes[i].size(); ++k) {
      EXPECT_EQ(a.boxes[i][k].toJson(), b.boxes[i][k].toJson());
    }
  }
}

TEST_F(CamTest, RunsOnCuda) {
  if (!torch::cuda::is_available())
    GTEST_SKIP() << "no CUDA device";
  LesionConfig c = cam();
  c.device = "cuda";
  const LesionProposals p = proposeLesions(archive_.index(), set_, archive_.cache(), c);
  int withBlob = 0;
  for (int i : p.lesionImages) {
    const auto& boxes = p.boxes[static_cast<std::size_t>(i)];
    withBlob += !boxes.empty() && boxes[0].x0 <= 0.3F && boxes[0].x1 >= 0.3F && boxes[0].y0 <= 0.35F &&
                boxes[0].y1 >= 0.35F;
  }
  EXPECT_GE(withBlob, 10) << p.summary().dump();
}

TEST(CamSource, NeedsPositiveAndNegativeTrainingImages) {
  Archive a;
  a.add(1.0, "train-1");
  a.add(0.0, "test-1");
  a.index().assignSplits({{"train-1", "train"}, {"test-1", "test"}}, 0);
  const TrainingSet set = a.set();
  LesionConfig c = config(LesionSourceKind::Cam);
  c.trainPatientsOnly = false;
  EXPECT_THAT([&] { proposeLesions(a.index(), set, a.cache(), c); },
              ThrowsMessage<LesionError>(AllOf(HasSubstr("CAM"), HasSubstr("1 positive and 0 negative"))));
}

// ---------------------------------------------------------------------------------------------------------
// Boxes from CSV

TEST(BoxImport, GoodRowsAreStoredAndBadRowsReportedRowByRow) {
  Archive a(64);
  const std::string first = a.add(1.0);   // 64 x 64, source /data/set/0.png, SOP 1.2.3.0
  const std::string second = a.add(1.0);  // /data/set/1.png
  const std::string csv =
      "resource_id,x0,y0,x1,y1,confidence,finding\n"
      "img-0,10,10,20,20,,\n"               // row 1: good, default finding, confidence 1
      "img-1,1,2,3,4,0.5,Mass\n"            // row 2: good, its own finding
      "img-9,1,1,2,2,,\n"                   // row 3: unknown image
      "img-0,10,10,65,20,,\n"               // row 4: beyond 64 columns
      "img-0,ten,10,20,20,,\n"              // row 5: not a number
      "img-0,1,1,2\n"                       // row 6: ragged
      "img-0,1,1,2,2,1.5,\n"                // row 7: confidence out of range
      "\"img-1\",\"30\",30,40,40,0.25,\n";  // row 8: good, quoted
  BoxImportOptions options;
  options.finding = "Nodule";
  const BoxImportReport r = importLesionBoxesText(a.index(), csv, "boxes.csv", options);
  EXPECT_EQ(r.rows, 8u);
  EXPECT_EQ(r.stored, 3);
  EXPECT_EQ(r.images, 2);
  EXPECT_EQ(r.matchColumn, "resource_id");
  EXPECT_EQ(r.source, "boxes:boxes.csv");
  EXPECT_EQ(r.byFinding, (std::map<std::string, std::int64_t>{{"Mass", 1}, {"Nodule", 2}}));
  ASSERT_EQ(r.failures.size(), 5u);
  EXPECT_EQ(r.failures[0].row, 3u);
  EXPECT_EQ(r.failures[0].line, 4u);
  EXPECT_THAT(r.failures[0].reason, HasSubstr("resource_id 'img-9'"));
  EXPECT_EQ(r.failures[1].row, 4u);
  EXPECT_THAT(r.failures[1].reason, HasSubstr("outside the image of 64x64"));
  EXPECT_EQ(r.failures[2].row, 5u);
  EXPECT_THAT(r.failures[2].reason, HasSubstr("x0 'ten' is not a number"));
  EXPECT_EQ(r.failures[3].row, 6u);
  EXPECT_EQ(r.failures[4].row, 7u);
  EXPECT_THAT(r.failures[4].reason, HasSubstr("confidence"));

  const auto nodules = a.index().lesionBoxes("Nodule");
  ASSERT_EQ(nodules.size(), 2u);
  EXPECT_EQ(nodules[0].resourceId, first);
  EXPECT_DOUBLE_EQ(nodules[0].confidence, 1);
  EXPECT_EQ(nodules[1].resourceId, second);
  EXPECT_DOUBLE_EQ(nodules[1].x0, 30);
  EXPECT_DOUBLE_EQ(nodules[1].confidence, 0.25);
  EXPECT_EQ(nodules[1].source, "boxes:boxes.csv");

  // Importing the same file again stores it once.
  importLesionBoxesText(a.index(), csv, "boxes.csv", options);
  EXPECT_EQ(a.index().allLesionBoxes().size(), 3u);
}

TEST(BoxImport, ImagesAreFoundBySopInstanceUidOrByFile) {
  Archive a(64);
  a.add(1.0);
  a.add(1.0);
  BoxImportOptions options;
  options.finding = "Nodule";
  options.source = "uid";
  auto r = importLesionBoxesText(
      a.index(), "sop_instance_uid,x0,y0,x1,y1\n1.2.3.1,1,1,5,5\n1.2.3.7,1,1,5,5\n", "u.csv", options);
  EXPECT_EQ(r.matchColumn, "sop_instance_uid");
  EXPECT_EQ(r.stored, 1);
  ASSERT_EQ(r.failures.size(), 1u);
  EXPECT_EQ(r.failures[0].row, 2u);
  options.source = "file";
  r = importLesionBoxesText(a.index(),
                            "file,x0,y0,x1,y1\nset/0.png,1,1,5,5\nother/0.png,1,1,5,5\n0.png,2,2,6,6\n",
                            "f.csv", options);
  EXPECT_EQ(r.matchColumn, "file");
  EXPECT_EQ(r.stored, 2);
  ASSERT_EQ(r.failures.size(), 1u);
  EXPECT_EQ(r.failures[0].row, 2u);  // other/0.png is not set/0.png
  EXPECT_EQ(a.index().lesionBoxes("Nodule").size(), 3u);
}

TEST(BoxImport, AFileWithoutTheNeededColumnsIsRefused) {
  Archive a;
  EXPECT_THAT(
      [&] { importLesionBoxesText(a.index(), "image,x0,y0,x1\n", "b.csv", {}); },
      ThrowsMessage<LesionError>(AllOf(HasSubstr("resource_id, sop_instance_uid or file"), HasSubstr("y1"))));
  EXPECT_THAT([&] { importLesionBoxes(a.index(), a.dir().file("absent.csv"), {}); },
              ThrowsMessage<LesionError>(HasSubstr("cannot read")));
  // No finding anywhere: each row says so.
  a.add(1.0);
  const auto r = importLesionBoxesText(a.index(), "resource_id,x0,y0,x1,y1\nimg-0,1,1,2,2\n", "b.csv", {});
  ASSERT_EQ(r.failures.size(), 1u);
  EXPECT_THAT(r.failures[0].reason, HasSubstr("no finding"));
}

}  // namespace
}  // namespace comcl::training
