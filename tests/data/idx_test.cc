#include "epochal/data/idx.h"

#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <initializer_list>
#include <string>
#include <vector>

#include "core/unprivileged.h"
#include "epochal/core/error.h"

namespace epochal::data {
namespace {

using Bytes = std::vector<uint8_t>;

// An IDX file: header for `dims` with type `dtype`, then `data_bytes` bytes 0, 1, 2, ...
Bytes IdxBytes(std::initializer_list<uint32_t> dims, size_t data_bytes, uint8_t dtype = 0x08) {
  Bytes b = {0, 0, dtype, static_cast<uint8_t>(dims.size())};
  for (uint32_t d : dims) {
    b.insert(b.end(), {static_cast<uint8_t>(d >> 24), static_cast<uint8_t>(d >> 16),
                       static_cast<uint8_t>(d >> 8), static_cast<uint8_t>(d)});
  }
  for (size_t i = 0; i < data_bytes; ++i) b.push_back(static_cast<uint8_t>(i * 7 + 3));
  return b;
}

// One gzip member holding `plain`.
Bytes Gzip(const Bytes& plain) {
  z_stream z{};
  EXPECT_EQ(deflateInit2(&z, Z_BEST_COMPRESSION, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY),
            Z_OK);
  Bytes out(deflateBound(&z, static_cast<uLong>(plain.size())) + 64);
  z.next_in = const_cast<Bytef*>(plain.data());
  z.avail_in = static_cast<uInt>(plain.size());
  z.next_out = out.data();
  z.avail_out = static_cast<uInt>(out.size());
  EXPECT_EQ(deflate(&z, Z_FINISH), Z_STREAM_END);
  out.resize(z.total_out);
  deflateEnd(&z);
  return out;
}

// Runs `fn`, expects an InputError whose message holds every one of `parts`.
void ExpectInputError(const std::function<void()>& fn, std::initializer_list<std::string> parts) {
  try {
    fn();
    ADD_FAILURE() << "no exception";
  } catch (const InputError& e) {
    const std::string msg = e.what();
    for (const std::string& part : parts) {
      EXPECT_NE(msg.find(part), std::string::npos) << "missing \"" << part << "\" in: " << msg;
    }
  } catch (const std::exception& e) {
    ADD_FAILURE() << "not an InputError: " << e.what();
  }
}

class IdxTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = (std::filesystem::temp_directory_path() / "epochal-idx-XXXXXX").string();
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  std::string Write(const std::string& name, const Bytes& bytes) {
    const std::string path = (std::filesystem::path(dir_) / name).string();
    std::ofstream f(path, std::ios::binary);
    f.write(reinterpret_cast<const char*>(bytes.data()),
            static_cast<std::streamsize>(bytes.size()));
    EXPECT_TRUE(f.good());
    return path;
  }
  void ExpectReadError(const std::string& path, std::initializer_list<std::string> parts) {
    SCOPED_TRACE(path);
    ExpectInputError([&] { ReadIdx(path); }, parts);
  }

