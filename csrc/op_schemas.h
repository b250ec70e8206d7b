// Every fast_s2s op schema, in one list: csrc/ops.cpp declares them for torch.ops.fast_s2s, and
// the CPU emulation of the CUDA kernels (csrc/cuda/emulate.h, tests/backends.py) for
// torch.ops.fast_s2s_emu. Fake (meta) kernels and autograd are registered from Python, by
// fast_s2s/compiled_ops.py, from one factory per op family (fast_s2s/_attention_autograd.py,
// _local_autograd.py, _gru_autograd.py) that the Triton and emulated ops share.
#pragma once

namespace fast_s2s {

// clang-format off: each schema's continuation lines stay indented under its first line.
inline constexpr const char* kOpSchemas[] = {
    // query (N,T,D) or (N,D); keys (B,S,D); values (B,S,Dv); N = B * beam. need_weights=False:
    // the CUDA kernel skips the weights and returns an empty (0,) tensor in their place (its
    // backward recomputes them); the CPU kernel writes them anyway (its backward reads them).
    "dot_attention(Tensor query, Tensor keys, Tensor values, Tensor? lengths=None, "
        "float scale=1.0, bool need_weights=True) -> (Tensor context, Tensor weights)",
    "dot_attention_backward(Tensor grad_context, Tensor? grad_weights, Tensor query, "
        "Tensor keys, Tensor values, Tensor weights, Tensor? lengths, float scale) "
        "-> (Tensor grad_query, Tensor grad_keys, Tensor grad_values)",
    // query_proj (N,T,A) or (N,A); keys_proj (B,S,A); v (A,); values (B,S,Dv).
    "additive_attention(Tensor query_proj, Tensor keys_proj, Tensor v, Tensor values, "
        "Tensor? lengths=None, bool need_weights=True) -> (Tensor context, Tensor weights)",
    "additive_attention_backward(Tensor grad_context, Tensor? grad_weights, "
        "Tensor query_proj, Tensor keys_proj, Tensor v, Tensor values, Tensor weights, "
        "Tensor? lengths) -> (Tensor grad_query_proj, Tensor grad_keys_proj, Tensor grad_v, "
        "Tensor grad_values)",
    // Luong local attention: query (N,T,D) or (N,D); keys (B,S,D); values (B,S,Dv); centers
    // (N,T) or (N,) of any floating dtype (read in the accumulation dtype); window >= 0. Only the
    // window's keys and values are read. need_weights=False: weights is an empty (0,) tensor on
    // every device (the backward recomputes the window's weights from query, keys and centers).
    "local_attention(Tensor query, Tensor keys, Tensor values, Tensor centers, int window, "
        "Tensor? lengths=None, float scale=1.0, bool need_weights=True) "
        "-> (Tensor context, Tensor weights)",
    "local_attention_backward(Tensor grad_context, Tensor? grad_weights, Tensor query, "
        "Tensor keys, Tensor values, Tensor centers, int window, Tensor? lengths, float scale) "
        "-> (Tensor grad_query, Tensor grad_keys, Tensor grad_values, Tensor grad_centers)",
    // torch.nn.GRUCell semantics. `gates` is the (B, 4H) float32/64 workspace [r, z, n, W_hn h +
    // b_hn] the backward reads; fast_s2s.ops.gru_cell returns h_new only.
    "gru_cell(Tensor x, Tensor h, Tensor w_ih, Tensor w_hh, Tensor? b_ih=None, "
        "Tensor? b_hh=None) -> (Tensor h_new, Tensor gates)",
    "gru_cell_backward(Tensor grad_h_new, Tensor x, Tensor h, Tensor w_ih, Tensor w_hh, "
        "Tensor gates) -> (Tensor grad_x, Tensor grad_h, Tensor grad_w_ih, Tensor grad_w_hh, "
        "Tensor grad_b_ih, Tensor grad_b_hh)",
    // One layer, one direction: x (T, B, I), h0 (B, H) -> output (T, B, H), h_n (B, H), and the
    // (T, B, 5H) float32/64 workspace [r, z, n, W_hn h + b_hn, h_prev] per step for the backward.
    "gru_layer(Tensor x, Tensor h0, Tensor w_ih, Tensor w_hh, Tensor? b_ih=None, "
        "Tensor? b_hh=None, Tensor? lengths=None, bool reverse=False) "
        "-> (Tensor output, Tensor h_n, Tensor work)",
    "gru_layer_backward(Tensor grad_output, Tensor grad_h_n, Tensor x, Tensor h0, "
        "Tensor w_ih, Tensor w_hh, Tensor work, Tensor? lengths, bool reverse) "
        "-> (Tensor grad_x, Tensor grad_h0, Tensor grad_w_ih, Tensor grad_w_hh, "
        "Tensor grad_b_ih, Tensor grad_b_hh)",
    // A one-line CUDA kernel (x + 1) proving that the CUDA half of the build loads and runs.
    "cuda_smoke(Tensor x) -> Tensor",
};

// The native decoder (csrc/cpu/decoder_model.h, native_search.cpp) and its encoder (gru_stack.cpp,
// native_encoder.cpp); CPU only, so the CUDA emulation library does not declare them.
// params / config / kinds: the decoder's weights, sizes and wiring by name, as
// fast_s2s/models/decoding/native_params.py builds them (csrc/cpu/decoder_model.h); keys, values (B, S, .) or context
// (B, H): the encoder memory, read by decoder row n from source row n // beam.
inline constexpr const char* kDecoderOpSchemas[] = {
    // fast_s2s.nn.GRU's forward without autograd, in one call: x (T, B, I) time-major, h0
    // (layers * directions, B, H), weights [w_ih, w_hh, b_ih, b_hh] per layer and direction
    // (biases None for bias=False) -> output (T, B, directions * H), h_n (layers * dirs, B, H).
    "gru_stack(Tensor x, Tensor h0, Tensor?[] weights, Tensor? lengths, int num_layers, "
        "bool bidirectional) -> (Tensor output, Tensor h_n)",
    // Seq2Seq.encode in one call (native_encoder.cpp): params [input layer weight and bias,
    // GRU weights per layer and direction, bridge weight and bias, key_proj weight and bias]
    // (None where absent), config [frames, encoder layers, decoder layers]; src (B, S) ids or
    // (B, S, F) frames -> states (B, S, H), hidden (L_dec, B, H), final (B, H), keys.
    "encode(Tensor?[] params, int[] config, Tensor src, Tensor src_lengths) "
        "-> (Tensor states, Tensor hidden, Tensor final, Tensor keys)",
    // One step for N = B * beam rows, with the search rules applied to the log-probs (N, V);
    // feed: (N, H) with input feeding, else an empty (0,) tensor; weights (N, S); step: the
    // steps taken before it (local-m's window centre).
    "decoder_step(Dict(str, Tensor) params, Dict(str, int) config, Dict(str, str) kinds, "
        "Tensor? keys, "
        "Tensor? values, Tensor? context, Tensor src_lengths, Tensor hidden, Tensor? feed, "
        "Tensor prev, int beam, bool force_eos=False, bool block_eos=False, int step=0) "
        "-> (Tensor log_probs, Tensor hidden, Tensor feed, Tensor weights)",
    // The whole search of B sentences (beam search; greedy is beam 1), its length penalty read
    // from the tables finish_lp and reach_lp ((max_len + 1,) float64, rules.LengthTables).
    // Returns its trace for T steps run (fast_s2s/models/decoding/result.py): tokens, parents
    // (T, B, beam) int64, finish_scores (T, B, beam) float64 (-inf: not finished there),
    // attention (T, B * beam, S) float32.
    "decode_beam(Dict(str, Tensor) params, Dict(str, int) config, Dict(str, str) kinds, "
        "Tensor? keys, "
        "Tensor? values, Tensor? context, Tensor src_lengths, Tensor hidden, int beam, "
        "int max_len, int min_len, int n_best, Tensor finish_lp, Tensor reach_lp, "
        "Tensor? max_lens=None) "
        "-> (Tensor tokens, Tensor parents, Tensor finish_scores, Tensor attention)",
    // A search's Trace (any engine's, on the host: tokens, parents (T, B, K) int64,
    // finish_scores float64, attention (T, B * K, S) float32) -> its ranked hypotheses, per
    // sentence its up to n_best best (cpu/assemble_trace.cpp; reference result.py): sentence,
    // length (C,) int64, score (C,) float64, tokens (C, L) int64 (-1 padded), attention
    // (C, L + 1, S) float32.
    "assemble_trace(Tensor tokens, Tensor parents, Tensor finish_scores, Tensor attention, "
        "Tensor finish_lp, int n_best) -> (Tensor sentence, Tensor length, Tensor score, "
        "Tensor tokens, Tensor attention)",
    // encode, decode_beam and assemble_trace in one call (native_search.cpp): the encoder's
    // arguments, then the decoder's and the search's; returns assemble_trace's hypotheses.
    "search(Tensor?[] encoder_params, int[] encoder_config, Tensor src, Tensor src_lengths, "
        "Dict(str, Tensor) params, Dict(str, int) config, Dict(str, str) kinds, int beam, "
        "int max_len, int min_len, int n_best, Tensor finish_lp, Tensor reach_lp, "
        "Tensor? max_lens=None) -> (Tensor sentence, Tensor length, Tensor score, "
        "Tensor tokens, Tensor attention)",
};
// clang-format on

}  // namespace fast_s2s
