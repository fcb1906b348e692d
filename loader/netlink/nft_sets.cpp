// Named nft sets through libnftables' JSON output.
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
#include <nlohmann/json.hpp>
#include <optional>

namespace uplinkd::netlink {
namespace {

using u128 = unsigned __int128;
using nlohmann::json;

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

// ---- addresses as integers ---------------------------------------------------------------------

int bits_of(int family) { return family == AF_INET ? 32 : 128; }

u128 to_int(const IpAddress& a) {
  u128 v = 0;
  const int n = a.is_v4() ? 4 : 16;
  for (int i = 0; i < n; ++i) v = (v << 8) | a.bytes[i];
  return v;
}

IpAddress from_int(u128 v, int family) {
  IpAddress a;
  a.family = family;
  const int n = family == AF_INET ? 4 : 16;
  for (int i = n - 1; i >= 0; --i) {
    a.bytes[i] = static_cast<uint8_t>(v & 0xff);
    v >>= 8;
  }
  return a;
}

// All ones in the low `n` bits (n up to 128).
u128 low_ones(int n) { return n >= 128 ? ~u128{0} : (u128{1} << n) - 1; }

SetPrefix make_prefix(const IpAddress& address, int len) {
  const int bits = bits_of(address.family);
  const u128 host = low_ones(bits - len);
  return SetPrefix{from_int(to_int(address) & ~host, address.family), static_cast<uint8_t>(len)};
}

// ---- JSON elements -----------------------------------------------------------------------------

std::string family_word(int family) { return family == AF_INET ? "IPv4" : "IPv6"; }

std::optional<IpAddress> address_of(const json& j, int family, std::string* error) {
  if (!j.is_string()) {
    *error = "element " + j.dump() + " is not an address";
    return std::nullopt;
  }
  auto a = IpAddress::parse(j.get<std::string>());
  if (!a || a->family != family) {
    *error = "element " + j.dump() + " is not an " + family_word(family) + " address";
    return std::nullopt;
  }
  return a;
}

// One element of the set's "elem" list: an address, {"prefix"}, {"range"}, or {"elem": {"val"}}
// (an element with a timeout, counter or comment).
std::string add_element(const json& e, int family, std::vector<SetPrefix>& out) {
  std::string error;
  if (e.is_object() && e.contains("elem") && e["elem"].is_object() && e["elem"].contains("val")) {
    return add_element(e["elem"]["val"], family, out);
  }
  if (e.is_object() && e.contains("prefix") && e["prefix"].is_object()) {
    const json& p = e["prefix"];
    auto a = address_of(p.value("addr", json()), family, &error);
    if (!a) return error;
    const json len = p.value("len", json());
    if (!len.is_number_unsigned() || len.get<unsigned>() > static_cast<unsigned>(bits_of(family))) {
      return "prefix " + p.dump() + " has no valid length";
    }
    out.push_back(make_prefix(*a, static_cast<int>(len.get<unsigned>())));
    return "";
  }
  if (e.is_object() && e.contains("range") && e["range"].is_array() && e["range"].size() == 2) {
    auto first = address_of(e["range"][0], family, &error);
    auto last = first ? address_of(e["range"][1], family, &error) : std::nullopt;
    if (!last) return error;
    std::vector<SetPrefix> split = range_to_prefixes(*first, *last);
    if (split.empty()) return "range " + e["range"].dump() + " ends before it starts";
    out.insert(out.end(), split.begin(), split.end());
    return "";
  }
  auto a = address_of(e, family, &error);
  if (!a) return error;
  out.push_back(SetPrefix{*a, static_cast<uint8_t>(bits_of(family))});
  return "";
}

std::string describe_type(const json& type) {
  if (type.is_array()) {
    std::string joined;
    for (const auto& t : type)
      joined += (joined.empty() ? "" : " . ") + (t.is_string() ? t.get<std::string>() : t.dump());
    return "a concatenation (" + joined + ")";
  }
  return type.is_string() ? type.get<std::string>() : type.dump();
}

}  // namespace

std::string SetPrefix::str() const { return address.str() + "/" + std::to_string(len); }

std::vector<SetPrefix> range_to_prefixes(const IpAddress& first, const IpAddress& last) {
  std::vector<SetPrefix> out;
  if (first.family != last.family || (first.family != AF_INET && first.family != AF_INET6)) return out;
  const int bits = bits_of(first.family);
  u128 cur = to_int(first);
  const u128 end = to_int(last);
  // Bounded: each step covers the largest aligned block that fits, at most 2 * bits steps.
  for (int step = 0; cur <= end && step < 2 * bits + 2; ++step) {
    int size = 0;  // log2 of the block's address count
    while (size < bits && (cur & low_ones(size + 1)) == 0 && cur + low_ones(size + 1) <= end) ++size;
    out.push_back(SetPrefix{from_int(cur, first.family), static_cast<uint8_t>(bits - size)});
    const u128 block_last = cur + low_ones(size);
    if (block_last == end || block_last == low_ones(bits)) break;  // done, or the top of the space
    cur = block_last + 1;
  }
  return out;
}

std::string parse_nft_set_json(const std::string& json_text, NftSet* out) {
  const json doc = json::parse(json_text, nullptr, false);
  if (doc.is_discarded() || !doc.contains("nftables") || !doc["nftables"].is_array()) {
    return "libnftables printed something that is not its JSON ruleset";
  }
  for (const auto& item : doc["nftables"]) {
    if (!item.is_object() || !item.contains("set")) continue;
    const json& s = item["set"];
    out->family = s.value("family", "");
    out->table = s.value("table", "");
    out->name = s.value("name", "");
    const json type = s.value("type", json());
    const std::string where = "nft set " + out->name + " (table " + out->where() + ")";
    int family = 0;
    if (type == "ipv4_addr") family = AF_INET;
    if (type == "ipv6_addr") family = AF_INET6;
    if (family == 0) {
      return where + " holds " + describe_type(type) +
             ", not addresses; a rule's ipset must name a set of type ipv4_addr or ipv6_addr";
    }
    out->type = type.get<std::string>();
    out->prefixes.clear();
    for (const auto& e : s.value("elem", json::array())) {
      std::string error = add_element(e, family, out->prefixes);
      if (!error.empty()) return where + ": " + error;
    }
    return "";
  }
  return "libnftables listed no set";
}

std::vector<std::pair<std::string, std::string>> parse_nft_tables_json(const std::string& json_text) {
  std::vector<std::pair<std::string, std::string>> out;
  const json doc = json::parse(json_text, nullptr, false);
  if (doc.is_discarded() || !doc.contains("nftables") || !doc["nftables"].is_array()) return out;
  for (const auto& item : doc["nftables"]) {
    if (!item.is_object() || !item.contains("table")) continue;
    out.emplace_back(item["table"].value("family", ""), item["table"].value("name", ""));
  }
  return out;
}

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
