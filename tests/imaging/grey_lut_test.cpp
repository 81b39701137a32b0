// The lookup-table maths on its own: stored values, modality values, percentile windows, VOI functions.
#include "grey_lut.h"

#include <gtest/gtest.h>

#include <cmath>
#include <vector>

namespace comcl::imaging::detail {
namespace {

TEST(GreyLut, SignExtendsAndMasksStoredValues) {
  GreyFormat f;
  f.bitsStored = 12;
  f.isSigned = true;
  EXPECT_DOUBLE_EQ(modalityValue(f, 0x0FFF), -1);  // 12-bit two's complement
  EXPECT_DOUBLE_EQ(modalityValue(f, 0x0800), -2048);
  EXPECT_DOUBLE_EQ(modalityValue(f, 0x07FF), 2047);
  EXPECT_DOUBLE_EQ(modalityValue(f, 0xF005), 5);  // bits above BitsStored are ignored
  f.isSigned = false;
  f.slope = 2;
  f.intercept = -10;
  EXPECT_DOUBLE_EQ(modalityValue(f, 0xF005), 0);
}

TEST(GreyLut, PercentileWindowIgnoresTheExtremes) {
  GreyFormat f;  // 16-bit allocated, 12 stored
  std::vector<std::uint16_t> raw;
  for (int v = 1000; v < 2000; ++v)
    raw.push_back(static_cast<std::uint16_t>(v));
  raw.push_back(0);
  raw.push_back(4095);
  const Window w = percentileWindow(f, raw.data(), raw.size(), 0.01);
  EXPECT_NEAR(w.center - w.width / 2, 1009, 2);
  EXPECT_NEAR(w.center + w.width / 2, 1989, 2);
  EXPECT_EQ(w.function, VoiFunction::LinearExact);
}

TEST(GreyLut, PercentileWindowFollowsANegativeSlope) {
  GreyFormat f;
  f.slope = -1;
  f.intercept = 4095;
  std::vector<std::uint16_t> raw;
  for (int v = 0; v < 1000; ++v)
    raw.push_back(static_cast<std::uint16_t>(v));  // modality 3096..4095
  const Window w = percentileWindow(f, raw.data(), raw.size(), 0.0);
  EXPECT_NEAR(w.center - w.width / 2, 3096, 1);
  EXPECT_NEAR(w.center + w.width / 2, 4095, 1);
}

TEST(GreyLut, SignedPercentileWindowSpansNegativeValues) {
  GreyFormat f;
  f.bitsStored = 16;
  f.isSigned = true;
  std::vector<std::uint16_t> raw;
  for (int v = -500; v <= 500; ++v)
    raw.push_back(static_cast<std::uint16_t>(static_cast<std::int16_t>(v)));
  const Window w = percentileWindow(f, raw.data(), raw.size(), 0.0);
  EXPECT_NEAR(w.center, 0, 1);
  EXPECT_NEAR(w.width, 1000, 1);
}

TEST(GreyLut, LinearWindowMatchesTheStandardAndMonochrome1Inverts) {
  GreyFormat f;
  Window w;
  w.center = 2048;
  w.width = 1001;
  const std::vector<float> lut = buildLut(f, w);
  ASSERT_EQ(lut.size(), 4096u);  // indexed by the 12 stored bits
  EXPECT_FLOAT_EQ(lut[1000], 0.0f);
  EXPECT_FLOAT_EQ(lut[3000], 1.0f);
  EXPECT_NEAR(lut[2048], (2048 - 2047.5) / 1000.0 + 0.5, 1e-6);
  f.monochrome1 = true;
  const std::vector<float> inverted = buildLut(f, w);
  for (int v : {1000, 1800, 2048, 2300, 3000})
    EXPECT_NEAR(inverted[v], 1.0f - lut[v], 1e-6) << v;
}

TEST(GreyLut, BitsAboveBitsStoredDoNotChangeTheOutput) {
  GreyFormat f;  // 16 allocated, 12 stored
  Window w;
  w.center = 2048;
  w.width = 4096;
  const std::vector<float> lut = buildLut(f, w);
  const std::uint16_t raw[4] = {0x0005, 0xF005, 0x0800, 0x8800};  // garbage in bits 12-15 of two samples
  const Image image = applyLut(f, raw, 4, 1, lut);
  EXPECT_EQ(image.at(0, 0), image.at(1, 0));
  EXPECT_EQ(image.at(2, 0), image.at(3, 0));
  EXPECT_LT(image.at(0, 0), image.at(2, 0));
}

TEST(GreyLut, EightBitTablesHave256Entries) {
  GreyFormat f;
  f.bitsAllocated = 8;
  f.bitsStored = 8;
  Window w;
  w.center = 128;
  w.width = 256;
  w.function = VoiFunction::LinearExact;
  const std::vector<float> lut = buildLut(f, w);
  ASSERT_EQ(lut.size(), 256u);
  EXPECT_NEAR(lut[0], 0.0f, 1e-6);
  EXPECT_NEAR(lut[128], 0.5f, 1e-6);
  const std::uint8_t raw[4] = {0, 64, 128, 255};
  const Image image = applyLut(f, raw, 2, 2, lut);
  EXPECT_NEAR(image.at(1, 0), 0.25f, 1e-6);
  EXPECT_NEAR(image.at(1, 1), 255 / 256.0f, 1e-6);
}

}  // namespace
}  // namespace comcl::imaging::detail
