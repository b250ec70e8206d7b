// Weights prepared for the GEMM layer (packed for MKL or into panels, gemm.h) kept across op
// calls, for the ops that are called once per step with the same weights (gru_cell in a decoder
// loop): without it each call packs its weights again, a pass over them as long as the product
// at batch 64, which is what torch.nn.GRUCell's BLAS call pays too (MKL copies the weight panels
// inside every sgemm). docs/DESIGN.md, "Matrix products on the CPU".
//
// Only while the calling thread has declared its weights frozen (fast_s2s.frozen_weights(), which
// greedy_decode and beam_search enter): torch cannot tell the op about every write to a weight.
// In-place ops bump the tensor's version counter, which views and detach() share, and that is
// checked; but writes through `.data` (old-style `p.data.add_(...)` updates, gradcheck's
// perturbations) go to a tensor with a counter of its own. So outside a frozen scope every call
// prepares its weights again, and leaving the outermost scope drops every entry.
//
// A weight is identified by its storage, held weakly (its address cannot be reused by another
// storage while the entry lives; the memory is still freed with the tensor), its data pointer (a
// swapped `.data`) and its version. Inference tensors have no version counter: never cached.
//
// Entries are taken out while in use (take / put), so two threads calling the op at once never
// share an entry's scratch buffers; the one that finds it taken prepares its own.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/intrusive_ptr.h>

#include <cstdint>
#include <functional>
#include <list>
#include <memory>
#include <mutex>
#include <optional>
#include <vector>

namespace fast_s2s::cpu {

// Whether the calling thread is inside fast_s2s.frozen_weights() (prepared_cache.cpp).
bool weights_frozen();
// Enters / leaves one level of it; leaving the outermost clears every PreparedCache.
void set_weights_frozen(bool frozen);
// Called with every cache's clear() (a cache registers itself when made).
void register_prepared_cache(std::function<void()> clear);

// The scope is per thread: a parallel region's worker thread does not see its caller's. While
// one of these lives, the worker answers weights_frozen() as the caller did (`frozen`, read on
// the caller's thread); leaving it restores the worker's own depth and clears nothing (the
// caller's scope owns the entries).
class FrozenScopeOf {
 public:
  explicit FrozenScopeOf(bool frozen);
  ~FrozenScopeOf();
  FrozenScopeOf(const FrozenScopeOf&) = delete;
  FrozenScopeOf& operator=(const FrozenScopeOf&) = delete;

 private:
  int saved_depth_;
};

class WeightIdentity {
 public:
  // nullopt for a tensor whose writes cannot be detected (an inference tensor).
  static std::optional<WeightIdentity> of(const at::Tensor& t) {
    if (!t.defined() || t.is_inference() || !t.has_storage()) return std::nullopt;
    return WeightIdentity(t);
  }

  bool matches(const at::Tensor& t) const {
    return !storage_.expired() &&
           storage_._unsafe_get_target() == t.storage().unsafeGetStorageImpl() &&
           data_ == t.const_data_ptr() && version_ == t._version();
  }

 private:
  explicit WeightIdentity(const at::Tensor& t)
      : storage_(t.storage().getWeakStorageImpl()),
        data_(t.const_data_ptr()),
        version_(t._version()) {}

  c10::weak_intrusive_ptr<c10::StorageImpl> storage_;
  const void* data_;
  int64_t version_;
};

// The identities to cache a preparation of `prepared` under, or nullopt when it is not to be
// kept: outside a frozen-weights scope, when one of them is not the caller's own tensor in
// `given` (a per-call converted copy, e.g. of bfloat16 weights, would only evict the entries
// that get reused), or when one of them cannot be tracked.
inline std::optional<std::vector<WeightIdentity>> frozen_identities(
    const std::vector<at::Tensor>& prepared, const std::vector<at::Tensor>& given) {
  if (!weights_frozen() || prepared.size() != given.size()) return std::nullopt;
  std::vector<WeightIdentity> ids;
  for (size_t i = 0; i < prepared.size(); ++i) {
    if (!prepared[i].is_same(given[i])) return std::nullopt;
    std::optional<WeightIdentity> id = WeightIdentity::of(prepared[i]);
    if (!id) return std::nullopt;
    ids.push_back(std::move(*id));
  }
  return ids;
}

// Up to `capacity` prepared values, each for one list of weights and a shape key (the sizes and
// choices the preparation depends on), least recently used evicted first.
template <typename Value>
class PreparedCache {
 public:
  explicit PreparedCache(size_t capacity) : capacity_(capacity) {
    register_prepared_cache([this] { clear(); });
  }

  void clear() {
    std::lock_guard<std::mutex> lock(mutex_);
    entries_.clear();
  }

  // The value prepared for these weights and key, removed from the cache (null if none).
  std::unique_ptr<Value> take(const std::vector<at::Tensor>& weights,
                              const std::vector<int64_t>& key) {
    std::lock_guard<std::mutex> lock(mutex_);
    for (auto it = entries_.begin(); it != entries_.end(); ++it) {
      if (it->key == key && matches(it->ids, weights)) {
        std::unique_ptr<Value> value = std::move(it->value);
        entries_.erase(it);
        return value;
      }
    }
    return nullptr;
  }

  // Gives `value` back (or first) as the most recently used entry.
  void put(std::vector<WeightIdentity> ids, std::vector<int64_t> key,
           std::unique_ptr<Value> value) {
    std::lock_guard<std::mutex> lock(mutex_);
    entries_.push_front(Entry{std::move(ids), std::move(key), std::move(value)});
    while (entries_.size() > capacity_) entries_.pop_back();
  }

 private:
  struct Entry {
    std::vector<WeightIdentity> ids;
    std::vector<int64_t> key;
    std::unique_ptr<Value> value;
  };

  static bool matches(const std::vector<WeightIdentity>& ids,
                      const std::vector<at::Tensor>& weights) {
    if (ids.size() != weights.size()) return false;
    for (size_t i = 0; i < ids.size(); ++i) {
      if (!ids[i].matches(weights[i])) return false;
    }
    return true;
  }

  size_t capacity_;
  std::mutex mutex_;
  std::list<Entry> entries_;
};

}  // namespace fast_s2s::cpu
