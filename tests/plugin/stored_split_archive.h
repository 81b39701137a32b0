// The archive the training-run tests share: 20 synthetic patients with 2 studies each and a stored
// patient-level split, as an earlier run leaves it (P0-P13 train, P14-P15 validation, P16-P19 test), so
// that a run must use it rather than draw another.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include "archive_fixture.h"

namespace comcl::testing {

inline void addPatientsWithStoredSplit(ArchiveFixture& archive) {
  archive.addPatients(20, 2);
  std::vector<std::pair<std::string, std::string>> splits;
  for (int p = 0; p < 20; ++p)
    splits.emplace_back("P" + std::to_string(p), p < 14 ? "train" : p < 16 ? "val" : "test");
  archive.index().assignSplits(splits, 0);
}

}  // namespace comcl::testing
