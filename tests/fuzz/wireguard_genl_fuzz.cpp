// Kernel WireGuard's generic netlink answer to WG_CMD_GET_DEVICE, as discovery.cpp reads it:
// wireguard::GenlDeviceParser. The input is the attribute buffer of one message (after nlmsghdr and
// genlmsghdr); the message is then given to the same parser a second time, as the next message of
// a dump that continues the same device. A refusal with a reason is fine; a crash, a sanitizer
// report or a refusal without a reason is not.
#include <linux/genetlink.h>
#include <linux/netlink.h>
#include <linux/wireguard.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "wireguard/peer_parse.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace uplinkd::wireguard;
  const size_t header = NLMSG_HDRLEN + GENL_HDRLEN;
  if (size > UINT32_MAX - header) return 0;
  // uint32_t storage: the message is aligned as the kernel's receive buffer is.
  std::vector<uint32_t> storage((header + size + 3) / 4);
  auto* bytes = reinterpret_cast<uint8_t*>(storage.data());
  nlmsghdr nlh{};
  nlh.nlmsg_len = static_cast<uint32_t>(header + size);
  nlh.nlmsg_flags = NLM_F_MULTI;
  const genlmsghdr genl{WG_CMD_GET_DEVICE, WG_GENL_VERSION, 0};
  std::memcpy(bytes, &nlh, sizeof nlh);
  std::memcpy(bytes + NLMSG_HDRLEN, &genl, sizeof genl);
  if (size != 0) std::memcpy(bytes + header, data, size);

  GenlDeviceParser parser;
  const auto* message = reinterpret_cast<const nlmsghdr*>(bytes);
  for (int round = 0; round < 2; ++round) {
    std::string error;
    if (!parser.add_message(message, &error) && error.empty()) std::abort();
  }
  for (const Peer& peer : parser.device().peers) {
    if (peer.endpoint) (void)peer.endpoint->str();
  }
  return 0;
}
