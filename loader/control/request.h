// Control socket requests without the socket: where a request line ends, what it says, and whether
// the peer that sent it may make it. Pure functions, unit-tested and fuzzed without root.
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "config/config.h"

namespace uplinkd::control {

// A request is one line of JSON; longer lines are refused.
constexpr size_t kMaxRequestBytes = size_t{64} * 1024;
// Requests are flat objects; deeper nesting is refused before the JSON parser sees it.
constexpr int kMaxRequestDepth = 32;

// What the bytes a client has sent so far amount to.
struct Scan {
  enum class Kind {
    Incomplete,  // no newline yet (and no end of input): wait for more
    Empty,       // end of input with nothing sent
    Line,        // a request line: `line`, without its newline (or all that came before end of input)
    TooLarge,    // more than kMaxRequestBytes before the newline
  };
  Kind kind = Kind::Incomplete;
  std::string_view line;  // into the scanned buffer
};

// `eof`: the client shut down its side, so what it sent without a newline is its request.
Scan scan_request(std::string_view buffer, bool eof);

// A request line to a request: empty, with `*request` an object with a non-empty "command" string;
// else the error answer, "bad request: ..." in printable ASCII, with `*request` left null.
std::string parse_request(std::string_view line, nlohmann::json* request);

// `text` as printable ASCII ('?' for anything else), cut to `limit` characters with "...": for
// errors that quote what a client sent (the control socket, the rpcd plugin's arguments).
std::string printable(std::string_view text, size_t limit);

// A JSON parser's message without its "[json.exception.parse_error.101] " prefix, printable.
std::string parse_detail(const nlohmann::json::exception& e);

// The error answer to a line longer than kMaxRequestBytes.
std::string too_large_error();

// Verbs that only read the daemon's state. Every other verb (reload, interface_info, stop, restart,
// and any verb this list does not know) changes something or hands out what `uplinkctl use` needs.
bool is_read_only(std::string_view verb);

// Who may use the socket besides root: members of `group` may use the read-only verbs.
struct Access {
  std::optional<gid_t> group;  // unset: root only
  std::string group_name;      // for messages: "... needs root or group <group_name>"
};

// The access `option control_group` asks for.
Access access_from(const config::Globals& globals);

// The process at the other end, from SO_PEERCRED (uid, gid) and SO_PEERGROUPS or /proc (groups).
struct Peer {
  uid_t uid = static_cast<uid_t>(-1);
  gid_t gid = static_cast<gid_t>(-1);
  std::vector<gid_t> groups;  // supplementary groups
};

bool in_group(const Peer& peer, gid_t group);

// Empty when `peer` may send `verb` under `access`; else the error answer:
// "permission denied: 'reload' needs root", "permission denied: 'status' needs root or group adm".
std::string refusal(std::string_view verb, const Peer& peer, const Access& access);

// The supplementary groups in the text of /proc/<pid>/status (its "Groups:" line); empty without one.
std::vector<gid_t> groups_from_proc_status(std::string_view status);

}  // namespace uplinkd::control
