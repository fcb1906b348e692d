// Control socket requests without a socket: where a line ends, what is a request, which verbs only
// read, and who may send which (loader/control/request.h).
#include <gtest/gtest.h>

#include <string>

#include "control/request.h"

namespace uplinkd::control {
namespace {

bool starts_with(const std::string& s, std::string_view prefix) { return s.rfind(prefix, 0) == 0; }

// ---- where a request line ends -----------------------------------------------------------------

TEST(ControlRequestScan, LineEndsAtTheFirstNewline) {
  Scan s = scan_request("{\"command\":\"status\"}\nrest", false);
  EXPECT_EQ(s.kind, Scan::Kind::Line);
  EXPECT_EQ(s.line, "{\"command\":\"status\"}");
  s = scan_request("{\"command\":\"status\"}\r\n", false);
  EXPECT_EQ(s.kind, Scan::Kind::Line);
  EXPECT_EQ(s.line, "{\"command\":\"status\"}");
}

TEST(ControlRequestScan, WithoutNewlineWaitsUntilEndOfInput) {
  EXPECT_EQ(scan_request("", false).kind, Scan::Kind::Incomplete);
  EXPECT_EQ(scan_request("{\"comm", false).kind, Scan::Kind::Incomplete);
  EXPECT_EQ(scan_request("", true).kind, Scan::Kind::Empty);
  Scan s = scan_request("{\"command\":\"status\"}", true);
  EXPECT_EQ(s.kind, Scan::Kind::Line);
  EXPECT_EQ(s.line, "{\"command\":\"status\"}");
}

TEST(ControlRequestScan, SizeLimitIsOnTheLineWithoutItsNewline) {
  std::string at_limit(kMaxRequestBytes, 'x');
  EXPECT_EQ(scan_request(at_limit, false).kind, Scan::Kind::Incomplete);
  EXPECT_EQ(scan_request(at_limit + "\n", false).kind, Scan::Kind::Line);
  EXPECT_EQ(scan_request(at_limit, true).kind, Scan::Kind::Line);
  EXPECT_EQ(scan_request(at_limit + "x", false).kind, Scan::Kind::TooLarge);
  EXPECT_EQ(scan_request(at_limit + "x", true).kind, Scan::Kind::TooLarge);
  EXPECT_EQ(scan_request(at_limit + "x\n", false).kind, Scan::Kind::TooLarge);
  EXPECT_EQ(too_large_error(), "request too large (limit 65536 bytes)");
}

// ---- what is a request -------------------------------------------------------------------------

TEST(ControlRequestParse, AcceptsAnObjectWithACommandString) {
  nlohmann::json r;
  ASSERT_EQ(parse_request(R"({"command":"interface_info","interface":"wan"})", &r), "");
  EXPECT_EQ(r["command"], "interface_info");
  EXPECT_EQ(r["interface"], "wan");
  EXPECT_EQ(parse_request(R"(  {"command" : "status"}  )", &r), "");
  EXPECT_EQ(r, (nlohmann::json{{"command", "status"}}));
}

TEST(ControlRequestParse, RefusesEverythingElseWithAReason) {
  const struct {
    std::string line;
    std::string fragment;
  } cases[] = {
      {"", "bad request: empty line"},
      {"  \r", "bad request: empty line"},
      {"status", "bad request: not JSON (parse error at line 1, column 1: syntax error"},
      {"{\"command\":\"status\"} trailing", "bad request: not JSON"},
      {"{\"command\":\"st\xff\"}", "bad request: not JSON"},  // not UTF-8
      {R"({"command":"stop","n":2E2222})", "bad request: not JSON (number overflow parsing '2E2222')"},
      {"[1,2]", "bad request: got array"},
      {"\"status\"", "bad request: got string"},
      {"null", "bad request: got null"},
      {"{}", R"(bad request: no "command" in the object)"},
      {R"({"command":5})", R"(bad request: "command" is a number, not a string)"},
      {R"({"command":["status"]})", R"(bad request: "command" is a array, not a string)"},
      {R"({"command":""})", R"(bad request: "command" is empty)"},
      {std::string(40, '[') + std::string(40, ']'), "bad request: JSON nested deeper than 32 levels"},
      {std::string(20000, '{'), "bad request: JSON nested deeper than 32 levels"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.line.substr(0, 60));
    nlohmann::json r = {{"left", "over"}};
    const std::string error = parse_request(c.line, &r);
    EXPECT_NE(error.find(c.fragment), std::string::npos) << error;
    EXPECT_TRUE(starts_with(error, "bad request: ")) << error;
    EXPECT_NE(error.find(R"(expected one JSON object such as {"command":"status"})"), std::string::npos);
    EXPECT_TRUE(r.is_null());
    for (char ch : error) EXPECT_TRUE(ch >= 0x20 && ch < 0x7f) << error;  // printable, so dumpable
  }
}

TEST(ControlRequestParse, BracketsInsideStringsDoNotCountAsNesting) {
  const std::string line = R"({"command":"status","x":")" + std::string(100, '[') + R"(\"["})";
  nlohmann::json r;
  EXPECT_EQ(parse_request(line, &r), "");
}

