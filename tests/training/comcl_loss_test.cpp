// CoMCL's three loss terms against hand-computed values, the healthy-only negative queue and the
// self-paced hard-negative weights.
#include "comcl/training/comcl_loss.h"

#include <gtest/gtest.h>
#include <torch/cuda.h>
#include <torch/nn/module.h>
#include <torch/serialize/input-archive.h>
#include <torch/serialize/output-archive.h>
#include <torch/torch.h>

#include <cmath>
#include <functional>
#include <sstream>
#include <string>

#include "comcl/training/moco.h"

namespace comcl::training {
namespace {

std::string messageOf(const std::function<void()>& action) {
  try {
    action();
  } catch (const std::invalid_argument& error) {
    return error.what();
  }
  return "(no std::invalid_argument)";
}

// T = 0.5 and the default schedule: at epoch 0 rho = 0.05, so one hard negative (weight 2) among up to 20.
ComclLossConfig handConfig() {
  ComclLossConfig c;
  c.temperature = 0.5;
  return c;
}

// Healthy queue of capacity 4: one high-quality key (0.8, 0.6), two low-quality keys (0, 1), (-1, 0) and
// one slot never written. Image queue of capacity 3: (1, 0), (0, -1) and one slot never written.
struct HandQueues {
  HealthyKeyQueue healthy{4, 2};
  ImageKeyQueue images{3, 2};
  HandQueues() {
    healthy.enqueue(torch::tensor({{0.8f, 0.6f}}), PatchKind::HealthyHighQuality);
    healthy.enqueue(torch::tensor({{0.f, 1.f}, {-1.f, 0.f}}), PatchKind::HealthyLowQuality);
    images.enqueue(torch::tensor({{1.f, 0.f}, {0.f, -1.f}}));
  }
};

ComclLossOutput lossOf(const ComclLossConfig& config, const ComclStepEmbeddings& step,
                       const HandQueues& queues, int epoch = 0) {
  return ComclLoss(config)(step, queues.healthy, queues.images, epoch);
}

ComclStepEmbeddings handStep() {
  ComclStepEmbeddings step;
  step.lesionQuery = torch::tensor({{1.f, 0.f}});
  step.lesionKey = torch::tensor({{0.6f, 0.8f}});
  step.lowQualityLesionQuery = torch::tensor({{0.8f, -0.6f}});
  step.highQualityLesionKey = torch::tensor({{1.f, 0.f}});
  step.lowQualityImageQuery = torch::tensor({{0.f, 1.f}});
  step.highQualityImageKey = torch::tensor({{0.6f, 0.8f}});
  return step;
}

TEST(ComclLoss, LesionTermMatchesTheHandComputedValue) {
  // q = (1, 0), k+ = (0.6, 0.8): q.k+ = 0.6 -> logit 1.2. Negatives: every written healthy key, both
  // qualities: cosines 0.8, 0, -1 -> logits 1.6, 0, -2 (the unwritten slot is nobody's negative).
  // ceil(0.05 * 3) = 1 hard negative, the hardest (0.8), weighs 1 + beta = 2:
  // L_les = -1.2 + log(e^1.2 + 2 e^1.6 + e^0 + e^-2) = -1.2 + log(3.320117 + 9.906065 + 1 + 0.135335)
  //       = -1.2 + log(14.361517) = -1.2 + 2.664552 = 1.464552
  HandQueues queues;
  const ComclLossOutput out = lossOf(handConfig(), handStep(), queues);
  EXPECT_NEAR(out.lesion.item<double>(),
              -1.2 + std::log(std::exp(1.2) + 2 * std::exp(1.6) + 1 + std::exp(-2.0)), 1e-5);
  EXPECT_NEAR(out.lesion.item<double>(), 1.464552, 1e-5);
}

TEST(ComclLoss, QualityTermUsesOnlyLowQualityHealthyNegatives) {
  // q = V2 = (0.8, -0.6), k+ = k(V1) = (1, 0): 0.8 -> logit 1.6. Negatives: the low-quality healthy keys
  // only: (0, 1) -> -0.6 -> -1.2 and (-1, 0) -> -0.8 -> -1.6 (the high-quality key, cosine 0.28, is not
  // one). ceil(0.05 * 2) = 1: (0, 1) weighs 2:
  // L_qual = -1.6 + log(e^1.6 + 2 e^-1.2 + e^-1.6) = -1.6 + log(4.953032 + 0.602388 + 0.201897)
  //        = -1.6 + log(5.757317) = -1.6 + 1.750472 = 0.150472
  HandQueues queues;
  const ComclLossOutput out = lossOf(handConfig(), handStep(), queues);
  EXPECT_NEAR(out.quality.item<double>(),
              -1.6 + std::log(std::exp(1.6) + 2 * std::exp(-1.2) + std::exp(-1.6)), 1e-5);
  EXPECT_NEAR(out.quality.item<double>(), 0.150472, 1e-5);
}

TEST(ComclLoss, ImageTermUsesTheImageQueue) {
  // q = I_LQ = (0, 1), k+ = I_HQ = (0.6, 0.8): 0.8 -> logit 1.6. Negatives: the image queue's written keys
  // (1, 0) -> 0 and (0, -1) -> -1 -> logits 0 and -2; ceil(0.05 * 2) = 1: (1, 0) weighs 2:
  // L_img = -1.6 + log(e^1.6 + 2 e^0 + e^-2) = -1.6 + log(7.088368) = -1.6 + 1.958455 = 0.358455
  HandQueues queues;
  const ComclLossOutput out = lossOf(handConfig(), handStep(), queues);
  EXPECT_NEAR(out.image.item<double>(), -1.6 + std::log(std::exp(1.6) + 2 + std::exp(-2.0)), 1e-5);
  EXPECT_NEAR(out.image.item<double>(), 0.358455, 1e-5);
}

TEST(ComclLoss, TotalIsTheWeightedSumOfTheTerms) {
  // 1 * 1.464552 + 0.5 * 0.150472 + 2 * 0.358455 = 2.256698
  ComclLossConfig config = handConfig();
  config.qualityWeight = 0.5;
  config.imageWeight = 2;
  HandQueues queues;
  const ComclLossOutput out = lossOf(config, handStep(), queues);
  EXPECT_NEAR(out.total.item<double>(), 2.256698, 1e-5);
  EXPECT_NEAR(out.total.item<double>(),
              out.lesion.item<double>() + 0.5 * out.quality.item<double>() + 2 * out.image.item<double>(),
              1e-6);
}

TEST(ComclLoss, AblationSwitchesRemoveTheTermFromTheTotal) {
  HandQueues queues;
  const ComclLossOutput all = lossOf(handConfig(), handStep(), queues);

  ComclLossConfig noQuality = handConfig();  // ablation "w/o L_qual"
  noQuality.qualityTerm = false;
  ComclStepEmbeddings step = handStep();
  step.lowQualityLesionQuery = torch::Tensor();  // not needed when the term is off
  step.highQualityLesionKey = torch::Tensor();
  const ComclLossOutput withoutQuality = lossOf(noQuality, step, queues);
  EXPECT_FALSE(withoutQuality.quality.defined());
  EXPECT_NEAR(withoutQuality.total.item<double>(), all.lesion.item<double>() + all.image.item<double>(),
              1e-6);

  ComclLossConfig noImage = handConfig();  // ablation "w/o L_img"
  noImage.imageTerm = false;
  step = handStep();
  step.lowQualityImageQuery = torch::Tensor();
  const ComclLossOutput withoutImage = lossOf(noImage, step, queues);
  EXPECT_FALSE(withoutImage.image.defined());
  EXPECT_TRUE(withoutImage.lesion.defined() && withoutImage.quality.defined());
  EXPECT_NEAR(withoutImage.total.item<double>(), all.lesion.item<double>() + all.quality.item<double>(),
              1e-6);

  // A switched-on term with a missing embedding is an error that names the field.
  EXPECT_NE(messageOf([&] { lossOf(handConfig(), step, queues); }).find("lowQualityImageQuery"),
            std::string::npos);
}

TEST(ComclLoss, WithoutMiningEveryTermIsThePlainInfoNceOverItsNegatives) {
  // beta = 0 (ablation "w/o SPL"): the lesion term is MoCo's InfoNCE over the three written healthy keys.
  ComclLossConfig config = handConfig();
  config.beta = 0;
  HandQueues queues;
  const ComclLossOutput out = lossOf(config, handStep(), queues, 3);
  const double plain = infoNce(torch::tensor({0.6f}), torch::tensor({{0.8f, 0.f, -1.f}}), 0.5).item<double>();
  EXPECT_NEAR(out.lesion.item<double>(), plain, 1e-6);
}

TEST(ComclLoss, EmptyQueuesGiveZeroLossWithoutNaN) {
  // No negatives yet: -log(e^{q.k+/T} / e^{q.k+/T}) = 0 for every term.
  HealthyKeyQueue healthy(4, 2);
  ImageKeyQueue images(3, 2);
  const ComclLossOutput out = ComclLoss(handConfig())(handStep(), healthy, images, 0);
  EXPECT_EQ(out.total.item<double>(), 0.0);
}

TEST(ComclLoss, GradientsFlowToTheQueriesOnly) {
  torch::manual_seed(0);
  const auto unit = [](std::int64_t n) {
    return torch::nn::functional::normalize(torch::randn({n, 8}),
                                            torch::nn::functional::NormalizeFuncOptions().dim(1));
  };
  HealthyKeyQueue healthy(16, 8);
  healthy.enqueue(unit(6), PatchKind::HealthyHighQuality);
  healthy.enqueue(unit(6), PatchKind::HealthyLowQuality);
  ImageKeyQueue images(16, 8);
  images.enqueue(unit(10));
  ComclStepEmbeddings step;
  step.lesionQuery = unit(3).requires_grad_();
  step.lesionKey = unit(3).requires_grad_();
  step.lowQualityLesionQuery = unit(3).requires_grad_();
  step.highQualityLesionKey = unit(3).requires_grad_();
  step.lowQualityImageQuery = unit(2).requires_grad_();
  step.highQualityImageKey = unit(2).requires_grad_();
  const ComclLossOutput out = ComclLoss(ComclLossConfig{})(step, healthy, images, 5);
  out.total.backward();
  for (const torch::Tensor& query :
       {step.lesionQuery, step.lowQualityLesionQuery, step.lowQualityImageQuery}) {
    ASSERT_TRUE(query.grad().defined());
    EXPECT_GT(query.grad().abs().sum().item<double>(), 0);
  }
  for (const torch::Tensor& key : {step.lesionKey, step.highQualityLesionKey, step.highQualityImageKey})
    EXPECT_FALSE(key.grad().defined());
  EXPECT_FALSE(healthy.keys().requires_grad());
  EXPECT_FALSE(images.keys().requires_grad());
}

TEST(ComclLoss, ShapesThatDisagreeThrowNamingTheField) {
  HandQueues queues;
  ComclStepEmbeddings step = handStep();
  step.lesionKey = torch::tensor({{0.6f, 0.8f}, {1.f, 0.f}});  // two positives for one query
  EXPECT_NE(messageOf([&] { lossOf(handConfig(), step, queues); }).find("lesionKey"), std::string::npos);
  step = handStep();
  step.lowQualityImageQuery = torch::ones({1, 3});  // dimension 3, the queue holds 2
  EXPECT_NE(messageOf([&] { lossOf(handConfig(), step, queues); }).find("lowQualityImageQuery"),
            std::string::npos);
  EXPECT_THROW(lossOf(handConfig(), handStep(), queues, -1), std::invalid_argument);
}

TEST(ComclInfoNce, UnitWeightsGiveThePlainInfoNceAndMinusInfinityDropsAKey) {
  torch::manual_seed(1);
  const torch::Tensor lPos = torch::rand({5}) * 2 - 1;
  const torch::Tensor lNeg = torch::rand({5, 9}) * 2 - 1;
  EXPECT_NEAR(infoNceLogWeighted(lPos, lNeg, torch::zeros({5, 9}), 0.07).item<double>(),
              infoNce(lPos, lNeg, 0.07).item<double>(), 1e-6);
  const torch::Tensor keep = torch::rand({5, 9}) > 0.3;
  const torch::Tensor logWeights =
      torch::zeros({5, 9}).masked_fill(~keep, -std::numeric_limits<float>::infinity());
  EXPECT_NEAR(infoNceLogWeighted(lPos, lNeg, logWeights, 0.07).item<double>(),
              infoNceMasked(lPos, lNeg, keep, 0.07).item<double>(), 1e-6);
  // Weight w multiplies e^{l/T}: one negative of weight 3 is three copies of it.
  const torch::Tensor one = torch::tensor({{0.2f}});
  EXPECT_NEAR(
      infoNceLogWeighted(torch::tensor({0.5f}), one, torch::full({1, 1}, std::log(3.0)), 0.5).item<double>(),
      infoNce(torch::tensor({0.5f}), torch::tensor({{0.2f, 0.2f, 0.2f}}), 0.5).item<double>(), 1e-6);
}

TEST(ComclInfoNce, LargeLogitsStayFinite) {
  // T = 1e-3 makes logits of about 1000, past exp's float range.
  const auto loss = infoNceLogWeighted(torch::tensor({1.0f}), torch::tensor({{0.999f, -1.f}}),
                                       torch::full({1, 2}, std::log(2.0f)), 1e-3);
  // -1000 + log(e^1000 + 2 e^999 + ...) = log(1 + 2 e^-1) = 0.551444
  EXPECT_NEAR(loss.item<double>(), std::log(1 + 2 * std::exp(-1.0)), 1e-3);
}

TEST(ComclSelfPaced, RhoFollowsTheScheduleAndSaturatesAtRhoMax) {
  const SelfPacedSchedule schedule{ComclLossConfig{}};  // rho0 0.05, mu 1.05, rhoMax 0.5
  EXPECT_DOUBLE_EQ(schedule.rho(0), 0.05);
  EXPECT_DOUBLE_EQ(schedule.rho(1), 0.0525);
  for (int epoch = 0; epoch <= 47; ++epoch)
    EXPECT_NEAR(schedule.rho(epoch), 0.05 * std::pow(1.05, epoch), 1e-12) << epoch;
  // 0.05 * 1.05^47 = 0.49530 < 0.5 <= 0.05 * 1.05^48 = 0.52006
  EXPECT_LT(schedule.rho(47), 0.5);
  EXPECT_DOUBLE_EQ(schedule.rho(48), 0.5);
  EXPECT_DOUBLE_EQ(schedule.rho(100000), 0.5);  // mu^epoch overflows to infinity
  EXPECT_THROW(schedule.rho(-1), std::invalid_argument);
  // Counts: ceil(rho K), and 0.0525 * 7200 = 378 exactly despite rounding in 0.05 * 1.05.
  EXPECT_EQ(schedule.hardCount(7200, 0), 360);
  EXPECT_EQ(schedule.hardCount(7200, 1), 378);
  EXPECT_EQ(schedule.hardCount(30, 0), 2);  // ceil(1.5)
  EXPECT_EQ(schedule.hardCount(7200, 60), 3600);
  EXPECT_EQ(schedule.hardCount(0, 5), 0);
}

TEST(ComclSelfPaced, TopFractionWeightsExactlyTheHardestCeilRhoK) {
  ComclLossConfig config;
  config.rho0 = 0.1;
  config.mu = 1.5;
  config.beta = 2;
  const SelfPacedSchedule schedule(config);
  torch::manual_seed(2);
  const torch::Tensor hardness = torch::rand({3, 40}) * 2 - 1;
  // epoch 0: ceil(0.1 * 40) = 4; epoch 2: ceil(0.225 * 40) = 9; epoch 5: min(0.5, 0.759) * 40 = 20.
  for (const auto& [epoch, expected] : {std::pair{0, 4}, std::pair{2, 9}, std::pair{5, 20}}) {
    const torch::Tensor weights = schedule.negativeWeights(hardness, epoch);
    ASSERT_EQ(weights.sizes(), hardness.sizes());
    for (std::int64_t row = 0; row < 3; ++row) {
      const torch::Tensor hard = weights[row] == 3;  // 1 + beta
      EXPECT_EQ(hard.sum().item<std::int64_t>(), expected) << "epoch " << epoch;
      EXPECT_EQ((weights[row] == 1).sum().item<std::int64_t>(), 40 - expected);
      // Every hard negative is at least as hard as every other one.
      EXPECT_GE(hardness[row].masked_select(hard).min().item<float>(),
                hardness[row].masked_select(~hard).max().item<float>());
    }
  }
}

TEST(ComclSelfPaced, TiesGoToTheLowerQueueSlot) {
  ComclLossConfig config;
  config.rho0 = 0.5;  // 2 of 4
  const SelfPacedSchedule schedule(config);
  const torch::Tensor weights = schedule.negativeWeights(torch::tensor({{0.3f, 0.7f, 0.7f, 0.7f}}), 0);
  EXPECT_TRUE(torch::equal(weights, torch::tensor({{1.f, 2.f, 2.f, 1.f}})));
  // A long row of equal hardness (where an unstable sort reorders): the first ceil(0.5 * 300) slots.
  const torch::Tensor level = schedule.negativeWeights(torch::full({2, 300}, 0.25f), 0);
  EXPECT_TRUE(torch::equal(level.narrow(1, 0, 150), torch::full({2, 150}, 2.f)));
  EXPECT_TRUE(torch::equal(level.narrow(1, 150, 150), torch::ones({2, 150})));
}

TEST(ComclSelfPaced, FixedTopKIgnoresTheEpochAndStopsAtK) {
  ComclLossConfig config;
  config.hardNegatives = HardNegativeMode::FixedTopK;
  config.fixedTopK = 2;
  const SelfPacedSchedule schedule(config);
  const torch::Tensor hardness = torch::tensor({{0.1f, 0.9f, -0.5f, 0.4f, 0.2f}});
  for (int epoch : {0, 10, 1000}) {
    EXPECT_TRUE(
        torch::equal(schedule.negativeWeights(hardness, epoch), torch::tensor({{1.f, 2.f, 1.f, 2.f, 1.f}})))
        << epoch;
  }
  EXPECT_EQ(schedule.hardCount(1, 7), 1);
}

TEST(ComclSelfPaced, BetaZeroGivesWeightOneToEveryNegative) {
  ComclLossConfig config;
  config.beta = 0;
  config.rho0 = 0.5;
  const SelfPacedSchedule schedule(config);
  const torch::Tensor hardness = torch::rand({4, 12});
  EXPECT_TRUE(torch::equal(schedule.negativeWeights(hardness, 7), torch::ones({4, 12})));
}

TEST(ComclSelfPaced, NonMembersWeighZeroAndDoNotCount) {
  ComclLossConfig config;
  config.rho0 = 0.5;
  const SelfPacedSchedule schedule(config);
  // Members: slots 1, 2, 4, 5 -> ceil(0.5 * 4) = 2 hard ones among them (0.6 and 0.5), although slots 0
  // and 3 are harder.
  const torch::Tensor hardness = torch::tensor({{0.9f, 0.6f, -0.2f, 0.95f, 0.5f, 0.1f}});
  const torch::Tensor members = torch::tensor({false, true, true, false, true, true});
  EXPECT_TRUE(torch::equal(schedule.negativeWeights(hardness, 0, members),
                           torch::tensor({{0.f, 2.f, 1.f, 0.f, 2.f, 1.f}})));
  EXPECT_FALSE(schedule.negativeWeights(hardness.requires_grad_(), 0, members).requires_grad());
}

TEST(ComclHealthyKeyQueue, NeverHoldsLesionKeys) {
  HealthyKeyQueue queue(7, 3);
  torch::manual_seed(3);
  queue.enqueue(torch::randn({2, 3}), PatchKind::HealthyHighQuality);
  const torch::Tensor keysBefore = queue.keys().clone();
  const torch::Tensor tagsBefore = queue.tags().clone();
  EXPECT_NE(messageOf([&] {
              queue.enqueue(torch::randn({2, 3}), PatchKind::Lesion);
            }).find("lesion"),
            std::string::npos);
  EXPECT_TRUE(torch::equal(queue.keys(), keysBefore));
  EXPECT_TRUE(torch::equal(queue.tags(), tagsBefore));
  EXPECT_EQ(queue.writePosition(), 2);
  // Many mixed steps, a lesion batch attempted at each: every slot ends up holding a healthy key.
  for (int step = 0; step < 20; ++step) {
    queue.enqueue(torch::randn({3, 3}),
                  step % 2 ? PatchKind::HealthyLowQuality : PatchKind::HealthyHighQuality);
    EXPECT_THROW(queue.enqueue(torch::randn({3, 3}), PatchKind::Lesion), std::invalid_argument);
  }
  const torch::Tensor tags = queue.tags();
  EXPECT_TRUE(((tags == static_cast<std::int64_t>(PatchKind::HealthyHighQuality)) |
               (tags == static_cast<std::int64_t>(PatchKind::HealthyLowQuality)))
                  .all()
                  .item<bool>());
  EXPECT_EQ(queue.written(), 7);
}

TEST(ComclHealthyKeyQueue, WrapsAroundTheEndOfTheRing) {
  // Capacity 5 is not a multiple of the batch sizes (the authors' code requires one; this ring does not).
  HealthyKeyQueue queue(5, 1);
  queue.enqueue(torch::tensor({{1.f}, {2.f}, {3.f}}), PatchKind::HealthyHighQuality);
  EXPECT_EQ(queue.written(), 3);
  queue.enqueue(torch::tensor({{4.f}, {5.f}, {6.f}, {7.f}}), PatchKind::HealthyLowQuality);
  // Slots 3, 4 then 0, 1: 6 and 7 overwrite the oldest keys 1 and 2.
  EXPECT_TRUE(torch::equal(queue.keys().squeeze(1), torch::tensor({6.f, 7.f, 3.f, 4.f, 5.f})));
  EXPECT_TRUE(torch::equal(queue.tags(), torch::tensor({1, 1, 0, 1, 1}, torch::kLong)));
  EXPECT_EQ(queue.writePosition(), 2);
  // A batch larger than the ring keeps its last `capacity` keys, written from the write position.
  queue.enqueue(torch::arange(10, 17, torch::kFloat).unsqueeze(1), PatchKind::HealthyHighQuality);
  EXPECT_TRUE(torch::equal(queue.keys().squeeze(1), torch::tensor({15.f, 16.f, 12.f, 13.f, 14.f})));
  EXPECT_EQ(queue.writePosition(), 2);
  EXPECT_THROW(queue.enqueue(torch::ones({2, 3}), PatchKind::HealthyHighQuality), std::invalid_argument);
  EXPECT_THROW(HealthyKeyQueue(0, 4), std::invalid_argument);
}

TEST(ComclHealthyKeyQueue, SubsetsSelectTheWrittenSlotsOfEachQuality) {
  HealthyKeyQueue queue(6, 2);
  queue.enqueue(torch::ones({2, 2}), PatchKind::HealthyHighQuality);
  queue.enqueue(torch::ones({3, 2}), PatchKind::HealthyLowQuality);
  using Subset = HealthyKeyQueue::Subset;
  EXPECT_TRUE(torch::equal(queue.members(Subset::HighQuality),
                           torch::tensor({true, true, false, false, false, false})));
  EXPECT_TRUE(torch::equal(queue.members(Subset::LowQuality),
                           torch::tensor({false, false, true, true, true, false})));
  EXPECT_TRUE(torch::equal(queue.members(Subset::All), torch::tensor({true, true, true, true, true, false})));
}

TEST(ComclHealthyKeyQueue, StateTravelsAsModuleBuffersThroughACheckpoint) {
  torch::manual_seed(4);
  HealthyKeyQueue saved(6, 4);
  torch::nn::Module savedModule;
  for (const auto& [name, tensor] : saved.buffers())
    savedModule.register_buffer("healthy_" + name, tensor);
  // The module shares the queue's tensors: what the queue writes is in the checkpoint.
  saved.enqueue(torch::randn({4, 4}), PatchKind::HealthyLowQuality);
  saved.enqueue(torch::randn({1, 4}), PatchKind::HealthyHighQuality);
  std::stringstream checkpoint;
  torch::serialize::OutputArchive out;
  savedModule.save(out);
  out.save_to(checkpoint);

  HealthyKeyQueue restored(6, 4);
  torch::nn::Module restoredModule;
  for (const auto& [name, tensor] : restored.buffers())
    restoredModule.register_buffer("healthy_" + name, tensor);
  torch::serialize::InputArchive in;
  in.load_from(checkpoint);
  restoredModule.load(in);
  EXPECT_TRUE(torch::equal(restored.keys(), saved.keys()));
  EXPECT_TRUE(torch::equal(restored.tags(), saved.tags()));
  EXPECT_EQ(restored.writePosition(), 5);
  restored.enqueue(torch::ones({2, 4}), PatchKind::HealthyHighQuality);  // slots 5 and 0
  EXPECT_TRUE(torch::equal(restored.keys()[5], torch::ones({4})));
  EXPECT_TRUE(torch::equal(restored.keys()[0], torch::ones({4})));
  EXPECT_EQ(restored.writePosition(), 1);
}

TEST(ComclLossConfig, DefaultsAreTheDocumentedSettings) {
  const ComclLossConfig c;
  EXPECT_EQ(c.temperature, 0.07);  // verified
  EXPECT_EQ(c.lesionWeight, 1.0);
  EXPECT_EQ(c.qualityWeight, 1.0);
  EXPECT_EQ(c.imageWeight, 1.0);
  EXPECT_TRUE(c.lesionTerm && c.qualityTerm && c.imageTerm);
  EXPECT_EQ(c.hardNegatives, HardNegativeMode::TopFraction);
  EXPECT_EQ(c.rho0, 0.05);
  EXPECT_EQ(c.mu, 1.05);
  EXPECT_EQ(c.rhoMax, 0.5);
  EXPECT_EQ(c.beta, 1.0);
  EXPECT_NO_THROW(c.validate());
}

TEST(ComclLossConfig, RoundTripsAndRejectsBadValuesNamingTheKey) {
  ComclLossConfig c;
  c.temperature = 0.2;
  c.imageWeight = 0.25;
  c.qualityTerm = false;
  c.hardNegatives = HardNegativeMode::FixedTopK;
  c.fixedTopK = 17;
  c.rho0 = 0.1;
  c.mu = 1.2;
  c.rhoMax = 0.3;
  c.beta = 0.5;
  const nlohmann::json json = c.toJson();
  EXPECT_EQ(ComclLossConfig::fromJson(json).toJson(), json);
  EXPECT_EQ(ComclLossConfig::fromJson(nlohmann::json::object()).toJson(), ComclLossConfig{}.toJson());

  const std::vector<std::pair<std::string, nlohmann::json>> bad = {
      {"temperature", 0},
      {"temperature", "0.07"},
      {"lesionWeight", -1},
      {"qualityTerm", 1},
      {"hardNegatives", "random"},
      {"rho0", 1.5},
      {"mu", 0.9},
      {"rhoMax", 0.01},
      {"beta", -0.5},
      {"fixedTopK", -1},
      {"fixedTopK", 2.5},
      {"momentum", 0.999},
  };
  for (const auto& [key, value] : bad) {
    nlohmann::json edited = ComclLossConfig{}.toJson();
    edited[key] = value;
    EXPECT_NE(messageOf([&] { ComclLossConfig::fromJson(edited); }).find(key), std::string::npos)
        << key << " = " << value.dump();
  }
  nlohmann::json allOff = ComclLossConfig{}.toJson();
  allOff["lesionTerm"] = allOff["qualityTerm"] = allOff["imageTerm"] = false;
  EXPECT_THROW(ComclLossConfig::fromJson(allOff), std::invalid_argument);
  EXPECT_THROW(ComclLossConfig::fromJson(nlohmann::json::array()), std::invalid_argument);
  EXPECT_EQ(hardNegativeModeFromString(toString(HardNegativeMode::FixedTopK)), HardNegativeMode::FixedTopK);
}

TEST(ComclLoss, CpuAndCudaAgree) {
  if (!torch::cuda::is_available())
    GTEST_SKIP() << "no CUDA device";
  const torch::Device cuda(torch::kCUDA);
  torch::manual_seed(5);
  const auto unit = [](std::int64_t n) {
    return torch::nn::functional::normalize(torch::randn({n, 16}),
                                            torch::nn::functional::NormalizeFuncOptions().dim(1));
  };
  HealthyKeyQueue cpuHealthy(64, 16);
  HealthyKeyQueue cudaHealthy(64, 16, cuda);
  ImageKeyQueue cpuImages(32, 16);
  ImageKeyQueue cudaImages(32, 16, cuda);
  for (int step = 0; step < 5; ++step) {
    const torch::Tensor hq = unit(9), lq = unit(9), images = unit(7);
    cpuHealthy.enqueue(hq, PatchKind::HealthyHighQuality);
    cpuHealthy.enqueue(lq, PatchKind::HealthyLowQuality);
    cpuImages.enqueue(images);
    cudaHealthy.enqueue(hq.to(cuda), PatchKind::HealthyHighQuality);
    cudaHealthy.enqueue(lq.to(cuda), PatchKind::HealthyLowQuality);
    cudaImages.enqueue(images.to(cuda));
  }
  ComclStepEmbeddings cpuStep;
  cpuStep.lesionQuery = unit(8);
  cpuStep.lesionKey = unit(8);
  cpuStep.lowQualityLesionQuery = unit(8);
  cpuStep.highQualityLesionKey = unit(8);
  cpuStep.lowQualityImageQuery = unit(4);
  cpuStep.highQualityImageKey = unit(4);
  ComclStepEmbeddings cudaStep{cpuStep.lesionQuery.to(cuda),           cpuStep.lesionKey.to(cuda),
                               cpuStep.lowQualityLesionQuery.to(cuda), cpuStep.highQualityLesionKey.to(cuda),
                               cpuStep.lowQualityImageQuery.to(cuda),  cpuStep.highQualityImageKey.to(cuda)};
  const ComclLoss loss{ComclLossConfig{}};
  const ComclLossOutput onCpu = loss(cpuStep, cpuHealthy, cpuImages, 20);
  const ComclLossOutput onCuda = loss(cudaStep, cudaHealthy, cudaImages, 20);
  ASSERT_TRUE(onCuda.total.is_cuda());
  EXPECT_NEAR(onCuda.lesion.item<double>(), onCpu.lesion.item<double>(), 1e-4);
  EXPECT_NEAR(onCuda.quality.item<double>(), onCpu.quality.item<double>(), 1e-4);
  EXPECT_NEAR(onCuda.image.item<double>(), onCpu.image.item<double>(), 1e-4);
  // The same negatives are hard on both devices (ties included).
  const SelfPacedSchedule& schedule = loss.schedule();
  const torch::Tensor hardness = torch::tensor({{0.5f, 0.5f, 0.2f, 0.5f, 0.1f, 0.5f}}).repeat({3, 1});
  EXPECT_TRUE(torch::equal(schedule.negativeWeights(hardness.to(cuda), 40).cpu(),
                           schedule.negativeWeights(hardness, 40)));
}

}  // namespace
}  // namespace comcl::training
