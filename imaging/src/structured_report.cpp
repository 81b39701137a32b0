// The per-study SR with DCMTK's DSRDocument. See structured_report.h for the object and its content tree.
// DSRDocument keeps the patient/study/series attributes and builds the tree; the data set it writes gets
// comcl's own "2.25." UIDs and is serialised into memory with DcmOutputBufferStream.
#include "comcl/imaging/structured_report.h"

#include <dcmtk/config/osconfig.h>  // must come first among DCMTK headers
#include <dcmtk/dcmdata/dcdeftag.h>
#include <dcmtk/dcmdata/dcfilefo.h>
#include <dcmtk/dcmdata/dcistrmb.h>
#include <dcmtk/dcmdata/dcostrmb.h>
#include <dcmtk/dcmdata/dcuid.h>
#include <dcmtk/dcmdata/dcvrui.h>
#include <dcmtk/dcmsr/codes/dcm.h>
#include <dcmtk/dcmsr/dsrdoc.h>
#include <dcmtk/ofstd/ofuuid.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <functional>
#include <map>
#include <random>
#include <stdexcept>

namespace comcl::imaging {

namespace {

using Scores = std::vector<std::pair<std::string, double>>;

constexpr std::size_t kHeaderBytes = 64 * 1024;  // what isComclReport parses at most

void check(const OFCondition& status, const std::string& what) {
  if (status.bad())
    throw std::runtime_error("cannot write the structured report: " + what + " (DCMTK: " + status.text() +
                             ")");
}

DSRCodedEntryValue privateCode(const char* value, const char* meaning) {
  return DSRCodedEntryValue(value, kSrCodingScheme, meaning);
}

// Strings end up in a data set declared ISO_IR 192: refuse anything that is not UTF-8.
bool isUtf8(const std::string& s) {
  std::size_t i = 0;
  while (i < s.size()) {
    const auto c = static_cast<unsigned char>(s[i]);
    std::size_t extra = 0;
    std::uint32_t code = 0;
    if (c < 0x80) {
      ++i;
      continue;
    }
    if ((c & 0xE0) == 0xC0) {
      extra = 1;
      code = c & 0x1Fu;
    } else if ((c & 0xF0) == 0xE0) {
      extra = 2;
      code = c & 0x0Fu;
    } else if ((c & 0xF8) == 0xF0) {
      extra = 3;
      code = c & 0x07u;
    } else {
      return false;
    }
    if (i + extra >= s.size())
      return false;
    for (std::size_t k = 1; k <= extra; ++k) {
      const auto cc = static_cast<unsigned char>(s[i + k]);
      if ((cc & 0xC0) != 0x80)
        return false;
      code = (code << 6) | (cc & 0x3Fu);
    }
    static const std::uint32_t minimum[] = {0, 0x80, 0x800, 0x10000};
    if (code < minimum[extra] || code > 0x10FFFF || (code >= 0xD800 && code <= 0xDFFF))
      return false;
    i += extra + 1;
  }
  return true;
}

bool isAscii(const std::string& s) {
  for (const char c : s) {
    if (static_cast<unsigned char>(c) >= 0x80)
      return false;
  }
  return true;
}

// Whether every string written is ASCII (the default repertoire, no SpecificCharacterSet needed).
bool isAscii(const SrStudyReport& report) {
  auto scores = [](const Scores& list) {
    for (const auto& score : list) {
      if (!isAscii(score.first))
        return false;
    }
    return true;
  };
  auto all = [](const std::vector<std::string>& list) {
    for (const auto& s : list) {
      if (!isAscii(s))
        return false;
    }
    return true;
  };
  for (const auto& tag : report.studyTags) {
    if (!isAscii(tag.second))
      return false;
  }
  if (!all(report.studyReasons) || !scores(report.studyScores) || !isAscii(report.modelDescription) ||
      !isAscii(report.softwareVersion)) {
    return false;
  }
  for (const auto& image : report.images) {
    if (!all(image.reasons) || !scores(image.scores))
      return false;
  }
  return true;
}

const std::string& requireText(const std::string& value, const std::string& what) {
  if (!isUtf8(value))
    throw std::invalid_argument("structured report: " + what + " is not UTF-8");
  return value;
}

bool isValidUid(const std::string& uid) {
  return !uid.empty() && DcmUniqueIdentifier::checkStringValue(uid.c_str(), "1").good();
}

// A UID under the UUID root (ITU-T X.667): "2.25." and a random (version 4) UUID as a decimal integer.
std::string newUuidUid() {
  std::random_device random;
  OFUUID::BinaryRepresentation bytes{};
  for (std::size_t i = 0; i < sizeof(bytes.value); i += 4) {
    const std::uint32_t word = random();
    for (std::size_t k = 0; k < 4; ++k)
      bytes.value[i + k] = static_cast<Uint8>(word >> (8 * k));
  }
  bytes.value[6] = static_cast<Uint8>((bytes.value[6] & 0x0F) | 0x40);  // version 4: random
  bytes.value[8] = static_cast<Uint8>((bytes.value[8] & 0x3F) | 0x80);  // RFC 4122 variant
  OFString uid;
  OFUUID(bytes).toString(uid, OFUUID::ER_RepresentationOID);
  return uid.c_str();
}

// Current local date (DA) and time (TM).
std::pair<std::string, std::string> now() {
  const std::time_t t = std::time(nullptr);
  std::tm local{};
  localtime_r(&t, &local);
  char date[16], time[16];
  std::strftime(date, sizeof(date), "%Y%m%d", &local);
  std::strftime(time, sizeof(time), "%H%M%S", &local);
  return {date, time};
}

DSRCodedEntryValue flagCode(const std::string& flag) {
  if (flag.empty())
    return privateCode("NOTASSESSED", "not assessed");
  if (flag == "good")
    return privateCode("GOOD", "good");
  if (flag == "usable")
    return privateCode("USABLE", "usable");
  if (flag == "reject")
    return privateCode("REJECT", "reject");
  throw std::invalid_argument("structured report: unknown quality flag \"" + flag + "\"");
}

DSRCodedEntryValue decodeStateCode(const std::string& state) {
  if (state == "decoded")
    return privateCode("DECODED", "decoded");
  if (state == "skipped")
    return privateCode("SKIPPED", "skipped");
  if (state == "unsupported")
    return privateCode("UNSUPPORTED", "unsupported");
  if (state == "failed")
    return privateCode("FAILED", "failed");
  throw std::invalid_argument("structured report: unknown decode state \"" + state + "\"");
}

// A probability as a DS value (at most 16 characters).
std::string probabilityText(const std::string& finding, double p) {
  if (!std::isfinite(p) || p < 0.0 || p > 1.0) {
    throw std::invalid_argument("structured report: probability of \"" + finding + "\" is not in [0, 1]");
  }
  char text[32];
  std::snprintf(text, sizeof(text), "%.6g", p);
  return text;
}

// Builds the content tree with DSRDocumentTree's cursor: each add* leaves the cursor on the new item.
class TreeWriter {
 public:
  explicit TreeWriter(DSRDocumentTree& tree) : tree_(tree) {}

