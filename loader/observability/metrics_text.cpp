#include "observability/metrics_text.h"

#include <charconv>
#include <cmath>
#include <cstdio>
#include <map>
#include <utility>
#include <vector>

#include "mwan3/mwan3_view.h"

namespace uplinkd::observability {

namespace {

using Labels = std::vector<std::pair<std::string, std::string>>;
using nlohmann::json;

// The exposition format wants every sample of a family together, after its HELP and TYPE; the
// daemon's JSON is per interface. So samples are collected per family, in the order families were
// first named, and written at the end.
class Exposition {
 public:
  void add(const std::string& name, const char* type, const char* help, const Labels& labels, double value,
           const std::string& suffix = "") {
    Family& f = family(name, type, help);
    f.samples += name + suffix + label_text(labels) + " " + number(value) + "\n";
  }

  // A histogram from Histogram::json() (milliseconds, per-bucket counts) as cumulative buckets in seconds.
  void histogram(const std::string& name, const char* help, const Labels& labels, const json& h) {
    if (!h.is_object() || !h.contains("counts")) return;
    const json& bounds = h["le_ms"];
    const json& counts = h["counts"];
    uint64_t cumulative = 0;
    for (size_t i = 0; i < counts.size(); ++i) {
      cumulative += counts[i].get<uint64_t>();
      Labels with_le = labels;
      with_le.emplace_back("le", i < bounds.size() ? number(bounds[i].get<double>() / 1000.0) : "+Inf");
      add(name, "histogram", help, with_le, static_cast<double>(cumulative), "_bucket");
    }
    add(name, "histogram", help, labels, h.value("sum_ms", 0.0) / 1000.0, "_sum");
    add(name, "histogram", help, labels, static_cast<double>(h.value("count", uint64_t{0})), "_count");
  }

  [[nodiscard]] std::string text() const {
    std::string out;
    for (const auto& f : families_) {
      out += "# HELP " + f.name + " " + f.help + "\n# TYPE " + f.name + " " + f.type + "\n" + f.samples;
    }
    return out;
  }

  // Integers (every counter) print exactly; other values in the shortest form that reads back as
  // the same double (0.005, not 0.0050000000000000001).
  static std::string number(double v) {
    if (std::isnan(v)) return "NaN";
    if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
    char buf[40];
    if (v == std::floor(v) && std::fabs(v) < 1e15) {
      std::snprintf(buf, sizeof buf, "%.0f", v);
      return buf;
    }
    const auto result = std::to_chars(buf, buf + sizeof buf, v, std::chars_format::general);
    return {buf, result.ptr};
  }

 private:
  struct Family {
    std::string name, type, help, samples;
  };

  Family& family(const std::string& name, const char* type, const char* help) {
    auto [it, inserted] = index_.try_emplace(name, families_.size());
    if (inserted) families_.push_back({name, type, help, ""});
    return families_[it->second];
  }

  static std::string escaped(const std::string& value) {
    std::string out;
    for (char c : value) {
      if (c == '\\')
        out += "\\\\";
      else if (c == '"')
        out += "\\\"";
      else if (c == '\n')
        out += "\\n";
      else
        out += c;
    }
    return out;
  }

  static std::string label_text(const Labels& labels) {
    if (labels.empty()) return "";
    std::string out = "{";
    for (size_t i = 0; i < labels.size(); ++i) {
      out += (i == 0 ? "" : ",") + labels[i].first + "=\"" + escaped(labels[i].second) + "\"";
    }
    return out + "}";
  }

