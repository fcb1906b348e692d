// A network device's MTU, read by name in the caller's network namespace.
#pragma once

#include <optional>
#include <string>

namespace uplinkd {

// nullopt when the device does not exist (or the name is too long).
std::optional<int> link_mtu(const std::string& device);

}  // namespace uplinkd
