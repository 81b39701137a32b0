// MedAug's candidate sets on a hand-built archive, the strategy syntax, and the data set snapshot.
#include "comcl/training/pairs.h"

#include <gtest/gtest.h>

#include <map>
#include <set>

#include "archive_fixture.h"

namespace comcl::training {
namespace {

using comcl::testing::ArchiveFixture;

// Patient A: study 1 (PA, LL), study 2 (PA). Patient B: one AP image. One image without PatientID.
class PairsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    fixture_.add({"A", "s1", "PA", std::nullopt});  // 0
    fixture_.add({"A", "s1", "LL", std::nullopt});  // 1
    fixture_.add({"A", "s2", "PA", std::nullopt});  // 2
    fixture_.add({"B", "s3", "AP", std::nullopt});  // 3
    fixture_.add({"", "s4", "PA", std::nullopt});   // 4
    set_ = TrainingSet::fromIndex(fixture_.index());
  }
  std::set<int> candidates(const std::string& strategy, int image) {
    const PositiveSampler sampler(set_, PairStrategy::parse(strategy));
    const auto& c = sampler.candidates(image);
    return {c.begin(), c.end()};
  }
  ArchiveFixture fixture_;
  TrainingSet set_;
};

TEST_F(PairsTest, CandidateSetsFollowEachStudyAndLateralityCriterion) {
  ASSERT_EQ(set_.size(), 5u);
  // Same study includes the image itself (as MedAug's code does); distinct excludes it.
  EXPECT_EQ(candidates("same-patient/same-study/all-lateralities", 0), (std::set<int>{0, 1}));
  EXPECT_EQ(candidates("same-patient/all-studies/all-lateralities", 0), (std::set<int>{0, 1, 2}));
  EXPECT_EQ(candidates("same-patient/distinct-studies/all-lateralities", 0), (std::set<int>{2}));
  EXPECT_EQ(candidates("same-patient/same-study/same-laterality", 0), (std::set<int>{0}));
  EXPECT_EQ(candidates("same-patient/same-study/distinct-lateralities", 0), (std::set<int>{1}));
  EXPECT_EQ(candidates("same-patient/all-studies/same-laterality", 0), (std::set<int>{0, 2}));
  EXPECT_EQ(candidates("same-patient/distinct-studies/distinct-lateralities", 0), (std::set<int>{}));
  EXPECT_EQ(candidates("same-patient/distinct-studies/same-laterality", 1), (std::set<int>{}));
  EXPECT_EQ(candidates("instance", 2), (std::set<int>{2}));
  // A patient with one image and an image without PatientID only ever pair with themselves.
  EXPECT_EQ(candidates("same-patient/all-studies", 3), (std::set<int>{3}));
  EXPECT_EQ(candidates("same-patient/all-studies", 4), (std::set<int>{4}));
}

TEST_F(PairsTest, StatisticsCountPositivesSelfPairsAndFallbacks) {
  const PairStatistics all =
      PositiveSampler(set_, PairStrategy::parse("same-patient/all-studies")).statistics(4);
  EXPECT_EQ(all.queries, 5);
  EXPECT_EQ(all.withOtherImage, 3);  // A's three images
  EXPECT_EQ(all.onlySelf, 2);
  EXPECT_EQ(all.fallback, 0);
  EXPECT_EQ(all.histogram, (std::vector<std::int64_t>{2, 0, 3, 0}));  // two others for each of A's images
  EXPECT_DOUBLE_EQ(all.meanCandidates, 6.0 / 5.0);
  EXPECT_EQ(all.maxCandidates, 2);

  const PairStatistics distinct =
      PositiveSampler(set_, PairStrategy::parse("same-patient/distinct-studies")).statistics();
  EXPECT_EQ(distinct.withOtherImage, 3);  // 0->2, 1->2, 2->{0,1}
  EXPECT_EQ(distinct.fallback, 2);
}

TEST_F(PairsTest, SamplingIsUniformOverCandidatesAndFallsBackToTheQuery) {
  const PositiveSampler sampler(set_, PairStrategy::parse("same-patient/all-studies"));
  std::mt19937_64 rng(7);
  std::map<int, int> counts;
  for (int i = 0; i < 3000; ++i)
    ++counts[sampler.sample(0, rng)];
  ASSERT_EQ(counts.size(), 3u);
  for (const auto& [image, n] : counts)
    EXPECT_NEAR(n, 1000, 120) << "image " << image;
  const PositiveSampler none(set_,
                             PairStrategy::parse("same-patient/distinct-studies/distinct-lateralities"));
  EXPECT_EQ(none.sample(0, rng), 0);
}

