// `epochal scan` end to end on real Fashion-MNIST subsets with planted transformed copies:
// the counts per kind it prints, leakage_pairs.svg and leakage.json under --out, and the
// clean validation set of --write-clean-val read back.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <string>
#include <vector>

#include "epochal/data/idx.h"
#include "epochal/data/leakage.h"
#include "process_util.h"
#include "train/fashion_mnist.h"

namespace epochal::apps {
namespace {

namespace fs = std::filesystem;
using test::Contains;

constexpr char kBinary[] = EPOCHAL_BINARY;
constexpr int kTimeoutSeconds = 120;

void WriteSplit(const data::Dataset& ds, const fs::path& images, const fs::path& labels) {
  data::IdxArray x;
  x.dims = {ds.size(), ds.height, ds.width};
  x.data = ds.pixels;
  data::WriteIdx(images.string(), x, true);
  data::IdxArray y;
  y.dims = {ds.size()};
  y.data = ds.labels;
  data::WriteIdx(labels.string(), y, true);
}

TEST(ScanCommandTest, PlantedCopiesPerKindSvgAndCleanValidationSet) {
  EPOCHAL_REQUIRE_FASHION_MNIST();
  test::TempDir dir("epochal_scan_test");
  const fs::path root = dir.path();
  const data::Dataset train = train::testing::LoadFashionMnist(true, 3000);
  data::Dataset val = train::testing::LoadFashionMnist(false, 400);
  // Two copies of each kind: shifted (1, -2), gain 0.8, mirrored.
  std::vector<data::LeakagePair> plants(6);
  for (int i = 0; i < 6; ++i) {
    plants[i].train_index = 100 + 37 * i;
    plants[i].val_index = 10 + 50 * i;
  }
  plants[0].dx = plants[1].dx = 1;
  plants[0].dy = plants[1].dy = -2;
  plants[2].gain = plants[3].gain = 0.8;
  plants[4].mirrored = plants[5].mirrored = true;
  for (const data::LeakagePair& p : plants) {
    std::vector<uint8_t> out(static_cast<size_t>(val.sample_size()));
    data::TransformSample(train, p, false, train.Sample(p.train_index).data(), out.data());
    std::copy(out.begin(), out.end(), val.pixels.begin() + p.val_index * val.sample_size());
    val.labels[p.val_index] = train.labels[p.train_index];
  }
  WriteSplit(train, root / "train-images.gz", root / "train-labels.gz");
  WriteSplit(val, root / "val-images.gz", root / "val-labels.gz");
  const test::Outcome o = test::RunWithTimeout(
      root, kTimeoutSeconds,
      {kBinary, "scan", "--train-images", (root / "train-images.gz").string(), "--train-labels",
       (root / "train-labels.gz").string(), "--val-images", (root / "val-images.gz").string(),
       "--val-labels", (root / "val-labels.gz").string(), "--threads", "2", "--out",
       (root / "out").string(), "--write-clean-val", (root / "clean").string()});
  ASSERT_TRUE(o.Succeeded()) << o.Describe();
  for (const char* line :
       {"photometric         2 more", "shifted             2 more", "mirrored            2 more",
        "flagged             6 validation samples", "clean validation    394 samples"}) {
    EXPECT_TRUE(Contains(o.out, line)) << "no \"" << line << "\" in\n" << o.out;
  }
  const std::string svg = test::ReadFile(root / "out" / "leakage_pairs.svg");
  EXPECT_EQ(svg.rfind("<?xml", 0), 0u);
  EXPECT_TRUE(Contains(svg, "</svg>"));
  size_t images = 0;
  for (size_t at = svg.find("<image"); at != std::string::npos; at = svg.find("<image", at + 1)) {
    ++images;
  }
  EXPECT_EQ(images, 18u);  // validation, training and transformed image per pair
  const std::string json = test::ReadFile(root / "out" / "leakage.json");
  EXPECT_TRUE(Contains(json, "\"shifted\": 2")) << json;
  EXPECT_TRUE(Contains(json, "\"mirrored\", true, 0, 0")) << json;
  const data::Dataset clean = data::LoadIdxDataset((root / "clean" / "val-images.gz").string(),
                                                   (root / "clean" / "val-labels.gz").string(), 10);
  EXPECT_EQ(clean.size(), 394);
  // The first planted copy sat at index 10: index 10 of the clean set is val's 11.
  EXPECT_TRUE(std::equal(clean.Sample(10).begin(), clean.Sample(10).end(), val.Sample(11).begin()));
}

TEST(ScanCommandTest, RejectsABadShift) {
  test::TempDir dir("epochal_scan_test");
  const test::Outcome o =
      test::RunWithTimeout(dir.path(), kTimeoutSeconds, {kBinary, "scan", "--max-shift", "9"});
  EXPECT_TRUE(o.exited && o.code == 2) << o.Describe();
  EXPECT_TRUE(Contains(o.err, "--max-shift")) << o.err;
}

}  // namespace
}  // namespace epochal::apps
