// The per-study SR: written with writeStructuredReport, read back with DCMTK's DSRDocument and checked item
// by item; dsrdump and dcmdump must accept the file; isComclReport tells comcl's SRs from everything else.
#include "comcl/imaging/structured_report.h"

#include <dcmtk/config/osconfig.h>
#include <dcmtk/dcmdata/dcdeftag.h>
#include <dcmtk/dcmdata/dcfilefo.h>
#include <dcmtk/dcmdata/dcistrmb.h>
#include <dcmtk/dcmdata/dcmetinf.h>
#include <dcmtk/dcmdata/dcuid.h>
#include <dcmtk/dcmsr/codes/dcm.h>
#include <dcmtk/dcmsr/dsrdoc.h>
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <regex>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

#include "temp_dir.h"
#include "test_dicom.h"

namespace comcl::imaging {
namespace {

using comcl::testing::TempDir;

const char* const kCrImage = "1.2.840.10008.5.1.4.1.1.1";    // CR Image Storage
const char* const kDxImage = "1.2.840.10008.5.1.4.1.1.1.1";  // Digital X-Ray Image Storage - For Presentation
const char* const kPdf = "1.2.840.10008.5.1.4.1.1.104.1";    // Encapsulated PDF Storage
const char* const kComprehensiveSr = "1.2.840.10008.5.1.4.1.1.88.33";
const char* const kStudyUid = "1.2.826.0.1.3680043.8.498.1001";
const char* const kSeriesA = "1.2.826.0.1.3680043.8.498.1001.1";
const char* const kSeriesB = "1.2.826.0.1.3680043.8.498.1001.2";
const char* const kFrontal = "1.2.826.0.1.3680043.8.498.1001.1.1";
const char* const kLateral = "1.2.826.0.1.3680043.8.498.1001.1.2";
const char* const kPdfInstance = "1.2.826.0.1.3680043.8.498.1001.2.1";

SrStudyReport sampleReport() {
  SrStudyReport r;
  r.studyTags = {{"PatientName", "Müller^Jörg"},
                 {"PatientID", "PID-0042"},
                 {"PatientBirthDate", "19600131"},
                 {"PatientSex", "M"},
                 {"StudyInstanceUID", kStudyUid},
                 {"StudyDate", "20240102"},
                 {"StudyTime", "101530"},
                 {"AccessionNumber", "ACC-77"},
                 {"ReferringPhysicianName", "Doe^Jane"},
                 {"StudyID", "S1"},
                 {"StudyDescription", "Chest PA and lateral"}};
  r.studyQualityFlag = "usable";
  r.studyReasons = {"blurred"};
  r.modelVersion = 3;
  r.modelDescription = "moco-v2+medaug resnet18";
  r.studyScores = {{"cardiomegaly", 0.83}, {"effusion", 0.125}};
  r.softwareVersion = "comcl 1.4.0";

  SrImageResult frontal;
  frontal.sopClassUid = kCrImage;
  frontal.sopInstanceUid = kFrontal;
  frontal.seriesInstanceUid = kSeriesA;
  frontal.decodeState = "decoded";
  frontal.qualityFlag = "usable";
  frontal.reasons = {"blurred", "noisy"};
  frontal.scores = {{"cardiomegaly", 0.83}, {"effusion", 0.125}};

  SrImageResult lateral;
  lateral.sopClassUid = kDxImage;
  lateral.sopInstanceUid = kLateral;
  lateral.seriesInstanceUid = kSeriesA;
  lateral.decodeState = "decoded";
  lateral.qualityFlag = "good";
  lateral.scores = {{"cardiomegaly", 0.5}};

  SrImageResult pdf;
  pdf.sopClassUid = kPdf;
  pdf.sopInstanceUid = kPdfInstance;
  pdf.seriesInstanceUid = kSeriesB;
  pdf.decodeState = "skipped";
  pdf.reasons = {"not an image: Encapsulated PDF Storage"};

  r.images = {frontal, lateral, pdf};
  return r;
}

SrStudyReport asciiReport() {
  SrStudyReport report = sampleReport();
  report.studyTags[0].second = "Muller^Jorg";
  return report;
}

std::unique_ptr<DcmFileFormat> parse(const std::vector<std::uint8_t>& bytes) {
  DcmInputBufferStream stream;
  stream.setBuffer(bytes.data(), static_cast<offile_off_t>(bytes.size()));
  stream.setEos();
  auto file = std::make_unique<DcmFileFormat>();
  file->transferInit();
  const OFCondition status = file->read(stream, EXS_Unknown, EGL_noChange, DCM_MaxReadLength);
  file->transferEnd();
  if (status.bad())
    throw std::runtime_error(std::string("cannot parse the report: ") + status.text());
  return file;
}

std::string tag(DcmItem& item, const DcmTagKey& key) {
  OFString value;
  item.findAndGetOFStringArray(key, value);
  return value.c_str();
}

// One content item of the tree, flattened.
struct Item {
  std::string position;  // "1.2.3"
  DSRTypes::E_ValueType type = DSRTypes::VT_invalid;
  DSRTypes::E_RelationshipType relation = DSRTypes::RT_invalid;
  std::string concept;                // "scheme:value"
  std::string text;                   // TEXT
  std::string code;                   // CODE value as "scheme:value"
  std::string number;                 // NUM value
  std::string unit;                   // NUM unit "scheme:value"
  std::string sopClass, sopInstance;  // IMAGE / COMPOSITE
};

std::string codeKey(const DSRCodedEntryValue& c) {
  return std::string(c.getCodingSchemeDesignator().c_str()) + ":" + c.getCodeValue().c_str();
}

struct ReadBack {
  std::unique_ptr<DcmFileFormat> file;
  std::unique_ptr<DSRDocument> doc;
  std::vector<Item> items;

