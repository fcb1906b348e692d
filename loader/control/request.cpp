#include "control/request.h"

#include <algorithm>
#include <array>
#include <charconv>

namespace uplinkd::control {
namespace {

constexpr const char* kExample = R"(; expected one JSON object such as {"command":"status"})";
constexpr size_t kMaxQuoted = 64;   // of a verb quoted in an answer
constexpr size_t kMaxDetail = 200;  // of the JSON parser's message

// True when brackets outside strings nest deeper than kMaxRequestDepth. Malformed input is left to
// the parser: this only bounds the work and the nesting it may be given.
bool too_deep(std::string_view line) {
  int depth = 0;
  bool in_string = false;
  bool escaped = false;
  for (char c : line) {
    if (in_string) {
      if (escaped) {
        escaped = false;
      } else if (c == '\\') {
        escaped = true;
      } else if (c == '"') {
        in_string = false;
      }
    } else if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      if (++depth > kMaxRequestDepth) return true;
    } else if (c == ']' || c == '}') {
      --depth;
    }
  }
  return false;
}

bool all_blank(std::string_view line) {
  return std::all_of(line.begin(), line.end(), [](char c) { return c == ' ' || c == '\t' || c == '\r'; });
}

}  // namespace

// `text` as printable ASCII ('?' for anything else), cut to `limit` characters with "...".
std::string printable(std::string_view text, size_t limit) {
  std::string out;
  for (char c : text.substr(0, limit)) {
    out += c >= 0x20 && c < 0x7f ? c : '?';
  }
  if (text.size() > limit) out += "...";
  return out;
}

// The parser's message without its "[json.exception.parse_error.101] " prefix.
std::string parse_detail(const nlohmann::json::exception& e) {
  std::string_view what = e.what();
  if (!what.empty() && what.front() == '[') {
    const size_t end = what.find("] ");
    if (end != std::string_view::npos) what.remove_prefix(end + 2);
  }
  return printable(what, kMaxDetail);
}

Scan scan_request(std::string_view buffer, bool eof) {
  const size_t newline = buffer.find('\n');
  if (newline != std::string_view::npos) {
    if (newline > kMaxRequestBytes) return {Scan::Kind::TooLarge, {}};
    std::string_view line = buffer.substr(0, newline);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    return {Scan::Kind::Line, line};
  }
  if (buffer.size() > kMaxRequestBytes) return {Scan::Kind::TooLarge, {}};
  if (!eof) return {Scan::Kind::Incomplete, {}};
  if (buffer.empty()) return {Scan::Kind::Empty, {}};
  return {Scan::Kind::Line, buffer};
}

std::string parse_request(std::string_view line, nlohmann::json* request) {
  *request = nullptr;
  if (all_blank(line)) return std::string("bad request: empty line") + kExample;
  if (too_deep(line)) {
    return "bad request: JSON nested deeper than " + std::to_string(kMaxRequestDepth) + " levels" + kExample;
  }
  nlohmann::json parsed;
  try {
    parsed = nlohmann::json::parse(line);
  } catch (const nlohmann::json::exception& e) {  // parse_error, and out_of_range for a number like 1E400
    return "bad request: not JSON (" + parse_detail(e) + ")" + kExample;
  }
  if (!parsed.is_object()) return std::string("bad request: got ") + parsed.type_name() + kExample;
  const auto command = parsed.find("command");
  if (command == parsed.end()) return std::string(R"(bad request: no "command" in the object)") + kExample;
  if (!command->is_string()) {
    return std::string(R"(bad request: "command" is a )") + command->type_name() + ", not a string" +
           kExample;
  }
  if (command->get_ref<const std::string&>().empty()) {
    return std::string(R"(bad request: "command" is empty)") + kExample;
  }
  *request = std::move(parsed);
  return {};
}

std::string too_large_error() {
  return "request too large (limit " + std::to_string(kMaxRequestBytes) + " bytes)";
}

bool is_read_only(std::string_view verb) {
  static constexpr std::array<std::string_view, 7> kReadOnly = {
      "status", "interfaces", "policies", "rules", "connected", "flows", "wireguard"};
  return std::find(kReadOnly.begin(), kReadOnly.end(), verb) != kReadOnly.end();
}

Access access_from(const config::Globals& globals) {
  if (!globals.control_group) return {};
  return {static_cast<gid_t>(globals.control_group->gid), globals.control_group->name};
}

bool in_group(const Peer& peer, gid_t group) {
  return peer.gid == group || std::find(peer.groups.begin(), peer.groups.end(), group) != peer.groups.end();
}

std::string refusal(std::string_view verb, const Peer& peer, const Access& access) {
  if (peer.uid == 0) return {};
  const bool read_only = is_read_only(verb);
  if (read_only && access.group && in_group(peer, *access.group)) return {};
  std::string out = "permission denied: '" + printable(verb, kMaxQuoted) + "' needs root";
  if (read_only && access.group) out += " or group " + access.group_name;
  return out;
}

std::vector<gid_t> groups_from_proc_status(std::string_view status) {
  std::vector<gid_t> groups;
  constexpr std::string_view kKey = "Groups:";
  size_t at = status.rfind(kKey, 0) == 0 ? 0 : status.find("\n" + std::string(kKey));
  if (at == std::string_view::npos) return groups;
  if (status[at] == '\n') ++at;
  std::string_view rest = status.substr(at + kKey.size());
  rest = rest.substr(0, rest.find('\n'));
  while (!rest.empty()) {
    const size_t start = rest.find_first_not_of(" \t");
    if (start == std::string_view::npos) break;
    rest.remove_prefix(start);
    gid_t gid = 0;
    auto [end, ec] = std::from_chars(rest.data(), rest.data() + rest.size(), gid);
    if (ec != std::errc()) break;
    groups.push_back(gid);
    rest.remove_prefix(static_cast<size_t>(end - rest.data()));
  }
  return groups;
}

}  // namespace uplinkd::control
