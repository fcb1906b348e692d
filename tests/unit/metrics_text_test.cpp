// /metrics from the daemon's JSON: the exposition's shape (one HELP and TYPE per family, samples
// together, escaping, exact counters), mwan3's collector names and meanings, histograms in seconds,
// and the metrics_listen option and addresses.
#include "observability/metrics_text.h"

#include <gtest/gtest.h>

#include <regex>
#include <set>
#include <sstream>

#include "config/config.h"
#include "observability/histogram.h"
#include "observability/listen_address.h"

namespace uplinkd::observability {
namespace {

using nlohmann::json;

json interface_json(const std::string& name, const std::string& state, uint64_t sent) {
  Histogram rtt(kRttBucketsMs);
  for (double ms : {0.5, 3.0, 3.0, 7000.0}) rtt.add(ms);
  return {{"name", name},
          {"enabled", true},
          {"state", state},
          {"state_s", 12.5},
          {"score", 6},
          {"transitions", 2},
          {"admin_down", false},
          {"rtt_ms", 12.25},
          {"loss_pct", 25.0},
          {"detection_s", 3.25},
          {"path_mtu", {{"state", "measured"}, {"mtu", 1400}, {"device_mtu", 1500}, {"measured_ago_s", 7.5}}},
          {"probe_lateness", Histogram(kLatenessBucketsMs).json()},
          {"mwan3",
           {{"status", state},
            {"tracking", "active"},
            {"running", true},
            {"up", true},
            {"uptime", 100},
            {"age", 1},
            {"online", 50},
            {"offline", 0},
            {"lost", 7},
            {"turn", 99}}},
          {"datapath", {{"icmp_passed", 5}, {"icmp_dropped", 1}, {"probe_replies", 40}, {"ringbuf_full", 0}}},
          {"targets",
           {{{"ip", "203.0.113.1"},
             {"state", "up"},
             {"rtt_ms", 12.25},
             {"loss_pct", 25.0},
             {"sent", sent},
             {"replied", 3},
             {"lost", 1},
             {"rtt_histogram", rtt.json()}}}}};
}

json snapshot() {
  return {{"version", "0.1.0"},
          {"status",
           {{"daemon", {{"instance", "default"}, {"uptime_s", 60.5}}},
            {"interfaces",
             {interface_json("wan", "online", 12345678901234ULL), interface_json("wanb", "offline", 4)}},
            {"rules", {{{"name", "https"}, {"use_policy", "balanced"}, {"packets", 10}, {"bytes", 600}}}}}},
          {"flows",
           {{"created", 9},
            {"reclassified", 1},
            {"idle_reclassified", 2},
            {"expired", 3},
            {"tracked_age_s", 0.5},
            {"stale_resets", {{"active", 4}, {"proactive", 5}}},
            {"interfaces",
             {{{"name", "wan"}, {"tracked", 6}, {"conntrack_deleted", 7}, {"proactive_resets", 5}}}}}},
          {"wireguard",
           {{"peers",
             {{{"device", "wg0"}, {"peer", "abc=\"x\\"}, {"uplink", "wan"}, {"steered_packets", 11}}}}}}};
}

std::string line_of(const std::string& text, const std::string& prefix) {
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(prefix, 0) == 0) return line;
  }
  return "";
}

TEST(MetricsText, OneHelpAndTypePerFamilyWithItsSamplesTogether) {
  const std::string text = render_metrics(snapshot());
  std::istringstream in(text);
  std::string line, family;
  std::set<std::string> seen;
  while (std::getline(in, line)) {
    if (line.rfind("# TYPE ", 0) == 0) {
      family = line.substr(7, line.find(' ', 7) - 7);
      EXPECT_TRUE(seen.insert(family).second) << "family declared twice: " << family;
      continue;
    }
    if (line.empty() || line[0] == '#') continue;
    const std::string name = line.substr(0, line.find_first_of("{ "));
    EXPECT_EQ(name.rfind(family, 0), 0U) << name << " outside its family " << family;
  }
  EXPECT_GT(seen.size(), 30U);
}

