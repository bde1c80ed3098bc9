#include "core/mlp.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <vector>

#include "core/feature_encoder.h"

namespace offerd {
namespace {

DenseLayer Layer(int in, int out, Activation activation, std::vector<float> weight,
                 std::vector<float> bias) {
  DenseLayer layer;
  layer.in = in;
  layer.out = out;
  layer.activation = activation;
  layer.weight = std::move(weight);
  layer.bias = std::move(bias);
  return layer;
}

std::vector<float> ForwardOnce(const Mlp& mlp, const std::vector<float>& input) {
  std::vector<float> output(mlp.output_dim());
  std::vector<float> scratch(mlp.scratch_size());
  mlp.Forward(input, absl::MakeSpan(output), absl::MakeSpan(scratch));
  return output;
}

// A generator written identically in Python to produce the golden numbers below: a 64-bit LCG
// whose top bits pick k in [0, 20000], value = float32((k - 10000) / 10000 * scale):
//   class Gen:
//     def __init__(self, seed): self.s = seed % 2**64
//     def next(self, scale):
//       self.s = (self.s * 6364136223846793005 + 1442695040888963407) % 2**64
//       return np.float32(((self.s >> 33) % 20001 - 10000) / 10000.0 * scale)
// A layer draws its weights row-major, then its biases with scale 0.1 (MakeLayer).
class LcgWeights {
 public:
  explicit LcgWeights(uint64_t seed) : state_(seed) {}
  float Next(double scale) {
    state_ = state_ * 6364136223846793005ULL + 1442695040888963407ULL;
    const uint64_t k = (state_ >> 33) % 20001;
    return static_cast<float>((static_cast<double>(k) - 10000.0) / 10000.0 * scale);
  }
  DenseLayer MakeLayer(int in, int out, Activation activation, double scale) {
    std::vector<float> weight(static_cast<size_t>(in) * out);
    for (float& w : weight) w = Next(scale);
    std::vector<float> bias(out);
    for (float& b : bias) b = Next(0.1);
    return Layer(in, out, activation, std::move(weight), std::move(bias));
  }

