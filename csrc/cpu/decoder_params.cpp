// The native decoder's arguments (decoder_model.h): the weights and wiring arrive by name, as
// two dicts (fast_s2s/models/decoding/native_params.py builds them), and are read here into
// DecoderParams; every failure names the entry and what was expected. Then the encoder memory
// and the decoder state are checked against them.
#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <string>
#include <vector>

#include "cpu/decoder_model.h"

namespace fast_s2s::cpu {
namespace {

// Every entry of `dict` is one of `known` (a misspelt key is refused, not ignored).
template <typename Dict>
void check_keys(const char* op, const char* name, const Dict& dict,
                std::initializer_list<const char*> known) {
  for (const auto& entry : dict) {
    TORCH_CHECK(
        std::any_of(known.begin(), known.end(), [&](const char* k) { return entry.key() == k; }),
        op, ": ", name, " has an unknown entry '", entry.key(), "'");
  }
}

int64_t config_int(const char* op, const DecoderConfig& config, const char* key) {
  const auto it = config.find(key);
  TORCH_CHECK(it != config.end(), op, ": config is missing '", key, "'");
  return it->value();
}

bool config_flag(const char* op, const DecoderConfig& config, const char* key) {
  const int64_t v = config_int(op, config, key);
  TORCH_CHECK(v == 0 || v == 1, op, ": config['", key, "'] must be 0 or 1, got ", v);
  return v == 1;
}

// The index of kinds[key] among `names`, or a message naming the key and the choices.
int64_t kind(const char* op, const DecoderKinds& kinds, const char* key,
             std::initializer_list<const char*> names) {
  const auto it = kinds.find(key);
  TORCH_CHECK(it != kinds.end(), op, ": kinds is missing '", key, "'");
  const std::string& s = it->value();
  int64_t i = 0;
  std::string choices;
  for (const char* name : names) {
    if (s == name) return i;
    choices += (i ? ", '" : "'") + std::string(name) + "'";
    ++i;
  }
  TORCH_CHECK(false, op, ": kinds['", key, "'] must be one of ", choices, ", got '", s, "'");
}

DecoderSpec parse_spec(const char* op, const DecoderConfig& config, const DecoderKinds& kinds) {
  check_keys(op, "config", config,
             {"window", "input_feeding", "layers", "post_gru", "tie_proj", "pad", "bos", "eos"});
  check_keys(op, "kinds", kinds, {"wiring", "score", "local"});
  DecoderSpec s;
  s.wiring = kind(op, kinds, "wiring", {"bahdanau", "luong", "classic"});
  // Luong concat is the additive score (v^T tanh(W_q q + W_k k)), Bahdanau's too.
  const int64_t score = kind(op, kinds, "score", {"none", "additive", "concat", "dot", "general"});
  s.score = score == 0 ? kNoScore : score <= 2 ? kAdditive : score == 3 ? kDot : kGeneral;
  s.local = kind(op, kinds, "local", {"none", "m", "p"});
  s.window = config_int(op, config, "window");
  s.input_feeding = config_flag(op, config, "input_feeding");
  s.layers = config_int(op, config, "layers");
  s.post_gru = config_flag(op, config, "post_gru");
  s.tie_proj = config_flag(op, config, "tie_proj");
  s.pad = config_int(op, config, "pad");
  s.bos = config_int(op, config, "bos");
  s.eos = config_int(op, config, "eos");
  TORCH_CHECK((s.wiring == kClassic) == (s.score == kNoScore), op,
              ": kinds['score'] must be 'none' exactly for the classic wiring");
  TORCH_CHECK(s.wiring != kBahdanau || s.score == kAdditive, op,
              ": kinds['score'] must be 'additive' for the bahdanau wiring");
  TORCH_CHECK(!s.input_feeding || s.wiring == kLuong, op,
              ": config['input_feeding'] needs the luong wiring");
  TORCH_CHECK(!s.post_gru || s.wiring == kLuong, op, ": config['post_gru'] needs the luong wiring");
  TORCH_CHECK(s.layers >= 1, op, ": config['layers'] must be >= 1, got ", s.layers);
  TORCH_CHECK(
      s.local == kGlobal || (s.wiring == kLuong && (s.score == kDot || s.score == kGeneral)), op,
      ": kinds['local'] needs the luong wiring with a dot or general score");
  TORCH_CHECK(s.window >= 0, op, ": config['window'] must be >= 0, got ", s.window);
  return s;
}

// Reads the named weights, each checked for presence, device, shape and dtype.
class ParamReader {
 public:
  ParamReader(const char* op, const DecoderWeights& params) : op_(op), params_(params) {}

  const at::Tensor& find(const std::string& name) const {
    const auto it = params_.find(name);
    TORCH_CHECK(it != params_.end(), op_, ": params is missing '", name, "'");
    return it->value();
  }