  DcmDataset& ds() { return *file->getDataset(); }
  // Direct children of the item at `position`.
  std::vector<Item> children(const std::string& position) const {
    std::vector<Item> out;
    const std::string prefix = position + ".";
    for (const auto& item : items) {
      if (item.position.rfind(prefix, 0) == 0 && item.position.find('.', prefix.size()) == std::string::npos)
        out.push_back(item);
    }
    return out;
  }
  // The "Image result" container that references `sopInstance`; empty when there is none.
  std::string imageContainer(const std::string& sopInstance) const {
    for (const auto& item : items) {
      if (item.sopInstance == sopInstance)
        return item.position.substr(0, item.position.rfind('.'));
    }
    return {};
  }
};

ReadBack readBack(const std::vector<std::uint8_t>& bytes) {
  ReadBack r;
  r.file = parse(bytes);
  r.doc = std::make_unique<DSRDocument>();
  const OFCondition status = r.doc->read(r.ds());
  if (status.bad())
    throw std::runtime_error(std::string("DSRDocument::read: ") + status.text());
  DSRDocumentTree& tree = r.doc->getTree();
  if (tree.gotoRoot() == 0)
    return r;
  do {
    const DSRContentItem& ci = tree.getCurrentContentItem();
    Item item;
    OFString position;
    item.position = tree.getPosition(position).c_str();
    item.type = ci.getValueType();
    item.relation = ci.getRelationshipType();
    item.concept = codeKey(ci.getConceptName());
    switch (item.type) {
      case DSRTypes::VT_Text:
        item.text = ci.getStringValue().c_str();
        break;
      case DSRTypes::VT_Code:
        item.code = codeKey(ci.getCodeValue());
        break;
      case DSRTypes::VT_Num:
        item.number = ci.getNumericValue().getNumericValue().c_str();
        item.unit = codeKey(ci.getNumericValue().getMeasurementUnit());
        break;
      case DSRTypes::VT_Image:
        item.sopClass = ci.getImageReference().getSOPClassUID().c_str();
        item.sopInstance = ci.getImageReference().getSOPInstanceUID().c_str();
        break;
      case DSRTypes::VT_Composite:
        item.sopClass = ci.getCompositeReference().getSOPClassUID().c_str();
        item.sopInstance = ci.getCompositeReference().getSOPInstanceUID().c_str();
        break;
      default:
        break;
    }
    r.items.push_back(item);
  } while (tree.iterate() != 0);
  return r;
}

// Texts of the children with the given concept, in order.
std::vector<std::string> texts(const std::vector<Item>& items, const std::string& concept) {
  std::vector<std::string> out;
  for (const auto& item : items) {
    if (item.concept == concept)
      out.push_back(item.text);
  }
  return out;
}

std::string codeOf(const std::vector<Item>& items, const std::string& concept) {
  for (const auto& item : items) {
    if (item.concept == concept)
      return item.code;
  }
  return {};
}

// finding -> probability from the NUM children (each with its "Finding" concept modifier).
std::map<std::string, double> scoresOf(const ReadBack& r, const std::vector<Item>& items) {
  std::map<std::string, double> out;
  for (const auto& item : items) {
    if (item.type != DSRTypes::VT_Num)
      continue;
    EXPECT_EQ(item.concept, "DCM:122157");
    EXPECT_EQ(item.unit, "UCUM:{probability}");
    const auto modifiers = r.children(item.position);
    EXPECT_EQ(modifiers.size(), 1u);
    if (modifiers.size() == 1) {
      EXPECT_EQ(modifiers[0].relation, DSRTypes::RT_hasConceptMod);
      EXPECT_EQ(modifiers[0].concept, "DCM:121071");
      out[modifiers[0].text] = std::stod(item.number);
    }
  }
  return out;
}

bool isValidUidSyntax(const std::string& uid) {
  static const std::regex grammar(R"((0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))+)");
  return uid.size() <= 64 && std::regex_match(uid, grammar);
}

std::vector<std::uint8_t> bytesOf(const std::vector<char>& chars) {
  return std::vector<std::uint8_t>(chars.begin(), chars.end());
}

// Runs a shell command, returns its exit status and output (stdout and stderr).
std::pair<int, std::string> runCommand(const std::string& command) {
  std::string output;
  FILE* pipe = ::popen((command + " 2>&1").c_str(), "r");
  if (pipe == nullptr)
    return {-1, output};
  char buffer[4096];
  std::size_t n = 0;
  while ((n = std::fread(buffer, 1, sizeof(buffer), pipe)) > 0)
    output.append(buffer, n);
  const int status = ::pclose(pipe);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, output};
}

bool haveTool(const std::string& name) {
  return runCommand("command -v " + name).first == 0;
}

std::string writeToFile(const TempDir& dir, const std::vector<std::uint8_t>& bytes) {
  dir.write("report.dcm", std::vector<char>(bytes.begin(), bytes.end()));
  return dir.file("report.dcm");
}

TEST(StructuredReport, HeaderMakesANewSrSeriesInTheSameStudy) {
  const auto bytes = writeStructuredReport(sampleReport());
  ReadBack r = readBack(bytes);
  DcmDataset& ds = r.ds();
  EXPECT_EQ(r.doc->getDocumentType(), DSRTypes::DT_ComprehensiveSR);
  EXPECT_EQ(tag(ds, DCM_SOPClassUID), kComprehensiveSr);
  EXPECT_EQ(tag(*r.file->getMetaInfo(), DCM_MediaStorageSOPClassUID), kComprehensiveSr);
  EXPECT_EQ(tag(*r.file->getMetaInfo(), DCM_MediaStorageSOPInstanceUID), tag(ds, DCM_SOPInstanceUID));
  EXPECT_EQ(tag(ds, DCM_Modality), "SR");
  EXPECT_EQ(tag(ds, DCM_StudyInstanceUID), kStudyUid);
  EXPECT_EQ(tag(ds, DCM_PatientID), "PID-0042");
  EXPECT_EQ(tag(ds, DCM_PatientBirthDate), "19600131");
  EXPECT_EQ(tag(ds, DCM_PatientSex), "M");
  EXPECT_EQ(tag(ds, DCM_StudyDate), "20240102");
  EXPECT_EQ(tag(ds, DCM_StudyTime), "101530");
  EXPECT_EQ(tag(ds, DCM_AccessionNumber), "ACC-77");
  EXPECT_EQ(tag(ds, DCM_ReferringPhysicianName), "Doe^Jane");
  EXPECT_EQ(tag(ds, DCM_StudyID), "S1");
  EXPECT_EQ(tag(ds, DCM_StudyDescription), "Chest PA and lateral");
  EXPECT_EQ(tag(ds, DCM_SeriesDescription), kSrSeriesDescription);
  EXPECT_EQ(tag(ds, DCM_SeriesNumber), std::to_string(kSrSeriesNumber));
  EXPECT_EQ(tag(ds, DCM_InstanceNumber), "1");
  EXPECT_EQ(tag(ds, DCM_Manufacturer), "comcl");
  EXPECT_EQ(tag(ds, DCM_SoftwareVersions), "comcl 1.4.0");
  EXPECT_EQ(tag(ds, DCM_CompletionFlag), "PARTIAL");
  EXPECT_EQ(tag(ds, DCM_VerificationFlag), "UNVERIFIED");
  EXPECT_TRUE(std::regex_match(tag(ds, DCM_ContentDate), std::regex("[0-9]{8}")));
  EXPECT_TRUE(std::regex_match(tag(ds, DCM_ContentTime), std::regex("[0-9]{6}")));
  for (const char* series : {kSeriesA, kSeriesB})
    EXPECT_NE(tag(ds, DCM_SeriesInstanceUID), series);
  // The private coding scheme is declared.
  EXPECT_TRUE(r.doc->getCodingSchemeIdentification().gotoItem(kSrCodingScheme).good());
}

TEST(StructuredReport, UidsAreValidUuidDerivedAndFreshPerCall) {
  std::set<std::string> seen;
  for (int i = 0; i < 3; ++i) {
    ReadBack r = readBack(writeStructuredReport(sampleReport()));
    for (const DcmTagKey& key : {DCM_SeriesInstanceUID, DCM_SOPInstanceUID}) {
      const std::string uid = tag(r.ds(), key);
      EXPECT_TRUE(isValidUidSyntax(uid)) << uid;
      EXPECT_EQ(uid.rfind("2.25.", 0), 0u) << uid;
      EXPECT_TRUE(DcmUniqueIdentifier::checkStringValue(uid.c_str(), "1").good()) << uid;
      EXPECT_TRUE(seen.insert(uid).second) << "repeated UID " << uid;
    }
  }
}

TEST(StructuredReport, TitleModelAndStudyResults) {
  ReadBack r = readBack(writeStructuredReport(sampleReport()));
  ASSERT_FALSE(r.items.empty());
  const Item& root = r.items.front();
  EXPECT_EQ(root.position, "1");
  EXPECT_EQ(root.type, DSRTypes::VT_Container);
  EXPECT_EQ(root.concept, "99COMCL:REPORT");

  const auto top = r.children("1");
  ASSERT_GE(top.size(), 2u);
  EXPECT_EQ(top[0].concept, "99COMCL:MODEL");
  const auto model = r.children(top[0].position);
  EXPECT_EQ(texts(model, "DCM:111001"), std::vector<std::string>{"moco-v2+medaug resnet18"});
  EXPECT_EQ(texts(model, "DCM:111003"), std::vector<std::string>{"3"});
  EXPECT_TRUE(texts(model, "99COMCL:MODELSTATUS").empty());

  EXPECT_EQ(codeOf(top, "99COMCL:STUDYQUALITY"), "99COMCL:USABLE");
  EXPECT_EQ(texts(top, "99COMCL:QREASON"), std::vector<std::string>{"blurred"});
  const auto scores = scoresOf(r, top);
  EXPECT_EQ(scores.size(), 2u);
  EXPECT_DOUBLE_EQ(scores.at("cardiomegaly"), 0.83);
  EXPECT_DOUBLE_EQ(scores.at("effusion"), 0.125);

  std::size_t containers = 0;
  for (const auto& item : top)
  containers += item.concept == "99COMCL:IMAGERESULT" ? 1 : 0;
  EXPECT_EQ(containers, 3u);
}

TEST(StructuredReport, ReferencesEachImageWithItsResults) {
  const SrStudyReport report = sampleReport();
  ReadBack r = readBack(writeStructuredReport(report));

  const std::string frontal = r.imageContainer(kFrontal);
  ASSERT_FALSE(frontal.empty());
  const auto f = r.children(frontal);
  ASSERT_FALSE(f.empty());
  EXPECT_EQ(f[0].type, DSRTypes::VT_Image);
  EXPECT_EQ(f[0].concept, "DCM:121324");
  EXPECT_EQ(f[0].sopClass, kCrImage);
  EXPECT_EQ(codeOf(f, "99COMCL:DECODESTATE"), "99COMCL:DECODED");
  EXPECT_EQ(codeOf(f, "99COMCL:IMAGEQUALITY"), "99COMCL:USABLE");
  EXPECT_EQ(texts(f, "99COMCL:QREASON"), (std::vector<std::string>{"blurred", "noisy"}));
  const auto frontalScores = scoresOf(r, f);
  EXPECT_EQ(frontalScores, (std::map<std::string, double>{{"cardiomegaly", 0.83}, {"effusion", 0.125}}));

  const std::string lateral = r.imageContainer(kLateral);
  ASSERT_FALSE(lateral.empty());
  const auto l = r.children(lateral);
  EXPECT_EQ(l[0].sopClass, kDxImage);
  EXPECT_EQ(codeOf(l, "99COMCL:IMAGEQUALITY"), "99COMCL:GOOD");
  EXPECT_TRUE(texts(l, "99COMCL:QREASON").empty());
  EXPECT_EQ(scoresOf(r, l), (std::map<std::string, double>{{"cardiomegaly", 0.5}}));

  // The PDF is not an image: a COMPOSITE reference, skipped, not assessed, its decode reason, no scores.
  const std::string pdf = r.imageContainer(kPdfInstance);
  ASSERT_FALSE(pdf.empty());
  const auto p = r.children(pdf);
  EXPECT_EQ(p[0].type, DSRTypes::VT_Composite);
  EXPECT_EQ(p[0].sopClass, kPdf);
  EXPECT_EQ(codeOf(p, "99COMCL:DECODESTATE"), "99COMCL:SKIPPED");
  EXPECT_EQ(codeOf(p, "99COMCL:IMAGEQUALITY"), "99COMCL:NOTASSESSED");
  EXPECT_EQ(texts(p, "99COMCL:DREASON"), std::vector<std::string>{"not an image: Encapsulated PDF Storage"});
  EXPECT_TRUE(scoresOf(r, p).empty());
}

TEST(StructuredReport, EvidenceListsEveryReferencedInstanceBySeries) {
  ReadBack r = readBack(writeStructuredReport(sampleReport()));
  // Through DCMTK's reading of the sequence...
  DSRSOPInstanceReferenceList& evidence = r.doc->getCurrentRequestedProcedureEvidence();
  EXPECT_EQ(evidence.getNumberOfInstances(), 3u);
  std::map<std::string, std::string> seriesOf;
  ASSERT_TRUE(evidence.gotoFirstItem().good());
  do {
    OFString study, series, instance;
    EXPECT_EQ(std::string(evidence.getStudyInstanceUID(study).c_str()), kStudyUid);
    seriesOf[evidence.getSOPInstanceUID(instance).c_str()] = evidence.getSeriesInstanceUID(series).c_str();
  } while (evidence.gotoNextItem().good());
  EXPECT_EQ(seriesOf, (std::map<std::string, std::string>{
                          {kFrontal, kSeriesA}, {kLateral, kSeriesA}, {kPdfInstance, kSeriesB}}));

  // ... and in the raw data set: one study item, one item per series, the instances below their series.
  DcmItem* study = nullptr;
  ASSERT_TRUE(r.ds().findAndGetSequenceItem(DCM_CurrentRequestedProcedureEvidenceSequence, study, 0).good());
  EXPECT_EQ(tag(*study, DCM_StudyInstanceUID), kStudyUid);
  std::map<std::string, std::set<std::string>> grouped;
  for (long s = 0;; ++s) {
    DcmItem* series = nullptr;
    if (study->findAndGetSequenceItem(DCM_ReferencedSeriesSequence, series, s).bad())
      break;
    for (long i = 0;; ++i) {
      DcmItem* sop = nullptr;
      if (series->findAndGetSequenceItem(DCM_ReferencedSOPSequence, sop, i).bad())
        break;
      grouped[tag(*series, DCM_SeriesInstanceUID)].insert(tag(*sop, DCM_ReferencedSOPInstanceUID));
    }
  }
  EXPECT_EQ(grouped, (std::map<std::string, std::set<std::string>>{{kSeriesA, {kFrontal, kLateral}},
                                                                   {kSeriesB, {kPdfInstance}}}));
  // Every instance referenced in the tree is in the evidence.
  for (const auto& item : r.items) {
    if (!item.sopInstance.empty()) {
      EXPECT_EQ(seriesOf.count(item.sopInstance), 1u) << item.sopInstance;
    }
  }
}

TEST(StructuredReport, WithoutModelSaysNoModelIsActive) {
  SrStudyReport report = sampleReport();
  report.modelVersion.reset();
  report.studyScores.clear();
  for (auto& image : report.images)
    image.scores.clear();
  ReadBack r = readBack(writeStructuredReport(report));
  const auto top = r.children("1");
  ASSERT_FALSE(top.empty());
  const auto model = r.children(top[0].position);
  EXPECT_EQ(texts(model, "99COMCL:MODELSTATUS"), std::vector<std::string>{kSrNoModelText});
  EXPECT_TRUE(texts(model, "DCM:111001").empty());
  EXPECT_TRUE(texts(model, "DCM:111003").empty());
  for (const auto& item : r.items)
    EXPECT_NE(item.type, DSRTypes::VT_Num);
}

TEST(StructuredReport, NoDecodedImageMeansStudyNotAssessed) {
  SrStudyReport report = sampleReport();
  report.studyQualityFlag.clear();
  report.studyReasons.clear();
  report.images = {report.images[2]};
  ReadBack r = readBack(writeStructuredReport(report));
  EXPECT_EQ(codeOf(r.children("1"), "99COMCL:STUDYQUALITY"), "99COMCL:NOTASSESSED");
}

TEST(StructuredReport, NonAsciiPatientNameRoundTrips) {
  ReadBack r = readBack(writeStructuredReport(sampleReport()));
  EXPECT_EQ(tag(r.ds(), DCM_SpecificCharacterSet), "ISO_IR 192");
  EXPECT_EQ(tag(r.ds(), DCM_PatientName), "Müller^Jörg");
  OFString name;
  ASSERT_TRUE(r.doc->getPatientName(name).good());
  EXPECT_EQ(std::string(name.c_str()), "Müller^Jörg");

  // ASCII-only reports keep the default repertoire.
  ReadBack ascii = readBack(writeStructuredReport(asciiReport()));
  EXPECT_EQ(tag(ascii.ds(), DCM_SpecificCharacterSet), "");
  EXPECT_EQ(tag(ascii.ds(), DCM_PatientName), "Muller^Jorg");
}

TEST(StructuredReport, RefusesUnusableInput) {
  SrStudyReport noStudy = sampleReport();
  noStudy.studyTags.erase(noStudy.studyTags.begin() + 4);  // StudyInstanceUID
  EXPECT_THROW(writeStructuredReport(noStudy), std::invalid_argument);

  SrStudyReport badStudy = sampleReport();
  badStudy.studyTags[4].second = "not.a.uid";
  EXPECT_THROW(writeStructuredReport(badStudy), std::invalid_argument);

  SrStudyReport unknownTag = sampleReport();
  unknownTag.studyTags.emplace_back("PixelData", "x");
  EXPECT_THROW(writeStructuredReport(unknownTag), std::invalid_argument);

  SrStudyReport noInstanceUid = sampleReport();
  noInstanceUid.images[0].sopInstanceUid.clear();
  EXPECT_THROW(writeStructuredReport(noInstanceUid), std::invalid_argument);

  SrStudyReport badFlag = sampleReport();
  badFlag.images[1].qualityFlag = "excellent";
  EXPECT_THROW(writeStructuredReport(badFlag), std::invalid_argument);

  SrStudyReport badState = sampleReport();
  badState.images[1].decodeState = "maybe";
  EXPECT_THROW(writeStructuredReport(badState), std::invalid_argument);

  SrStudyReport badProbability = sampleReport();
  badProbability.studyScores[0].second = 1.5;
  EXPECT_THROW(writeStructuredReport(badProbability), std::invalid_argument);

  SrStudyReport noFinding = sampleReport();
  noFinding.images[0].scores[0].first.clear();
  EXPECT_THROW(writeStructuredReport(noFinding), std::invalid_argument);

  SrStudyReport notUtf8 = sampleReport();
  notUtf8.studyTags[0].second = "M\xFCller^J\xF6rg";  // Latin-1
  EXPECT_THROW(writeStructuredReport(notUtf8), std::invalid_argument);
}

// dsrdump's log lines ("W: ...", "E: ..."), except DCMTK 3.6.7's notice that its SR VR checker does not
// handle ISO_IR 192 (a limitation of the tool, printed for every UTF-8 SR).
std::vector<std::string> logLines(const std::string& output) {
  std::vector<std::string> lines;
  std::size_t start = 0;
  while (start < output.size()) {
    const std::size_t end = std::min(output.find('\n', start), output.size());
    const std::string line = output.substr(start, end - start);
    if ((line.rfind("W: ", 0) == 0 || line.rfind("E: ", 0) == 0 || line.rfind("F: ", 0) == 0) &&
        line.find("VR checker does not support this Specific Character Set") == std::string::npos) {
      lines.push_back(line);
    }
    start = end + 1;
  }
  return lines;
}

TEST(StructuredReport, DsrdumpReadsItWithoutWarnings) {
  if (!haveTool("dsrdump"))
    GTEST_SKIP() << "dsrdump (dcmtk) is not installed";
  TempDir dir;
  const std::string path = writeToFile(dir, writeStructuredReport(asciiReport()));
  const auto [status, output] = runCommand("dsrdump +Pu '" + path + "'");
  EXPECT_EQ(status, 0) << output;
  EXPECT_NE(output.find(kSrSeriesDescription), std::string::npos) << output;
  EXPECT_NE(output.find(kFrontal), std::string::npos) << output;
  EXPECT_EQ(output.find(kSrNoModelText), std::string::npos) << "a model is active";
  EXPECT_EQ(output.find("W: "), std::string::npos) << output;
  EXPECT_EQ(output.find("E: "), std::string::npos) << output;

  // The UTF-8 variant: the same, but for the VR checker's notice about ISO_IR 192.
  const std::string utf8 = writeToFile(dir, writeStructuredReport(sampleReport()));
  const auto [utf8Status, utf8Output] = runCommand("dsrdump '" + utf8 + "'");
  EXPECT_EQ(utf8Status, 0) << utf8Output;
  EXPECT_NE(utf8Output.find("Müller^Jörg"), std::string::npos) << utf8Output;
  EXPECT_NE(utf8Output.find(kSrSeriesDescription), std::string::npos) << utf8Output;
  EXPECT_TRUE(logLines(utf8Output).empty()) << utf8Output;
}

TEST(StructuredReport, DcmdumpReadsIt) {
  if (!haveTool("dcmdump"))
    GTEST_SKIP() << "dcmdump (dcmtk) is not installed";
  TempDir dir;
  const std::string path = writeToFile(dir, writeStructuredReport(sampleReport()));
  const auto [status, output] = runCommand("dcmdump '" + path + "'");
  EXPECT_EQ(status, 0) << output;
  EXPECT_NE(output.find(kSrSeriesDescription), std::string::npos) << output;
  EXPECT_NE(output.find("ISO_IR 192"), std::string::npos) << output;
  EXPECT_NE(output.find("CurrentRequestedProcedureEvidenceSequence"), std::string::npos) << output;
  EXPECT_EQ(output.find("W: "), std::string::npos) << output;
  EXPECT_EQ(output.find("E: "), std::string::npos) << output;
}

TEST(ComclReport, TrueForWrittenReport) {
  const auto bytes = writeStructuredReport(sampleReport());
  EXPECT_TRUE(isComclReport(bytes.data(), bytes.size()));
}

TEST(ComclReport, TrueForLargeReport) {
  // Over the 64 KiB that are parsed: the header alone decides.
  SrStudyReport report = sampleReport();
  for (int i = 0; i < 400; ++i) {
    SrImageResult image = report.images[0];
    image.sopInstanceUid = std::string(kSeriesA) + ".100" + std::to_string(i);
    report.images.push_back(image);
  }
  const auto bytes = writeStructuredReport(report);
  ASSERT_GT(bytes.size(), 128u * 1024u);
  EXPECT_TRUE(isComclReport(bytes.data(), bytes.size()));
}

TEST(ComclReport, FalseForSyntheticImage) {
  auto image = comcl::testing::makeImage({});
  const auto bytes = bytesOf(comcl::testing::toBytes(*image));
  EXPECT_FALSE(isComclReport(bytes.data(), bytes.size()));

  comcl::testing::TestImageSpec large;
  large.rows = 512;
  large.cols = 512;
  const auto largeBytes = bytesOf(comcl::testing::toBytes(*comcl::testing::makeImage(large)));
  ASSERT_GT(largeBytes.size(), 128u * 1024u);
  EXPECT_FALSE(isComclReport(largeBytes.data(), largeBytes.size()));
}

// An SR from someone else; `manufacturer` and `description` let it imitate comcl's in one attribute.
std::vector<std::uint8_t> foreignSr(const std::string& manufacturer, const std::string& description) {
  DSRDocument doc(DSRTypes::DT_BasicTextSR);
  doc.getTree().addContentItem(DSRTypes::RT_isRoot, DSRTypes::VT_Container,
                               CODE_DCM_ImagingMeasurementReport);
  doc.getTree().addChildContentItem(DSRTypes::RT_contains, DSRTypes::VT_Text, CODE_DCM_Comment);
  doc.getTree().getCurrentContentItem().setStringValue("no acute findings");
  doc.setPatientID("PID-0042");
  doc.setManufacturer(manufacturer.c_str());
  doc.setSeriesDescription(description.c_str());
  DcmFileFormat file;
  if (doc.write(*file.getDataset()).bad())
    throw std::runtime_error("cannot write the foreign SR");
  return bytesOf(comcl::testing::toBytes(file));
}

TEST(ComclReport, FalseForForeignSr) {
  const auto other = foreignSr("Other Vendor", "Radiology report");
  EXPECT_FALSE(isComclReport(other.data(), other.size()));
  const auto sameDescription = foreignSr("Other Vendor", kSrSeriesDescription);
  EXPECT_FALSE(isComclReport(sameDescription.data(), sameDescription.size()));
  const auto sameManufacturer = foreignSr(kSrManufacturer, "Radiology report");
  EXPECT_FALSE(isComclReport(sameManufacturer.data(), sameManufacturer.size()));
  // Control: with both attributes it is taken for comcl's (the check is on the header only).
  const auto imitation = foreignSr(kSrManufacturer, kSrSeriesDescription);
  EXPECT_TRUE(isComclReport(imitation.data(), imitation.size()));
}

TEST(ComclReport, FalseForGarbageAndEmpty) {
  EXPECT_FALSE(isComclReport(nullptr, 0));
  const std::vector<std::uint8_t> empty;
  EXPECT_FALSE(isComclReport(empty.data(), 0));
  std::vector<std::uint8_t> garbage(4096);
  std::uint32_t state = 12345;
  for (auto& b : garbage) {
    state = state * 1664525u + 1013904223u;
    b = static_cast<std::uint8_t>(state >> 24);
  }
  EXPECT_FALSE(isComclReport(garbage.data(), garbage.size()));
  std::vector<std::uint8_t> preambleOnly(132, 0);
  preambleOnly[128] = 'D';
  preambleOnly[129] = 'I';
  preambleOnly[130] = 'C';
  preambleOnly[131] = 'M';
  EXPECT_FALSE(isComclReport(preambleOnly.data(), preambleOnly.size()));
  // Cut before the identifying attributes: in the preamble, in the meta header, right before
  // SeriesDescription (0008,103E) (explicit VR little endian: 08 00 3E 10 "LO").
  const auto bytes = writeStructuredReport(sampleReport());
  const std::string text(bytes.begin(), bytes.end());
  const std::size_t seriesDescription = text.find(std::string("\x08\x00\x3E\x10LO", 6));
  ASSERT_NE(seriesDescription, std::string::npos);
  for (std::size_t cut : {std::size_t{1}, std::size_t{64}, std::size_t{140}, seriesDescription})
    EXPECT_FALSE(isComclReport(bytes.data(), cut)) << cut;
}

}  // namespace
}  // namespace comcl::imaging
