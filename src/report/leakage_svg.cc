#include "epochal/report/leakage_svg.h"

#include <zlib.h>

#include <algorithm>
#include <cstdio>
#include <string>
#include <string_view>
#include <vector>

#include "epochal/core/error.h"
#include "epochal/report/run_document.h"
#include "epochal/report/svg_plot.h"

namespace epochal::report {
namespace {

void PutU32(std::string* out, uint32_t v) {
  for (int shift = 24; shift >= 0; shift -= 8)
    out->push_back(static_cast<char>((v >> shift) & 0xFF));
}

void Chunk(std::string* out, const char* type, std::string_view data) {
  PutU32(out, static_cast<uint32_t>(data.size()));
  const size_t start = out->size();
  out->append(type, 4);
  out->append(data);
  const auto* bytes = reinterpret_cast<const Bytef*>(out->data() + start);
  PutU32(out, static_cast<uint32_t>(crc32(0L, bytes, static_cast<uInt>(out->size() - start))));
}

std::string ImageUri(const uint8_t* sample, const data::Dataset& ds) {
  const int64_t channels = ds.channels == 3 ? 3 : 1;
  return "data:image/png;base64," + Base64(EncodePng(sample, channels, ds.height, ds.width));
}

std::string Describe(const data::LeakagePair& p) {
  char buf[160];
  switch (p.kind) {
    case data::LeakageKind::kExact:
    case data::LeakageKind::kNear:
      std::snprintf(buf, sizeof buf, "%s", data::LeakageKindName(p.kind));
      break;
    default:
      std::snprintf(buf, sizeof buf, "%s%s dx %d dy %d, gain %.2f %+.2f",
                    data::LeakageKindName(p.kind),
                    p.mirrored && p.kind != data::LeakageKind::kMirrored ? " (mirrored)" : "", p.dx,
                    p.dy, p.gain, p.offset);
  }
  return buf;
}

}  // namespace

std::string EncodePng(const uint8_t* planes, int64_t channels, int64_t height, int64_t width) {
  EPOCHAL_CHECK((channels == 1 || channels == 3) && height > 0 && width > 0, "PNG of ", channels,
                " x ", height, " x ", width);
  std::string raw;
  raw.reserve(static_cast<size_t>(height * (1 + width * channels)));
  for (int64_t y = 0; y < height; ++y) {
    raw.push_back(0);  // filter: none
    for (int64_t x = 0; x < width; ++x) {
      for (int64_t c = 0; c < channels; ++c) {
        raw.push_back(static_cast<char>(planes[(c * height + y) * width + x]));
      }
    }
  }
  uLongf packed_size = compressBound(static_cast<uLong>(raw.size()));
  std::string packed(packed_size, '\0');
  const int rc = compress2(reinterpret_cast<Bytef*>(packed.data()), &packed_size,
                           reinterpret_cast<const Bytef*>(raw.data()),
                           static_cast<uLong>(raw.size()), Z_BEST_COMPRESSION);
  EPOCHAL_CHECK(rc == Z_OK, "zlib compress2 failed: ", rc);
  packed.resize(packed_size);
  std::string png("\x89PNG\r\n\x1a\n", 8);
  std::string header;
  PutU32(&header, static_cast<uint32_t>(width));
  PutU32(&header, static_cast<uint32_t>(height));
  header += std::string{8, static_cast<char>(channels == 3 ? 2 : 0), 0, 0, 0};
  Chunk(&png, "IHDR", header);
  Chunk(&png, "IDAT", packed);
  Chunk(&png, "IEND", "");
  return png;
}

std::string LeakagePairsSvg(const data::LeakageReport& report, const data::Dataset& train,
                            const data::Dataset& val, int64_t max_pairs) {
  const int64_t shown = std::min<int64_t>(max_pairs, static_cast<int64_t>(report.pairs.size()));
  const int64_t columns = 4;
  const double scale = 56.0 / static_cast<double>(std::max<int64_t>(1, val.height));
  const double img_w = static_cast<double>(val.width) * scale;
  const double img_h = static_cast<double>(val.height) * scale;
  const double cell_w = std::max(3 * img_w + 24, 230.0), cell_h = img_h + 58;
  const double top = 64;
  const int64_t grid_rows = (shown + columns - 1) / columns;
  const double total_w = static_cast<double>(columns) * cell_w + 16;
  const double total_h = top + static_cast<double>(grid_rows) * cell_h + 16;
  char buf[512];
  std::string svg;
  std::snprintf(buf, sizeof buf,
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
                "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" height=\"%.0f\" "
                "viewBox=\"0 0 %.0f %.0f\" font-family=\"sans-serif\" font-size=\"11\">\n",
                total_w, total_h, total_w, total_h);
  svg += buf;
  svg += "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n";
  std::snprintf(buf, sizeof buf,
                "<text x=\"8\" y=\"20\" font-size=\"15\">Leakage pairs: %lld validation samples "
                "flagged of %lld (exact %lld, near %lld, photometric %lld, shifted %lld, "
                "mirrored %lld)</text>\n",
                static_cast<long long>(report.flagged()),
                static_cast<long long>(report.val_scanned), static_cast<long long>(report.exact),
                static_cast<long long>(report.near), static_cast<long long>(report.photometric),
                static_cast<long long>(report.shifted), static_cast<long long>(report.mirrored));
  svg += buf;
  std::snprintf(buf, sizeof buf,
                "<text x=\"8\" y=\"40\">%lld pairs, %lld shown. Each cell: validation image, "
                "training image, training image under the transform.</text>\n",
                static_cast<long long>(report.pair_count), static_cast<long long>(shown));
  svg += buf;
  svg += "<text x=\"8\" y=\"56\">" +
         svg::EscapeXml("validation: " + val.name + "; training: " + train.name) + "</text>\n";
  std::vector<uint8_t> transformed(static_cast<size_t>(train.sample_size()));
  for (int64_t i = 0; i < shown; ++i) {
    const data::LeakagePair& p = report.pairs[static_cast<size_t>(i)];
    if (p.val_index < 0 || p.val_index >= val.size() || p.train_index < 0 ||
        p.train_index >= train.size()) {
      continue;
    }
    const double x = 8 + static_cast<double>(i % columns) * cell_w;
    const double y = top + static_cast<double>(i / columns) * cell_h;
    data::TransformSample(train, p, false, train.Sample(p.train_index).data(), transformed.data());
    const std::string uris[3] = {ImageUri(val.Sample(p.val_index).data(), val),
                                 ImageUri(train.Sample(p.train_index).data(), train),
                                 ImageUri(transformed.data(), train)};
    for (int k = 0; k < 3; ++k) {
      std::snprintf(buf, sizeof buf,
                    "<image x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" "
                    "style=\"image-rendering:pixelated\" href=\"",
                    x + k * (img_w + 6), y + 4, img_w, img_h);
      svg += buf;
      svg += uris[k];
      svg += "\"/>\n";
    }
    std::snprintf(buf, sizeof buf,
                  "<text x=\"%.1f\" y=\"%.1f\">val %lld / train %lld, labels %d / %d%s</text>\n"
                  "<text x=\"%.1f\" y=\"%.1f\">%s</text>\n"
                  "<text x=\"%.1f\" y=\"%.1f\">rmse %.4f</text>\n",
                  x, y + img_h + 18, static_cast<long long>(p.val_index),
                  static_cast<long long>(p.train_index), val.labels[p.val_index],
                  train.labels[p.train_index], p.label_conflict ? " (conflict)" : "", x,
                  y + img_h + 32, svg::EscapeXml(Describe(p)).c_str(), x, y + img_h + 46, p.rmse);
    svg += buf;
  }
  svg += "</svg>\n";
  return svg;
}

}  // namespace epochal::report
