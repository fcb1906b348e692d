// Conntrack deletes over ctnetlink with libnl-nf-3.
//
// libnl-nf's object API (nfnl_ct_dump_request) dumps the whole table and has no way to ask the
// kernel for a mark filter, so the dump request is built here with libnl-nf's message helpers:
// IPCTNL_MSG_CT_GET | NLM_F_DUMP with CTA_MARK / CTA_MARK_MASK, which the kernel applies while it
// walks the table (one dump per family, so kernels that ignore the family of an AF_UNSPEC dump do
// not matter). Only the dead uplink's entries cross to user space.
//
// Each entry is deleted by its own original tuple, copied byte for byte from the dump (whatever
// the protocol: TCP, UDP, ICMP, GRE...), with its CTA_ID, so an entry that expired and was
// replaced by a new flow with the same tuple (perhaps on the surviving uplink) is left alone: the
// kernel answers ENOENT. The deletes are pipelined, a batch of requests per send() and their
// acknowledgments read afterwards, because one round trip per entry is what makes `conntrack -D`
// slow on a large table.
#include "netlink/conntrack.h"

#include <arpa/inet.h>
#include <linux/netfilter/nfnetlink.h>
#include <linux/netfilter/nfnetlink_conntrack.h>
#include <linux/netlink.h>
#include <netinet/in.h>
#include <netlink/attr.h>
#include <netlink/msg.h>
#include <netlink/netfilter/nfnl.h>
#include <netlink/netlink.h>
#include <netlink/socket.h>
#include <sys/socket.h>
#include <sys/time.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <stdexcept>
#include <string>
#include <system_error>
#include <vector>

#include "netlink/nl_util.h"

