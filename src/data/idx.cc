#include "epochal/data/idx.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <limits>
#include <system_error>

#include "epochal/core/error.h"

namespace epochal::data {
namespace {

using detail::StrCat;

std::string ErrnoText(int err) { return std::generic_category().message(err); }

std::string Hex(uint64_t value, int digits) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "0x%0*llX", digits, static_cast<unsigned long long>(value));
  return buf;
}

const char* DtypeName(uint8_t dtype) {
  switch (dtype) {
    case kIdxUByte:
      return "unsigned byte";
    case kIdxSByte:
      return "signed byte";
    case kIdxInt16:
      return "int16";
    case kIdxInt32:
      return "int32";
    case kIdxFloat32:
      return "float32";
    case kIdxFloat64:
      return "float64";
    default:
      return "not an IDX type";
  }
}

// Owns a file descriptor opened for reading.
class FileReader {
 public:
  explicit FileReader(const std::string& path) : path_(path) {
    fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd_ < 0) {
      const int err = errno;
      throw InputError(StrCat(path, ": cannot open: ", ErrnoText(err)));
    }
    struct stat st;
    if (::fstat(fd_, &st) != 0) {
      const int err = errno;
      ::close(fd_);
      throw InputError(StrCat(path, ": cannot stat: ", ErrnoText(err)));
    }
    if (S_ISDIR(st.st_mode)) {
      ::close(fd_);
      throw InputError(StrCat(path, ": is a directory, expected an IDX file"));
    }
    if (S_ISREG(st.st_mode)) size_hint_ = static_cast<int64_t>(st.st_size);
  }
  ~FileReader() { ::close(fd_); }
  FileReader(const FileReader&) = delete;
  FileReader& operator=(const FileReader&) = delete;

  // Reads up to `n` bytes; returns 0 only at the end of the file.
  size_t Read(uint8_t* dst, size_t n) {
    for (;;) {
      const ssize_t got = ::read(fd_, dst, n);
      if (got >= 0) {
        consumed_ += static_cast<uint64_t>(got);
        return static_cast<size_t>(got);
      }
      if (errno == EINTR) continue;
      const int err = errno;
      throw InputError(
          StrCat(path_, ": read failed after ", consumed_, " bytes: ", ErrnoText(err)));
    }
  }
  // Bytes read from the file so far.
  uint64_t consumed() const { return consumed_; }
  // The file size for a regular file, else -1.
  int64_t size_hint() const { return size_hint_; }

 private:
  std::string path_;
  int fd_ = -1;
  int64_t size_hint_ = -1;
  uint64_t consumed_ = 0;
};

// The decompressed bytes of a file: passes a plain file through, inflates a gzip file
// (several concatenated members included). Tracks the offset in the decompressed stream.
class ByteStream {
 public:
  explicit ByteStream(const std::string& path) : path_(path), file_(path), in_(kInputBytes) {
    FillInput();
    gzip_ = in_len_ >= 2 && in_[0] == 0x1f && in_[1] == 0x8b;
    if (gzip_) {
      std::memset(&z_, 0, sizeof(z_));
      // 16 + 15: gzip wrapper only, largest window.
      if (inflateInit2(&z_, 16 + MAX_WBITS) != Z_OK) {
        throw SystemError(StrCat(path_, ": zlib inflateInit2 failed"));
      }
      z_live_ = true;
    }
  }
  ~ByteStream() {
    if (z_live_) inflateEnd(&z_);
  }
  ByteStream(const ByteStream&) = delete;
  ByteStream& operator=(const ByteStream&) = delete;

  bool gzip() const { return gzip_; }
  // Decompressed bytes delivered so far.
  int64_t offset() const { return offset_; }
  // True when a gzip file ended before its compressed stream did.
  bool gzip_truncated() const { return gzip_truncated_; }
  int64_t size_hint() const { return gzip_ ? -1 : file_.size_hint(); }