 private:
  uint64_t state_;
};

TEST(ActivationTest, ParseAndName) {
  for (Activation a :
       {Activation::kIdentity, Activation::kRelu, Activation::kTanh, Activation::kSigmoid}) {
    absl::StatusOr<Activation> parsed = ParseActivation(ActivationName(a));
    ASSERT_TRUE(parsed.ok());
    EXPECT_EQ(*parsed, a);
  }
  EXPECT_FALSE(ParseActivation("softmax").ok());
  EXPECT_FALSE(ParseActivation("").ok());
}

TEST(ActivationTest, Values) {
  EXPECT_EQ(Activate(Activation::kIdentity, -2.5f), -2.5f);
  EXPECT_EQ(Activate(Activation::kRelu, -2.5f), 0.0f);
  EXPECT_EQ(Activate(Activation::kRelu, 2.5f), 2.5f);
  EXPECT_EQ(Activate(Activation::kTanh, 0.5f), std::tanh(0.5f));
  EXPECT_EQ(Activate(Activation::kSigmoid, 0.0f), 0.5f);
  EXPECT_NEAR(Activate(Activation::kSigmoid, 2.0f), 1.0 / (1.0 + std::exp(-2.0)), 1e-7);
  EXPECT_NEAR(Activate(Activation::kSigmoid, -2.0f), 1.0 / (1.0 + std::exp(2.0)), 1e-7);
}

TEST(ActivationTest, SigmoidDoesNotOverflow) {
  EXPECT_EQ(Activate(Activation::kSigmoid, 1000.0f), 1.0f);
  const float tiny = Activate(Activation::kSigmoid, -100.0f);
  EXPECT_GT(tiny, 0.0f);
  EXPECT_NEAR(tiny, std::exp(-100.0), 1e-45);
  EXPECT_EQ(Activate(Activation::kSigmoid, -1000.0f), 0.0f);
  EXPECT_FALSE(std::isnan(Activate(Activation::kSigmoid, -std::numeric_limits<float>::max())));
}

TEST(MlpTest, HandComputedTwoLayers) {
  // z0 = [1*2 - 1*3 + 0.5, 0.5*2 + 2*3 - 1] = [-0.5, 6] -> relu [0, 6]
  // z1 = 2*0 + 0.25*6 + 1 = 2.5
  absl::StatusOr<Mlp> mlp =
      Mlp::Create({Layer(2, 2, Activation::kRelu, {1, -1, 0.5f, 2}, {0.5f, -1}),
                   Layer(2, 1, Activation::kIdentity, {2, 0.25f}, {1})});
  ASSERT_TRUE(mlp.ok()) << mlp.status();
  EXPECT_EQ(mlp->input_dim(), 2);
  EXPECT_EQ(mlp->output_dim(), 1);
  EXPECT_EQ(mlp->scratch_size(), 4);
  EXPECT_EQ(ForwardOnce(*mlp, {2, 3}), (std::vector<float>{2.5f}));
}

TEST(MlpTest, SingleLayerNeedsNoScratch) {
  // Logistic regression: sigmoid(0.5*1 - 1*2 + 1.5) = sigmoid(0) = 0.5
  absl::StatusOr<Mlp> mlp = Mlp::Create({Layer(2, 1, Activation::kSigmoid, {0.5f, -1}, {1.5f})});
  ASSERT_TRUE(mlp.ok());
  EXPECT_EQ(mlp->scratch_size(), 0);
  EXPECT_EQ(ForwardOnce(*mlp, {1, 2}), (std::vector<float>{0.5f}));
}

TEST(MlpTest, ThreeLayersPingPongThroughScratch) {
  // Identity layers so every step is checkable by hand.
  absl::StatusOr<Mlp> mlp =
      Mlp::Create({Layer(2, 2, Activation::kIdentity, {1, 1, 1, -1}, {0, 0}),
                   Layer(2, 3, Activation::kIdentity, {1, 1, 2, 2, 0, 3}, {0, 0, 6}),
                   Layer(3, 1, Activation::kIdentity, {1, 1, 1}, {-6})});
  ASSERT_TRUE(mlp.ok()) << mlp.status();
  // [3, -1] -> [2, 4, 3] -> 2 + 4 + 3 - 6 = 3
  EXPECT_EQ(ForwardOnce(*mlp, {1, 2}), (std::vector<float>{3.0f}));
}

TEST(MlpTest, ValidateRejectsBadNetworks) {
  EXPECT_FALSE(Mlp::Create({}).ok());
  EXPECT_FALSE(Mlp::Create({Layer(0, 1, Activation::kRelu, {}, {0})}).ok());
  EXPECT_FALSE(Mlp::Create({Layer(2, 1, Activation::kRelu, {1}, {0})}).ok());        // weight
  EXPECT_FALSE(Mlp::Create({Layer(2, 1, Activation::kRelu, {1, 1}, {0, 0})}).ok());  // bias
  EXPECT_FALSE(Mlp::Create({Layer(1, 2, Activation::kRelu, {1, 1}, {0, 0}),
                            Layer(3, 1, Activation::kRelu, {1, 1, 1}, {0})})
                   .ok());  // chaining
  EXPECT_FALSE(Mlp::Create({Layer(1, 1, Activation::kRelu, {std::nanf("")}, {0})}).ok());
  EXPECT_FALSE(
      Mlp::Create({Layer(1, 1, Activation::kRelu, {1}, {std::numeric_limits<float>::infinity()})})
          .ok());
  EXPECT_FALSE(Mlp::Create({Layer(1, 1, static_cast<Activation>(42), {1}, {0})}).ok());
  const absl::Status status = Mlp({Layer(1, 2, Activation::kRelu, {1, 1}, {0, 0}),
                                   Layer(3, 1, Activation::kRelu, {1, 1, 1}, {0})})
                                  .Validate();
  EXPECT_NE(status.message().find("layer 1"), absl::string_view::npos) << status;
}

// Encode with a SectionEncoder, then a tiny network, against numbers produced by the Python
// reference: the rows of SectionEncoderTest.MatchesPythonEncodeSectionGolden through
//   mlp_forward([DenseLayer(w0, b0, "relu"), DenseLayer(w1, b1, "sigmoid")], encoded)
// with the weights below, printed with "%.9g" (python3, numpy 1.24).
TEST(MlpTest, EncodeThenForwardMatchesPythonGolden) {
  FeatureSpec age;
  age.name = "age";
  age.mean = 38.2;
  age.std = 11.9;
  FeatureSpec repeat_days;
  repeat_days.name = "repeat_days";
  repeat_days.mean = 0.85;
  repeat_days.std = 0.94;
  repeat_days.transform = FeatureSpec::Transform::kLog1p;
  FeatureSpec channel;
  channel.name = "channel";
  channel.kind = FeatureSpec::Kind::kCategorical;
  channel.vocabulary = {"app", "web", "push", "email"};
  absl::StatusOr<SectionEncoder> encoder = SectionEncoder::Create({age, repeat_days, channel});
  ASSERT_TRUE(encoder.ok());

  absl::StatusOr<Mlp> mlp = Mlp::Create(
      {Layer(7, 3, Activation::kRelu, {0.5f,   -0.25f, 1.0f, 0.0f, -1.0f, 0.5f,  0.25f,  //
                                       -0.75f, 0.5f,   0.0f, 1.5f, 0.0f,  -0.5f, 1.0f,   //
                                       0.1f,   0.2f,   0.3f, 0.4f, 0.5f,  0.6f,  0.7f},
             {0.1f, -0.2f, 0.05f}),
       Layer(3, 1, Activation::kSigmoid, {1.0f, -2.0f, 0.5f}, {-0.3f})});
  ASSERT_TRUE(mlp.ok());

  const std::vector<std::vector<RawFeatureValue>> rows = {
      {RawFeatureValue::Numeric(29.0), RawFeatureValue::Numeric(1.0),
       RawFeatureValue::Categorical("app")},
      {RawFeatureValue::Missing(), RawFeatureValue::Numeric(-1.0),
       RawFeatureValue::Categorical("__unseen__")},
      {RawFeatureValue::Numeric(1e6), RawFeatureValue::Numeric(0.0),
       RawFeatureValue::Categorical("email")},
      {RawFeatureValue::Numeric(-3.5), RawFeatureValue::Numeric(7.25), RawFeatureValue::Missing()},
  };
  const double want[] = {0.495505244, 0.235952392, 1, 0.000284896611};
  std::vector<float> encoded(encoder->width());
  for (size_t r = 0; r < rows.size(); ++r) {
    encoder->Encode(rows[r], absl::MakeSpan(encoded));
    const float got = ForwardOnce(*mlp, encoded)[0];
    EXPECT_NEAR(got, want[r], 1e-7 + 1e-5 * want[r]) << "row " << r;
  }
}

// Realistically sized networks (46 inputs like the uplift heads) whose weights and inputs come
// from LcgWeights; expected outputs from the Python reference `mlp_forward` with the same
// generator (head: seed 42, 46 -> 32 relu -> 1 sigmoid, weight scales 0.3 / 0.5; tower: seed
// 7, 46 -> 64 tanh -> 64 identity, scales 0.3 / 0.3; inputs: seed 1234, 3 rows x 46, scale 3),
// printed with "%.9g".
TEST(MlpTest, MatchesPythonMlpForwardGolden) {
  LcgWeights head_weights(42);
  DenseLayer head0 = head_weights.MakeLayer(46, 32, Activation::kRelu, 0.3);
  DenseLayer head1 = head_weights.MakeLayer(32, 1, Activation::kSigmoid, 0.5);
  absl::StatusOr<Mlp> head = Mlp::Create({head0, head1});
  ASSERT_TRUE(head.ok());
  LcgWeights tower_weights(7);
  DenseLayer tower0 = tower_weights.MakeLayer(46, 64, Activation::kTanh, 0.3);
  DenseLayer tower1 = tower_weights.MakeLayer(64, 64, Activation::kIdentity, 0.3);
  absl::StatusOr<Mlp> tower = Mlp::Create({tower0, tower1});
  ASSERT_TRUE(tower.ok());

  LcgWeights inputs(1234);
  const double want_head[] = {0.844843805, 0.645367682, 0.152812004};
  const double want_tower[3][5] = {
      // columns 0..3 and 63
      {-0.913089335, 0.0667291433, -0.636937916, 1.13970244, -1.44761121},
      {1.31242526, 1.25233448, 0.705486357, -0.462485343, 1.15695214},
      {2.54582381, -2.14787459, -0.753552198, 1.17226875, -0.170833737},
  };
  for (int r = 0; r < 3; ++r) {
    std::vector<float> x(46);
    for (float& v : x) v = inputs.Next(3.0);
    const double got_head = ForwardOnce(*head, x)[0];
    EXPECT_NEAR(got_head, want_head[r], 1e-5 * std::fabs(want_head[r])) << "row " << r;
    const std::vector<float> got_tower = ForwardOnce(*tower, x);
    const int columns[] = {0, 1, 2, 3, 63};
    for (int k = 0; k < 5; ++k) {
      EXPECT_NEAR(got_tower[columns[k]], want_tower[r][k], 1e-5 * std::fabs(want_tower[r][k]))
          << "row " << r << " column " << columns[k];
    }
  }
}

TEST(MlpTest, SplitFirstLayerSumsAreBitIdentical) {
  // FirstLayerPartial over a prefix, then AccumulateFirstLayer over the rest, adds the same
  // terms in the same order as one pass over the whole input.
  LcgWeights weights(99);
  absl::StatusOr<Mlp> mlp = Mlp::Create({weights.MakeLayer(20, 12, Activation::kRelu, 0.5),
                                         weights.MakeLayer(12, 1, Activation::kSigmoid, 0.5)});
  ASSERT_TRUE(mlp.ok());
  std::vector<float> x(20);
  for (float& v : x) v = weights.Next(2.0);
  x[3] = 0.0f;  // a skipped zero input
  std::vector<double> whole(mlp->first_layer_width());
  mlp->FirstLayerPartial(x, absl::MakeSpan(whole));
  for (int prefix : {0, 7, 20}) {
    std::vector<double> split(mlp->first_layer_width());
    mlp->FirstLayerPartial(absl::MakeConstSpan(x).subspan(0, prefix), absl::MakeSpan(split));
    mlp->AccumulateFirstLayer(prefix, absl::MakeConstSpan(x).subspan(prefix),
                              absl::MakeSpan(split));
    EXPECT_EQ(split, whole) << "prefix " << prefix;
  }
}

// The float32 path against the double one, over widths that exercise every AVX2 block size
// and the masked tail (1, 7, 8, 9, 63, 64, 65, 102, 130 outputs) and ReLU zeros.
TEST(MlpTest, FloatPathFromFirstLayerSumsMatchesForward) {
  LcgWeights weights(7);
  for (int hidden : {1, 7, 8, 9, 63, 64, 65, 102, 130}) {
    for (int num_layers : {1, 2, 4}) {
      std::vector<DenseLayer> layers;
      int in = 30;
      for (int i = 0; i < num_layers; ++i) {
        const bool last = i + 1 == num_layers;
        const int out = last ? 1 : hidden + i;
        layers.push_back(weights.MakeLayer(
            in, out, last ? Activation::kSigmoid : (i % 2 ? Activation::kTanh : Activation::kRelu),
            0.4));
        in = out;
      }
      absl::StatusOr<Mlp> mlp = Mlp::Create(layers);
      ASSERT_TRUE(mlp.ok());
      for (int row = 0; row < 5; ++row) {
        std::vector<float> x(30);
        for (float& v : x) v = weights.Next(2.0);
        const std::vector<float> want = ForwardOnce(*mlp, x);
        std::vector<double> sums(mlp->first_layer_width());
        mlp->FirstLayerPartial(x, absl::MakeSpan(sums));
        std::vector<float> first(sums.begin(), sums.end());
        std::vector<float> output(mlp->output_dim());
        std::vector<float> scratch(mlp->scratch_size());
        mlp->ForwardFromFirstLayerSums(absl::MakeSpan(first), absl::MakeSpan(output),
                                       absl::MakeSpan(scratch));
        EXPECT_NEAR(output[0], want[0], 1e-6 * std::fabs(want[0]) + 1e-7)
            << hidden << " wide, " << num_layers << " layers, row " << row;
      }
    }
  }
}

}  // namespace
}  // namespace offerd
