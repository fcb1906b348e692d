#include "lifecycle/teardown.h"

#include <atomic>

namespace uplinkd::lifecycle {
namespace {

// Process-wide on purpose: every kernel-facing destructor consults it, however deep it sits, and the
// conntrack worker thread may read it while the loop sets it.
std::atomic<bool> g_adopting{false};
std::atomic<Teardown> g_teardown{Teardown::Full};

}  // namespace

void set_adopting(bool adopting) { g_adopting = adopting; }
bool adopting() { return g_adopting; }
void set_teardown(Teardown mode) { g_teardown = mode; }
Teardown teardown() { return g_teardown; }

}  // namespace uplinkd::lifecycle
