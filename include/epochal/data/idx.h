// IDX files (the MNIST / Fashion-MNIST container), plain or gzip-compressed.
//
// An IDX file is a 4-byte magic (two zero bytes, a type code, a dimension count), one
// big-endian uint32 per dimension, then the elements in row-major order. The reader
// streams the file (gzip is recognised by its 0x1f 0x8b magic, not by the file name) and
// validates everything it reads: each failure is an epochal::InputError whose message
// names the file and the byte offset, counted in the decompressed stream, where the
// problem is, so a user can check it with `zcat FILE | xxd -s OFFSET`.
//
// Only unsigned bytes (type 0x08) are accepted: that is what every image and label file
// epochal trains on holds, and it lets a dataset keep the raw bytes (47 MB for the
// Fashion-MNIST training split) and convert to float only when a batch is gathered.
//
// Thread safety: the functions are reentrant; a Dataset is read-only after loading and
// may be shared by any number of threads.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace epochal::data {

// IDX element type codes (the third magic byte).
inline constexpr uint8_t kIdxUByte = 0x08;
inline constexpr uint8_t kIdxSByte = 0x09;
inline constexpr uint8_t kIdxInt16 = 0x0B;
inline constexpr uint8_t kIdxInt32 = 0x0C;
inline constexpr uint8_t kIdxFloat32 = 0x0D;
inline constexpr uint8_t kIdxFloat64 = 0x0E;

// Largest payload ReadIdx accepts (2^31 bytes); a header claiming more is corrupt.
inline constexpr int64_t kIdxMaxDataBytes = int64_t{1} << 31;
// Largest dimension count ReadIdx accepts.
inline constexpr int kIdxMaxRank = 4;

// One IDX array as stored: the type code, the dimensions (outermost first) and the raw
// element bytes, row-major.
struct IdxArray {
  uint8_t dtype = kIdxUByte;
  std::vector<int64_t> dims;
  std::vector<uint8_t> data;

  // Product of the dimensions.
  int64_t NumElements() const;
  // Bytes in the header: 4 + 4 * dims.size(); the offset of the first data byte.
  int64_t HeaderBytes() const { return 4 + 4 * static_cast<int64_t>(dims.size()); }
};

// Reads and validates an IDX file. When `expected_rank` is non-zero, a file with another
// dimension count is rejected with the magic that was expected (0x0000080N), which
// catches an image file and a label file given the wrong way round.
// Throws epochal::InputError naming `path` (and a byte offset where one applies).
IdxArray ReadIdx(const std::string& path, int expected_rank = 0);

// Writes `array` as an IDX file, gzip-compressed when `gzip` is true. Used to export
// subsets and by tests. Throws epochal::InputError when the file cannot be written and
// epochal::Error when `array` is inconsistent (data size differs from the dimensions).
void WriteIdx(const std::string& path, const IdxArray& array, bool gzip);

// "[60000, 28, 28]".
std::string DimsToString(std::span<const int64_t> dims);

// An image classification dataset held as raw bytes.
struct Dataset {
  std::string name;  // for messages and reports, e.g. "fashion-mnist/train"
  int64_t channels = 0;
  int64_t height = 0;
  int64_t width = 0;
  std::vector<uint8_t> pixels;  // [N, C, H, W], 0..255
  std::vector<uint8_t> labels;  // [N], each < num_classes
  int num_classes = 0;

  int64_t size() const { return static_cast<int64_t>(labels.size()); }
  // Elements in one sample: C * H * W.
  int64_t sample_size() const { return channels * height * width; }
  // The raw bytes of sample `i`.
  std::span<const uint8_t> Sample(int64_t i) const {
    return std::span<const uint8_t>(pixels).subspan(static_cast<size_t>(i * sample_size()),
                                                    static_cast<size_t>(sample_size()));
  }
};

// Loads an image file (3-D ubyte [N, H, W], one channel) and a label file (1-D ubyte [N])
// into a Dataset named after the image file. The sample counts must match and every label
// must be below `num_classes` (1..256). When `limit` > 0 only the first `limit` samples
// are kept (all labels are still checked). Throws epochal::InputError.
Dataset LoadIdxDataset(const std::string& images_path, const std::string& labels_path,
                       int num_classes, int64_t limit = 0);

// Copies the samples `indices` of `ds` into `images` ([B, C, H, W] floats, pixel / 255, so
// in [0, 1]) and their labels into `labels` ([B]), B = indices.size(). The caller owns
// both buffers. Does not allocate; an index outside [0, ds.size()) is a bug and throws
// epochal::Error.
void GatherBatch(const Dataset& ds, std::span<const int64_t> indices, float* images,
                 int32_t* labels);

// Fashion-MNIST (Xiao et al. 2017) as the Debian package dataset-fashion-mnist installs it.
inline constexpr int kFashionMnistClasses = 10;

// "/usr/share/datasets/fashion-mnist".
std::string DefaultFashionMnistDir();

// The four files of the dataset: bare names from FashionMnistFileNames(), or joined with
// a directory by FashionMnistPaths().
struct FashionMnistFiles {
  std::string train_images;
  std::string train_labels;
  std::string test_images;
  std::string test_labels;
};
FashionMnistFiles FashionMnistFileNames();
FashionMnistFiles FashionMnistPaths(const std::string& dir);

// {"top", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag",
// "ankle boot"}: the name of label i is element i.
std::vector<std::string> FashionMnistClassNames();

enum class Split { kTrain, kTest };

// Loads one split from `dir` (files named as FashionMnistFileNames()), named
// "fashion-mnist/train" or "fashion-mnist/test".
Dataset LoadFashionMnist(const std::string& dir, Split split, int64_t limit = 0);

}  // namespace epochal::data
