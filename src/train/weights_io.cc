#include "epochal/train/weights_io.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>

#include "epochal/core/atomic_file.h"
#include "epochal/core/error.h"
#include "epochal/core/file_read.h"
#include "epochal/core/tensor.h"
#include "epochal/v1/weights.pb.h"

namespace epochal::train {

void SaveWeights(nn::Model& model, const std::string& config_name, int epochs_completed,
                 const std::string& path) {
  v1::ModelWeights w;
  w.set_config_name(config_name);
  w.set_epochs_completed(epochs_completed);
  for (nn::Parameter* p : model.parameters()) {
    v1::NamedTensor* t = w.add_tensors();
    t->set_name(p->name);
    for (int64_t d : p->value.get_desc().dims()) t->add_dims(d);
    const std::vector<float> plain = nn::ToPlain(model.dnnl(), p->value);
    t->mutable_values()->Add(plain.begin(), plain.end());
  }
  for (nn::StateBuffer* s : model.state()) {
    v1::NamedTensor* t = w.add_tensors();
    t->set_name(s->name);
    t->add_dims(static_cast<int64_t>(s->value.size()));
    t->mutable_values()->Add(s->value.begin(), s->value.end());
  }
  // As with checkpoints (CheckpointStore::Save): never write a file that does not parse.
  const std::string bytes = w.SerializeAsString();
  if (v1::ModelWeights back; !back.ParseFromString(bytes)) {
    throw Error(path +
                ": refusing to write weights that would not read back (a string field "
                "that is not valid UTF-8 does this; protobuf's log above names it)");
  }
  WriteFileAtomic(path, bytes);
}

void LoadWeights(nn::Model& model, const std::string& path) {
  if (std::filesystem::is_directory(path)) {
    throw InputError(path + ": is a directory, not a weights file");
  }
  // Cap the read at what this model's tensors can take (float values plus protobuf's
  // framing, which is far below the values themselves), so that a wrong path fails fast.
  uint64_t values = 0;
  for (nn::Parameter* p : model.parameters()) {
    values += static_cast<uint64_t>(Shape(p->value.get_desc().dims()).NumElements());
  }
  for (nn::StateBuffer* s : model.state()) values += s->value.size();
  const uint64_t cap = std::min<uint64_t>(kMaxProtobufFileBytes, 2 * sizeof(float) * values + kMiB);
  const std::string bytes = ReadFileCapped(path, cap, "weights file");
  v1::ModelWeights w;
  if (!w.ParseFromString(bytes)) {
    throw InputError(path + ": not a weights file (protobuf epochal.v1.ModelWeights expected)");
  }
  LoadWeights(model, w, path);
}

void LoadWeights(nn::Model& model, const v1::ModelWeights& w, const std::string& path) {
  std::map<std::string, const v1::NamedTensor*> by_name;
  for (const auto& t : w.tensors()) by_name[t.name()] = &t;
  auto find = [&](const std::string& name, const std::vector<int64_t>& dims) {
    auto it = by_name.find(name);
    if (it == by_name.end()) throw InputError(path + ": tensor " + name + " is missing");
    const v1::NamedTensor& t = *it->second;
    if (std::vector<int64_t>(t.dims().begin(), t.dims().end()) != dims) {
      throw InputError(path + ": tensor " + name + " has dims " +
                       Shape(std::vector<int64_t>(t.dims().begin(), t.dims().end())).ToString() +
                       ", the model needs " + Shape(dims).ToString());
    }
    if (t.values_size() != Shape(dims).NumElements()) {
      throw InputError(path + ": tensor " + name + " holds " + std::to_string(t.values_size()) +
                       " values, its dims need " + std::to_string(Shape(dims).NumElements()));
    }
    return &t;
  };
  for (nn::Parameter* p : model.parameters()) {
    const auto dims = p->value.get_desc().dims();
    const v1::NamedTensor* t = find(p->name, dims);
    nn::FromPlain(model.dnnl(), {t->values().data(), static_cast<size_t>(t->values_size())},
                  p->value);
  }
  for (nn::StateBuffer* s : model.state()) {
    const v1::NamedTensor* t = find(s->name, {static_cast<int64_t>(s->value.size())});
    std::copy(t->values().begin(), t->values().end(), s->value.begin());
  }
}

}  // namespace epochal::train