TEST(MetricsText, Mwan3CollectorNamesLabelsAndOneHotStatus) {
  const std::string text = render_metrics(snapshot());
  EXPECT_EQ(line_of(text, "mwan3_interface_age{"), "mwan3_interface_age{interface=\"wan\"} 1");
  EXPECT_EQ(line_of(text, "mwan3_interface_online{"), "mwan3_interface_online{interface=\"wan\"} 50");
  EXPECT_EQ(line_of(text, "mwan3_interface_lost{"), "mwan3_interface_lost{interface=\"wan\"} 7");
  EXPECT_EQ(line_of(text, "mwan3_interface_turn{"), "mwan3_interface_turn{interface=\"wan\"} 99");
  EXPECT_EQ(line_of(text, "mwan3_interface_score{"), "mwan3_interface_score{interface=\"wan\"} 6");
  EXPECT_EQ(line_of(text, "mwan3_interface_running{"), "mwan3_interface_running{interface=\"wan\"} 1");
  EXPECT_NE(text.find("mwan3_interface_status{interface=\"wan\",status=\"online\"} 1\n"), std::string::npos);
  EXPECT_NE(text.find("mwan3_interface_status{interface=\"wan\",status=\"offline\"} 0\n"), std::string::npos);
  EXPECT_NE(text.find("mwan3_interface_status{interface=\"wanb\",status=\"offline\"} 1\n"),
            std::string::npos);
  int statuses = 0;
  for (auto it = text.find("mwan3_interface_status{interface=\"wan\","); it != std::string::npos;
       it = text.find("mwan3_interface_status{interface=\"wan\",", it + 1))
    ++statuses;
  EXPECT_EQ(statuses, 7);  // the collector's seven status words
}

TEST(MetricsText, CountersAreExactAndUnitsAreBase) {
  const std::string text = render_metrics(snapshot());
  EXPECT_NE(text.find("uplinkd_probes_sent_total{interface=\"wan\",target=\"203.0.113.1\"} 12345678901234\n"),
            std::string::npos);
  EXPECT_NE(text.find("uplinkd_interface_rtt_seconds{interface=\"wan\"} 0.01225"), std::string::npos);
  EXPECT_NE(text.find("uplinkd_interface_loss_ratio{interface=\"wan\"} 0.25\n"), std::string::npos);
  EXPECT_NE(text.find("uplinkd_outage_detection_seconds{interface=\"wan\"} 3.25\n"), std::string::npos);
  EXPECT_NE(text.find("uplinkd_stale_resets_total{kind=\"proactive\"} 5\n"), std::string::npos);
  EXPECT_NE(text.find("uplinkd_icmp_limiter_packets_total{interface=\"wan\",verdict=\"dropped\"} 1\n"),
            std::string::npos);
  EXPECT_NE(text.find("uplinkd_rule_packets_total{rule=\"https\",policy=\"balanced\"} 10\n"),
            std::string::npos);
  EXPECT_NE(text.find("uplinkd_flows_tracked{interface=\"wan\"} 6\n"), std::string::npos);
  EXPECT_NE(text.find("uplinkd_path_mtu_bytes{interface=\"wan\"} 1400\n"), std::string::npos);
  EXPECT_NE(text.find("uplinkd_device_mtu_bytes{interface=\"wan\"} 1500\n"), std::string::npos);
  EXPECT_NE(text.find("uplinkd_path_mtu_age_seconds{interface=\"wan\"} 7.5\n"), std::string::npos);
}

// An unknown path MTU is absent, never 0 (a dashboard would draw it as a collapse).
TEST(MetricsText, UnknownPathMtuHasNoSample) {
  json s = snapshot();
  for (auto& i : s["status"]["interfaces"]) i["path_mtu"] = {{"state", "unknown"}, {"mtu", nullptr}};
  const std::string text = render_metrics(s);
  EXPECT_EQ(text.find("uplinkd_path_mtu_bytes{"), std::string::npos) << text;
}

TEST(MetricsText, HistogramBucketsAreCumulativeSecondsWithInf) {
  const std::string text = render_metrics(snapshot());
  const std::string l = "interface=\"wan\",target=\"203.0.113.1\"";
  EXPECT_NE(text.find("uplinkd_probe_rtt_seconds_bucket{" + l + ",le=\"0.001\"} 1\n"), std::string::npos);
  EXPECT_NE(text.find("uplinkd_probe_rtt_seconds_bucket{" + l + ",le=\"0.005\"} 3\n"), std::string::npos);
  EXPECT_NE(text.find("uplinkd_probe_rtt_seconds_bucket{" + l + ",le=\"5\"} 3\n"), std::string::npos);
  EXPECT_NE(text.find("uplinkd_probe_rtt_seconds_bucket{" + l + ",le=\"+Inf\"} 4\n"), std::string::npos);
  EXPECT_NE(text.find("uplinkd_probe_rtt_seconds_count{" + l + "} 4\n"), std::string::npos);
  EXPECT_NE(text.find("uplinkd_probe_rtt_seconds_sum{" + l + "} 7.0065"), std::string::npos);
}

