#ifndef OFFERD_CORE_MLP_H_
#define OFFERD_CORE_MLP_H_

#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/types/span.h"

namespace offerd {

// Activation of a dense layer (docs/models-format.md, "The mlp spec"), applied in float32.
enum class Activation {
  kIdentity,  // "identity": z
  kRelu,      // "relu": max(z, 0)
  kTanh,      // "tanh": tanh(z)
  kSigmoid,   // "sigmoid": 1 / (1 + exp(-z)) for z >= 0, exp(z) / (1 + exp(z)) for z < 0
};

// "identity", "relu", "tanh", "sigmoid" -> the activation; InvalidArgument otherwise.
absl::StatusOr<Activation> ParseActivation(absl::string_view name);
absl::string_view ActivationName(Activation activation);

// One fully connected layer in the PyTorch `Linear` convention: z[r] = bias[r] +
// sum_c weight[r * in + c] * h[c], then h'[r] = activation(z[r]).
struct DenseLayer {
  int in = 0;
  int out = 0;
  Activation activation = Activation::kIdentity;
  std::vector<float> weight;  // [out * in], row-major ([out, in] as exported by numpy)
  std::vector<float> bias;    // [out]
};

// A multi-layer perceptron evaluated like offline/uplift_models.py `mlp_forward`. Sums are
// accumulated in double (bias first, then the columns in order) and rounded to float32 before
// the activation; that stays within the bundle's 1e-5 relative tolerance of numpy's float32.
//
// Thread safety: immutable once built; Forward() is const and safe concurrently as long as
// each caller passes its own output and scratch buffers.
class Mlp {
 public:
  Mlp() = default;
  // Takes the layers as given; call Validate() before Forward() (or use Create()).
  explicit Mlp(std::vector<DenseLayer> layers);

  // Validates (see Validate()) and returns the network.
  static absl::StatusOr<Mlp> Create(std::vector<DenseLayer> layers);

  // OK when there is at least one layer; every layer has in, out >= 1, weight.size() ==
  // out * in, bias.size() == out and a known activation; layers chain (layers[i].in ==
  // layers[i-1].out); and no weight or bias is NaN or Inf. InvalidArgument naming the layer
  // otherwise.
  absl::Status Validate() const;

  const std::vector<DenseLayer>& layers() const { return layers_; }
  // REQUIRE a valid network.
  int input_dim() const { return layers_.front().in; }
  int output_dim() const { return layers_.back().out; }
  // Floats of scratch Forward() needs: room for two hidden activations (ping-pong).
  int scratch_size() const;

  // output = network(input). REQUIRES a valid network, input.size() == input_dim(),
  // output.size() >= output_dim(), scratch.size() >= scratch_size(). No allocation.
  void Forward(absl::Span<const float> input, absl::Span<float> output,
               absl::Span<float> scratch) const;

  // Split evaluation for inputs whose leading columns are shared by many calls (the uplift
  // p1 head: user, purchases and context are fixed per request, only the offer and retrieval
  // sections change per candidate). FirstLayerPartial() computes the first layer's
  // pre-activation sums over the prefix once (bias first, then the columns in order, in
  // double, exactly as Forward() sums them); AccumulateFirstLayer() adds further columns (a
  // candidate's sections, or an offer's contribution precomputed once per bundle);
  // ForwardFromFirstLayerSums() finishes the pass.
  //
  // REQUIRES input_prefix.size() <= input_dim(), partial.size() >= first_layer_width().
  int first_layer_width() const { return layers_.front().out; }
  void FirstLayerPartial(absl::Span<const float> input_prefix, absl::Span<double> partial) const;
  // sums[r] += sum_c W0[r][first_column + c] * input[c] (zero inputs skipped), in double.
  // REQUIRES first_column + input.size() <= input_dim(), sums.size() >= first_layer_width().
  void AccumulateFirstLayer(int first_column, absl::Span<const float> input,
                            absl::Span<double> sums) const;

  // The float32 path for the per-candidate work: applies the first layer's activation to
  // `first_sums` (its pre-activation sums, overwritten), then evaluates layers 1.. with sums
  // accumulated in float32 by simd::Best()'s kernels (AVX2 + FMA when the CPU has them).
  // Within a few float32 ulps of Forward()'s double sums per layer, well inside the bundle's
  // 1e-5 golden tolerance, but not bit-identical to it. REQUIRES a valid network,
  // first_sums.size() >= first_layer_width(), output and scratch as in Forward(). No
  // allocation.
  void ForwardFromFirstLayerSums(absl::Span<float> first_sums, absl::Span<float> output,
                                 absl::Span<float> scratch) const;

 private:
  // Transposed weights of `layer`, or nullptr (row-major path).
  const float* ColumnsOf(size_t layer) const;
  // Layers 1.. from the first layer's float activations in `hidden` (which lives in scratch).
  void ForwardRest(float* hidden, absl::Span<float> output, absl::Span<float> scratch) const;

  std::vector<DenseLayer> layers_;
  // Each layer's weights transposed ([in, out], column c of W contiguous), when the shapes are
  // consistent: the forward pass walks the input once, skipping zero inputs (one-hot sections,
  // ReLU outputs), and updates every row's sum with a vectorisable loop. Each row still sums
  // bias first, then its columns in order, so results equal the row-major definition.
  std::vector<std::vector<float>> columns_;
};

// Applies `activation` to a float32 pre-activation value.
float Activate(Activation activation, float z);
// Applies `activation` to values[0, count) in place.
void ActivateInPlace(Activation activation, float* values, int count);

}  // namespace offerd

#endif  // OFFERD_CORE_MLP_H_
