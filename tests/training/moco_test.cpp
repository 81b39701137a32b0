// MoCo v2's losses against hand-computed values, the queue and the momentum encoder's behaviour.
#include "comcl/training/moco.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>

namespace comcl::training {
namespace {

MocoConfig tinyConfig(int queue = 6) {
  MocoConfig c;
  c.projectionDim = 8;
  c.queueSize = queue;
  c.momentum = 0.9;
  c.bnGroups = 2;
  return c;
}

KeyMetadata meta(std::vector<std::int64_t> patient, std::vector<std::int64_t> study,
                 std::vector<std::int64_t> lat) {
  return {torch::tensor(patient), torch::tensor(study), torch::tensor(lat)};
}

TEST(MocoLoss, InfoNceMatchesTheHandComputedValue) {
  // One query: l+ = 0.5, negatives 0.1 and -0.2, T = 0.5 -> logits 1, 0.2, -0.4.
  // loss = -1 + log(e^1 + e^0.2 + e^-0.4) = -1 + log(2.718282 + 1.221403 + 0.670320) = -1 + log(4.610005)
  //      = -1 + 1.528229 = 0.528229
  const auto loss = infoNce(torch::tensor({0.5f}), torch::tensor({{0.1f, -0.2f}}), 0.5);
  EXPECT_NEAR(loss.item<double>(), -1 + std::log(std::exp(1.0) + std::exp(0.2) + std::exp(-0.4)), 1e-5);
  EXPECT_NEAR(loss.item<double>(), 0.528229, 1e-5);
}

TEST(MocoLoss, MaskedNegativesLeaveTheDenominator) {
  // Keeping only the first negative: -1 + log(e^1 + e^0.2) = 0.371101
  const auto loss = infoNceMasked(torch::tensor({0.5f}), torch::tensor({{0.1f, -0.2f}}),
                                  torch::tensor({{true, false}}), 0.5);
  EXPECT_NEAR(loss.item<double>(), -1 + std::log(std::exp(1.0) + std::exp(0.2)), 1e-5);
}

TEST(MocoLoss, ReweightingPutsTheTargetShareOnSameLateralityKeys) {
  // Four keys, one of them "hard" (r = 1/4). target 0.9: w_hard = 0.9 / 0.25 = 3.6, w_easy = 0.1 / 0.75 =
  // 0.1333 (the weights sum to K = 4). T = 1, l+ = 0, negatives 0.2 (hard), 0, 0, 0: loss = -0 + log(1 + 3.6
  // e^0.2 + 3 * 0.13333) = log(1 + 4.397102 + 0.4) = 1.757352
  const auto loss = infoNceReweighted(torch::tensor({0.0f}), torch::tensor({{0.2f, 0.f, 0.f, 0.f}}),
                                      torch::tensor({{true, false, false, false}}), 0.9, 1.0);
  EXPECT_NEAR(loss.item<double>(), std::log(1 + 3.6 * std::exp(0.2) + 3 * (0.1 / 0.75)), 1e-5);
  // With no hard key (r = 0) every weight is 1: the default InfoNCE.
  const auto none = infoNceReweighted(torch::tensor({0.0f}), torch::tensor({{0.2f, 0.f, 0.f, 0.f}}),
                                      torch::tensor({{false, false, false, false}}), 0.9, 1.0);
  EXPECT_NEAR(none.item<double>(),
              infoNce(torch::tensor({0.0f}), torch::tensor({{0.2f, 0.f, 0.f, 0.f}}), 1.0).item<double>(),
              1e-6);
}

TEST(Moco, KeysEnterTheQueueWithTheirMetadataAndWrapAround) {
  torch::manual_seed(0);
  Moco moco(tinyConfig(6));
  std::mt19937_64 rng(1);
  const auto images = torch::rand({4, 1, 32, 32});
  EXPECT_FALSE(moco->queueFull());
  moco->forward(images, images, meta({1, 1, 2, 2}, {1, 1, 2, 2}, {0, 1, 0, 1}),
                meta({1, 1, 2, 2}, {10, 11, 12, 13}, {0, 1, 0, 1}), rng);
  moco->afterStep();
  EXPECT_FALSE(moco->queueFull());  // 4 of 6
  const auto buffers = moco->named_buffers();
  EXPECT_EQ(buffers["queue_ptr"].item<std::int64_t>(), 4);
  EXPECT_EQ(buffers["queue_meta"][3][1].item<std::int64_t>(), 13);  // the key's study, not the query's
  EXPECT_EQ(buffers["queue_meta"][4][1].item<std::int64_t>(), -1);  // not written yet
  moco->forward(images, images, meta({3, 3, 3, 3}, {5, 5, 5, 5}, {0, 0, 0, 0}),
                meta({3, 3, 3, 3}, {20, 21, 22, 23}, {0, 0, 0, 0}), rng);
  moco->afterStep();
  EXPECT_TRUE(moco->queueFull());
  EXPECT_EQ(buffers["queue_ptr"].item<std::int64_t>(), 2);  // 4 + 4 wraps around 6
  EXPECT_EQ(buffers["queue_meta"][4][1].item<std::int64_t>(), 20);
  EXPECT_EQ(buffers["queue_meta"][0][1].item<std::int64_t>(), 22);
  EXPECT_NEAR(buffers["queue"].norm(2, 1).mean().item<double>(), 1.0, 1e-5);  // unit vectors
}

TEST(Moco, OnlyTheQueryEncoderLearnsAndTheKeyEncoderFollowsByMomentum) {
  torch::manual_seed(0);
  Moco moco(tinyConfig());
  std::mt19937_64 rng(2);
  auto params = moco->queryEncoder()->parameters();
  torch::optim::SGD sgd(params, torch::optim::SGDOptions(0.5));
  const auto images = torch::rand({4, 1, 32, 32});
  const auto m = meta({0, 1, 2, 3}, {0, 1, 2, 3}, {0, 0, 0, 0});
  auto out = moco->forward(images, torch::rand({4, 1, 32, 32}), m, m, rng);
  EXPECT_TRUE(std::isfinite(out.loss.item<double>()));
  sgd.zero_grad();
  out.loss.backward();
  const auto named = moco->named_parameters();
  EXPECT_FALSE(named["encoder_k.backbone.conv1.weight"].grad().defined());
  EXPECT_TRUE(named["encoder_q.backbone.conv1.weight"].grad().defined());
  const auto keyBefore = named["encoder_k.head.2.weight"].clone();
  sgd.step();
  const auto query = named["encoder_q.head.2.weight"].clone();
  moco->afterStep();
  // k <- 0.9 k + 0.1 q
  EXPECT_TRUE(torch::allclose(named["encoder_k.head.2.weight"], keyBefore * 0.9 + query * 0.1, 1e-5, 1e-6));
}

TEST(Moco, EveryNegativeStrategyGivesAFiniteDifferentiableLossOnceTheQueueIsFull) {
  for (NegativeStrategy s :
       {NegativeStrategy::Default, NegativeStrategy::SameLateralityOnly, NegativeStrategy::Reweighted,
        NegativeStrategy::Appended, NegativeStrategy::Synthetic}) {
    torch::manual_seed(0);
    MocoConfig config = tinyConfig(8);
    config.negatives = s;
    config.appendFraction = 0.5;
    Moco moco(config);
    std::mt19937_64 rng(3);
    const auto m = meta({0, 1, 2, 3}, {0, 1, 2, 3}, {0, 1, 0, -1});
    for (int step = 0; step < 3; ++step) {
      const auto images = torch::rand({4, 1, 32, 32});
      auto out = moco->forward(images, images, m, m, rng);
      ASSERT_TRUE(std::isfinite(out.loss.item<double>())) << toString(s) << " step " << step;
      out.loss.backward();
      moco->afterStep();
    }
    EXPECT_TRUE(moco->queueFull());
    EXPECT_EQ(negativeStrategyFromString(toString(s)), s);
  }
  EXPECT_THROW(negativeStrategyFromString("hardest"), std::invalid_argument);
}

TEST(Moco, ConfigRoundTripsAndRejectsBadValues) {
  MocoConfig c = tinyConfig();
  c.negatives = NegativeStrategy::Appended;
  const MocoConfig back = MocoConfig::fromJson(c.toJson());
  EXPECT_EQ(back.toJson(), c.toJson());
  auto bad = c.toJson();
  bad["temperature"] = 0;
  EXPECT_THROW(MocoConfig::fromJson(bad), std::invalid_argument);
  bad = c.toJson();
  bad["queue"] = 5;
  EXPECT_THROW(MocoConfig::fromJson(bad), std::invalid_argument);
  bad = c.toJson();
  bad["architecture"] = "vgg";
  EXPECT_THROW(MocoConfig::fromJson(bad), std::invalid_argument);
}

}  // namespace
}  // namespace comcl::training
