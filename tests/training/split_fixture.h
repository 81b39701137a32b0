// A tiny archive with a stored patient split, for the evaluation protocol's tests: 20 patients of one
// film each (label = patient parity, brightness follows the label), 60 % of the patients in train.
#pragma once

#include <gtest/gtest.h>

#include <map>
#include <string>

#include "archive_fixture.h"
#include "comcl/training/dataset.h"
#include "comcl/training/evaluation.h"

namespace comcl::testing {

class SplitArchiveTest : public ::testing::Test {
 protected:
  void SetUp() override {
    fixture_.addPatients(20, 1);  // 40 images, label = patient parity, brightness follows the label
    set_ = training::TrainingSet::fromIndex(fixture_.index());
    split_ = training::ensurePatientSplit(fixture_.index(), set_, training::SplitConfig{0.6, 0.0, 3});
  }
  ArchiveFixture fixture_;
  training::TrainingSet set_;
  std::map<std::string, std::string> split_;
};

}  // namespace comcl::testing