  // Adds an item below the current one (first child) or after it (sibling) and moves onto it.
  void add(DSRTypes::E_ValueType type, const DSRCodedEntryValue& concept, bool child,
           DSRTypes::E_RelationshipType relation = DSRTypes::RT_contains) {
    const OFCondition status = child ? tree_.addChildContentItem(relation, type, concept)
                                     : tree_.addContentItem(relation, type, concept);
    check(status, "cannot add \"" + std::string(concept.getCodeMeaning().c_str()) + "\"");
  }
  void setText(const std::string& value, const std::string& what) {
    check(tree_.getCurrentContentItem().setStringValue(requireText(value, what).c_str(), OFFalse),
          "cannot set " + what);
  }
  void setCode(const DSRCodedEntryValue& code) {
    check(tree_.getCurrentContentItem().setCodeValue(code), "cannot set a code");
  }
  void up() {
    if (tree_.goUp() == 0)
      throw std::runtime_error("cannot write the structured report: content tree cursor lost");
  }

  // Children of the current container, one after the other: the first goes below, the rest after it.
  class Children {
   public:
    explicit Children(TreeWriter& w) : w_(w) {}
    Children(const Children&) = delete;
    Children& operator=(const Children&) = delete;
    void add(DSRTypes::E_ValueType type, const DSRCodedEntryValue& concept) {
      w_.add(type, concept, !started_);
      started_ = true;
    }
    void text(const DSRCodedEntryValue& concept, const std::string& value, const std::string& what) {
      add(DSRTypes::VT_Text, concept);
      w_.setText(value, what);
    }
    void code(const DSRCodedEntryValue& concept, const DSRCodedEntryValue& value) {
      add(DSRTypes::VT_Code, concept);
      w_.setCode(value);
    }
    void probability(const std::string& finding, double p) {
      if (finding.empty())
        throw std::invalid_argument("structured report: a score without a finding name");
      add(DSRTypes::VT_Num, CODE_DCM_Probability);
      const DSRNumericMeasurementValue value(probabilityText(finding, p).c_str(),
                                             DSRCodedEntryValue("{probability}", "UCUM", "probability"));
      check(w_.tree_.getCurrentContentItem().setNumericValue(value), "cannot set a probability");
      w_.add(DSRTypes::VT_Text, CODE_DCM_Finding, true, DSRTypes::RT_hasConceptMod);
      w_.setText(finding, "a finding name");
      w_.up();
    }
    void container(const DSRCodedEntryValue& concept, const std::function<void(Children&)>& fill) {
      add(DSRTypes::VT_Container, concept);
      check(w_.tree_.getCurrentContentItem().setContinuityOfContent(DSRTypes::COC_Separate),
            "cannot set continuity of content");
      Children inner(w_);
      fill(inner);
      if (inner.started_)
        w_.up();  // back from the last child to the container
    }
    TreeWriter& writer() { return w_; }

