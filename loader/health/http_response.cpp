#include "health/http_response.h"

namespace uplinkd::health {
namespace {

bool is_digit(char c) { return c >= '0' && c <= '9'; }

// "HTTP/1.1 200 OK" (line without its end): the status, or 0 when the line is not a status line.
int status_of(std::string_view line) {
  constexpr std::string_view kPrefix = "HTTP/";
  // HTTP/d.d SP ddd, then end of line or SP reason
  if (line.size() < kPrefix.size() + 7 || line.substr(0, kPrefix.size()) != kPrefix) return 0;
  std::string_view rest = line.substr(kPrefix.size());
  if (!is_digit(rest[0]) || rest[1] != '.' || !is_digit(rest[2]) || rest[3] != ' ') return 0;
  if (!is_digit(rest[4]) || !is_digit(rest[5]) || !is_digit(rest[6])) return 0;
  if (rest.size() > 7 && rest[7] != ' ') return 0;
  return (rest[4] - '0') * 100 + (rest[5] - '0') * 10 + (rest[6] - '0');
}

// True while `received` can still become an "HTTP/" status line (checked before the line ends, so a
// server speaking something else fails at once instead of at the timeout).
bool could_be_status_line(std::string_view received) {
  constexpr std::string_view kPrefix = "HTTP/";
  const size_t n = received.size() < kPrefix.size() ? received.size() : kPrefix.size();
  return received.substr(0, n) == kPrefix.substr(0, n);
}

}  // namespace

HttpHead parse_http_head(std::string_view received) {
  HttpHead head;
  if (!could_be_status_line(received)) {
    head.state = HttpHeadState::Malformed;
    return head;
  }
  const size_t line_end = received.find('\n');
  if (line_end == std::string_view::npos) {
    head.state = received.size() > kMaxHttpHead ? HttpHeadState::Malformed : HttpHeadState::Incomplete;
    return head;
  }
  std::string_view line = received.substr(0, line_end);
  if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
  const int status = status_of(line);
  if (status == 0) {
    head.state = HttpHeadState::Malformed;
    return head;
  }
  // The header block ends at the first empty line after the status line.
  size_t pos = line_end + 1;
  while (pos <= received.size()) {
    const size_t next = received.find('\n', pos);
    if (next == std::string_view::npos) break;
    std::string_view header = received.substr(pos, next - pos);
    if (header.empty() || header == "\r") {
      head.state = HttpHeadState::Complete;
      head.status = status;
      return head;
    }
    pos = next + 1;
  }
  head.state = received.size() > kMaxHttpHead ? HttpHeadState::Malformed : HttpHeadState::Incomplete;
  return head;
}

bool http_status_counts_as_reply(int status) { return status >= 200 && status <= 499; }

}  // namespace uplinkd::health