  // Reads up to `n` bytes; fewer only at the end of the stream.
  size_t Read(uint8_t* dst, size_t n) {
    size_t total = 0;
    while (total < n) {
      const size_t got = gzip_ ? Inflate(dst + total, n - total) : Copy(dst + total, n - total);
      if (got == 0) break;
      total += got;
    }
    offset_ += static_cast<int64_t>(total);
    return total;
  }

 private:
  static constexpr size_t kInputBytes = size_t{1} << 18;

  void FillInput() {
    in_pos_ = 0;
    in_len_ = file_.Read(in_.data(), in_.size());
  }

  size_t Copy(uint8_t* dst, size_t n) {
    if (in_pos_ < in_len_) {
      const size_t k = std::min(n, in_len_ - in_pos_);
      std::memcpy(dst, in_.data() + in_pos_, k);
      in_pos_ += k;
      return k;
    }
    // Large reads bypass the buffer.
    if (n >= in_.size()) return file_.Read(dst, n);
    FillInput();
    if (in_len_ == 0) return 0;
    return Copy(dst, n);
  }

  size_t Inflate(uint8_t* dst, size_t n) {
    const uInt out_len = static_cast<uInt>(std::min<size_t>(n, std::numeric_limits<uInt>::max()));
    z_.next_out = dst;
    z_.avail_out = out_len;
    while (z_.avail_out > 0) {
      if (in_pos_ == in_len_) {
        FillInput();
        if (in_len_ == 0) {
          if (!member_ended_) gzip_truncated_ = true;
          break;
        }
      }
      if (member_ended_) {
        // More input after a complete member: the next member of a concatenated file.
        if (inflateReset(&z_) != Z_OK)
          throw SystemError(StrCat(path_, ": zlib inflateReset failed"));
        member_ended_ = false;
      }
      z_.next_in = in_.data() + in_pos_;
      z_.avail_in = static_cast<uInt>(in_len_ - in_pos_);
      const uInt out_before = z_.avail_out;
      const uInt in_before = z_.avail_in;
      const int ret = inflate(&z_, Z_NO_FLUSH);
      in_pos_ = in_len_ - z_.avail_in;
      if (ret == Z_STREAM_END) {
        member_ended_ = true;
        continue;
      }
      if (ret == Z_OK) continue;
      if (ret == Z_BUF_ERROR && (z_.avail_out != out_before || z_.avail_in != in_before)) continue;
      if (ret == Z_MEM_ERROR) throw SystemError(StrCat(path_, ": zlib inflate is out of memory"));
      const uint64_t compressed_at = file_.consumed() - (in_len_ - in_pos_);
      const int64_t decompressed_at = offset_ + static_cast<int64_t>(out_len - z_.avail_out);
      throw InputError(StrCat(path_,
                              ": not a valid gzip file (it starts with the gzip magic 1f 8b): ",
                              z_.msg != nullptr ? z_.msg : zError(ret), " near compressed byte ",
                              compressed_at, ", after ", decompressed_at, " decompressed bytes"));
    }
    return out_len - z_.avail_out;
  }

  std::string path_;
  FileReader file_;
  std::vector<uint8_t> in_;
  size_t in_pos_ = 0;
  size_t in_len_ = 0;
  bool gzip_ = false;
  z_stream z_;
  bool z_live_ = false;
  bool member_ended_ = false;
  bool gzip_truncated_ = false;
  int64_t offset_ = 0;
};

// Where the file lies, for messages: "f.gz: byte 16: ".
std::string At(const std::string& path, int64_t offset) {
  return StrCat(path, ": byte ", offset, ": ");
}

std::string TruncatedNote(const ByteStream& in) {
  return in.gzip_truncated() ? " (the gzip stream is cut short too: the .gz file is truncated)"
                             : " (file truncated?)";
}

uint32_t BigEndian32(const uint8_t* p) {
  return (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | uint32_t{p[3]};
}

// Reads exactly `n` header bytes or throws, naming what was being read.
void ReadHeaderBytes(ByteStream& in, const std::string& path, uint8_t* dst, size_t n,
                     const char* what) {
  const int64_t start = in.offset();
  const size_t got = in.Read(dst, n);
  if (got == n) return;
  if (in.offset() == 0) {
    throw InputError(StrCat(path, ": byte 0: file is empty",
                            in.gzip() ? " after decompression" : "", " (expected an IDX header)",
                            in.gzip_truncated() ? TruncatedNote(in) : ""));
  }
  throw InputError(StrCat(At(path, in.offset()), "file ends inside the IDX header: ", what,
                          " at byte ", start, " needs ", n, " bytes, only ", got, " present",
                          TruncatedNote(in)));
}

}  // namespace