namespace uplinkd::netlink {
namespace {

constexpr uint16_t kCtNew = (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_NEW;
constexpr uint16_t kCtDelete = (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_DELETE;

// Requests per send(). Each one earns an acknowledgment queued on the socket until read; 128 of
// them (without the echoed request, NETLINK_CAP_ACK) stay far below the receive buffer.
constexpr size_t kDeleteBatch = 128;
constexpr int kReceiveBufferBytes = 1 << 20;
constexpr int kReceiveTimeoutSeconds = 5;  // a kernel that never answers must not hang the daemon
constexpr size_t kReceiveChunkBytes = size_t{64} * 1024;

[[noreturn]] void throw_errno(int error, const std::string& what) {
  std::string hint;
  if (error == EPERM) {
    hint = " (needs CAP_NET_ADMIN)";
  } else if (error == EAGAIN) {
    hint = " (no answer from the kernel within " + std::to_string(kReceiveTimeoutSeconds) + " s)";
  }
  throw std::system_error(error, std::generic_category(), "conntrack: " + what + hint);
}

// A netfilter netlink socket for one call: big receive buffer, bounded waits, short acks.
SocketPtr connect_ctnetlink() {
  SocketPtr sock(nl_socket_alloc());
  if (!sock) {
    throw_errno(ENOMEM, "cannot allocate a netlink socket");
  }
  const int err = nfnl_connect(sock.get());
  if (err < 0) {
    throw_errno(nle_to_errno(-err), "cannot open a netfilter netlink socket");
  }
  nl_socket_set_buffer_size(sock.get(), kReceiveBufferBytes, 0);
  const int fd = nl_socket_get_fd(sock.get());
  const int on = 1;
  setsockopt(fd, SOL_NETLINK, NETLINK_CAP_ACK, &on, sizeof on);  // older kernels: full acks, still fine
  timeval timeout{kReceiveTimeoutSeconds, 0};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
  return sock;
}

void send_all(int fd, const uint8_t* data, size_t size, const char* what) {
  if (send(fd, data, size, 0) != static_cast<ssize_t>(size)) {
    throw_errno(errno != 0 ? errno : EIO, std::string("cannot send ") + what);
  }
}

// One receive; calls `each` for every message in it. Returns false when `each` says the reply
// is complete.
template <typename Handler>
bool receive_some(int fd, std::vector<uint8_t>* buffer, const char* what, Handler&& each) {
  ssize_t got;
  do {
    got = recv(fd, buffer->data(), buffer->size(), 0);
  } while (got < 0 && errno == EINTR);
  if (got < 0) {
    // ENOBUFS: the kernel dropped part of what it sent; the walk is incomplete.
    throw_errno(errno, std::string("reading ") + what);
  }
  int left = static_cast<int>(got);
  for (auto* header = reinterpret_cast<nlmsghdr*>(buffer->data()); nlmsg_ok(header, left);
       header = nlmsg_next(header, &left)) {
    if (!each(header)) {
      return false;
    }
  }
  return true;
}

int error_of(const nlmsghdr* header) {
  if (header->nlmsg_len < NLMSG_LENGTH(sizeof(nlmsgerr))) {
    return EIO;
  }
  return -static_cast<const nlmsgerr*>(NLMSG_DATA(header))->error;
}

// ---- the dump ------------------------------------------------------------------------------

// Sequence numbers: the two dumps take 1 and 2, delete requests count up from here.
constexpr uint32_t kFirstDeleteSeq = 16;

// Delete requests, complete netlink messages back to back, ready to be sent in batches.
struct PendingDeletes {
  std::vector<uint8_t> bytes;
  std::vector<size_t> ends;  // end offset of each message in `bytes`
};

void append_attribute(std::vector<uint8_t>* bytes, const nlattr* attribute) {
  const size_t size = NLA_ALIGN(attribute->nla_len);
  const size_t at = bytes->size();
  bytes->resize(at + size, 0);
  std::memcpy(bytes->data() + at, attribute, attribute->nla_len);
}

// The delete request for one dumped entry: its original tuple, its id, its zone.
void add_delete_for(uint8_t family, nlattr* const* attributes, PendingDeletes* out) {
  const size_t start = out->bytes.size();
  out->bytes.resize(start + NLMSG_HDRLEN + NLMSG_ALIGN(sizeof(nfgenmsg)), 0);
  append_attribute(&out->bytes, attributes[CTA_TUPLE_ORIG]);
  for (int kind : {CTA_ID, CTA_ZONE}) {
    if (attributes[kind] != nullptr) {
      append_attribute(&out->bytes, attributes[kind]);
    }
  }
  auto* header = reinterpret_cast<nlmsghdr*>(out->bytes.data() + start);
  header->nlmsg_len = static_cast<uint32_t>(out->bytes.size() - start);
  header->nlmsg_type = kCtDelete;
  header->nlmsg_flags = NLM_F_REQUEST | NLM_F_ACK;
  header->nlmsg_seq = kFirstDeleteSeq + static_cast<uint32_t>(out->ends.size());
  auto* generic = reinterpret_cast<nfgenmsg*>(out->bytes.data() + start + NLMSG_HDRLEN);
  generic->nfgen_family = family;
  generic->version = NFNETLINK_V0;
  out->ends.push_back(out->bytes.size());
}

struct DumpFilter {
  uint8_t family;
  uint32_t value;  // mark & mask
  uint32_t mask;
};

void consider_entry(const nlmsghdr* header, const DumpFilter& filter, PendingDeletes* out,
                    ConntrackDeleteResult* result) {
  if (header->nlmsg_type != kCtNew || header->nlmsg_len < NLMSG_LENGTH(sizeof(nfgenmsg))) {
    return;
  }
  const auto* generic = static_cast<const nfgenmsg*>(NLMSG_DATA(header));
  if (generic->nfgen_family != filter.family) {
    return;  // the other family's dump will see it
  }
  result->examined++;
  nlattr* attributes[CTA_MAX + 1] = {};
  if (nlmsg_parse(const_cast<nlmsghdr*>(header), sizeof(nfgenmsg), attributes, CTA_MAX, nullptr) < 0) {
    return;
  }
  // Checked again here: a kernel that ignores the dump filter must not widen the delete.
  const uint32_t mark = attributes[CTA_MARK] != nullptr ? ntohl(nla_get_u32(attributes[CTA_MARK])) : 0;
  if ((mark & filter.mask) != filter.value) {
    return;
  }
  result->matched++;
  if (attributes[CTA_TUPLE_ORIG] == nullptr) {
    result->failed++;  // cannot be named in a delete; never seen from a kernel
    return;
  }
  add_delete_for(filter.family, attributes, out);
}

void dump_marked(nl_sock* sock, const DumpFilter& filter, uint32_t seq, PendingDeletes* out,
                 ConntrackDeleteResult* result) {
  MessagePtr request(
      nfnlmsg_alloc_simple(NFNL_SUBSYS_CTNETLINK, IPCTNL_MSG_CT_GET, NLM_F_DUMP, filter.family, 0));
  if (!request || nla_put_u32(request.get(), CTA_MARK, htonl(filter.value)) < 0 ||
      nla_put_u32(request.get(), CTA_MARK_MASK, htonl(filter.mask)) < 0) {
    throw_errno(ENOMEM, "cannot build the dump request");
  }
  nlmsghdr* header = nlmsg_hdr(request.get());
  header->nlmsg_flags |= NLM_F_REQUEST;
  header->nlmsg_seq = seq;
  const int fd = nl_socket_get_fd(sock);
  send_all(fd, reinterpret_cast<const uint8_t*>(header), header->nlmsg_len, "the dump request");

  std::vector<uint8_t> buffer(kReceiveChunkBytes);
  bool more = true;
  while (more) {
    more = receive_some(fd, &buffer, "the conntrack dump", [&](nlmsghdr* message) {
      if (message->nlmsg_seq != seq) {
        return true;
      }
      if (message->nlmsg_type == NLMSG_DONE) {
        // A dump that failed half way ends with the error in its DONE message.
        const bool has_error = message->nlmsg_len >= NLMSG_LENGTH(sizeof(int));
        const int error = has_error ? -*static_cast<const int*>(NLMSG_DATA(message)) : 0;
        if (error > 0) {
          throw_errno(error, "dumping the table by mark");
        }
        return false;
      }
      if (message->nlmsg_type == NLMSG_ERROR) {
        const int error = error_of(message);
        if (error != 0) {
          throw_errno(error, "dumping the table by mark");
        }
        return true;
      }
      consider_entry(message, filter, out, result);
      return true;
    });
  }
}

// ---- the deletes ---------------------------------------------------------------------------

void count_ack(int error, ConntrackDeleteResult* result) {
  if (error == 0) {
    result->deleted++;
  } else if (error != ENOENT) {  // ENOENT: gone meanwhile, or replaced (CTA_ID differs)
    result->failed++;
  }
}

void send_deletes(nl_sock* sock, const PendingDeletes& pending, ConntrackDeleteResult* result) {
  const int fd = nl_socket_get_fd(sock);
  std::vector<uint8_t> buffer(kReceiveChunkBytes);
  const uint32_t last_seq = kFirstDeleteSeq + static_cast<uint32_t>(pending.ends.size());
  size_t start = 0;
  for (size_t first = 0; first < pending.ends.size(); first += kDeleteBatch) {
    const size_t count = std::min(kDeleteBatch, pending.ends.size() - first);
    const size_t end = pending.ends[first + count - 1];
    send_all(fd, pending.bytes.data() + start, end - start, "delete requests");
    start = end;
    size_t acked = 0;
    while (acked < count) {
      receive_some(fd, &buffer, "delete acknowledgments", [&](nlmsghdr* message) {
        if (message->nlmsg_type == NLMSG_ERROR && message->nlmsg_seq >= kFirstDeleteSeq &&
            message->nlmsg_seq < last_seq) {
          count_ack(error_of(message), result);
          acked++;
        }
        return true;
      });
    }
  }
}

// ---- one tuple -----------------------------------------------------------------------------

bool has_ports(uint8_t proto) {
  return proto == IPPROTO_TCP || proto == IPPROTO_UDP || proto == IPPROTO_UDPLITE || proto == IPPROTO_SCTP ||
         proto == IPPROTO_DCCP;
}

int put_original_tuple(nl_msg* message, int family, uint8_t proto, const uint8_t* src, const uint8_t* dst,
                       uint16_t sport_be, uint16_t dport_be) {
  const int address_len = family == AF_INET ? 4 : 16;
  nlattr* tuple = nla_nest_start(message, CTA_TUPLE_ORIG);
  nlattr* ip = nla_nest_start(message, CTA_TUPLE_IP);
  if (tuple == nullptr || ip == nullptr) {
    return -1;
  }
  const int src_kind = family == AF_INET ? CTA_IP_V4_SRC : CTA_IP_V6_SRC;
  const int dst_kind = family == AF_INET ? CTA_IP_V4_DST : CTA_IP_V6_DST;
  if (nla_put(message, src_kind, address_len, src) < 0 || nla_put(message, dst_kind, address_len, dst) < 0) {
    return -1;
  }
  nla_nest_end(message, ip);
  nlattr* protocol = nla_nest_start(message, CTA_TUPLE_PROTO);
  if (protocol == nullptr || nla_put_u8(message, CTA_PROTO_NUM, proto) < 0 ||
      nla_put_u16(message, CTA_PROTO_SRC_PORT, sport_be) < 0 ||
      nla_put_u16(message, CTA_PROTO_DST_PORT, dport_be) < 0) {
    return -1;
  }
  nla_nest_end(message, protocol);
  nla_nest_end(message, tuple);
  return 0;
}

std::string hex(uint32_t value) {
  char text[16];
  std::snprintf(text, sizeof text, "0x%x", value);
  return text;
}

}  // namespace

ConntrackDeleteResult conntrack_delete_by_mark(uint32_t mark, uint32_t mask) {
  if (mask == 0 || (mark & mask) == 0) {
    throw std::invalid_argument("conntrack: refusing to delete by mark " + hex(mark) + "/" + hex(mask) +
                                ": it would match every unmarked flow (uplink id 0 or unknown?)");
  }
  SocketPtr sock = connect_ctnetlink();
  ConntrackDeleteResult result;
  PendingDeletes pending;
  uint32_t seq = 1;
  for (uint8_t family : {uint8_t{AF_INET}, uint8_t{AF_INET6}}) {
    dump_marked(sock.get(), DumpFilter{family, mark & mask, mask}, seq++, &pending, &result);
  }
  send_deletes(sock.get(), pending, &result);
  return result;
}

bool conntrack_delete_tuple(int family, uint8_t proto, const uint8_t* src, const uint8_t* dst,
                            uint16_t sport_be, uint16_t dport_be) {
  if (family != AF_INET && family != AF_INET6) {
    throw std::invalid_argument("conntrack: delete_tuple: family " + std::to_string(family) +
                                " is neither AF_INET nor AF_INET6");
  }
  if (!has_ports(proto)) {
    throw std::invalid_argument("conntrack: delete_tuple: protocol " + std::to_string(proto) +
                                " has no ports (TCP, UDP, UDP-Lite, SCTP or DCCP only)");
  }
  SocketPtr sock = connect_ctnetlink();
  MessagePtr request(
      nfnlmsg_alloc_simple(NFNL_SUBSYS_CTNETLINK, IPCTNL_MSG_CT_DELETE, 0, static_cast<uint8_t>(family), 0));
  if (!request || put_original_tuple(request.get(), family, proto, src, dst, sport_be, dport_be) < 0) {
    throw_errno(ENOMEM, "cannot build the delete request");
  }
  const int err = send_request(sock.get(), request.get());
  if (err == -ENOENT) {
    return false;
  }
  if (err < 0) {
    throw_errno(-err, "deleting one entry by its original tuple");
  }
  return true;
}

}  // namespace uplinkd::netlink
