// The status page served at `/`: one self-contained HTML document (inline CSS and SVG, no script,
// nothing loaded from elsewhere) that the browser reloads every `refresh_s` seconds.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "observability/history.h"

namespace uplinkd::observability {

struct PageTarget {
  std::string ip;
  std::string state;  // up | down | skipped | unknown
  double rtt_ms = 0;
  double loss_pct = 0;
};

struct PageUplink {
  std::string name;
  std::string device;
  std::string state;   // mwan3's status word: online | offline | connecting | disconnecting | disabled
  double state_s = 0;  // how long it has been in that state
  int score = 0;
  double rtt_ms = 0;                // now, over the tracker's window
  double loss_pct = 0;              // now, over the tracker's window
  int path_mtu = 0;                 // measured path MTU (0: unknown or not measured)
  std::vector<PageTarget> targets;  // in track_ip order: the history's rtt_ms rows follow it
  HistorySeries history;
  // Quality thresholds drawn on the plot when check_quality is set (0: none).
  double failure_latency_ms = 0;
  double failure_loss_pct = 0;
};

struct PageData {
  std::string instance;
  std::string version;
  int64_t now_ns = 0;       // CLOCK_MONOTONIC at the snapshot: history times are plotted against it
  int64_t now_unix_ms = 0;  // wall clock at the snapshot: event times are printed against it
  double span_s = 3600;     // what the plots' x axis covers, ending now
  int refresh_s = 5;
  std::vector<PageUplink> uplinks;
  std::vector<Event> events;  // newest first
};

std::string render_status_page(const PageData& data);

// The SVG plot of one uplink, alone (render_status_page embeds it; tests read it).
std::string render_plot(const PageUplink& uplink, int64_t now_ns, double span_s);

// Text escaped for HTML element content and attribute values.
std::string html_escape(const std::string& text);

}  // namespace uplinkd::observability