  // The weight `name`, of `shape` and the embedding's dtype (each name is taken once).
  at::Tensor take(const std::string& name, at::IntArrayRef shape, at::ScalarType dtype) {
    const at::Tensor& t = find(name);
    TORCH_CHECK(t.defined() && t.device().is_cpu(), op_, ": params['", name,
                "'] must be a CPU tensor");
    TORCH_CHECK(t.sizes() == shape, op_, ": params['", name, "'] must have shape ", shape, ", got ",
                t.sizes());
    TORCH_CHECK(t.scalar_type() == dtype, op_, ": params['", name,
                "'] must have the embedding's dtype ", dtype, ", got ", t.scalar_type());
    taken_.push_back(name);
    return t.contiguous();
  }

  // Every entry was taken: an unexpected one means the config does not describe the weights.
  void check_all_taken() const {
    if (static_cast<size_t>(params_.size()) == taken_.size()) return;
    for (const auto& entry : params_) {
      TORCH_CHECK(std::find(taken_.begin(), taken_.end(), entry.key()) != taken_.end(), op_,
                  ": params has an unexpected entry '", entry.key(),
                  "' for this config (see fast_s2s/models/decoding/native_params.py)");
    }
  }

 private:
  const char* op_;
  const DecoderWeights& params_;
  std::vector<std::string> taken_;
};

}  // namespace

DecoderParams parse_decoder(const char* op, const DecoderWeights& params,
                            const DecoderConfig& config, const DecoderKinds& kinds) {
  DecoderParams p;
  DecoderSpec& s = p.spec;
  s = parse_spec(op, config, kinds);
  ParamReader read(op, params);
  const at::Tensor& emb = read.find("embedding");
  TORCH_CHECK(emb.dim() == 2, op, ": params['embedding'] must be 2-D (V, E), got ", emb.sizes());
  const auto dtype = emb.scalar_type();
  TORCH_CHECK(dtype == at::kFloat || dtype == at::kDouble, op,
              ": the native decoder runs float32 or float64 weights, got ", dtype);
  s.V = emb.size(0);
  s.E = emb.size(1);
  for (int64_t id : {s.pad, s.bos, s.eos}) {
    TORCH_CHECK(id >= 0 && id < s.V, op,
                ": config['pad'], ['bos'] and ['eos'] must lie in [0, V = ", s.V, "), got ", id);
  }
  // The hidden size from the rows of the first recurrent weight (3H, H).
  const at::Tensor& w_hh0 = read.find("w_hh_l0");
  TORCH_CHECK(w_hh0.dim() == 2 && w_hh0.size(0) % 3 == 0, op,
              ": params['w_hh_l0'] must be a 2-D (3H, H) tensor, got ", w_hh0.sizes());
  const int64_t H = s.H = w_hh0.size(0) / 3, E = s.E;
  p.embedding = read.take("embedding", {s.V, E}, dtype);
  for (int64_t l = 0; l < s.layers; ++l) {
    int64_t in = H;
    if (l == 0) in = (s.wiring == kLuong && !s.input_feeding) ? E : E + H;
    const std::string suffix = "_l" + std::to_string(l);
    p.w_ih.push_back(read.take("w_ih" + suffix, {3 * H, in}, dtype));
    p.w_hh.push_back(read.take("w_hh" + suffix, {3 * H, H}, dtype));
    p.b_ih.push_back(read.take("b_ih" + suffix, {3 * H}, dtype));
    p.b_hh.push_back(read.take("b_hh" + suffix, {3 * H}, dtype));
  }
  if (s.post_gru) {
    p.w_ih.push_back(read.take("w_ih_post", {3 * H, H}, dtype));
    p.w_hh.push_back(read.take("w_hh_post", {3 * H, H}, dtype));
    p.b_ih.push_back(read.take("b_ih_post", {3 * H}, dtype));
    p.b_hh.push_back(read.take("b_hh_post", {3 * H}, dtype));
  }
  if (s.score == kAdditive || s.score == kGeneral) {
    const at::Tensor& qp = read.find("query_proj");
    TORCH_CHECK(qp.dim() == 2, op, ": params['query_proj'] must be 2-D (Dq, H), got ", qp.sizes());
    s.Dq = s.score == kGeneral ? H : qp.size(0);
    p.query_proj = read.take("query_proj", {s.Dq, H}, dtype);
  } else if (s.score == kDot) {
    s.Dq = H;
  }
  if (s.score == kAdditive) p.v = read.take("v", {s.Dq}, dtype);
  if (s.local == kLocalP) {
    const at::Tensor& wp = read.find("position_proj");
    TORCH_CHECK(wp.dim() == 2, op, ": params['position_proj'] must be 2-D (P, H), got ",
                wp.sizes());
    s.P = wp.size(0);
    p.position_proj = read.take("position_proj", {s.P, H}, dtype);
    p.position_v = read.take("position_v", {s.P}, dtype);
  }
  if (s.wiring == kLuong) {
    p.combine_w = read.take("combine_w", {H, 2 * H}, dtype);
  } else {
    p.readout_w = read.take("readout_w", {H, 2 * H + E}, dtype);
    p.readout_b = read.take("readout_b", {H}, dtype);
  }
  if (s.tie_proj) p.tie_proj = read.take("tie_proj", {E, H}, dtype);
  p.out_w = read.take("out_w", {s.V, s.tie_proj ? E : H}, dtype);
  p.out_b = read.take("out_b", {s.V}, dtype);
  read.check_all_taken();
  return p;
}

DecoderMemory check_memory(const char* op, const DecoderParams& p,
                           const std::optional<at::Tensor>& keys,
                           const std::optional<at::Tensor>& values,
                           const std::optional<at::Tensor>& context,
                           const at::Tensor& src_lengths) {
  const DecoderSpec& s = p.spec;
  const auto dtype = p.embedding.scalar_type();
  DecoderMemory m;
  TORCH_CHECK(src_lengths.dim() == 1 && src_lengths.device().is_cpu() &&
                  (src_lengths.scalar_type() == at::kLong || src_lengths.scalar_type() == at::kInt),
              op, ": src_lengths must be a 1-D int64/int32 CPU tensor (B,), got ",
              src_lengths.sizes(), " ", src_lengths.scalar_type(), " on ", src_lengths.device());
  m.B = src_lengths.size(0);
  auto check_3d = [&](const std::optional<at::Tensor>& t, const char* name, int64_t last) {
    TORCH_CHECK(t.has_value() && t->defined(), op, ": ", name, " is required for this wiring");
    TORCH_CHECK(t->dim() == 3 && t->size(0) == m.B && t->size(2) == last, op, ": ", name,
                " must have shape (B, S, ", last, ") with B = ", m.B, " (src_lengths), got ",
                t->sizes());
    TORCH_CHECK(t->scalar_type() == dtype && t->device().is_cpu(), op, ": ", name,
                " must be a CPU tensor of the weights' dtype ", dtype, ", got ", t->scalar_type(),
                " on ", t->device());
    return t->contiguous();
  };
  if (s.wiring == kClassic) {
    TORCH_CHECK(context.has_value() && context->defined(), op,
                ": context is required for the classic wiring");
    TORCH_CHECK(context->dim() == 2 && context->size(0) == m.B && context->size(1) == s.H, op,
                ": context must have shape (B, H) = (", m.B, ", ", s.H, "), got ",
                context->sizes());
    TORCH_CHECK(context->scalar_type() == dtype && context->device().is_cpu(), op,
                ": context must be a CPU tensor of the weights' dtype ", dtype);
    m.context = context->contiguous();
    // The classic decoder has no attention; S only sizes the (all-zero) weights it returns.
    m.S = keys.has_value() && keys->defined() ? keys->size(1) : 0;
    if (values.has_value() && values->defined()) m.S = values->size(1);
  } else {
    m.keys = check_3d(keys, "keys", s.Dq);
    m.values = check_3d(values, "values", s.H);
    TORCH_CHECK(m.values.size(1) == m.keys.size(1), op,
                ": values must have the source length of keys (", m.keys.size(1), "), got ",
                m.values.size(1));
    m.S = m.keys.size(1);
  }
  const at::Tensor lens = src_lengths.to(at::kLong).contiguous();
  const int64_t* lp = lens.const_data_ptr<int64_t>();
  m.lengths.assign(lp, lp + m.B);
  for (int64_t b = 0; b < m.B; ++b) {
    TORCH_CHECK(m.lengths[b] >= 0 && (s.wiring == kClassic || m.lengths[b] <= m.S), op,
                ": src_lengths must lie in [0, S = ", m.S, "], got ", m.lengths[b], " at row ", b);
  }
  return m;
}

void check_state(const char* op, const DecoderParams& p, int64_t rows, const at::Tensor& hidden,
                 const std::optional<at::Tensor>& feed) {
  const DecoderSpec& s = p.spec;
  const auto dtype = p.embedding.scalar_type();
  TORCH_CHECK(hidden.dim() == 3 && hidden.size(0) == s.state_rows() && hidden.size(1) == rows &&
                  hidden.size(2) == s.H,
              op, ": hidden must have shape (state rows, N, H) = (", s.state_rows(), ", ", rows,
              ", ", s.H, "), got ", hidden.sizes(), " (state rows: layers + post_gru)");
  TORCH_CHECK(hidden.scalar_type() == dtype && hidden.device().is_cpu(), op,
              ": hidden must be a CPU tensor of the weights' dtype ", dtype, ", got ",
              hidden.scalar_type(), " on ", hidden.device());
  if (s.input_feeding && feed.has_value()) {
    TORCH_CHECK(feed->dim() == 2 && feed->size(0) == rows && feed->size(1) == s.H &&
                    feed->scalar_type() == dtype && feed->device().is_cpu(),
                op, ": feed must be a (N, H) = (", rows, ", ", s.H, ") CPU ", dtype,
                " tensor, got ", feed->sizes(), " ", feed->scalar_type());
  }
}

}  // namespace fast_s2s::cpu
