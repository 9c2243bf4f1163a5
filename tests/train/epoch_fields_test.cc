// The one list of epoch fields: the names history.json, history.csv and the checkpoint
// already use, and a lossless trip through the checkpoint's EpochRecordProto.
#include "epochal/train/epoch_fields.h"

#include <gtest/gtest.h>

#include <set>
#include <stdexcept>
#include <string>
#include <vector>

#include "epochal/v1/checkpoint.pb.h"

namespace epochal::train {
namespace {

TEST(EpochFieldsTest, NamesAreThoseOfTheFilesAndUnique) {
  // Renaming one changes history.json, history.csv and the checkpoint format.
  const std::vector<std::string> expected = {"epoch",
                                             "loss",
                                             "accuracy",
                                             "val_loss",
                                             "val_accuracy",
                                             "probe_train_loss",
                                             "probe_nodrop_loss",
                                             "probe_eval_loss",
                                             "gap_timing",
                                             "gap_dropout",
                                             "gap_batchnorm",
                                             "gap_data",
                                             "gap_regularization",
                                             "gap_timing_se",
                                             "gap_dropout_se",
                                             "gap_batchnorm_se",
                                             "gap_data_se",
                                             "gap_regularization_se",
                                             "aligned_train_loss",
                                             "seconds",
                                             "images_per_second",
                                             "lr",
                                             "epoch_fraction",
                                             "validation_seconds",
                                             "probe_seconds"};
  std::vector<std::string> names;
  std::set<std::string> unique;
  for (const EpochField& f : kEpochFields) {
    names.emplace_back(f.name);
    unique.emplace(f.name);
  }
  EXPECT_EQ(names, expected);
  EXPECT_EQ(unique.size(), names.size());
  EXPECT_EQ(kEpochColumnFields, 23u);
}

TEST(EpochFieldsTest, CheckpointProtoRoundTripsEveryField) {
  EpochRecord in;
  in.epoch = 3;
  in.loss = 0.5;
  in.accuracy = 0.75;
  in.val_loss = 0.625;
  in.val_accuracy = 0.7;
  in.probe_train_loss = 0.55;
  in.probe_eval_loss = 0.45;
  in.gap_timing = 0.05;
  in.gap_regularization = -0.1;
  in.gap_data = 0.175;
  in.aligned_train_loss = 0.52;
  in.seconds = 12.5;
  in.images_per_second = 4800;
  in.lr = 0.01;
  in.validation_seconds = 1.25;
  in.probe_seconds = 0.5;
  v1::EpochRecordProto proto;
  EpochFieldsToMessage(in, EpochFieldCoverage::kAll, &proto);
  EXPECT_EQ(proto.epoch(), 3);
  EXPECT_EQ(proto.gap_regularization(), -0.1);
  EXPECT_EQ(proto.probe_seconds(), 0.5);
  EpochRecord out;
  EpochFieldsFromMessage(proto, &out);
  for (const EpochField& f : kEpochFields) {
    std::visit([&](auto member) { EXPECT_EQ(in.*member, out.*member) << f.name; }, f.member);
  }
}

TEST(EpochFieldsTest, AbsentOptionalsStayAbsent) {
  EpochRecord in;
  in.epoch = 1;
  v1::EpochRecordProto proto;
  EpochFieldsToMessage(in, EpochFieldCoverage::kAll, &proto);
  EXPECT_FALSE(proto.has_probe_train_loss());
  EXPECT_FALSE(proto.has_gap_data());
  EpochRecord out;
  out.gap_data = 1.0;
  EpochFieldsFromMessage(proto, &out);
  EXPECT_FALSE(out.probe_train_loss.has_value());
  EXPECT_FALSE(out.gap_data.has_value());
}

TEST(EpochFieldsTest, AMessageLackingAFieldIsRefusedUnlessAllowed) {
  EpochRecord in;
  v1::BatchRecordProto other;  // Has "loss" and "lr", none of the rest.
  EXPECT_THROW(EpochFieldsToMessage(in, EpochFieldCoverage::kAll, &other), std::logic_error);
  in.loss = 2.0;
  in.lr = 0.1;
  EpochFieldsToMessage(in, EpochFieldCoverage::kThoseItHas, &other);
  EXPECT_EQ(other.loss(), 2.0);
  EXPECT_EQ(other.lr(), 0.1);
}

}  // namespace
}  // namespace epochal::train
