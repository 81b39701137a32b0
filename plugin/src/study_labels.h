// Study labels given through the REST API (PUT /comcl/studies/{id}/labels, POST /comcl/labels): checked
// against the label set declared in the configuration (Comcl.Labels), stored as study-scope labels keyed by
// StudyInstanceUID (training gives them to every image of the study), reported row by row. No Orthanc
// dependency, so unit tests drive it directly.
#pragma once

#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "comcl/storage/index.h"

namespace comcl::plugin {

// Declared labels: name -> number of grades. 2 is a binary finding (0 absent, 1 present); K > 2 a graded
// label with values 0..K-1.
using LabelSet = std::map<std::string, int>;

// Comcl.Labels: {"COVID-19": "binary", "severity": 4} -> LabelSet. Throws ConfigError (plugin_config.h)
// naming the entry for anything else.
LabelSet labelSetFromJson(const nlohmann::json& json);

class StudyLabels {
 public:
  // The index must outlive this object.
  StudyLabels(storage::Index& index, LabelSet labels);

  const LabelSet& labelSet() const { return labels_; }

  // Stores {"name": value, ...} on one study (known to the index by its StudyInstanceUID). Every label is
  // checked on its own: unknown names and bad values are reported, the valid ones stored (one transaction).
  // Returns {"StudyInstanceUID", "Stored": n, "Problems": ["...", ...]}.
  nlohmann::json put(const std::string& studyInstanceUid, const nlohmann::json& labels,
                     const std::string& source);
  // Lesion boxes on images of the study (CoMCL crops its lesion patches around them): [{"SOPInstanceUID",
  // "Finding" (a declared binary label), "Box": [x0, y0, x1, y1] in the original image's pixels,
  // "Confidence" (optional, 0..1, default 1)}]. Checked one by one like labels; the valid ones replace the
  // boxes this source gave before for the same image and finding. Returns {"StudyInstanceUID", "Stored",
  // "Problems"}.
  nlohmann::json putBoxes(const std::string& studyInstanceUid, const nlohmann::json& boxes,
                          const std::string& source);
  // {"StudyInstanceUID", "Labels": {"name": {"Value": v, "Source": "..."}}, "Boxes": [{..., "Source"}]}.
  nlohmann::json get(const std::string& studyInstanceUid);
  // Bulk: an array of rows {"StudyInstanceUID": uid}, {"AccessionNumber": n} or {"PatientID": id,
  // "StudyDate": "YYYYMMDD"}, each with "Labels": {...} and/or lesion "Boxes": [...] (as putBoxes). Rows are
  // independent: an unknown or ambiguous study, a malformed row, a bad label or box is reported with its row
  // number (1-based) and the valid labels and boxes of every row are kept. Returns {"Rows": n, "Stored":
  // labels stored, "BoxesStored": boxes stored, "Problems": [{"Row": r, "Message": "..."}, ...]}.
  nlohmann::json importRows(const nlohmann::json& rows, const std::string& source);
  // The same from CSV: a header with the study's columns (StudyInstanceUID, AccessionNumber, or PatientID and
  // StudyDate) and one column per label; an empty cell gives no label. Rows are numbered as data rows
  // (the header is not counted). Throws std::invalid_argument when the header names no study column.
  nlohmann::json importCsv(std::string_view text, const std::string& source);

 private:
  // The study a bulk row names, or the reason it names none.
  std::string resolveStudy(const nlohmann::json& row, std::string& problem);
  void importRow(const nlohmann::json& row, std::size_t number, const std::string& source,
                 std::vector<storage::LabelRecord>& records, std::vector<storage::LesionBoxRecord>& boxes,
                 nlohmann::json& problems);
  // Valid lesion boxes of `boxes` (on images of the study, for declared binary findings); problems appended.
  std::vector<storage::LesionBoxRecord> checkedBoxes(const std::string& studyInstanceUid,
                                                     const nlohmann::json& boxes, const std::string& source,
                                                     std::vector<std::string>& problems) const;
  // Valid labels of `labels` as records for the study; problems appended.
  std::vector<storage::LabelRecord> checked(const std::string& studyInstanceUid, const nlohmann::json& labels,
                                            const std::string& source,
                                            std::vector<std::string>& problems) const;

  storage::Index& index_;
  LabelSet labels_;
};

}  // namespace comcl::plugin
