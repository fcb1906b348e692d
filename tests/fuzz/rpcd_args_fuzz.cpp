// What rpcd hands the mwan3 plugin on stdin (any bytes a ubus caller sends): parse_ubus_args either
// accepts it, and the answer built for it is valid JSON with only mwan3's top-level keys, or refuses
// it with a printable error. Neither throws.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "mwan3/mwan3_view.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace uplinkd::mwan3;
  static const nlohmann::json status = nlohmann::json::parse(
      R"({"interfaces":[{"name":"wan","enabled":true,"score":3,"mwan3":{"status":"online"},
          "targets":[{"ip":"192.0.2.1","state":"up","rtt_ms":1.5,"loss_pct":0}]}],
          "policies":{"ipv4":{"p":[{"interface":"wan","percent":100}]},"ipv6":{"p":[]}},
          "connected":{"ipv4":["10.0.0.0/8"],"ipv6":[]}})");
  UbusArgs args;
  const std::string error =
      parse_ubus_args(std::string_view(reinterpret_cast<const char*>(data), size), &args);
  if (!error.empty()) {
    for (char c : error) {
      if (c < 0x20 || c >= 0x7f) std::abort();
    }
    return 0;
  }
  const nlohmann::json answer = ubus_status(status, args);
  for (const auto& [key, value] : answer.items()) {
    if (key != "interfaces" && key != "connected" && key != "policies") std::abort();
  }
  (void)answer.dump();  // the interface name came from valid UTF-8 JSON: this must not throw
  return 0;
}