int64_t IdxArray::NumElements() const {
  int64_t n = 1;
  for (int64_t d : dims) n *= d;
  return n;
}

std::string DimsToString(std::span<const int64_t> dims) {
  std::string s = "[";
  for (size_t i = 0; i < dims.size(); ++i) {
    if (i > 0) s += ", ";
    s += std::to_string(dims[i]);
  }
  return s + "]";
}

IdxArray ReadIdx(const std::string& path, int expected_rank) {
  ByteStream in(path);
  IdxArray array;

  std::array<uint8_t, 4> magic{};
  ReadHeaderBytes(in, path, magic.data(), magic.size(), "the magic number");
  const uint32_t magic_value = BigEndian32(magic.data());
  const std::string expected_magic =
      expected_rank > 0 ? Hex(0x0800u + static_cast<unsigned>(expected_rank), 8) : "0x000008NN";
  if (magic[0] != 0 || magic[1] != 0) {
    throw InputError(StrCat(At(path, 0), "bad IDX magic ", Hex(magic_value, 8), " (expected ",
                            expected_magic,
                            ": two zero bytes, the type code 0x08, the number of dimensions); "
                            "not an IDX file"));
  }
  array.dtype = magic[2];
  if (array.dtype != kIdxUByte) {
    throw InputError(StrCat(At(path, 2), "unsupported IDX data type ", Hex(array.dtype, 2), " (",
                            DtypeName(array.dtype), "); only 0x08 (unsigned byte) is supported"));
  }
  const int rank = magic[3];
  if (rank < 1 || rank > kIdxMaxRank) {
    throw InputError(StrCat(At(path, 3), "unsupported number of dimensions ", rank,
                            " (expected 1 to ", kIdxMaxRank, ")"));
  }
  if (expected_rank > 0 && rank != expected_rank) {
    throw InputError(StrCat(At(path, 3), "expected a ", expected_rank, "-D IDX array (magic ",
                            expected_magic, "), got ", rank, "-D (magic ", Hex(magic_value, 8),
                            "); are the image and label files swapped?"));
  }

  std::array<uint8_t, 4 * kIdxMaxRank> dim_bytes{};
  ReadHeaderBytes(in, path, dim_bytes.data(), 4 * static_cast<size_t>(rank), "the dimensions");
  int64_t total = 1;
  for (int i = 0; i < rank; ++i) {
    const int64_t offset = 4 + 4 * i;
    const int64_t dim = BigEndian32(dim_bytes.data() + 4 * i);
    if (dim == 0) {
      throw InputError(StrCat(At(path, offset), "dimension ", i, " is 0"));
    }
    array.dims.push_back(dim);
    // dim < 2^32 and total <= 2^31, so the product fits in int64_t.
    total *= dim;
    if (total > kIdxMaxDataBytes) {
      throw InputError(StrCat(At(path, offset), "dimension ", i, " is ", dim,
                              ": the dimensions so far ", DimsToString(array.dims),
                              " already need ", total, " bytes, more than the limit of ",
                              kIdxMaxDataBytes, " (corrupt header?)"));
    }
  }

  // Grow as data arrives rather than trusting the header with a large allocation.
  const int64_t data_start = in.offset();
  constexpr int64_t kChunk = int64_t{1} << 22;
  if (in.size_hint() >= 0) {
    array.data.reserve(static_cast<size_t>(std::min(total, in.size_hint())));
  }
  while (static_cast<int64_t>(array.data.size()) < total) {
    const size_t have = array.data.size();
    const size_t want = static_cast<size_t>(std::min(kChunk, total - static_cast<int64_t>(have)));
    array.data.resize(have + want);
    const size_t got = in.Read(array.data.data() + have, want);
    if (got < want) {
      const int64_t present = static_cast<int64_t>(have + got);
      throw InputError(StrCat(At(path, in.offset()), "data ends early: dimensions ",
                              DimsToString(array.dims), " need ", total, " bytes from byte ",
                              data_start, ", only ", present, " present (", total - present,
                              " missing)", TruncatedNote(in)));
    }
  }

  // Reading to the end also makes zlib verify the gzip checksum and length.
  const int64_t data_end = in.offset();
  std::array<uint8_t, 4096> extra;
  int64_t trailing = 0;
  for (size_t got; (got = in.Read(extra.data(), extra.size())) > 0;) {
    trailing += static_cast<int64_t>(got);
  }
  if (trailing > 0) {
    throw InputError(StrCat(At(path, data_end), trailing,
                            " unexpected trailing bytes after the data (", "dimensions ",
                            DimsToString(array.dims), " end the file at byte ", data_end, ")"));
  }
  if (in.gzip_truncated()) {
    throw InputError(
        StrCat(At(path, data_end),
               "the gzip stream is cut short after all the data (missing gzip trailer: "
               "the .gz file is truncated)"));
  }
  return array;
}