TEST(ControlRequestParse, LongParserMessagesAreCut) {
  // A long invalid token: the parser's "last read" would quote all of it.
  const std::string line = "{\"command\":\"" + std::string(5000, 'a') + "\\q\"}";
  nlohmann::json r;
  const std::string error = parse_request(line, &r);
  EXPECT_TRUE(starts_with(error, "bad request: not JSON")) << error;
  EXPECT_LT(error.size(), 400U);
}

// ---- verbs and permissions ---------------------------------------------------------------------

TEST(ControlVerbs, ReadOnlyVerbs) {
  for (const char* verb : {"status", "interfaces", "policies", "rules", "connected", "flows", "wireguard"}) {
    EXPECT_TRUE(is_read_only(verb)) << verb;
  }
  for (const char* verb :
       {"reload", "interface_info", "stop", "restart", "use", "frobnicate", "", "Status", "status "}) {
    EXPECT_FALSE(is_read_only(verb)) << verb;
  }
}

TEST(ControlPermissions, RootMayDoEverything) {
  const Peer root{0, 0, {}};
  for (const Access& access : {Access{}, Access{gid_t{4242}, "uplinkd"}}) {
    for (const char* verb : {"status", "reload", "interface_info", "stop", "restart", "frobnicate"}) {
      EXPECT_EQ(refusal(verb, root, access), "") << verb;
    }
  }
}

TEST(ControlPermissions, GroupMembersMayOnlyRead) {
  const Access access{gid_t{4242}, "uplinkd"};
  const Peer primary{1000, 4242, {}};
  const Peer supplementary{1000, 1000, {27, 4242}};
  for (const Peer& member : {primary, supplementary}) {
    EXPECT_EQ(refusal("status", member, access), "");
    EXPECT_EQ(refusal("wireguard", member, access), "");
    EXPECT_EQ(refusal("reload", member, access), "permission denied: 'reload' needs root");
    EXPECT_EQ(refusal("interface_info", member, access), "permission denied: 'interface_info' needs root");
    EXPECT_EQ(refusal("stop", member, access), "permission denied: 'stop' needs root");
    EXPECT_EQ(refusal("restart", member, access), "permission denied: 'restart' needs root");
    EXPECT_EQ(refusal("frobnicate", member, access), "permission denied: 'frobnicate' needs root");
  }
}

TEST(ControlPermissions, OthersMayDoNothing) {
  const Peer other{1000, 1000, {27, 100}};
  EXPECT_EQ(refusal("status", other, Access{gid_t{4242}, "uplinkd"}),
            "permission denied: 'status' needs root or group uplinkd");
  EXPECT_EQ(refusal("reload", other, Access{gid_t{4242}, "uplinkd"}),
            "permission denied: 'reload' needs root");
  // Without a control group only root may ask anything, even a member of gid 0's group.
  EXPECT_EQ(refusal("status", other, Access{}), "permission denied: 'status' needs root");
  EXPECT_EQ(refusal("status", Peer{1000, 0, {0}}, Access{}), "permission denied: 'status' needs root");
  // An unknown peer (no credentials) is nobody.
  EXPECT_EQ(refusal("status", Peer{}, Access{gid_t{4242}, "uplinkd"}),
            "permission denied: 'status' needs root or group uplinkd");
}

TEST(ControlPermissions, QuotedVerbIsPrintableAndShort) {
  const std::string verb = "a\x01" + std::string(100, 'b');
  const std::string r = refusal(verb, Peer{1000, 1000, {}}, Access{});
  EXPECT_EQ(r, "permission denied: 'a?" + std::string(62, 'b') + "...' needs root");
}

TEST(ControlPermissions, AccessFromConfig) {
  config::Globals g;
  Access a = access_from(g);
  EXPECT_FALSE(a.group.has_value());
  g.control_group = config::ControlGroup{4242, "uplinkd"};
  a = access_from(g);
  ASSERT_TRUE(a.group.has_value());
  EXPECT_EQ(*a.group, 4242U);
  EXPECT_EQ(a.group_name, "uplinkd");
}

TEST(ControlPermissions, GroupsFromProcStatus) {
  const std::string status =
      "Name:\tcat\nUmask:\t0022\nUid:\t1000\t1000\t1000\t1000\nGid:\t1000\t1000\t1000\t1000\n"
      "FDSize:\t256\nGroups:\t4 24 27 4242 \nNStgid:\t1\n";
  EXPECT_EQ(groups_from_proc_status(status), (std::vector<gid_t>{4, 24, 27, 4242}));
  EXPECT_EQ(groups_from_proc_status("Groups:\t\nNStgid:\t1\n"), std::vector<gid_t>{});
  EXPECT_EQ(groups_from_proc_status("Groups:\t7"), std::vector<gid_t>{7});
  EXPECT_EQ(groups_from_proc_status("Name:\tx\n"), std::vector<gid_t>{});
  EXPECT_EQ(groups_from_proc_status("XGroups:\t5\n"), std::vector<gid_t>{});
  const Peer p{1000, 1000, groups_from_proc_status(status)};
  EXPECT_TRUE(in_group(p, 4242));
  EXPECT_TRUE(in_group(p, 1000));
  EXPECT_FALSE(in_group(p, 4243));
}

}  // namespace
}  // namespace uplinkd::control
