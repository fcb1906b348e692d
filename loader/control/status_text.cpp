#include "control/status_text.h"

#include <cstdio>
#include <sstream>

#include "policy/policy_table.h"
#include "policy/rule_compiler.h"

namespace uplinkd::control {

std::string format_duration(double seconds) {
  long s = seconds < 0 ? 0 : static_cast<long>(seconds);
  char buf[32];
  std::snprintf(buf, sizeof buf, "%02ldh:%02ldm:%02lds", s / 3600, (s / 60) % 60, s % 60);
  return buf;
}

namespace {

std::string interface_line(const nlohmann::json& i) {
  const std::string name = i.value("name", "?");
  const std::string state = i.value("state", "unknown");
  if (!i.value("enabled", true)) return " interface " + name + " is disabled\n";
  if (!i.value("tracking", false)) {
    return " interface " + name + " is " + state + " and tracking is down (device " + i.value("device", "?") +
           " " + i.value("device_state", "absent") + ")\n";
  }
  std::string since = state == "online" || state == "disconnecting" ? "online " : "offline ";
  if (state == "connecting" || state == "disconnecting") since = state + " ";
  return " interface " + name + " is " + state + " and tracking is active (" + since +
         format_duration(i.value("state_s", 0.0)) + ", uptime " + format_duration(i.value("uptime_s", 0.0)) +
         ")\n";
}

// Where /metrics and the status page are served (option metrics_listen), and why not when it failed.
std::string format_metrics_listener(const nlohmann::json& status) {
  const nlohmann::json listener =
      status.value("daemon", nlohmann::json::object()).value("metrics_listener", nlohmann::json::object());
  const nlohmann::json listening = listener.value("listening", nlohmann::json::array());
  const nlohmann::json errors = listener.value("errors", nlohmann::json::array());
  if (listening.empty() && errors.empty()) return "";
  std::string out = "Metrics listener:\n";
  for (const auto& a : listening) out += " http://" + a.get<std::string>() + "/ (status page) and /metrics\n";
  for (const auto& e : errors) out += " not listening: " + e.get<std::string>() + "\n";
  return out + "\n";
}

}  // namespace

std::string format_interfaces(const nlohmann::json& status) {
  std::ostringstream out;
  out << "Interface status:\n";
  for (const auto& i : status.value("interfaces", nlohmann::json::array())) out << interface_line(i);
  out << "\n";
  return out.str();
}

std::string format_connected(const nlohmann::json& connected) {
  std::ostringstream out;
  for (const char* family : {"ipv4", "ipv6"}) {
    out << "Directly connected " << family << " networks:\n";
    for (const auto& p : connected.value(family, nlohmann::json::array()))
      out << p.get<std::string>() << "\n";
    out << "\n";
  }
  return out.str();
}

namespace {

// "  path MTU 1400 (device MTU 1500), measured 12 s ago"; unknown and measuring say why.
std::string path_mtu_line(const nlohmann::json& p) {
  const std::string state = p.value("state", "unknown");
  if (state == "off") return "  path MTU: not measured (pmtu_interval 0)\n";
  const auto mtu = p.find("mtu");
  const auto ago = p.find("measured_ago_s");
  char buf[160];
  std::string line = "  path MTU ";
  if (mtu != p.end() && mtu->is_number()) {
    std::snprintf(buf, sizeof buf, "%d (device MTU %d)", mtu->get<int>(), p.value("device_mtu", 0));
    line += buf;
    if (ago != p.end() && ago->is_number()) {
      std::snprintf(buf, sizeof buf, ", measured %.0f s ago", ago->get<double>());
      line += buf;
    }
  } else {
    line += "unknown";
  }
  if (state == "measuring") line += " (measuring)";
  const std::string note = p.value("note", "");
  if (!note.empty()) line += ": " + note;
  return line + "\n";
}

// timeout 'auto': the timeout the target's next probe gets (shown for skipped targets too: it
// is what their probes get when an outage of the earlier targets needs them).
std::string adaptive_timeout_text(const nlohmann::json& target) {
  if (!target.contains("timeout_ms") || !target["timeout_ms"].is_number()) return "";
  char buf[64];
  std::snprintf(buf, sizeof buf, ", timeout %.1f ms (auto)", target["timeout_ms"].get<double>());
  return buf;
}

}  // namespace

std::string format_status(const nlohmann::json& status) {
  std::ostringstream out;
  out << format_interfaces(status);
  if (status.contains("policies")) out << policy::format_policies(status["policies"]);
  if (status.contains("connected")) out << format_connected(status["connected"]);
  if (status.contains("rules")) out << policy::format_rules(status["rules"]);
  out << "Probe targets:\n";
  char buf[256];
  for (const auto& i : status.value("interfaces", nlohmann::json::array())) {
    if (!i.value("enabled", true)) continue;
    const auto& p = i.value("probes", nlohmann::json::object());
    std::snprintf(buf, sizeof buf,
                  " %s (%s): score %d, %llu sent, %llu replied, %llu lost, rtt %.2f ms, loss %.1f%%\n",
                  i.value("name", "?").c_str(), i.value("device", "?").c_str(), i.value("score", 0),
                  p.value("sent", 0ULL), p.value("replied", 0ULL), p.value("lost", 0ULL),
                  i.value("rtt_ms", 0.0), i.value("loss_pct", 0.0));
    out << buf;
    if (i.contains("detection_s") && i["detection_s"].is_number()) {
      std::snprintf(buf, sizeof buf, "  last outage detected %.2f s after its first failed probe\n",
                    i["detection_s"].get<double>());
      out << buf;
    }
    if (i.contains("path_mtu")) out << path_mtu_line(i["path_mtu"]);
    for (const auto& t : i.value("targets", nlohmann::json::array())) {
      const std::string state = t.value("state", "?");
      // A skipped target was not needed by recent cycles (reliability was reached before it), so
      // its figures are from whenever it was last probed: show only the state, as mwan3 does.
      if (state == "skipped" || state == "unknown") {
        std::snprintf(buf, sizeof buf, "  %-40s %s", t.value("ip", "?").c_str(), state.c_str());
      } else {
        std::snprintf(buf, sizeof buf, "  %-40s %-8s rtt %.2f ms, loss %.1f%%", t.value("ip", "?").c_str(),
                      state.c_str(), t.value("rtt_ms", 0.0), t.value("loss_pct", 0.0));
      }
      out << buf << adaptive_timeout_text(t) << "\n";
    }
  }
  out << "\n" << format_metrics_listener(status);
  return out.str();
}

}  // namespace uplinkd::control
