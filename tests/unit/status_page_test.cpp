// The status page at `/`: self-contained HTML, per uplink a card with its plot, then the last events.
#include "observability/status_page.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <limits>
#include <random>
#include <regex>
#include <string>
#include <vector>

namespace {

using uplinkd::observability::Event;
using uplinkd::observability::html_escape;
using uplinkd::observability::PageData;
using uplinkd::observability::PageTarget;
using uplinkd::observability::PageUplink;
using uplinkd::observability::PointState;
using uplinkd::observability::render_plot;
using uplinkd::observability::render_status_page;

constexpr int64_t kNs = 1000000000LL;
constexpr int64_t kNow = 10000 * kNs;
constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

size_t count(const std::string& haystack, const std::string& needle) {
  size_t n = 0;
  for (size_t at = haystack.find(needle); at != std::string::npos; at = haystack.find(needle, at + 1)) ++n;
  return n;
}

bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

// The uplink's card, from its opening tag to its closing one.
std::string section_of(const std::string& page, const std::string& id) {
  const size_t start = page.find("<section class=\"uplink\" id=\"uplink-" + id + "\"");
  if (start == std::string::npos) return "";
  return page.substr(start, page.find("</section>", start) - start);
}

// One point a minute over the last hour (61 points, the first at now - 3600 s), online, RTT 20 ms.
PageUplink hour_of_points(const std::string& name, size_t targets = 1) {
  PageUplink uplink;
  uplink.name = name;
  uplink.device = "eth1";
  uplink.state = "online";
  for (size_t t = 0; t < targets; ++t)
    uplink.targets.push_back({"192.0.2." + std::to_string(t + 1), "up", 20, 0});
  auto& h = uplink.history;
  h.rtt_ms.resize(targets);
  for (int i = 0; i <= 60; ++i) {
    h.t_ns.push_back(kNow - int64_t{60 - i} * 60 * kNs);
    h.state.push_back(PointState::Online);
    h.loss_pct.push_back(0);
    for (auto& row : h.rtt_ms) row.push_back(20);
  }
  return uplink;
}

PageData page_with(std::vector<PageUplink> uplinks) {
  PageData data;
  data.instance = "lab";
  data.version = "1.2.3";
  data.now_ns = kNow;
  data.now_unix_ms = 1717243200000LL;  // 2024-06-01 12:00:00 UTC
  data.span_s = 3600;
  data.refresh_s = 7;
  data.uplinks = std::move(uplinks);
  return data;
}

struct Box {
  double x = 0;
  double y = 0;
  double width = 0;
  double height = 0;
};

// The boxes of `<rect class="cls" x=".." y=".." width=".." height="..">`, in document order.
std::vector<Box> rects(const std::string& svg, const std::string& cls) {
  const std::regex re("<rect class=\"" + cls +
                      "\" x=\"([-0-9.]+)\" y=\"([-0-9.]+)\" width=\"([-0-9.]+)\" height=\"([-0-9.]+)\"");
  std::vector<Box> out;
  for (auto it = std::sregex_iterator(svg.begin(), svg.end(), re); it != std::sregex_iterator(); ++it) {
    out.push_back({std::stod((*it)[1]), std::stod((*it)[2]), std::stod((*it)[3]), std::stod((*it)[4])});
  }
  return out;
}

Box frame_of(const std::string& svg) {
  const auto frames = rects(svg, "frame");
  EXPECT_EQ(frames.size(), 1U) << svg;
  return frames.empty() ? Box{} : frames[0];
}

// The `points` attributes of the polylines of `cls` (and of one data-target when given).
std::vector<std::string> polylines(const std::string& svg, const std::string& cls,
                                   const std::string& target = "") {
  const std::string target_attr = target.empty() ? "" : " data-target=\"" + target + "\"";
  const std::regex re("<polyline class=\"" + cls + "\"" + target_attr + "[^>]*? points=\"([^\"]*)\"");
  std::vector<std::string> out;
  for (auto it = std::sregex_iterator(svg.begin(), svg.end(), re); it != std::sregex_iterator(); ++it) {
    out.push_back((*it)[1]);
  }
  return out;
}

std::vector<std::pair<double, double>> coordinates(const std::string& points) {
  std::vector<std::pair<double, double>> out;
  const std::regex re("([-0-9.]+),([-0-9.]+)");
  for (auto it = std::sregex_iterator(points.begin(), points.end(), re); it != std::sregex_iterator(); ++it) {
    out.emplace_back(std::stod((*it)[1]), std::stod((*it)[2]));
  }
  return out;
}

// Coordinates are printed with one decimal at most.
constexpr double kTolerance = 0.11;

TEST(StatusPage, IsSelfContainedWithoutScriptOrRemoteUrls) {
  PageData data = page_with({hour_of_points("wan", 2), hour_of_points("wanb")});
  data.events.push_back({data.now_unix_ms, "notice", "wan is online"});
  const std::string page = render_status_page(data);
  EXPECT_EQ(page.rfind("<!DOCTYPE html>", 0), 0U);
  EXPECT_FALSE(contains(page, "<script"));
  EXPECT_FALSE(contains(page, "http://"));
  EXPECT_FALSE(contains(page, "https://"));
  EXPECT_FALSE(contains(page, "<link"));
  EXPECT_FALSE(contains(page, "<img"));
  EXPECT_FALSE(contains(page, "url("));
  EXPECT_TRUE(contains(page, "<style>"));
  EXPECT_TRUE(contains(page, "</html>"));
}

TEST(StatusPage, MetaRefreshCarriesRefreshSeconds) {
  PageData data = page_with({});
  data.refresh_s = 13;
  EXPECT_TRUE(contains(render_status_page(data), "<meta http-equiv=\"refresh\" content=\"13\">"));
}

TEST(StatusPage, TitleAndHeaderShowInstanceVersionAndUtcTime) {
  const std::string page = render_status_page(page_with({}));
  EXPECT_TRUE(contains(page, "<title>uplinkd — lab</title>")) << page;
  EXPECT_TRUE(contains(page, "1.2.3"));
  EXPECT_TRUE(contains(page, "2024-06-01 12:00:00 UTC"));
}

TEST(StatusPage, EachUplinkSectionShowsItsNameAndStateWord) {
  PageUplink wan = hour_of_points("wan");
  PageUplink wanb = hour_of_points("wanb");
  wanb.state = "offline";
  PageUplink lte = hour_of_points("lte");
  lte.state = "connecting";
  const std::string page = render_status_page(page_with({wan, wanb, lte}));
  for (const auto& [name, state] : std::vector<std::pair<std::string, std::string>>{
           {"wan", "online"}, {"wanb", "offline"}, {"lte", "connecting"}}) {
    const std::string section = section_of(page, name);
    ASSERT_FALSE(section.empty()) << name;
    EXPECT_TRUE(contains(section, "<h2>" + name + " ")) << section;
    const std::string badge = "<span class=\"state state-" + state + "\">";
    EXPECT_TRUE(contains(section, badge + state + "</span>")) << section;
  }
}

// The path MTU figure (issue 16): the measured figure, or a dash while unknown.
TEST(StatusPage, PathMtuFigurePerUplink) {
  PageUplink wan = hour_of_points("wan");
  wan.path_mtu = 1400;
  PageUplink wanb = hour_of_points("wanb");
  const std::string page = render_status_page(page_with({wan, wanb}));
  EXPECT_TRUE(contains(section_of(page, "wan"), "<dt>path MTU</dt><dd>1400</dd>")) << section_of(page, "wan");
  EXPECT_TRUE(contains(section_of(page, "wanb"), "<dt>path MTU</dt><dd>—</dd>")) << section_of(page, "wanb");
}

TEST(StatusPage, OneSvgPerUplink) {
  const std::string page =
      render_status_page(page_with({hour_of_points("a"), hour_of_points("b"), hour_of_points("c")}));
  EXPECT_EQ(count(page, "<svg"), 3U);
  EXPECT_EQ(count(page, "</svg>"), 3U);
  EXPECT_EQ(count(section_of(page, "b"), "<svg class=\"plot\""), 1U);
}

TEST(StatusPage, NoUplinksSaysNoInterfacesAreConfigured) {
  const std::string page = render_status_page(page_with({}));
  EXPECT_TRUE(contains(page, "No interfaces are configured."));
  EXPECT_FALSE(contains(page, "<svg"));
}

TEST(StatusPage, HtmlEscapeEscapesTheFiveSpecialCharacters) {
  EXPECT_EQ(html_escape("a<b>&\"c'"), "a&lt;b&gt;&amp;&quot;c&#39;");
  EXPECT_EQ(html_escape("plain"), "plain");
  EXPECT_EQ(html_escape(""), "");
}

TEST(StatusPage, TextFromDataIsEscaped) {
  PageUplink uplink = hour_of_points("x<&\">y");
  uplink.device = "<dev>";
  uplink.targets[0].ip = "<ip>";
  PageData data = page_with({uplink});
  data.instance = "<inst>";
  data.version = "<ver>";
  data.events.push_back({data.now_unix_ms, "<lvl>", "<b>bold</b> & 'quoted'"});
  const std::string page = render_status_page(data);
  EXPECT_FALSE(contains(page, "x<&\">y"));
  EXPECT_TRUE(contains(page, "x&lt;&amp;&quot;&gt;y"));
  EXPECT_TRUE(contains(page, "id=\"uplink-x&lt;&amp;&quot;&gt;y\""));
  EXPECT_TRUE(contains(page, "aria-label=\"RTT and loss of x&lt;&amp;&quot;&gt;y over the last 60 min\""));
  for (const char* raw : {"<dev>", "<ip>", "<inst>", "<ver>", "<lvl>", "<b>"})
    EXPECT_FALSE(contains(page, raw)) << raw;
  EXPECT_TRUE(contains(page, "data-target=\"&lt;ip&gt;\""));
  EXPECT_TRUE(contains(page, "&lt;b&gt;bold&lt;/b&gt; &amp; &#39;quoted&#39;"));
}

TEST(StatusPage, PlotIsAnAccessibleSvg) {
  const std::string svg = render_plot(hour_of_points("wan"), kNow, 3600);
  EXPECT_EQ(svg.rfind("<svg class=\"plot\" viewBox=\"0 0 ", 0), 0U) << svg;
  EXPECT_TRUE(contains(svg, "role=\"img\""));
  EXPECT_TRUE(contains(svg, "aria-label=\"RTT and loss of wan over the last 60 min\""));
  EXPECT_TRUE(contains(svg, "width=\"100%\""));
}

TEST(StatusPage, OfflineRunIsOneOutageRectFromItsFirstPointToTheNextPoint) {
  PageUplink uplink = hour_of_points("wan");
  for (int i = 20; i < 25; ++i) uplink.history.state[i] = PointState::Offline;
  const std::string svg = render_plot(uplink, kNow, 3600);
  const Box frame = frame_of(svg);
  const auto outages = rects(svg, "outage");
  ASSERT_EQ(outages.size(), 1U) << svg;
  // Points are a minute apart over 60 minutes: the run covers minutes 20 to 25.
  EXPECT_NEAR(outages[0].x, frame.x + frame.width * 20 / 60, kTolerance);
  EXPECT_NEAR(outages[0].width, frame.width * 5 / 60, 2 * kTolerance);
  EXPECT_NEAR(outages[0].y, frame.y, kTolerance);
  EXPECT_NEAR(outages[0].height, frame.height, kTolerance);
  EXPECT_TRUE(contains(svg, "<title>offline</title>"));
  EXPECT_TRUE(rects(svg, "degraded").empty());
}

TEST(StatusPage, TwoOfflineRunsGiveTwoRects) {
  PageUplink uplink = hour_of_points("wan");
  for (int i = 10; i < 12; ++i) uplink.history.state[i] = PointState::Offline;
  for (int i = 40; i < 45; ++i) uplink.history.state[i] = PointState::Offline;
  const std::string svg = render_plot(uplink, kNow, 3600);
  const Box frame = frame_of(svg);
  const auto outages = rects(svg, "outage");
  ASSERT_EQ(outages.size(), 2U) << svg;
  EXPECT_NEAR(outages[0].x, frame.x + frame.width * 10 / 60, kTolerance);
  EXPECT_NEAR(outages[0].width, frame.width * 2 / 60, 2 * kTolerance);
  EXPECT_NEAR(outages[1].x, frame.x + frame.width * 40 / 60, kTolerance);
  EXPECT_NEAR(outages[1].width, frame.width * 5 / 60, 2 * kTolerance);
}

TEST(StatusPage, LatestOfflineRunReachesNow) {
  PageUplink uplink = hour_of_points("wan");
  for (int i = 55; i <= 60; ++i) uplink.history.state[i] = PointState::Offline;
  const std::string svg = render_plot(uplink, kNow, 3600);
  const Box frame = frame_of(svg);
  const auto outages = rects(svg, "outage");
  ASSERT_EQ(outages.size(), 1U) << svg;
  EXPECT_NEAR(outages[0].x, frame.x + frame.width * 55 / 60, kTolerance);
  EXPECT_NEAR(outages[0].x + outages[0].width, frame.x + frame.width, 2 * kTolerance);
}

TEST(StatusPage, SingleOfflinePointIsStillVisible) {
  PageUplink uplink = hour_of_points("wan");
  // Points a second apart: one point's run is far narrower than a unit of the viewBox.
  auto& h = uplink.history;
  for (size_t i = 0; i < h.t_ns.size(); ++i) h.t_ns[i] = kNow - static_cast<int64_t>(h.t_ns.size() - i) * kNs;
  h.state[30] = PointState::Offline;
  const auto outages = rects(render_plot(uplink, kNow, 3600), "outage");
  ASSERT_EQ(outages.size(), 1U);
  EXPECT_GE(outages[0].width, 2.0);
}

TEST(StatusPage, ConnectingAndDisconnectingRunsAreShadedAsDegraded) {
  PageUplink uplink = hour_of_points("wan");
  for (int i = 5; i < 8; ++i) uplink.history.state[i] = PointState::Connecting;
  for (int i = 30; i < 31; ++i) uplink.history.state[i] = PointState::Disconnecting;
  const std::string svg = render_plot(uplink, kNow, 3600);
  EXPECT_EQ(rects(svg, "degraded").size(), 2U) << svg;
  EXPECT_TRUE(contains(svg, "<title>connecting</title>"));
  EXPECT_TRUE(contains(svg, "<title>disconnecting</title>"));
  EXPECT_TRUE(rects(svg, "outage").empty());
}

TEST(StatusPage, EachTargetHasItsOwnRttLine) {
  const std::string svg = render_plot(hour_of_points("wan", 3), kNow, 3600);
  for (const char* ip : {"192.0.2.1", "192.0.2.2", "192.0.2.3"}) {
    EXPECT_EQ(polylines(svg, "rtt", ip).size(), 1U) << ip;
  }
  // One colour each.
  const std::regex stroke("class=\"rtt\"[^>]*stroke=\"(#[0-9a-f]+)\"");
  std::vector<std::string> colours;
  for (auto it = std::sregex_iterator(svg.begin(), svg.end(), stroke); it != std::sregex_iterator(); ++it) {
    colours.push_back((*it)[1]);
  }
  ASSERT_EQ(colours.size(), 3U);
  EXPECT_NE(colours[0], colours[1]);
  EXPECT_NE(colours[1], colours[2]);
  EXPECT_NE(colours[0], colours[2]);
}

TEST(StatusPage, NanSplitsTheRttLineIntoSegments) {
  PageUplink uplink = hour_of_points("wan", 2);
  uplink.history.rtt_ms[0][30] = kNaN;
  const std::string svg = render_plot(uplink, kNow, 3600);
  const auto segments = polylines(svg, "rtt", "192.0.2.1");
  ASSERT_EQ(segments.size(), 2U) << svg;
  const Box frame = frame_of(svg);
  const auto first = coordinates(segments[0]);
  const auto second = coordinates(segments[1]);
  ASSERT_FALSE(first.empty());
  ASSERT_FALSE(second.empty());
  // The gap lies between minute 29 and minute 31.
  EXPECT_NEAR(first.back().first, frame.x + frame.width * 29 / 60, kTolerance);
  EXPECT_NEAR(second.front().first, frame.x + frame.width * 31 / 60, kTolerance);
  EXPECT_EQ(polylines(svg, "rtt", "192.0.2.2").size(), 1U);
}

TEST(StatusPage, SinglePointSegmentIsADot) {
  PageUplink uplink = hour_of_points("wan");
  auto& row = uplink.history.rtt_ms[0];
  for (size_t i = 0; i < row.size(); ++i) row[i] = i == 10 ? 20.0F : kNaN;
  const std::string svg = render_plot(uplink, kNow, 3600);
  EXPECT_TRUE(polylines(svg, "rtt").empty()) << svg;
  EXPECT_EQ(count(svg, "<circle class=\"rtt-point\" data-target=\"192.0.2.1\""), 1U) << svg;
}

TEST(StatusPage, RttLineFollowsTheValues) {
  PageUplink uplink = hour_of_points("wan");
  uplink.history.rtt_ms[0][60] = 40;  // the axis then ends at 50
  const std::string svg = render_plot(uplink, kNow, 3600);
  const Box frame = frame_of(svg);
  const auto line = coordinates(polylines(svg, "rtt", "192.0.2.1").at(0));
  ASSERT_GE(line.size(), 2U);
  EXPECT_NEAR(line.front().first, frame.x, kTolerance);
  EXPECT_NEAR(line.front().second, frame.y + frame.height * (1 - 20.0 / 50), kTolerance);
  EXPECT_NEAR(line.back().first, frame.x + frame.width, kTolerance);
  EXPECT_NEAR(line.back().second, frame.y + frame.height * (1 - 40.0 / 50), kTolerance);
  EXPECT_TRUE(contains(svg, ">50</text>")) << svg;
}

TEST(StatusPage, RttAxisEndsOnANiceNumberOfAtLeastOneMs) {
  PageUplink uplink = hour_of_points("wan");
  for (auto& v : uplink.history.rtt_ms[0]) v = 0.3F;
  EXPECT_TRUE(contains(render_plot(uplink, kNow, 3600), ">1</text>"));
  for (auto& v : uplink.history.rtt_ms[0]) v = 130;
  EXPECT_TRUE(contains(render_plot(uplink, kNow, 3600), ">200</text>"));
  for (auto& v : uplink.history.rtt_ms[0]) v = 100;
  const std::string svg = render_plot(uplink, kNow, 3600);
  EXPECT_TRUE(contains(svg, ">100</text>"));
  EXPECT_FALSE(contains(svg, ">200</text>"));
}

TEST(StatusPage, PointOlderThanTheSpanIsNotDrawn) {
  PageUplink uplink = hour_of_points("wan");
  auto& h = uplink.history;
  // A point two hours old, offline and slow, before the hour the plot covers.
  h.t_ns.insert(h.t_ns.begin(), kNow - 7200 * kNs);
  h.state.insert(h.state.begin(), PointState::Offline);
  h.loss_pct.insert(h.loss_pct.begin(), 100);
  h.rtt_ms[0].insert(h.rtt_ms[0].begin(), 900);
  const std::string svg = render_plot(uplink, kNow, 3600);
  const Box frame = frame_of(svg);
  const auto line = coordinates(polylines(svg, "rtt", "192.0.2.1").at(0));
  ASSERT_FALSE(line.empty());
  for (const auto& [x, y] : line) EXPECT_GE(x, frame.x - kTolerance);
  EXPECT_TRUE(rects(svg, "outage").empty()) << svg;
  EXPECT_FALSE(contains(svg, ">1000</text>"));  // the axis ignores its 900 ms
  EXPECT_TRUE(contains(svg, ">20</text>"));
}

TEST(StatusPage, PointsInTheFutureAreNotDrawn) {
  PageUplink uplink = hour_of_points("wan");
  auto& h = uplink.history;
  h.t_ns.push_back(kNow + 60 * kNs);
  h.state.push_back(PointState::Offline);
  h.loss_pct.push_back(100);
  h.rtt_ms[0].push_back(20);
  const std::string svg = render_plot(uplink, kNow, 3600);
  EXPECT_TRUE(rects(svg, "outage").empty()) << svg;
}

TEST(StatusPage, EmptyHistoryShowsNoProbeResultsYet) {
  PageUplink uplink;
  uplink.name = "wan";
  uplink.targets.push_back({"192.0.2.1", "unknown", 0, 0});
  const std::string svg = render_plot(uplink, kNow, 3600);
  EXPECT_TRUE(contains(svg, "<text class=\"no-data\"")) << svg;
  EXPECT_TRUE(contains(svg, "No probe results yet"));
  EXPECT_TRUE(contains(svg, "class=\"frame\""));  // the axes are still there
  EXPECT_TRUE(contains(svg, ">now</text>"));
  EXPECT_TRUE(polylines(svg, "rtt").empty());
  EXPECT_FALSE(contains(render_plot(hour_of_points("wan"), kNow, 3600), "no-data"));
}

TEST(StatusPage, ThresholdLinesOnlyWhenSet) {
  PageUplink uplink = hour_of_points("wan");
  std::string svg = render_plot(uplink, kNow, 3600);
  EXPECT_FALSE(contains(svg, "threshold-latency"));
  EXPECT_FALSE(contains(svg, "threshold-loss"));

  uplink.failure_latency_ms = 150;
  svg = render_plot(uplink, kNow, 3600);
  EXPECT_EQ(count(svg, "<line class=\"threshold-latency\""), 1U) << svg;
  EXPECT_FALSE(contains(svg, "threshold-loss"));
  EXPECT_TRUE(contains(svg, ">200</text>"));  // the axis reaches the threshold

  uplink.failure_latency_ms = 0;
  uplink.failure_loss_pct = 40;
  svg = render_plot(uplink, kNow, 3600);
  EXPECT_FALSE(contains(svg, "threshold-latency"));
  EXPECT_EQ(count(svg, "<line class=\"threshold-loss\""), 1U);
  const Box frame = frame_of(svg);
  const std::regex y1("<line class=\"threshold-loss\" x1=\"[-0-9.]+\" y1=\"([-0-9.]+)\"");
  std::smatch m;
  ASSERT_TRUE(std::regex_search(svg, m, y1));
  EXPECT_NEAR(std::stod(m[1]), frame.y + frame.height * 0.6, kTolerance);
}

TEST(StatusPage, LossIsADashedLineOfFinitePoints) {
  PageUplink uplink = hour_of_points("wan");
  auto& loss = uplink.history.loss_pct;
  for (size_t i = 0; i < loss.size(); ++i) loss[i] = static_cast<float>(i % 3) * 10;
  loss[20] = kNaN;
  const std::string svg = render_plot(uplink, kNow, 3600);
  EXPECT_EQ(polylines(svg, "loss").size(), 2U) << svg;
  EXPECT_TRUE(contains(svg, "stroke-dasharray"));
}

TEST(StatusPage, XAxisIsLabelledInMinutesBeforeNow) {
  const std::string hour = render_plot(hour_of_points("wan"), kNow, 3600);
  for (const char* label : {">-60 min<", ">-45 min<", ">-30 min<", ">-15 min<", ">now<"}) {
    EXPECT_TRUE(contains(hour, label)) << label;
  }
  const std::string ten = render_plot(hour_of_points("wan"), kNow, 600);
  EXPECT_TRUE(contains(ten, ">-10 min<")) << ten;
  EXPECT_TRUE(contains(ten, "over the last 10 min"));
  EXPECT_FALSE(contains(ten, ">-60 min<"));
}

TEST(StatusPage, SinceIsAHumanDuration) {
  const std::vector<std::pair<double, std::string>> cases{{12, "for 12 s"},
                                                          {184, "for 3 min 4 s"},
                                                          {7500, "for 2 h 5 min"},
                                                          {273600, "for 3 d 4 h"},
                                                          {-5, "for 0 s"}};
  for (const auto& [seconds, text] : cases) {
    PageUplink uplink = hour_of_points("wan");
    uplink.state_s = seconds;
    EXPECT_TRUE(contains(render_status_page(page_with({uplink})), text)) << text;
  }
}

TEST(StatusPage, FiguresOfTheUplink) {
  PageUplink wan = hour_of_points("wan");
  wan.score = 10;
  wan.rtt_ms = 12.54;
  wan.loss_pct = 2.6;
  PageUplink wanb = hour_of_points("wanb");
  wanb.state = "offline";
  wanb.rtt_ms = 0;
  wanb.loss_pct = 100;
  const std::string page = render_status_page(page_with({wan, wanb}));
  const std::string online = section_of(page, "wan");
  EXPECT_TRUE(contains(online, "12.5 ms"));
  EXPECT_TRUE(contains(online, "3 %"));
  EXPECT_TRUE(contains(online, "<dd>10</dd>"));
  const std::string offline = section_of(page, "wanb");
  EXPECT_TRUE(contains(offline, "<dt>RTT</dt><dd>—</dd>")) << offline;
  EXPECT_TRUE(contains(offline, "100 %"));
}

TEST(StatusPage, TargetsTableListsEachTarget) {
  PageUplink uplink = hour_of_points("wan", 2);
  uplink.targets[0] = {"203.0.113.1", "up", 12.25, 5};
  uplink.targets[1] = {"203.0.113.2", "down", 0, 100};
  const std::string section = section_of(render_status_page(page_with({uplink})), "wan");
  const size_t table = section.find("<table class=\"targets\"");
  ASSERT_NE(table, std::string::npos) << section;
  const std::string rows = section.substr(table, section.find("</table>", table) - table);
  EXPECT_TRUE(contains(rows, "203.0.113.1"));
  EXPECT_TRUE(contains(rows, "12.2 ms"));
  EXPECT_TRUE(contains(rows, "5 %"));
  EXPECT_TRUE(contains(rows, ">down<"));
  EXPECT_TRUE(contains(rows, "100 %"));
}

TEST(StatusPage, EventsAreListedNewestFirstAsGiven) {
  PageData data = page_with({hour_of_points("wan")});
  data.events.push_back({data.now_unix_ms - 5000, "notice", "third: wan is online"});
  data.events.push_back({data.now_unix_ms - 65000, "warning", "second: wan is connecting"});
  data.events.push_back({data.now_unix_ms - 3 * 86400000LL, "error", "first: wan is offline"});
  const std::string page = render_status_page(data);
  const size_t events = page.find("<section id=\"events\">");
  ASSERT_NE(events, std::string::npos);
  const size_t third = page.find("third", events);
  const size_t second = page.find("second", events);
  const size_t first = page.find("first", events);
  ASSERT_NE(first, std::string::npos);
  EXPECT_LT(third, second);
  EXPECT_LT(second, first);
  EXPECT_TRUE(contains(page, ">11:59:55<"));
  EXPECT_TRUE(contains(page, ">11:58:55<"));
  EXPECT_TRUE(contains(page, ">2024-05-29 12:00:00<"));  // not today: with its date
  EXPECT_TRUE(contains(page, ">warning<"));
  EXPECT_FALSE(contains(page, "No events yet."));
}

TEST(StatusPage, NoEventsSaysSo) {
  const std::string page = render_status_page(page_with({hour_of_points("wan")}));
  EXPECT_TRUE(contains(page, "<section id=\"events\">"));
  EXPECT_TRUE(contains(page, "No events yet."));
}

TEST(StatusPage, OddInputDoesNotThrowOrBreakTheDocument) {
  PageUplink uplink = hour_of_points("wan", 3);
  auto& h = uplink.history;
  h.rtt_ms[1].resize(10);  // a row shorter than t_ns: the rest is missing
  h.rtt_ms[2].clear();
  h.state.resize(5);
  h.loss_pct.resize(7);
  h.rtt_ms[0][3] = std::numeric_limits<float>::infinity();
  h.rtt_ms[0][4] = -std::numeric_limits<float>::infinity();
  h.rtt_ms[0][5] = -3;
  h.rtt_ms[0][6] = std::numeric_limits<float>::max();
  h.loss_pct[2] = kNaN;
  h.loss_pct[3] = 250;
  h.t_ns[0] = std::numeric_limits<int64_t>::min();
  h.t_ns[1] = std::numeric_limits<int64_t>::max();
  uplink.rtt_ms = kNaN;
  uplink.loss_pct = std::numeric_limits<double>::infinity();
  uplink.state_s = std::numeric_limits<double>::quiet_NaN();
  uplink.failure_latency_ms = std::numeric_limits<double>::infinity();
  uplink.failure_loss_pct = kNaN;
  PageUplink empty;
  PageData data = page_with({uplink, empty});
  data.events.push_back({std::numeric_limits<int64_t>::min(), "", ""});
  data.events.push_back({-1500, "notice", "before 1970"});
  const std::regex non_finite("[^a-zA-Z](nan|inf)[^a-zA-Z]", std::regex::icase);
  for (const double span :
       {3600.0, 0.0, -1.0, 1e300, std::nan(""), std::numeric_limits<double>::infinity(), 0.5}) {
    data.span_s = span;
    for (const int64_t now : {kNow, int64_t{0}, int64_t{-5} * kNs, std::numeric_limits<int64_t>::max()}) {
      data.now_ns = now;
      std::string page;
      ASSERT_NO_THROW(page = render_status_page(data)) << span << " " << now;
      EXPECT_TRUE(contains(page, "</html>"));
      EXPECT_FALSE(std::regex_search(page, non_finite)) << span << " " << now;
    }
  }
}

// A full hour at one point a second for four uplinks of four targets, every value changing at
// every point (the worst case for the size): the page must stay well under a megabyte.
TEST(StatusPage, FullHourOfFourUplinksOfFourTargetsStaysUnderAMegabyte) {
  std::mt19937 random(7);
  std::uniform_real_distribution<float> rtt(1, 400);
  std::uniform_real_distribution<float> loss(0, 100);
  std::vector<PageUplink> uplinks;
  for (int u = 0; u < 4; ++u) {
    PageUplink uplink;
    uplink.name = "wan" + std::to_string(u);
    uplink.device = "eth" + std::to_string(u);
    uplink.state = "online";
    uplink.failure_latency_ms = 300;
    uplink.failure_loss_pct = 20;
    for (int t = 0; t < 4; ++t) uplink.targets.push_back({"198.51.100." + std::to_string(t), "up", 20, 0});
    auto& h = uplink.history;
    h.rtt_ms.resize(4);
    for (int i = 0; i < 3600; ++i) {
      h.t_ns.push_back(kNow - (3599 - i) * kNs);
      h.state.push_back(i % 600 < 30 ? PointState::Offline : PointState::Online);
      h.loss_pct.push_back(loss(random));
      for (auto& row : h.rtt_ms) row.push_back(rtt(random));
    }
    uplinks.push_back(std::move(uplink));
  }
  PageData data = page_with(std::move(uplinks));
  for (int e = 0; e < 50; ++e)
    data.events.push_back({data.now_unix_ms - int64_t{e} * 1000, "notice", "an event"});
  const std::string page = render_status_page(data);
  EXPECT_LT(page.size(), 1000000U);
  EXPECT_EQ(count(page, "<svg"), 4U);
  RecordProperty("page_bytes", static_cast<int>(page.size()));
  std::printf("page size for 4 uplinks x 4 targets x 3600 points: %zu bytes\n", page.size());
}

}  // namespace
