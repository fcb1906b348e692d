// What libnftables prints for `list set` and `list tables` (JSON), as NftSetReader reads it:
// netlink::parse_nft_set_json and parse_nft_tables_json. Both answer with a result or a reason and
// never throw; a set they accept holds only prefixes of its own family with no host bits set.
#include <sys/socket.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

#include "netlink/nft_set_parse.h"

namespace {

bool well_formed(const uplinkd::netlink::SetPrefix& p, int family) {
  if (p.address.family != family) return false;
  const int bits = family == AF_INET ? 32 : 128;
  if (p.len > bits) return false;
  for (int bit = p.len; bit < bits; ++bit) {
    if ((p.address.bytes[bit / 8] >> (7 - bit % 8)) & 1) return false;
  }
  return true;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace uplinkd::netlink;
  const std::string text(reinterpret_cast<const char*>(data), size);
  NftSet set;
  if (parse_nft_set_json(text, &set).empty()) {
    const int family = set.type == "ipv4_addr" ? AF_INET : AF_INET6;
    for (const SetPrefix& p : set.prefixes) {
      if (!well_formed(p, family)) std::abort();
      (void)p.str();
    }
  }
  (void)parse_nft_tables_json(text);
  return 0;
}
