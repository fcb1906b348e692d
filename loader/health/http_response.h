// The part of an HTTP response httping waits for: the status line and the header block. Pure
// functions, so the parsing is unit-tested without sockets (tests/unit/http_response_test.cpp).
#pragma once

#include <string_view>

namespace uplinkd::health {

enum class HttpHeadState {
  Incomplete,  // no blank line yet: read more
  Complete,    // status line and headers up to the blank line
  Malformed,   // not an HTTP response (or headers beyond kMaxHttpHead without an end)
};

struct HttpHead {
  HttpHeadState state = HttpHeadState::Incomplete;
  int status = 0;  // the status code, when Complete
};

// Headers larger than this are not what a HEAD / of a health-check target sends.
inline constexpr size_t kMaxHttpHead = 16384;

// Reads `received` (everything read so far from the connection) as the head of an HTTP/1.x
// response: "HTTP/<d>.<d> <3 digits>[ <reason>]" then header lines, ended by an empty line. Line
// ends are CRLF, or a bare LF as most clients also accept.
HttpHead parse_http_head(std::string_view received);

// Whether a status counts as the target answering. httping, as mwan3 runs it (no -s), counts every
// response that has a header block, whatever its status; uplinkd counts 2xx, 3xx and 4xx (a 4xx
// such as 403 or 405 for HEAD / still proves the path and the server work) and refuses 1xx and 5xx
// (a 5xx is a server, proxy or captive portal failing to serve).
bool http_status_counts_as_reply(int status);

}  // namespace uplinkd::health
