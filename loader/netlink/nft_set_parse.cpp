// Prefixes of an nft set from libnftables' JSON output.
#include "netlink/nft_set_parse.h"

#include <sys/socket.h>

#include <nlohmann/json.hpp>
#include <optional>

namespace uplinkd::netlink {
namespace {

using u128 = unsigned __int128;
using nlohmann::json;

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

// A string member of a JSON object; "" when it is missing or not a string. libnftables prints
// strings there, but a value of another type must be a reason, never a json::type_error.
std::string string_member(const json& object, const char* key) {
  const auto it = object.find(key);  // end() when `object` is not an object
  return it != object.end() && it->is_string() ? it->get<std::string>() : "";
}

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
    // Compared as 64 bits: get<unsigned>() would take 2^32 + 24 for 24.
    if (!len.is_number_unsigned() || len.get<uint64_t>() > static_cast<uint64_t>(bits_of(family))) {
      return "prefix " + p.dump() + " has no valid length";
    }
    out.push_back(make_prefix(*a, static_cast<int>(len.get<uint64_t>())));
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
    if (!s.is_object()) return "libnftables printed a set that is not a JSON object";
    out->family = string_member(s, "family");
    out->table = string_member(s, "table");
    out->name = string_member(s, "name");
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
      if (!error.empty()) return error.insert(0, where + ": ");
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
    if (!item.is_object() || !item.contains("table") || !item["table"].is_object()) continue;
    out.emplace_back(string_member(item["table"], "family"), string_member(item["table"], "name"));
  }
  return out;
}

}  // namespace uplinkd::netlink