namespace {

// Writes a whole file, through zlib when `gzip` (gzopen adds a gzip header even at level 0,
// so plain files go through stdio).
void WriteBytes(const std::string& path, std::span<const uint8_t> bytes, bool gzip) {
  if (gzip) {
    gzFile f = gzopen(path.c_str(), "wb");
    if (f == nullptr) {
      const int err = errno;
      throw InputError(StrCat(path, ": cannot create: ", ErrnoText(err)));
    }
    size_t done = 0;
    while (done < bytes.size()) {
      const unsigned n = static_cast<unsigned>(std::min<size_t>(bytes.size() - done, 1u << 30));
      if (gzwrite(f, bytes.data() + done, n) != static_cast<int>(n)) {
        int zerr = 0;
        const std::string msg = gzerror(f, &zerr);
        gzclose(f);
        throw InputError(StrCat(path, ": write failed: ", msg));
      }
      done += n;
    }
    if (gzclose(f) != Z_OK) throw InputError(StrCat(path, ": write failed on close"));
    return;
  }
  std::FILE* f = std::fopen(path.c_str(), "wb");
  if (f == nullptr) {
    const int err = errno;
    throw InputError(StrCat(path, ": cannot create: ", ErrnoText(err)));
  }
  const size_t written = std::fwrite(bytes.data(), 1, bytes.size(), f);
  const int err = errno;
  if (std::fclose(f) != 0 || written != bytes.size()) {
    throw InputError(StrCat(path, ": write failed: ", ErrnoText(err)));
  }
}

}  // namespace

void WriteIdx(const std::string& path, const IdxArray& array, bool gzip) {
  EPOCHAL_CHECK(array.dtype == kIdxUByte, "WriteIdx writes unsigned bytes only");
  EPOCHAL_CHECK(!array.dims.empty() && array.dims.size() <= kIdxMaxRank);
  for (int64_t d : array.dims) {
    EPOCHAL_CHECK(d > 0 && d <= std::numeric_limits<uint32_t>::max(), "dimension ", d);
  }
  EPOCHAL_CHECK(array.NumElements() == static_cast<int64_t>(array.data.size()), "dims ",
                DimsToString(array.dims), " vs ", array.data.size(), " bytes");
  std::vector<uint8_t> bytes;
  bytes.reserve(static_cast<size_t>(array.HeaderBytes()) + array.data.size());
  bytes.insert(bytes.end(), {0, 0, array.dtype, static_cast<uint8_t>(array.dims.size())});
  for (int64_t d : array.dims) {
    const auto u = static_cast<uint32_t>(d);
    bytes.insert(bytes.end(), {static_cast<uint8_t>(u >> 24), static_cast<uint8_t>(u >> 16),
                               static_cast<uint8_t>(u >> 8), static_cast<uint8_t>(u)});
  }
  bytes.insert(bytes.end(), array.data.begin(), array.data.end());
  WriteBytes(path, bytes, gzip);
}