  std::string dir_;
};

TEST_F(IdxTest, PlainRoundTrip) {
  IdxArray a;
  a.dims = {3, 4, 5};
  for (int i = 0; i < 60; ++i) a.data.push_back(static_cast<uint8_t>(i * 13));
  const std::string path = (std::filesystem::path(dir_) / "a.idx").string();
  WriteIdx(path, a, /*gzip=*/false);
  EXPECT_EQ(std::filesystem::file_size(path), 16u + 60u);
  const IdxArray b = ReadIdx(path);
  EXPECT_EQ(b.dtype, kIdxUByte);
  EXPECT_EQ(b.dims, a.dims);
  EXPECT_EQ(b.data, a.data);
  EXPECT_EQ(b.NumElements(), 60);
  EXPECT_EQ(b.HeaderBytes(), 16);
}

TEST_F(IdxTest, GzipRoundTrip) {
  IdxArray a;
  a.dims = {1000, 28};
  for (int i = 0; i < 28000; ++i) a.data.push_back(static_cast<uint8_t>((i * i) % 251));
  const std::string path = (std::filesystem::path(dir_) / "a.idx.gz").string();
  WriteIdx(path, a, /*gzip=*/true);
  EXPECT_LT(std::filesystem::file_size(path), 28000u);
  const IdxArray b = ReadIdx(path);
  EXPECT_EQ(b.dims, a.dims);
  EXPECT_EQ(b.data, a.data);
}

TEST_F(IdxTest, DetectsGzipByMagicNotByName) {
  const Bytes plain = IdxBytes({2, 3}, 6);
  const IdxArray a = ReadIdx(Write("really-gzip.idx", Gzip(plain)));
  const IdxArray b = ReadIdx(Write("really-plain.gz", plain));
  EXPECT_EQ(a.dims, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(a.data, b.data);
  EXPECT_EQ(a.data, Bytes(plain.begin() + 12, plain.end()));
}

TEST_F(IdxTest, ReadsConcatenatedGzipMembers) {
  const Bytes plain = IdxBytes({4, 5}, 20);
  Bytes gz = Gzip(Bytes(plain.begin(), plain.begin() + 9));
  const Bytes second = Gzip(Bytes(plain.begin() + 9, plain.end()));
  gz.insert(gz.end(), second.begin(), second.end());
  const IdxArray a = ReadIdx(Write("two-members.gz", gz));
  EXPECT_EQ(a.data, Bytes(plain.begin() + 12, plain.end()));
}

TEST_F(IdxTest, ReadsLargeFileInChunks) {
  // Larger than the reader's input buffer and data chunk, plain and gzip.
  const Bytes plain = IdxBytes({3000, 28, 28}, 3000 * 28 * 28);
  for (bool gzip : {false, true}) {
    const IdxArray a = ReadIdx(Write(gzip ? "big.gz" : "big", gzip ? Gzip(plain) : plain));
    ASSERT_EQ(a.data.size(), 3000u * 28 * 28);
    EXPECT_TRUE(std::equal(a.data.begin(), a.data.end(), plain.begin() + 16));
  }
}

TEST_F(IdxTest, RejectsBadMagic) {
  Bytes b = IdxBytes({2}, 2);
  b[0] = 0x12, b[1] = 0x34, b[2] = 0x56, b[3] = 0x78;
  const std::string path = Write("bad-magic", b);
  ExpectReadError(path, {path, "byte 0", "bad IDX magic 0x12345678", "expected 0x000008NN"});
  // A caller that knows the rank gets the exact magic it wanted.
  ExpectInputError([&] { ReadIdx(path, 3); }, {path, "byte 0", "expected 0x00000803"});
}

TEST_F(IdxTest, RejectsUnsupportedDtype) {
  const std::string path = Write("floats", IdxBytes({2}, 8, kIdxFloat32));
  ExpectReadError(path, {path, "byte 2", "unsupported IDX data type 0x0D", "float32"});
  const std::string junk = Write("junk-type", IdxBytes({2}, 2, 0x42));
  ExpectReadError(junk, {junk, "byte 2", "0x42"});
}

TEST_F(IdxTest, RejectsBadNumberOfDimensions) {
  const std::string none = Write("rank0", IdxBytes({}, 1));
  ExpectReadError(none, {none, "byte 3", "number of dimensions 0", "1 to 4"});
  const std::string five = Write("rank5", IdxBytes({1, 1, 1, 1, 1}, 1));
  ExpectReadError(five, {five, "byte 3", "number of dimensions 5"});
}

TEST_F(IdxTest, RejectsWrongRankWhenOneIsExpected) {
  const std::string path = Write("labels", IdxBytes({5}, 5));
  ExpectInputError([&] { ReadIdx(path, 3); },
                   {path, "byte 3", "expected a 3-D", "0x00000803", "got 1-D", "0x00000801"});
}

TEST_F(IdxTest, RejectsZeroDimension) {
  const std::string path = Write("zero-dim", IdxBytes({3, 0, 2}, 0));
  ExpectReadError(path, {path, "byte 8", "dimension 1 is 0"});
}

TEST_F(IdxTest, RejectsAbsurdDimensions) {
  const std::string path = Write("huge", IdxBytes({60000, 60000, 28}, 16));
  ExpectReadError(path, {path, "byte 8", "3600000000 bytes", "limit of 2147483648"});
  const std::string one = Write("huge1", IdxBytes({0xFFFFFFFFu}, 16));
  ExpectReadError(one, {one, "byte 4", "4294967295"});
}

TEST_F(IdxTest, RejectsTruncatedHeader) {
  Bytes b = IdxBytes({60000, 28, 28}, 0);
  b.resize(10);
  const std::string path = Write("short-header", b);
  ExpectReadError(path, {path, "byte 10", "inside the IDX header", "needs 12 bytes, only 6"});
}

TEST_F(IdxTest, RejectsTruncatedPlainFile) {
  Bytes b = IdxBytes({10, 4}, 25);
  const std::string path = Write("truncated", b);
  ExpectReadError(path,
                  {path, "byte 37", "data ends early", "[10, 4]", "need 40 bytes from byte 12",
                   "only 25 present", "15 missing", "truncated"});
}

TEST_F(IdxTest, RejectsTruncatedGzipFile) {
  const Bytes plain = IdxBytes({2000, 28, 28}, 2000 * 28 * 28);
  Bytes gz = Gzip(plain);
  gz.resize(gz.size() / 2);
  const std::string path = Write("truncated.gz", gz);
  ExpectReadError(
      path, {path, "byte ", "data ends early", "[2000, 28, 28]", "the .gz file is truncated"});

  // A complete gzip stream around a short IDX file is a truncated IDX file, not bad gzip.
  const std::string inner = Write("inner-truncated.gz", Gzip(IdxBytes({10, 4}, 25)));
  ExpectReadError(inner, {inner, "byte 37", "data ends early", "only 25 present"});

  // Only the gzip trailer is missing: every data byte arrived, the stream did not end.
  Bytes no_trailer = Gzip(IdxBytes({10, 4}, 40));
  no_trailer.resize(no_trailer.size() - 8);
  const std::string tail = Write("no-trailer.gz", no_trailer);
  ExpectReadError(tail, {tail, "byte 52", "gzip stream is cut short", "truncated"});
}

TEST_F(IdxTest, RejectsTrailingBytes) {
  Bytes b = IdxBytes({10, 4}, 43);
  const std::string path = Write("trailing", b);
  ExpectReadError(path, {path, "byte 52", "3 unexpected trailing bytes"});
  const std::string gz = Write("trailing.gz", Gzip(b));
  ExpectReadError(gz, {gz, "byte 52", "3 unexpected trailing bytes"});
}

TEST_F(IdxTest, RejectsEmptyFile) {
  const std::string path = Write("empty", {});
  ExpectReadError(path, {path, "byte 0", "file is empty"});
  const std::string gz = Write("empty.gz", Gzip({}));
  ExpectReadError(gz, {gz, "byte 0", "file is empty after decompression"});
}

TEST_F(IdxTest, RejectsGzipGarbage) {
  Bytes garbage = {0x1f, 0x8b};
  for (int i = 0; i < 100; ++i) garbage.push_back(static_cast<uint8_t>(i * 37 + 11));
  const std::string path = Write("garbage.gz", garbage);
  ExpectReadError(path, {path, "not a valid gzip file"});

  // A flipped checksum: the data decompresses but does not match its CRC-32.
  Bytes gz = Gzip(IdxBytes({10, 4}, 40));
  gz[gz.size() - 8] ^= 0xFF;
  const std::string crc = Write("bad-crc.gz", gz);
  ExpectReadError(crc, {crc, "not a valid gzip file", "incorrect data check"});
}

TEST_F(IdxTest, RejectsDirectory) { ExpectReadError(dir_, {dir_, "is a directory"}); }

TEST_F(IdxTest, RejectsMissingFile) {
  const std::string path = (std::filesystem::path(dir_) / "no-such-file.gz").string();
  ExpectReadError(path, {path, "cannot open", "No such file or directory"});
}

TEST_F(IdxTest, RejectsUnreadableFile) {
  ASSERT_EQ(::chmod(dir_.c_str(), 0711), 0);
  const std::string path = Write("secret", IdxBytes({2}, 2));
  ASSERT_EQ(::chmod(path.c_str(), 0), 0);
  // As `nobody` when the test runs as root, since root reads files whatever their mode.
  std::string why;
  const std::optional<std::string> error = epochal::testing::RunUnprivileged(
      [&]() -> std::string {
        try {
          ReadIdx(path);
        } catch (const InputError& e) {
          return e.what();
        }
        return "no error";
      },
      &why);
  ASSERT_TRUE(error) << why;
  for (const char* part : {path.c_str(), "cannot open", "Permission denied"}) {
    EXPECT_NE(error->find(part), std::string::npos) << "missing \"" << part << "\" in: " << *error;
  }
}

class DatasetTest : public IdxTest {
 protected:
  // 5 images of 3x2 and labels {1, 0, 2, 2, 1}.
  void WriteSmall(const Bytes& labels = {1, 0, 2, 2, 1}) {
    images_ = Write("images.gz", Gzip(IdxBytes({5, 3, 2}, 30)));
    Bytes l = IdxBytes({static_cast<uint32_t>(labels.size())}, 0);
    l.insert(l.end(), labels.begin(), labels.end());
    labels_ = Write("labels", l);
  }
  std::string images_, labels_;
};

TEST_F(DatasetTest, LoadsImagesAndLabels) {
  WriteSmall();
  const Dataset ds = LoadIdxDataset(images_, labels_, 3);
  EXPECT_EQ(ds.name, "images.gz");
  EXPECT_EQ(ds.size(), 5);
  EXPECT_EQ(ds.channels, 1);
  EXPECT_EQ(ds.height, 3);
  EXPECT_EQ(ds.width, 2);
  EXPECT_EQ(ds.sample_size(), 6);
  EXPECT_EQ(ds.num_classes, 3);
  EXPECT_EQ(ds.labels, (Bytes{1, 0, 2, 2, 1}));
  const Bytes all = IdxBytes({5, 3, 2}, 30);
  EXPECT_EQ(ds.pixels, Bytes(all.begin() + 16, all.end()));
  EXPECT_EQ(ds.Sample(2)[0], all[16 + 12]);
}

TEST_F(DatasetTest, LimitKeepsFirstSamples) {
  WriteSmall();
  const Dataset ds = LoadIdxDataset(images_, labels_, 3, 2);
  EXPECT_EQ(ds.size(), 2);
  EXPECT_EQ(ds.pixels.size(), 12u);
  EXPECT_EQ(ds.labels, (Bytes{1, 0}));
  EXPECT_EQ(LoadIdxDataset(images_, labels_, 3, 100).size(), 5);
}

TEST_F(DatasetTest, GatherBatchScalesPixelsAndCopiesLabels) {
  WriteSmall();
  const Dataset ds = LoadIdxDataset(images_, labels_, 3);
  const std::vector<int64_t> indices = {4, 0, 4};
  std::vector<float> images(3 * 6, -1.0f);
  std::vector<int32_t> labels(3, -1);
  GatherBatch(ds, indices, images.data(), labels.data());
  EXPECT_EQ(labels, (std::vector<int32_t>{1, 1, 1}));
  for (size_t b = 0; b < indices.size(); ++b) {
    for (size_t k = 0; k < 6; ++k) {
      const uint8_t p = ds.pixels[static_cast<size_t>(indices[b]) * 6 + k];
      EXPECT_EQ(images[b * 6 + k], static_cast<float>(p) / 255.0f);
    }
  }
  const std::vector<int64_t> bad = {5};
  EXPECT_THROW(GatherBatch(ds, bad, images.data(), labels.data()), Error);
}

TEST_F(DatasetTest, GatherBatchMapsFullByteRangeToUnitInterval) {
  Dataset ds;
  ds.channels = 1, ds.height = 1, ds.width = 256, ds.num_classes = 1;
  for (int p = 0; p < 256; ++p) ds.pixels.push_back(static_cast<uint8_t>(p));
  ds.labels = {0};
  std::vector<float> images(256);
  int32_t label = -1;
  const std::vector<int64_t> indices = {0};
  GatherBatch(ds, indices, images.data(), &label);
  EXPECT_EQ(images[0], 0.0f);
  EXPECT_EQ(images[255], 1.0f);
  for (int p = 1; p < 256; ++p) EXPECT_GT(images[p], images[p - 1]);
}

TEST_F(DatasetTest, RejectsCountMismatch) {
  WriteSmall({1, 0, 2, 2});
  ExpectInputError([&] { LoadIdxDataset(images_, labels_, 3); },
                   {images_, labels_, "5 images", "4 labels"});
}

TEST_F(DatasetTest, RejectsLabelOutOfRange) {
  WriteSmall({1, 0, 2, 10, 1});
  ExpectInputError([&] { LoadIdxDataset(images_, labels_, 10); },
                   {labels_, "byte 11", "sample 3", "is 10", "0..9"});
  // A limit does not hide a bad label further on.
  ExpectInputError([&] { LoadIdxDataset(images_, labels_, 10, 2); }, {labels_, "byte 11"});
}

TEST_F(DatasetTest, RejectsSwappedFiles) {
  WriteSmall();
  ExpectInputError([&] { LoadIdxDataset(labels_, images_, 3); },
                   {labels_, "byte 3", "expected a 3-D", "0x00000803"});
}

TEST_F(DatasetTest, RejectsBadNumClasses) {
  WriteSmall();
  ExpectInputError([&] { LoadIdxDataset(images_, labels_, 0); }, {"num_classes 0"});
  ExpectInputError([&] { LoadIdxDataset(images_, labels_, 257); }, {"num_classes 257"});
}

TEST(DimsTest, ToString) {
  const std::vector<int64_t> dims = {60000, 28, 28};
  EXPECT_EQ(DimsToString(dims), "[60000, 28, 28]");
  EXPECT_EQ(DimsToString({}), "[]");
}

}  // namespace
}  // namespace epochal::data
