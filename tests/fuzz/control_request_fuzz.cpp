// What a client may send to the control socket, as the server reads it: control::scan_request finds
// the request line (with and without end of input), parse_request makes it a request or a reason.
// Neither throws; a request has a non-empty "command" string; an error is printable ASCII, so it is
// always written back as JSON; the permission check answers for any verb.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "control/request.h"

namespace {

void check(std::string_view line) {
  using namespace uplinkd::control;
  nlohmann::json request;
  const std::string error = parse_request(line, &request);
  if (error.empty()) {
    if (!request.is_object()) std::abort();
    const auto command = request.find("command");
    if (command == request.end() || !command->is_string()) std::abort();
    const std::string& verb = command->get_ref<const std::string&>();
    if (verb.empty()) std::abort();
    (void)request.dump();  // the parser accepted only valid UTF-8: this must not throw
    const std::string refused = refusal(verb, Peer{1000, 1000, {4242}}, Access{4242, "uplinkd"});
    if (refused.empty() != is_read_only(verb)) std::abort();
    if (!refusal(verb, Peer{0, 0, {}}, Access{}).empty()) std::abort();
  } else {
    if (error.rfind("bad request: ", 0) != 0 || !request.is_null()) std::abort();
    for (char c : error) {
      if (c < 0x20 || c >= 0x7f) std::abort();
    }
    (void)nlohmann::json{{"error", error}}.dump();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace uplinkd::control;
  const std::string_view bytes(reinterpret_cast<const char*>(data), size);
  for (bool eof : {false, true}) {
    const Scan s = scan_request(bytes, eof);
    if (s.kind == Scan::Kind::Line) {
      if (s.line.size() > kMaxRequestBytes || s.line.find('\n') != std::string_view::npos) std::abort();
      check(s.line);
    } else if (s.kind == Scan::Kind::TooLarge && size <= kMaxRequestBytes) {
      std::abort();
    }
  }
  return 0;
}
