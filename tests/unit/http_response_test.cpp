// httping's response head: status line and header block (loader/health/http_response.h).
#include "health/http_response.h"

#include <gtest/gtest.h>

#include <string>

namespace uplinkd::health {
namespace {

TEST(HttpHead, CompleteResponseGivesItsStatus) {
  const HttpHead h = parse_http_head("HTTP/1.0 200 OK\r\nServer: x\r\nContent-Length: 0\r\n\r\n");
  EXPECT_EQ(h.state, HttpHeadState::Complete);
  EXPECT_EQ(h.status, 200);
}

TEST(HttpHead, BareLineFeedsAndNoReasonPhrase) {
  const HttpHead h = parse_http_head("HTTP/1.1 301\nLocation: /x\n\n");
  EXPECT_EQ(h.state, HttpHeadState::Complete);
  EXPECT_EQ(h.status, 301);
}

TEST(HttpHead, NoHeadersAfterTheStatusLine) {
  EXPECT_EQ(parse_http_head("HTTP/1.1 204 No Content\r\n\r\n").status, 204);
}

TEST(HttpHead, IncompleteUntilTheBlankLine) {
  EXPECT_EQ(parse_http_head("").state, HttpHeadState::Incomplete);
  EXPECT_EQ(parse_http_head("HTT").state, HttpHeadState::Incomplete);
  EXPECT_EQ(parse_http_head("HTTP/1.1 200 O").state, HttpHeadState::Incomplete);
  EXPECT_EQ(parse_http_head("HTTP/1.1 200 OK\r\n").state, HttpHeadState::Incomplete);
  EXPECT_EQ(parse_http_head("HTTP/1.1 200 OK\r\nServer: x\r\n").state, HttpHeadState::Incomplete);
}

TEST(HttpHead, MalformedAsSoonAsItCannotBeHttp) {
  EXPECT_EQ(parse_http_head("SSH-2.0-OpenSSH").state, HttpHeadState::Malformed);
  EXPECT_EQ(parse_http_head("\x16\x03\x01").state, HttpHeadState::Malformed);  // a TLS record
  EXPECT_EQ(parse_http_head("http/1.1 200 OK\r\n\r\n").state, HttpHeadState::Malformed);
  EXPECT_EQ(parse_http_head("HTTP/1.1 2000 OK\r\n\r\n").state, HttpHeadState::Malformed);
  EXPECT_EQ(parse_http_head("HTTP/1.1 20 OK\r\n\r\n").state, HttpHeadState::Malformed);
  EXPECT_EQ(parse_http_head("HTTP/11 200 OK\r\n\r\n").state, HttpHeadState::Malformed);
  EXPECT_EQ(parse_http_head("HTTP/1.1 abc OK\r\n\r\n").state, HttpHeadState::Malformed);
  EXPECT_EQ(parse_http_head("HTTP/1.1\r\n\r\n").state, HttpHeadState::Malformed);
}

TEST(HttpHead, EndlessHeadersAreMalformed) {
  std::string endless = "HTTP/1.1 200 OK\r\n";
  while (endless.size() <= kMaxHttpHead) endless += "X-Filler: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n";
  EXPECT_EQ(parse_http_head(endless).state, HttpHeadState::Malformed);
  EXPECT_EQ(parse_http_head(std::string(kMaxHttpHead + 1, 'H')).state, HttpHeadState::Malformed);
}

TEST(HttpHead, WhichStatusesCountAsAnAnswer) {
  EXPECT_FALSE(http_status_counts_as_reply(100));
  EXPECT_TRUE(http_status_counts_as_reply(200));
  EXPECT_TRUE(http_status_counts_as_reply(302));
  EXPECT_TRUE(http_status_counts_as_reply(404));  // httping counts it too: the server answered
  EXPECT_TRUE(http_status_counts_as_reply(405));
  EXPECT_FALSE(http_status_counts_as_reply(500));
  EXPECT_FALSE(http_status_counts_as_reply(503));
}

}  // namespace
}  // namespace uplinkd::health