  std::vector<Family> families_;
  std::map<std::string, size_t> index_;
};

double num(const json& j, const char* key) {
  if (!j.is_object() || !j.contains(key)) return 0;
  const json& v = j[key];
  if (v.is_boolean()) return v.get<bool>() ? 1 : 0;
  return v.is_number() ? v.get<double>() : 0;
}

// mwan3track's status words, as the collector lists them for its one-hot gauge.
constexpr const char* kMwan3Statuses[] = {"offline",  "online",     "disconnecting", "connecting",
                                          "disabled", "notracking", "unknown"};
constexpr const char* kStates[] = {"online", "offline", "connecting", "disconnecting", "disabled"};

// prometheus-node-exporter-lua-mwan3's families, from the object `ubus call mwan3 status` answers
// with. Its seconds-ago and duration figures are gauges (they go down); lost and turn keep the
// collector's names, so they cannot carry `_total` and are exposed untyped.
void add_mwan3(Exposition& e, const std::string& name, const json& ubus) {
  const Labels l{{"interface", name}};
  e.add("mwan3_interface_age", "gauge", "Seconds since the interface's last probe cycle (mwan3).", l,
        num(ubus, "age"));
  e.add("mwan3_interface_online", "gauge",
        "Seconds since the interface went online, 0 when it is not (mwan3).", l, num(ubus, "online"));
  e.add("mwan3_interface_offline", "gauge",
        "Seconds since the interface went offline, 0 when it is not (mwan3).", l, num(ubus, "offline"));
  e.add("mwan3_interface_uptime", "gauge", "Seconds the interface has been up (mwan3).", l,
        num(ubus, "uptime"));
  e.add("mwan3_interface_lost", "untyped", "Probes lost since the interface was brought up (mwan3).", l,
        num(ubus, "lost"));
  e.add("mwan3_interface_turn", "untyped", "Probe cycles run since the daemon started (mwan3).", l,
        num(ubus, "turn"));
  e.add("mwan3_interface_score", "gauge", "The tracker's score (mwan3).", l, num(ubus, "score"));
  e.add("mwan3_interface_enabled", "gauge", "1 when the interface is enabled (mwan3).", l,
        num(ubus, "enabled"));
  e.add("mwan3_interface_running", "gauge", "1 when tracking is active (mwan3).", l, num(ubus, "running"));
  e.add("mwan3_interface_up", "gauge", "1 when the interface's device is up (mwan3).", l, num(ubus, "up"));
  const std::string status = ubus.value("status", "unknown");
  for (const char* s : kMwan3Statuses) {
    e.add("mwan3_interface_status", "gauge", "1 for the interface's status, 0 for the others (mwan3).",
          {{"interface", name}, {"status", s}}, status == s ? 1 : 0);
  }
}

void add_targets(Exposition& e, const std::string& name, const json& targets) {
  for (const json& t : targets) {
    const Labels l{{"interface", name}, {"target", t.value("ip", "")}};
    e.add("uplinkd_probes_sent_total", "counter", "Probes sent to the target.", l, num(t, "sent"));
    e.add("uplinkd_probes_replied_total", "counter", "Probes the target answered in time.", l,
          num(t, "replied"));
    e.add("uplinkd_probes_lost_total", "counter", "Probes the target did not answer in time.", l,
          num(t, "lost"));
    e.add("uplinkd_target_rtt_seconds", "gauge",
          "Mean RTT of the target's replies over the tracker's window.", l, num(t, "rtt_ms") / 1000.0);
    e.add("uplinkd_target_loss_ratio", "gauge",
          "Share of the target's probes lost over the tracker's window.", l, num(t, "loss_pct") / 100.0);
    e.add("uplinkd_target_up", "gauge", "1 when the target's last verdict was up.", l,
          t.value("state", "") == "up" ? 1 : 0);
    if (t.contains("timeout_ms") && t["timeout_ms"].is_number()) {
      e.add("uplinkd_target_timeout_seconds", "gauge",
            "timeout 'auto': how long the target's next probe waits for its reply (learnt from its RTT).", l,
            num(t, "timeout_ms") / 1000.0);
    }
    if (t.contains("rtt_histogram"))
      e.histogram("uplinkd_probe_rtt_seconds", "RTT of the target's replies.", l, t["rtt_histogram"]);
  }
}

void add_interface(Exposition& e, const json& i) {
  const std::string name = i.value("name", "");
  const Labels l{{"interface", name}};
  add_mwan3(e, name, mwan3::ubus_interface(i));
  const std::string state = i.value("state", "disabled");
  for (const char* s : kStates) {
    e.add("uplinkd_interface_state", "gauge", "1 for the interface's state, 0 for the others.",
          {{"interface", name}, {"state", s}}, state == s ? 1 : 0);
  }
  e.add("uplinkd_interface_state_seconds", "gauge", "Seconds the interface has been in its state.", l,
        num(i, "state_s"));
  e.add("uplinkd_interface_transitions_total", "counter", "State changes of the interface's tracker.", l,
        num(i, "transitions"));
  e.add("uplinkd_interface_admin_down", "gauge", "1 while the interface is out by `mwan3 ifdown`.", l,
        num(i, "admin_down"));
  e.add("uplinkd_interface_rtt_seconds", "gauge",
        "Mean RTT over the targets still probed (tracker's window).", l, num(i, "rtt_ms") / 1000.0);
  e.add("uplinkd_interface_loss_ratio", "gauge", "Share of probes lost over the tracker's window.", l,
        num(i, "loss_pct") / 100.0);
  if (i.contains("detection_s") && i["detection_s"].is_number()) {
    e.add("uplinkd_outage_detection_seconds", "gauge",
          "The last outage's detection time: its first failed probe sent to the interface going offline.", l,
          num(i, "detection_s"));
  }
  if (i.contains("path_mtu") && i["path_mtu"].is_object()) {
    const json& p = i["path_mtu"];
    if (p.contains("mtu") && p["mtu"].is_number())
      e.add("uplinkd_path_mtu_bytes", "gauge",
            "The uplink's measured path MTU (absent while unknown: targets that answer no big echo).", l,
            p["mtu"].get<double>());
    if (p.contains("device_mtu") && p["device_mtu"].is_number())
      e.add("uplinkd_device_mtu_bytes", "gauge", "The uplink device's MTU.", l,
            p["device_mtu"].get<double>());
    if (p.contains("measured_ago_s") && p["measured_ago_s"].is_number())
      e.add("uplinkd_path_mtu_age_seconds", "gauge", "Seconds since the path MTU was last measured.", l,
            p["measured_ago_s"].get<double>());
  }
  if (i.contains("probe_lateness"))
    e.histogram("uplinkd_probe_send_lateness_seconds", "How late probes left against their schedule.", l,
                i["probe_lateness"]);
  add_targets(e, name, i.value("targets", json::array()));
  if (i.contains("datapath")) {
    const json& d = i["datapath"];
    for (const char* verdict : {"passed", "dropped"}) {
      e.add("uplinkd_icmp_limiter_packets_total", "counter",
            "ICMP (not probe replies) on the uplink, by the limiter's verdict.",
            {{"interface", name}, {"verdict", verdict}},
            num(d, verdict == std::string("passed") ? "icmp_passed" : "icmp_dropped"));
    }
    e.add("uplinkd_probe_replies_matched_total", "counter", "Probe replies the XDP program matched.", l,
          num(d, "probe_replies"));
    e.add("uplinkd_probe_events_lost_total", "counter", "Probe replies lost to a full ring buffer.", l,
          num(d, "ringbuf_full"));
  }
}

void add_flows(Exposition& e, const json& flows) {
  if (!flows.is_object()) return;
  for (const json& u : flows.value("interfaces", json::array())) {
    const Labels l{{"interface", u.value("name", "")}};
    e.add("uplinkd_flows_tracked", "gauge", "Flows in the flow table on the interface, at the last sweep.", l,
          num(u, "tracked"));
    e.add("uplinkd_conntrack_deleted_total", "counter", "Conntrack entries deleted for the interface.", l,
          num(u, "conntrack_deleted"));
    e.add("uplinkd_proactive_resets_interface_total", "counter",
          "Idle TCP clients reset at once when the interface went offline.", l, num(u, "proactive_resets"));
  }
  e.add("uplinkd_flows_tracked_age_seconds", "gauge", "Age of the last sweep's flow counts.", {},
        num(flows, "tracked_age_s"));
  e.add("uplinkd_flows_created_total", "counter", "Flows classified and remembered.", {},
        num(flows, "created"));
  e.add("uplinkd_flows_reclassified_total", "counter", "Flows classified again, by why.",
        {{"reason", "stale"}}, num(flows, "reclassified"));
  e.add("uplinkd_flows_reclassified_total", "counter", "Flows classified again, by why.",
        {{"reason", "idle"}}, num(flows, "idle_reclassified"));
  e.add("uplinkd_flows_expired_total", "counter", "Idle flows removed by the sweep.", {},
        num(flows, "expired"));
  if (flows.contains("stale_resets")) {
    for (const char* kind : {"active", "proactive"}) {
      e.add("uplinkd_stale_resets_total", "counter",
            "TCP clients of a dead uplink reset: active on their next packet, proactive at failover.",
            {{"kind", kind}}, num(flows["stale_resets"], kind));
    }
  }
}

void add_wireguard(Exposition& e, const json& wireguard) {
  if (!wireguard.is_object()) return;
  for (const json& p : wireguard.value("peers", json::array())) {
    const std::string device = p.value("device", "");
    const std::string peer = p.value("peer", "");
    e.add("uplinkd_wireguard_steered_packets_total", "counter", "Packets to the peer's endpoint steered.",
          {{"device", device}, {"peer", peer}}, num(p, "steered_packets"));
    if (p.contains("uplink") && p["uplink"].is_string()) {
      e.add("uplinkd_wireguard_peer_uplink", "gauge", "1 for the interface the peer's endpoint rides.",
            {{"device", device}, {"peer", peer}, {"interface", p["uplink"].get<std::string>()}}, 1);
    }
  }
}

void add_rules(Exposition& e, const json& rules) {
  for (const json& r : rules) {
    const Labels l{{"rule", r.value("name", "")}, {"policy", r.value("use_policy", "")}};
    e.add("uplinkd_rule_packets_total", "counter", "Packets of new flows the rule matched.", l,
          num(r, "packets"));
    e.add("uplinkd_rule_bytes_total", "counter", "Bytes of new flows' first packets the rule matched.", l,
          num(r, "bytes"));
  }
}

}  // namespace

std::string render_metrics(const nlohmann::json& snapshot) {
  Exposition e;
  const json status = snapshot.value("status", json::object());
  const json daemon = status.value("daemon", json::object());
  e.add("uplinkd_build_info", "gauge", "1, labelled with the daemon's version and instance.",
        {{"version", snapshot.value("version", "")}, {"instance", daemon.value("instance", "")}}, 1);
  e.add("uplinkd_uptime_seconds", "gauge", "Seconds since the daemon started.", {}, num(daemon, "uptime_s"));
  for (const json& i : status.value("interfaces", json::array())) add_interface(e, i);
  add_flows(e, snapshot.value("flows", json::object()));
  add_wireguard(e, snapshot.value("wireguard", json::object()));
  add_rules(e, status.value("rules", json::array()));
  return e.text();
}

}  // namespace uplinkd::observability
