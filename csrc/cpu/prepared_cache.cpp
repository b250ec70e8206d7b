// The frozen-weights scope of prepared_cache.h and its Python ops (fast_s2s.frozen_weights).
#include "cpu/prepared_cache.h"

#include <c10/util/Exception.h>
#include <torch/library.h>

#include <mutex>
#include <vector>

namespace fast_s2s::cpu {
namespace {

thread_local int frozen_depth = 0;

struct Registry {
  std::mutex mutex;
  std::vector<std::function<void()>> clears;
};

Registry& registry() {
  static auto* r = new Registry();  // never destroyed, like the caches that register
  return *r;
}

// One level in or out of the scope; returns the depth after it.
int64_t set_frozen_weights(bool frozen) {
  set_weights_frozen(frozen);
  return frozen_depth;
}

}  // namespace

bool weights_frozen() { return frozen_depth > 0; }

void set_weights_frozen(bool frozen) {
  if (frozen) {
    ++frozen_depth;
    return;
  }
  TORCH_CHECK(frozen_depth > 0, "frozen_weights: left more scopes than were entered");
  if (--frozen_depth > 0) return;
  Registry& r = registry();
  std::lock_guard<std::mutex> lock(r.mutex);
  for (const auto& clear : r.clears) clear();
}

FrozenScopeOf::FrozenScopeOf(bool frozen) : saved_depth_(frozen_depth) {
  if (frozen && frozen_depth == 0) frozen_depth = 1;
}

FrozenScopeOf::~FrozenScopeOf() { frozen_depth = saved_depth_; }

void register_prepared_cache(std::function<void()> clear) {
  Registry& r = registry();
  std::lock_guard<std::mutex> lock(r.mutex);
  r.clears.push_back(std::move(clear));
}

TORCH_LIBRARY_FRAGMENT(fast_s2s, m) {
  m.def("set_frozen_weights(bool frozen) -> int", &set_frozen_weights);
}

}  // namespace fast_s2s::cpu
