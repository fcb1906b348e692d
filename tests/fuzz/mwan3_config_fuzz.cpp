// The configuration path of `uplinkd --check-config` (load_checked_config in daemon/daemon.cpp),
// from uplinkd_base alone: config::load, policy::check_policy_limits, config::uci::parse and
// policy::compile_rules with a made-up if_nametoindex; then the rules as `uplinkctl rules` prints them.
//
// The input is an mwan3 file; a line "%% network" splits off an OpenWrt network file after it, given
// as `--network` (without one every interface needs its own `option device`). A ConfigError is a
// refused configuration, which is fine; anything else that leaves load_checked_config would end
// uplinkd (main() catches ConfigError only), so it is let through for libFuzzer to report.
#include <sys/mman.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <optional>
#include <string>
#include <string_view>

#include "config/config.h"
#include "config/uci.h"
#include "policy/policy_table.h"
#include "policy/rule_compiler.h"

namespace {

constexpr std::string_view kNetworkSeparator = "\n%% network\n";

// A file in memory that config::load can open by path: one per process, rewritten per input.
class MemFile {
 public:
  explicit MemFile(const char* name) : fd_(memfd_create(name, MFD_CLOEXEC)) {
    if (fd_ < 0) std::abort();
    path_ = "/proc/self/fd/" + std::to_string(fd_);
  }
  const std::string& write(std::string_view text) {
    if (ftruncate(fd_, 0) != 0 ||
        pwrite(fd_, text.data(), text.size(), 0) != static_cast<ssize_t>(text.size())) {
      std::abort();
    }
    return path_;
  }

 private:
  int fd_;
  std::string path_;
};

// Interfaces the fake kernel has: some names resolve, others are pending (not there yet).
uint32_t fake_if_nametoindex(const std::string& device) {
  if (device.empty() || device.size() % 4 == 0) return 0;
  return static_cast<uint32_t>(device.size() + 10);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace uplinkd;
  static MemFile mwan3_file("mwan3");
  static MemFile network_file("network");

  const std::string_view input(reinterpret_cast<const char*>(data), size);
  const size_t split = input.find(kNetworkSeparator);
  const std::string_view mwan3_text = input.substr(0, split);
  std::optional<std::string> network_path;
  if (split != std::string_view::npos) {
    network_path = network_file.write(input.substr(split + kNetworkSeparator.size()));
  }
  const std::string& config_path = mwan3_file.write(mwan3_text);
  try {
    config::Config config = config::load(config_path, network_path);
    policy::check_policy_limits(config);
    const config::uci::Package source = config::uci::parse(mwan3_text, config_path);
    const policy::CompiledRules rules =
        policy::compile_rules(config, policy::assign_policy_ids(config), fake_if_nametoindex, &source);
    // What `uplinkctl rules` gets; the control server dumps it so (a config is bytes, not always
    // UTF-8: an ipset or rule name in Latin-1 comes out with U+FFFD instead of throwing).
    (void)policy::rules_json(rules).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  } catch (const config::ConfigError&) {
    // refused, with file and line: what --check-config prints
  }
  return 0;
}
