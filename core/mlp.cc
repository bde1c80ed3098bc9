#include "core/mlp.h"

#include <algorithm>
#include <cassert>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "core/simd.h"

namespace offerd {
namespace {

bool AllFiniteFloats(const std::vector<float>& values) {
  for (float v : values) {
    if (!std::isfinite(v)) return false;
  }
  return true;
}

// One output row of a layer, continuing from `sum` at column `first_column`. Summing in the
// same order everywhere (bias, then columns left to right) is what makes the split evaluation
// bit-identical to the plain one.
double AccumulateRow(const DenseLayer& layer, int row, int first_column, const float* input,
                     int count, double sum) {
  const float* weights = layer.weight.data() + static_cast<size_t>(row) * layer.in + first_column;
  for (int c = 0; c < count; ++c) sum += static_cast<double>(weights[c]) * input[c];
  return sum;
}

// Widest layer whose sums fit the stack buffer of the column-major path; wider layers take the
// row-major one.
constexpr int kMaxColumnPathWidth = 512;

// Adds columns [first_column, first_column + count) of the layer, times input[0, count), to
// sums[0, out), column by column. Per row this is the same sequence of additions as
// AccumulateRow, minus the terms whose input is zero: a zero input adds a (signed) zero, which
// leaves a sum unchanged (weights are finite), so the result is the same.
void AccumulateColumns(const DenseLayer& layer, const float* columns, int first_column,
                       const float* input, int count, double* sums) {
  const int out = layer.out;
  for (int c = 0; c < count; ++c) {
    const float x = input[c];
    if (x == 0.0f) continue;
    const double xd = x;
    const float* column = columns + static_cast<size_t>(first_column + c) * out;
    for (int r = 0; r < out; ++r) sums[r] += static_cast<double>(column[r]) * xd;
  }
}

void DenseForward(const DenseLayer& layer, const float* columns, const float* input,
                  float* output) {
  if (columns == nullptr || layer.out > kMaxColumnPathWidth) {
    for (int r = 0; r < layer.out; ++r) {
      const double z = AccumulateRow(layer, r, 0, input, layer.in, layer.bias[r]);
      output[r] = Activate(layer.activation, static_cast<float>(z));
    }
    return;
  }
  double sums[kMaxColumnPathWidth];
  for (int r = 0; r < layer.out; ++r) sums[r] = layer.bias[r];
  AccumulateColumns(layer, columns, 0, input, layer.in, sums);
  for (int r = 0; r < layer.out; ++r) {
    output[r] = Activate(layer.activation, static_cast<float>(sums[r]));
  }
}

}  // namespace

absl::StatusOr<Activation> ParseActivation(absl::string_view name) {
  if (name == "identity") return Activation::kIdentity;
  if (name == "relu") return Activation::kRelu;
  if (name == "tanh") return Activation::kTanh;
  if (name == "sigmoid") return Activation::kSigmoid;
  return absl::InvalidArgumentError(absl::StrCat("unknown activation '", name, "'"));
}

absl::string_view ActivationName(Activation activation) {
  switch (activation) {
    case Activation::kIdentity:
      return "identity";
    case Activation::kRelu:
      return "relu";
    case Activation::kTanh:
      return "tanh";
    case Activation::kSigmoid:
      return "sigmoid";
  }
  return "unknown";
}

float Activate(Activation activation, float z) {
  switch (activation) {
    case Activation::kIdentity:
      return z;
    case Activation::kRelu:
      return z > 0.0f ? z : 0.0f;
    case Activation::kTanh:
      return std::tanh(z);
    case Activation::kSigmoid: {
      // exp of a non-positive argument never overflows; both branches are exact rewrites.
      const float e = std::exp(-std::fabs(z));
      return z >= 0.0f ? 1.0f / (1.0f + e) : e / (1.0f + e);
    }
  }
  return z;
}

void ActivateInPlace(Activation activation, float* values, int count) {
  switch (activation) {
    case Activation::kIdentity:
      return;
    case Activation::kRelu:
      // A plain loop the compiler vectorises.
      for (int i = 0; i < count; ++i) values[i] = values[i] > 0.0f ? values[i] : 0.0f;
      return;
    default:
      for (int i = 0; i < count; ++i) values[i] = Activate(activation, values[i]);
      return;
  }
}

Mlp::Mlp(std::vector<DenseLayer> layers) : layers_(std::move(layers)) {
  // The transposed copy only for layers whose shapes are consistent; Validate() reports the
  // others, and a layer without a copy takes the row-major path.
  columns_.resize(layers_.size());
  for (size_t i = 0; i < layers_.size(); ++i) {
    const DenseLayer& layer = layers_[i];
    if (layer.in < 1 || layer.out < 1 ||
        layer.weight.size() != static_cast<size_t>(layer.in) * static_cast<size_t>(layer.out)) {
      continue;
    }
    std::vector<float>& t = columns_[i];
    t.resize(layer.weight.size());
    for (int r = 0; r < layer.out; ++r) {
      for (int c = 0; c < layer.in; ++c) {
        t[static_cast<size_t>(c) * layer.out + r] =
            layer.weight[static_cast<size_t>(r) * layer.in + c];
      }
    }
  }
}

const float* Mlp::ColumnsOf(size_t layer) const {
  return layer < columns_.size() && !columns_[layer].empty() ? columns_[layer].data() : nullptr;
}

absl::StatusOr<Mlp> Mlp::Create(std::vector<DenseLayer> layers) {
  Mlp mlp(std::move(layers));
  if (absl::Status status = mlp.Validate(); !status.ok()) return status;
  return mlp;
}

absl::Status Mlp::Validate() const {
  if (layers_.empty()) return absl::InvalidArgumentError("mlp has no layers");
  for (size_t i = 0; i < layers_.size(); ++i) {
    const DenseLayer& layer = layers_[i];
    const auto invalid = [i](absl::string_view what) {
      return absl::InvalidArgumentError(absl::StrCat("mlp layer ", i, ": ", what));
    };
    if (layer.in < 1 || layer.out < 1) {
      return invalid(
          absl::StrCat("in and out must be >= 1, got in=", layer.in, " out=", layer.out));
    }
    if (i > 0 && layer.in != layers_[i - 1].out) {
      return invalid(absl::StrCat("in=", layer.in,
                                  " does not match the previous layer's out=", layers_[i - 1].out));
    }
    const size_t weight_size = static_cast<size_t>(layer.out) * static_cast<size_t>(layer.in);
    if (layer.weight.size() != weight_size) {
      return invalid(
          absl::StrCat("weight has ", layer.weight.size(), " values, want out*in=", weight_size));
    }
    if (layer.bias.size() != static_cast<size_t>(layer.out)) {
      return invalid(absl::StrCat("bias has ", layer.bias.size(), " values, want out=", layer.out));
    }
    switch (layer.activation) {
      case Activation::kIdentity:
      case Activation::kRelu:
      case Activation::kTanh:
      case Activation::kSigmoid:
        break;
      default:
        return invalid("unknown activation");
    }
    if (!AllFiniteFloats(layer.weight)) return invalid("weight has NaN or Inf");
    if (!AllFiniteFloats(layer.bias)) return invalid("bias has NaN or Inf");
  }
  return absl::OkStatus();
}

int Mlp::scratch_size() const {
  int widest_hidden = 0;
  for (size_t i = 0; i + 1 < layers_.size(); ++i) {
    widest_hidden = std::max(widest_hidden, layers_[i].out);
  }
  return 2 * widest_hidden;
}

void Mlp::ForwardRest(float* hidden, absl::Span<float> output, absl::Span<float> scratch) const {
  const int half = scratch_size() / 2;
  float* current = hidden;
  for (size_t i = 1; i < layers_.size(); ++i) {
    const bool last = i + 1 == layers_.size();
    float* next =
        last ? output.data() : (current == scratch.data() ? scratch.data() + half : scratch.data());
    DenseForward(layers_[i], ColumnsOf(i), current, next);
    current = next;
  }
}

void Mlp::Forward(absl::Span<const float> input, absl::Span<float> output,
                  absl::Span<float> scratch) const {
  assert(input.size() == static_cast<size_t>(input_dim()));
  assert(output.size() >= static_cast<size_t>(output_dim()));
  assert(scratch.size() >= static_cast<size_t>(scratch_size()));
  if (layers_.size() == 1) {
    DenseForward(layers_[0], ColumnsOf(0), input.data(), output.data());
    return;
  }
  DenseForward(layers_[0], ColumnsOf(0), input.data(), scratch.data());
  ForwardRest(scratch.data(), output, scratch);
}

void Mlp::FirstLayerPartial(absl::Span<const float> input_prefix,
                            absl::Span<double> partial) const {
  const DenseLayer& layer = layers_.front();
  assert(partial.size() >= static_cast<size_t>(layer.out));
  for (int r = 0; r < layer.out; ++r) partial[r] = layer.bias[r];
  AccumulateFirstLayer(0, input_prefix, partial);
}

void Mlp::AccumulateFirstLayer(int first_column, absl::Span<const float> input,
                               absl::Span<double> sums) const {
  const DenseLayer& layer = layers_.front();
  assert(first_column >= 0 && first_column + static_cast<int>(input.size()) <= layer.in);
  assert(sums.size() >= static_cast<size_t>(layer.out));
  const int count = static_cast<int>(input.size());
  if (const float* columns = ColumnsOf(0); columns != nullptr) {
    AccumulateColumns(layer, columns, first_column, input.data(), count, sums.data());
    return;
  }
  for (int r = 0; r < layer.out; ++r) {
    sums[r] = AccumulateRow(layer, r, first_column, input.data(), count, sums[r]);
  }
}

void Mlp::ForwardFromFirstLayerSums(absl::Span<float> first_sums, absl::Span<float> output,
                                    absl::Span<float> scratch) const {
  assert(first_sums.size() >= static_cast<size_t>(first_layer_width()));
  assert(output.size() >= static_cast<size_t>(output_dim()));
  assert(scratch.size() >= static_cast<size_t>(scratch_size()));
  const DenseLayer& first = layers_.front();
  float* current = first_sums.data();
  ActivateInPlace(first.activation, current, first.out);
  if (layers_.size() == 1) {
    std::copy(current, current + first.out, output.data());
    return;
  }
  const simd::Kernels& kernels = simd::Best();
  const int half = scratch_size() / 2;
  for (size_t i = 1; i < layers_.size(); ++i) {
    const DenseLayer& layer = layers_[i];
    const bool last = i + 1 == layers_.size();
    // Ping-pong between the scratch halves; the input never aliases the output.
    float* next = last ? output.data()
                       : (current == scratch.data() ? scratch.data() + half : scratch.data());
    if (layer.out == 1) {
      // A single output (the head's last layer) is one dot product: 8 lanes wide, where the
      // column walk would be one long dependent chain of masked single-lane updates.
      kernels.inner_products(current, columns_[i].data(), 1, layer.in, next);
      next[0] += layer.bias[0];
    } else {
      kernels.dense_columns(columns_[i].data(), layer.bias.data(), current, layer.in, layer.out,
                            next);
    }
    ActivateInPlace(layer.activation, next, layer.out);
    current = next;
  }
}

}  // namespace offerd
