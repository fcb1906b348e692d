// Named nft sets through libnftables' JSON output (parsed by nft_set_parse.cpp).
#include "netlink/nft_sets.h"

#include <arpa/inet.h>
#include <linux/netfilter/nf_tables.h>
#include <linux/netfilter/nfnetlink.h>
#include <linux/netlink.h>
#include <nftables/libnftables.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <optional>

namespace uplinkd::netlink {
namespace {

constexpr const char* kPreferredFamily = "inet";  // OpenWrt's fw4 puts its sets in table inet fw4
constexpr const char* kPreferredTable = "fw4";

struct NftResult {
  int status = -1;     // nft_run_cmd_from_buffer's result; 0 is success
  std::string output;  // JSON
  std::string error;   // nft's own error text, or why it did not run
  [[nodiscard]] bool no_such_object() const {
    return error.find("No such file or directory") != std::string::npos;
  }
};

// One command in a fresh context, so it runs in the calling thread's current network namespace.
NftResult run_nft(const std::string& command) {
  NftResult r;
  nft_ctx* ctx = nft_ctx_new(NFT_CTX_DEFAULT);
  if (ctx == nullptr) {
    r.error = "libnftables could not make a context (out of memory?)";
    return r;
  }
  nft_ctx_output_set_flags(ctx, NFT_CTX_OUTPUT_JSON);
  nft_ctx_buffer_output(ctx);
  nft_ctx_buffer_error(ctx);
  r.status = nft_run_cmd_from_buffer(ctx, command.c_str());
  const char* out = nft_ctx_get_output_buffer(ctx);
  const char* err = nft_ctx_get_error_buffer(ctx);
  r.output = out != nullptr ? out : "";
  r.error = err != nullptr ? err : "";
  while (!r.error.empty() && (r.error.back() == '\n' || r.error.back() == ' ')) r.error.pop_back();
  nft_ctx_free(ctx);
  return r;
}

// nft's grammar for an unquoted name; anything else (a `;` above all) is never put into a command.
bool is_nft_identifier(const std::string& s) {
  if (s.empty() || s.size() > 255) return false;
  auto letter = [](char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); };
  auto digit = [](char c) { return c >= '0' && c <= '9'; };
  if (!letter(s[0]) && s[0] != '_') return false;
  return std::all_of(s.begin(), s.end(), [&](char c) {
    return letter(c) || digit(c) || c == '_' || c == '.' || c == '/' || c == '-';
  });
}

}  // namespace

std::optional<uint32_t> nft_ruleset_generation() {
  const int fd = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_NETFILTER);
  if (fd < 0) return std::nullopt;
  const timeval wait{1, 0};  // the kernel answers at once; never block the daemon's loop for long
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &wait, sizeof wait);
  struct {
    nlmsghdr header;
    nfgenmsg body;
  } request{};
  request.header.nlmsg_len = sizeof request;
  request.header.nlmsg_type = (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_GETGEN;
  request.header.nlmsg_flags = NLM_F_REQUEST;
  request.header.nlmsg_seq = 1;
  request.body.nfgen_family = AF_UNSPEC;
  request.body.version = NFNETLINK_V0;
  sockaddr_nl kernel{};
  kernel.nl_family = AF_NETLINK;
  std::optional<uint32_t> generation;
  alignas(nlmsghdr) char reply[512];
  if (sendto(fd, &request, sizeof request, 0, reinterpret_cast<sockaddr*>(&kernel), sizeof kernel) ==
      static_cast<ssize_t>(sizeof request)) {
    const ssize_t got = recv(fd, reply, sizeof reply, 0);
    const auto* h = reinterpret_cast<const nlmsghdr*>(reply);
    if (got >= static_cast<ssize_t>(NLMSG_HDRLEN + sizeof(nfgenmsg)) &&
        NLMSG_OK(h, static_cast<size_t>(got)) &&
        h->nlmsg_type == ((NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWGEN)) {
      // Attributes follow the nfgenmsg: NFTA_GEN_ID is a big-endian u32.
      size_t at = NLMSG_HDRLEN + NLMSG_ALIGN(sizeof(nfgenmsg));
      while (at + sizeof(nlattr) <= h->nlmsg_len) {
        const auto* attr = reinterpret_cast<const nlattr*>(reply + at);
        if (attr->nla_len < sizeof(nlattr) || at + attr->nla_len > h->nlmsg_len) break;
        if ((attr->nla_type & NLA_TYPE_MASK) == NFTA_GEN_ID &&
            attr->nla_len >= NLA_HDRLEN + sizeof(uint32_t)) {
          uint32_t id = 0;
          std::memcpy(&id, reply + at + NLA_HDRLEN, sizeof id);
          generation = ntohl(id);
          break;
        }
        at += NLA_ALIGN(attr->nla_len);
      }
    }
  }
  close(fd);
  return generation;
}

SetLookup NftSetReader::read(const std::string& name, NftSet* out, std::string* error) {
  if (!is_nft_identifier(name)) {
    *error =
        "'" + name + "' is not a name nft accepts (letters, digits, _ . / -, starting with a letter or _)";
    return SetLookup::kError;
  }
  auto list_set = [&](const std::string& family, const std::string& table) {
    return run_nft("list set " + family + " " + table + " " + name);
  };
  auto parsed = [&](const NftResult& r) {
    std::string why = parse_nft_set_json(r.output, out);
    if (why.empty()) return SetLookup::kFound;
    *error = why;
    return SetLookup::kError;
  };

  // Where it was last time: one command while it stays there.
  auto known = std::find_if(known_.begin(), known_.end(), [&](const Location& l) { return l.name == name; });
  if (known != known_.end()) {
    NftResult r = list_set(known->family, known->table);
    if (r.status == 0) return parsed(r);
    known_.erase(known);
  }

  NftResult tables = run_nft("list tables");
  if (tables.status != 0) {
    *error = "listing nft tables: " + (tables.error.empty() ? std::string("failed") : tables.error);
    return SetLookup::kError;
  }
  auto candidates = parse_nft_tables_json(tables.output);
  // inet fw4 first: when it has the set, no other table is asked (OpenWrt's sets win).
  std::stable_partition(candidates.begin(), candidates.end(), [](const auto& t) {
    return t.first == kPreferredFamily && t.second == kPreferredTable;
  });
  std::vector<Location> hits;
  NftResult found;
  for (const auto& [family, table] : candidates) {
    if (!is_nft_identifier(family) || !is_nft_identifier(table)) continue;
    NftResult r = list_set(family, table);
    if (r.status != 0) {
      if (r.no_such_object()) continue;
      *error = "reading nft set " + name + " in table " + family + " " + table + ": " + r.error;
      return SetLookup::kError;
    }
    hits.push_back(Location{name, family, table});
    found = std::move(r);
    if (family == kPreferredFamily && table == kPreferredTable) break;
  }
  if (hits.empty()) return SetLookup::kMissing;
  if (hits.size() > 1) {
    std::string tables_text;
    for (const auto& h : hits) tables_text += (tables_text.empty() ? "" : " and ") + h.family + " " + h.table;
    *error = "nft set " + name + " exists in tables " + tables_text +
             "; rename one of them, or keep the one the rule means in table inet fw4";
    return SetLookup::kError;
  }
  known_.push_back(hits.front());
  return parsed(found);
}

}  // namespace uplinkd::netlink