   private:
    TreeWriter& w_;
    bool started_ = false;
  };

  DSRDocumentTree& tree() { return tree_; }

 private:
  DSRDocumentTree& tree_;
};

void writeScores(TreeWriter::Children& items, const Scores& scores) {
  for (const auto& [finding, p] : scores)
    items.probability(finding, p);
}

void writeImage(TreeWriter::Children& items, const SrImageResult& image) {
  const bool isImage = dcmIsImageStorageSOPClassUID(image.sopClassUid.c_str());
  if (isImage) {
    items.add(DSRTypes::VT_Image, CODE_DCM_SourceImage);
    check(items.writer().tree().getCurrentContentItem().setImageReference(
              DSRImageReferenceValue(image.sopClassUid.c_str(), image.sopInstanceUid.c_str(), OFFalse),
              OFFalse),
          "cannot reference image " + image.sopInstanceUid);
  } else {
    items.add(DSRTypes::VT_Composite, privateCode("SOURCEOBJECT", "Source object"));
    check(items.writer().tree().getCurrentContentItem().setCompositeReference(
              DSRCompositeReferenceValue(image.sopClassUid.c_str(), image.sopInstanceUid.c_str(), OFFalse),
              OFFalse),
          "cannot reference instance " + image.sopInstanceUid);
  }
  items.code(privateCode("DECODESTATE", "Decode state"), decodeStateCode(image.decodeState));
  items.code(privateCode("IMAGEQUALITY", "Image quality flag"), flagCode(image.qualityFlag));
  const DSRCodedEntryValue reasonConcept = image.decodeState == "decoded"
                                               ? privateCode("QREASON", "Quality reason")
                                               : privateCode("DREASON", "Decode reason");
  for (const auto& reason : image.reasons) {
    if (!reason.empty())
      items.text(reasonConcept, reason, "a reason");
  }
  writeScores(items, image.scores);
}

void writeContent(DSRDocumentTree& tree, const SrStudyReport& report) {
  TreeWriter writer(tree);
  check(tree.addContentItem(DSRTypes::RT_isRoot, DSRTypes::VT_Container,
                            privateCode("REPORT", kSrSeriesDescription)),
        "cannot add the document title");
  check(tree.getCurrentContentItem().setContinuityOfContent(DSRTypes::COC_Separate),
        "cannot set continuity of content");
  TreeWriter::Children items(writer);
  items.container(privateCode("MODEL", "Diagnosis model"), [&](TreeWriter::Children& model) {
    if (report.modelVersion) {
      model.text(CODE_DCM_AlgorithmName,
                 report.modelDescription.empty() ? "comcl diagnosis model" : report.modelDescription,
                 "the model description");
      model.text(CODE_DCM_AlgorithmVersion, std::to_string(*report.modelVersion), "the model version");
    } else {
      model.text(privateCode("MODELSTATUS", "Diagnosis model status"), kSrNoModelText, "the model status");
    }
  });
  items.code(privateCode("STUDYQUALITY", "Study quality flag"), flagCode(report.studyQualityFlag));
  for (const auto& reason : report.studyReasons) {
    if (!reason.empty())
      items.text(privateCode("QREASON", "Quality reason"), reason, "a study reason");
  }
  writeScores(items, report.studyScores);
  for (const auto& image : report.images) {
    items.container(privateCode("IMAGERESULT", "Image result"),
                    [&](TreeWriter::Children& imageItems) { writeImage(imageItems, image); });
  }
}

// Copies the patient/study attributes; returns the StudyInstanceUID.
std::string copyStudyTags(DSRDocument& doc, const SrStudyReport& report) {
  using Setter = OFCondition (DSRDocument::*)(const OFString&, const OFBool);
  static const std::map<std::string, Setter> setters = {
      {"PatientName", &DSRDocument::setPatientName},
      {"PatientID", &DSRDocument::setPatientID},
      {"IssuerOfPatientID", &DSRDocument::setIssuerOfPatientID},
      {"PatientBirthDate", &DSRDocument::setPatientBirthDate},
      {"PatientSex", &DSRDocument::setPatientSex},
      {"StudyDate", &DSRDocument::setStudyDate},
      {"StudyTime", &DSRDocument::setStudyTime},
      {"AccessionNumber", &DSRDocument::setAccessionNumber},
      {"ReferringPhysicianName", &DSRDocument::setReferringPhysicianName},
      {"StudyID", &DSRDocument::setStudyID},
      {"StudyDescription", &DSRDocument::setStudyDescription},
  };
  std::string studyUid;
  for (const auto& [keyword, value] : report.studyTags) {
    if (keyword == "StudyInstanceUID") {
      studyUid = value;
      continue;
    }
    const auto setter = setters.find(keyword);
    if (setter == setters.end())
      throw std::invalid_argument("structured report: unsupported study tag \"" + keyword + "\"");
    if (value.empty())
      continue;
    // Copied as found in the study (no VR check): the values must match the study's, not be corrected.
    check((doc.*(setter->second))(requireText(value, keyword).c_str(), OFFalse), "cannot set " + keyword);
  }
  if (studyUid.empty())
    throw std::invalid_argument("structured report: StudyInstanceUID is missing");
  if (!isValidUid(studyUid))
    throw std::invalid_argument("structured report: invalid StudyInstanceUID \"" + studyUid + "\"");
  return studyUid;
}

void checkImages(const SrStudyReport& report) {
  for (const auto& image : report.images) {
    const std::pair<const std::string*, const char*> uids[] = {
        {&image.sopClassUid, "SOPClassUID"},
        {&image.sopInstanceUid, "SOPInstanceUID"},
        {&image.seriesInstanceUid, "SeriesInstanceUID"}};
    for (const auto& [uid, name] : uids) {
      if (!isValidUid(*uid)) {
        throw std::invalid_argument(std::string("structured report: image with a missing or invalid ") +
                                    name + " \"" + *uid + "\"");
      }
    }
  }
}

void put(DcmItem& item, const DcmTagKey& key, const std::string& value) {
  check(item.putAndInsertString(key, value.c_str()), "cannot set " + std::string(DcmTag(key).getTagName()));
}

std::vector<std::uint8_t> serialise(DcmFileFormat& file) {
  const E_TransferSyntax xfer = EXS_LittleEndianExplicit;
  std::vector<std::uint8_t> bytes;
  std::vector<std::uint8_t> chunk(64 * 1024);
  DcmOutputBufferStream stream(chunk.data(), static_cast<offile_off_t>(chunk.size()));
  file.transferInit();
  OFCondition status = EC_StreamNotifyClient;
  while (status == EC_StreamNotifyClient) {
    status = file.write(stream, xfer, EET_ExplicitLength, nullptr);
    void* written = nullptr;
    offile_off_t length = 0;
    stream.flushBuffer(written, length);
    const auto* begin = static_cast<const std::uint8_t*>(written);
    bytes.insert(bytes.end(), begin, begin + length);
  }
  file.transferEnd();
  check(status, "cannot encode the file");
  return bytes;
}

}  // namespace

std::vector<std::uint8_t> writeStructuredReport(const SrStudyReport& report) {
  checkImages(report);
  DSRDocument doc(DSRTypes::DT_ComprehensiveSR);
  if (!isAscii(report))
    check(doc.setSpecificCharacterSetType(DSRTypes::CS_UTF8), "cannot set SpecificCharacterSet");
  const std::string studyUid = copyStudyTags(doc, report);
  check(doc.createNewSeriesInStudy(studyUid.c_str()), "cannot create the series");

  const auto [date, time] = now();
  check(doc.setSeriesDescription(kSrSeriesDescription), "cannot set SeriesDescription");
  check(doc.setSeriesNumber(std::to_string(kSrSeriesNumber).c_str()), "cannot set SeriesNumber");
  check(doc.setSeriesDate(date.c_str()), "cannot set SeriesDate");
  check(doc.setSeriesTime(time.c_str()), "cannot set SeriesTime");
  check(doc.setInstanceNumber("1"), "cannot set InstanceNumber");
  check(doc.setContentDate(date.c_str()), "cannot set ContentDate");
  check(doc.setContentTime(time.c_str()), "cannot set ContentTime");
  check(doc.setManufacturer(kSrManufacturer), "cannot set Manufacturer");
  if (!report.softwareVersion.empty()) {
    check(
        doc.setSoftwareVersions(requireText(report.softwareVersion, "the software version").c_str(), OFFalse),
        "cannot set SoftwareVersions");
  }
  check(doc.getCodingSchemeIdentification().addItem(kSrCodingScheme, "", "comcl private codes", "comcl"),
        "cannot declare the coding scheme");

  writeContent(doc.getTree(), report);
  for (const auto& image : report.images) {
    check(doc.getCurrentRequestedProcedureEvidence().addItem(
              studyUid.c_str(), image.seriesInstanceUid.c_str(), image.sopClassUid.c_str(),
              image.sopInstanceUid.c_str(), OFFalse),
          "cannot list " + image.sopInstanceUid + " as evidence");
  }

  DcmFileFormat file;
  DcmDataset& ds = *file.getDataset();
  check(doc.write(ds), "cannot encode the document");
  // comcl's own UIDs (UUID root) replace the ones DSRDocument generated under DCMTK's root.
  put(ds, DCM_SeriesInstanceUID, newUuidUid());
  put(ds, DCM_SOPInstanceUID, newUuidUid());
  return serialise(file);
}

bool isComclReport(const void* data, std::size_t size) {
  try {
    if (data == nullptr || size == 0)
      return false;
    // Only the start is parsed: the attributes checked lie in group 0008, in the first few hundred bytes.
    // Without an end-of-stream mark DCMTK stops quietly where the bytes run out (its incremental-read
    // mode), so large images are neither copied nor logged about.
    const std::size_t prefix = std::min(size, kHeaderBytes);
    DcmInputBufferStream stream;
    stream.setBuffer(data, static_cast<offile_off_t>(prefix));
    if (prefix == size)
      stream.setEos();
    DcmFileFormat file;
    file.transferInit();
    const OFCondition status = file.read(stream, EXS_Unknown, EGL_noChange, DCM_MaxReadLength);
    file.transferEnd();
    if (status.bad() && status != EC_StreamNotifyClient)
      return false;
    DcmDataset& ds = *file.getDataset();
    auto value = [&](const DcmTagKey& key) {
      OFString text;
      if (ds.findAndGetOFStringArray(key, text).bad())
        return std::string();
      return std::string(text.c_str());
    };
    return value(DCM_Modality) == "SR" && value(DCM_Manufacturer) == kSrManufacturer &&
           value(DCM_SeriesDescription) == kSrSeriesDescription;
  } catch (...) {
    return false;
  }
}

}  // namespace comcl::imaging