TEST(MetricsText, LabelValuesAreEscaped) {
  const std::string text = render_metrics(snapshot());
  EXPECT_NE(text.find("peer=\"abc=\\\"x\\\\\""), std::string::npos) << text;
}

TEST(MetricsText, MissingPartsGiveNoSamplesAndNoCrash) {
  EXPECT_NO_THROW(render_metrics(json::object()));
  EXPECT_NO_THROW(render_metrics({{"status", {{"interfaces", {{{"name", "x"}}}}}}}));
  EXPECT_NE(render_metrics(json::object()).find("uplinkd_build_info"), std::string::npos);
}

TEST(ListenAddress, LiteralAddressesWithPorts) {
  std::string problem;
  auto v4 = parse_listen_address("127.0.0.1:9107", &problem);
  ASSERT_TRUE(v4) << problem;
  EXPECT_EQ(v4->family, AF_INET);
  EXPECT_EQ(v4->text, "127.0.0.1:9107");
  auto v6 = parse_listen_address("[::1]:9107", &problem);
  ASSERT_TRUE(v6) << problem;
  EXPECT_EQ(v6->family, AF_INET6);
  EXPECT_EQ(v6->text, "[::1]:9107");
  EXPECT_TRUE(parse_listen_address("0.0.0.0:80", &problem));
  EXPECT_TRUE(parse_listen_address("[2001:db8::1]:65535", &problem));
}

TEST(ListenAddress, RefusesWhatIsNotALiteralAddressAndPort) {
  for (const char* bad : {"9107", ":9107", "localhost:9107", "127.0.0.1", "127.0.0.1:0", "127.0.0.1:65536",
                          "127.0.0.1:x", "::1:9107", "[::1]", "[::1]9107", "[127.0.0.1]:9107", "", "[]:1"}) {
    std::string problem;
    EXPECT_FALSE(parse_listen_address(bad, &problem)) << bad;
    EXPECT_FALSE(problem.empty()) << bad;
  }
}

constexpr const char* kInterface = R"(
config interface 'wan'
	option enabled '1'
	option device 'eth1'
	list track_ip '203.0.113.1'
)";

config::Config parse_globals(const std::string& globals) {
  return config::parse("config globals 'globals'\n" + globals + kInterface, "mwan3");
}

TEST(MetricsListenConfig, OffByDefault) { EXPECT_TRUE(parse_globals("").globals.metrics_listen.empty()); }

TEST(MetricsListenConfig, OptionWithSeveralAndList) {
  EXPECT_EQ(parse_globals("\toption metrics_listen '127.0.0.1:9107 [::1]:9107'\n").globals.metrics_listen,
            (std::vector<std::string>{"127.0.0.1:9107", "[::1]:9107"}));
  EXPECT_EQ(parse_globals("\tlist metrics_listen '127.0.0.1:9107'\n\tlist metrics_listen '[::]:9108'\n")
                .globals.metrics_listen,
            (std::vector<std::string>{"127.0.0.1:9107", "[::]:9108"}));
}

TEST(MetricsListenConfig, ABadAddressNamesFileLineOptionAndTheWord) {
  try {
    parse_globals("\toption mmx_mask '0x3F00'\n\toption metrics_listen '127.0.0.1:9107 localhost:9107'\n");
    FAIL() << "accepted localhost:9107";
  } catch (const config::ConfigError& e) {
    EXPECT_EQ(e.line, 3);
    EXPECT_EQ(e.option, "metrics_listen");
    EXPECT_NE(std::string(e.what()).find("'localhost:9107'"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("accepted:"), std::string::npos) << e.what();
  }
  EXPECT_THROW(parse_globals("\toption metrics_listen '127.0.0.1:9107 127.0.0.1:9107'\n"),
               config::ConfigError);
}

// timeout 'auto' (issue 14 item 8): the target's learnt timeout as a gauge in seconds, beside
// its RTT; absent with a fixed timeout (status --json has no timeout_ms then).
TEST(MetricsText, AdaptiveTimeoutGaugePerTarget) {
  json snap = snapshot();
  EXPECT_EQ(render_metrics(snap).find("uplinkd_target_timeout_seconds"), std::string::npos);
  snap["status"]["interfaces"][0]["targets"][0]["timeout_ms"] = 62.5;
  const std::string text = render_metrics(snap);
  EXPECT_EQ(line_of(text, "uplinkd_target_timeout_seconds{"),
            "uplinkd_target_timeout_seconds{interface=\"wan\",target=\"203.0.113.1\"} 0.0625");
  EXPECT_NE(text.find("# TYPE uplinkd_target_timeout_seconds gauge\n"), std::string::npos) << text;
}

}  // namespace
}  // namespace uplinkd::observability