TEST_F(PairsTest, StrategiesParseInTheirCanonicalFormAndRejectOthers) {
  for (const PairStrategy& s : allMedAugStrategies())
    EXPECT_EQ(PairStrategy::parse(s.toString()), s) << s.toString();
  EXPECT_EQ(allMedAugStrategies().size(), 9u);
  EXPECT_EQ(PairStrategy::parse("same-patient/same-study").toString(),
            "same-patient/same-studies/all-lateralities");
  for (const char* bad : {"", "same-study", "same-patient/some-study", "same-patient/same-study/left",
                          "same-patient/same-study/all-lateralities/x"}) {
    EXPECT_THROW(PairStrategy::parse(bad), std::invalid_argument) << bad;
  }
}

TEST_F(PairsTest, LateralityComesFromTheViewPosition) {
  EXPECT_EQ(lateralityOfView(std::string("PA")), Laterality::Frontal);
  EXPECT_EQ(lateralityOfView(std::string("ap supine")), Laterality::Frontal);
  EXPECT_EQ(lateralityOfView(std::string("LL")), Laterality::Lateral);
  EXPECT_EQ(lateralityOfView(std::string("L")), Laterality::Lateral);
  EXPECT_EQ(lateralityOfView(std::string("LATERAL")), Laterality::Lateral);
  EXPECT_EQ(lateralityOfView(std::string("?")), Laterality::Unknown);
  EXPECT_EQ(lateralityOfView(std::nullopt), Laterality::Unknown);
}

TEST_F(PairsTest, SnapshotIdChangesWithRowsAndLabelsOnly) {
  const std::string before = set_.snapshotId();
  EXPECT_EQ(TrainingSet::fromIndex(fixture_.index()).snapshotId(), before);
  fixture_.index().putLabels({{"instance", "img-0", "effusion", 1, "test"}});
  const TrainingSet labelled = TrainingSet::fromIndex(fixture_.index());
  EXPECT_NE(labelled.snapshotId(), before);
  EXPECT_EQ(labelled.findings(), (std::vector<std::string>{"effusion"}));
  EXPECT_EQ(labelled.label(0, "effusion"), 1.0);
  EXPECT_FALSE(labelled.label(1, "effusion").has_value());
}

TEST(PairsByDate, ImagesOfAPatientOnTheSameDayFormOneStudy) {
  ArchiveFixture fixture;
  for (const char* uid : {"u1", "u2", "u3"}) {
    fixture.add({"A", uid, "PA", std::nullopt});
  }
  // Dates: u1 and u2 on the same day, u3 the next.
  for (const auto& [resource, date] : std::map<std::string, std::string>{
           {"img-0", "20200401"}, {"img-1", "20200401"}, {"img-2", "20200402"}}) {
    auto row = *fixture.index().findInstance(resource);
    row.studyDate = date;
    fixture.index().upsertInstance(row);
  }
  const TrainingSet byUid = TrainingSet::fromIndex(fixture.index());
  const TrainingSet byDate = TrainingSet::fromIndex(fixture.index(), StudyGrouping::Date);
  EXPECT_EQ(byUid.studyKeys().size(), 3u);
  EXPECT_EQ(byDate.studyKeys().size(), 2u);
  EXPECT_NE(byUid.snapshotId(), byDate.snapshotId());
  const PositiveSampler sampler(byDate, PairStrategy::parse("same-patient/same-study"));
  const auto& same = sampler.candidates(0);
  EXPECT_EQ(std::set<int>(same.begin(), same.end()), (std::set<int>{0, 1}));
  EXPECT_EQ(studyGroupingFromString("date"), StudyGrouping::Date);
  EXPECT_THROW(studyGroupingFromString("day"), std::invalid_argument);
}

TEST_F(PairsTest, InstanceLabelsOverrideStudyLabels) {
  fixture_.index().putLabels({{"study", "s1", "icu", 1, "test"}, {"instance", "img-1", "icu", 0, "test"}});
  const TrainingSet set = TrainingSet::fromIndex(fixture_.index());
  EXPECT_EQ(set.label(0, "icu"), 1.0);
  EXPECT_EQ(set.label(1, "icu"), 0.0);
  EXPECT_FALSE(set.label(2, "icu").has_value());
}

}  // namespace
}  // namespace comcl::training