Dataset LoadIdxDataset(const std::string& images_path, const std::string& labels_path,
                       int num_classes, int64_t limit) {
  if (num_classes < 1 || num_classes > 256) {
    throw InputError(StrCat("num_classes ", num_classes, " is outside 1..256 (labels are bytes)"));
  }
  IdxArray images = ReadIdx(images_path, 3);
  IdxArray labels = ReadIdx(labels_path, 1);
  const int64_t n = images.dims[0];
  if (labels.dims[0] != n) {
    throw InputError(StrCat("sample counts differ: image file ", images_path, " has ", n,
                            " images but label file ", labels_path, " has ", labels.dims[0],
                            " labels"));
  }
  for (int64_t i = 0; i < n; ++i) {
    const int label = labels.data[static_cast<size_t>(i)];
    if (label >= num_classes) {
      throw InputError(StrCat(At(labels_path, labels.HeaderBytes() + i), "label of sample ", i,
                              " is ", label, ", outside 0..", num_classes - 1));
    }
  }

  Dataset ds;
  ds.name = std::filesystem::path(images_path).filename().string();
  ds.channels = 1;
  ds.height = images.dims[1];
  ds.width = images.dims[2];
  ds.num_classes = num_classes;
  const int64_t keep = limit > 0 ? std::min(limit, n) : n;
  images.data.resize(static_cast<size_t>(keep * ds.sample_size()));
  images.data.shrink_to_fit();
  labels.data.resize(static_cast<size_t>(keep));
  labels.data.shrink_to_fit();
  ds.pixels = std::move(images.data);
  ds.labels = std::move(labels.data);
  return ds;
}

void GatherBatch(const Dataset& ds, std::span<const int64_t> indices, float* images,
                 int32_t* labels) {
  // p * (1/255) can differ from p / 255 in the last bit; the table keeps exact quotients.
  static const std::array<float, 256> kScale = [] {
    std::array<float, 256> t{};
    for (int p = 0; p < 256; ++p) t[static_cast<size_t>(p)] = static_cast<float>(p) / 255.0f;
    return t;
  }();
  const int64_t n = ds.size();
  const size_t sample = static_cast<size_t>(ds.sample_size());
  for (size_t b = 0; b < indices.size(); ++b) {
    const int64_t i = indices[b];
    EPOCHAL_CHECK(i >= 0 && i < n, "sample index ", i, " outside [0, ", n, ") of ", ds.name);
    const uint8_t* src = ds.pixels.data() + static_cast<size_t>(i) * sample;
    float* dst = images + b * sample;
    for (size_t k = 0; k < sample; ++k) dst[k] = kScale[src[k]];
    labels[b] = ds.labels[static_cast<size_t>(i)];
  }
}

std::string DefaultFashionMnistDir() { return "/usr/share/datasets/fashion-mnist"; }

FashionMnistFiles FashionMnistFileNames() {
  return {"train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz",
          "t10k-labels-idx1-ubyte.gz"};
}

FashionMnistFiles FashionMnistPaths(const std::string& dir) {
  const std::filesystem::path base(dir);
  FashionMnistFiles f = FashionMnistFileNames();
  for (std::string* name : {&f.train_images, &f.train_labels, &f.test_images, &f.test_labels}) {
    *name = (base / *name).string();
  }
  return f;
}

std::vector<std::string> FashionMnistClassNames() {
  return {"top",    "trouser", "pullover", "dress", "coat",
          "sandal", "shirt",   "sneaker",  "bag",   "ankle boot"};
}

Dataset LoadFashionMnist(const std::string& dir, Split split, int64_t limit) {
  const FashionMnistFiles f = FashionMnistPaths(dir);
  const bool train = split == Split::kTrain;
  Dataset ds = LoadIdxDataset(train ? f.train_images : f.test_images,
                              train ? f.train_labels : f.test_labels, kFashionMnistClasses, limit);
  ds.name = train ? "fashion-mnist/train" : "fashion-mnist/test";
  return ds;
}

}  // namespace epochal::data
