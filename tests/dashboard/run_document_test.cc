#include "epochal/report/run_document.h"

#include <google/protobuf/struct.pb.h>
#include <google/protobuf/util/json_util.h>
#include <gtest/gtest.h>

#include <string>

#include "epochal/report/html_report.h"

namespace epochal::report {
namespace {

google::protobuf::Struct Parse(const std::string& json) {
  google::protobuf::Struct s;
  EXPECT_TRUE(google::protobuf::util::JsonStringToMessage(json, &s).ok()) << json;
  return s;
}

TEST(RunDocumentTest, Base64MatchesRfc4648) {
  EXPECT_EQ(Base64(""), "");
  EXPECT_EQ(Base64("f"), "Zg==");
  EXPECT_EQ(Base64("fo"), "Zm8=");
  EXPECT_EQ(Base64("foo"), "Zm9v");
  EXPECT_EQ(Base64("foobar"), "Zm9vYmFy");
  EXPECT_EQ(Base64(std::string("\xff\x00\x80", 3)), "/wCA");
}

TEST(RunDocumentTest, DocumentIsJsonWithEveryField) {
  RunDocument doc;
  doc.run = "r";
  doc.state = "training";
  doc.epochs_json = R"([{"epoch":1,"gap_timing":-0.1,"gap_timing_se":0.01}])";
  doc.batches_offset = 7;
  doc.batches = {{0.5, 1.25, 0.01}};
  doc.findings = {{"LEAKAGE", 1, 2, "3 of 300 validation samples </script> copy", {}}};
  doc.ranks = {{0, 900, 35, 1, 2}};
  doc.progress = RunProgress{1, 0.5, 3, 1.2, 0.6, 0.01};
  const google::protobuf::Struct s = Parse(RunDocumentJson(doc));
  for (const char* key : {"format", "run", "config_name", "state", "world_size", "epochs_planned",
                          "generated_at", "progress", "epochs", "batches_offset", "batches",
                          "findings", "leakage", "ranks", "config"}) {
    EXPECT_EQ(s.fields().count(key), 1u) << key;
  }
  EXPECT_EQ(s.fields().at("batches_offset").number_value(), 7);
  // Any gap term and its standard error pass through from the epochs as they are.
  const auto& epoch = s.fields().at("epochs").list_value().values(0).struct_value();
  EXPECT_DOUBLE_EQ(epoch.fields().at("gap_timing_se").number_value(), 0.01);
  EXPECT_TRUE(s.fields().at("leakage").has_null_value());
}

TEST(RunDocumentTest, LeakageViewCarriesTheImages) {
  data::Dataset train, val;
  for (auto* ds : {&train, &val}) {
    ds->channels = 1;
    ds->height = 2;
    ds->width = 2;
    ds->num_classes = 2;
  }
  train.pixels = {1, 2, 3, 4, 9, 9, 9, 9};
  train.labels = {0, 1};
  val.pixels = {1, 2, 3, 4};
  val.labels = {1};
  data::LeakageReport r;
  r.exact = 1;
  r.pair_count = 1;
  r.label_conflicts = 1;
  r.pairs = {{0, 0, 0.0, true}};
  const LeakageView v = MakeLeakageView(r, &train, &val);
  ASSERT_EQ(v.pairs.size(), 1u);
  EXPECT_EQ(v.pairs[0].train_image, Base64(std::string("\x01\x02\x03\x04")));
  EXPECT_EQ(v.pairs[0].val_image, v.pairs[0].train_image);
  EXPECT_EQ(v.height, 2);
  const LeakageView no_images = MakeLeakageView(r, nullptr, nullptr);
  EXPECT_TRUE(no_images.pairs[0].train_image.empty());
}

TEST(HtmlReportTest, SelfContainedAndScriptSafe) {
  RunDocument doc;
  doc.findings = {{"X", 1, 1, "a </script><script>alert(1)</script> b", {}}};
  const std::string json = RunDocumentJson(doc);
  const std::string safe = JsonForScriptElement(json);
  EXPECT_EQ(safe.find('<'), std::string::npos);
  // The escaped text is the same JSON.
  EXPECT_EQ(Parse(safe)
                .fields()
                .at("findings")
                .list_value()
                .values(0)
                .struct_value()
                .fields()
                .at("explanation")
                .string_value(),
            "a </script><script>alert(1)</script> b");
  const std::string html = HtmlReport(json, "report <of> x");
  EXPECT_NE(html.find("<title>report &lt;of&gt; x</title>"), std::string::npos);
  EXPECT_NE(html.find(std::string(RunViewScript())), std::string::npos);
  EXPECT_EQ(html.find("<script src"), std::string::npos);
  EXPECT_EQ(html.find("alert(1)</script>"), std::string::npos);
  EXPECT_EQ(RunViewScript().find("</script"), std::string::npos);
}

}  // namespace
}  // namespace epochal::report
