#include "observability/status_page.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <ctime>
#include <limits>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace uplinkd::observability {

std::string html_escape(const std::string& text) {
  std::string out;
  out.reserve(text.size());
  for (const char c : text) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&quot;";
        break;
      case '\'':
        out += "&#39;";
        break;
      default:
        out += c;
    }
  }
  return out;
}

namespace {

// Plot geometry in viewBox units. The svg scales to its container, so these only fix proportions.
constexpr double kViewWidth = 720;
constexpr double kPlotLeft = 56;
constexpr double kPlotRight = 674;
constexpr double kPlotTop = 24;
constexpr double kPlotBottom = 194;
constexpr double kPlotWidth = kPlotRight - kPlotLeft;
constexpr double kPlotHeight = kPlotBottom - kPlotTop;
constexpr double kXLabelBaseline = kPlotBottom + 20;
// The legend is a grid of equal cells, so that it stays tidy whatever the font's real width; an
// entry with a long label (an IPv6 address) takes several cells.
constexpr double kLegendFirstRow = 240;  // vertical centre of the first row
constexpr double kLegendRowHeight = 24;
constexpr int kLegendColumns = 3;
constexpr double kLegendCellWidth = kPlotWidth / kLegendColumns;
constexpr double kLegendSwatchWidth = 16;
constexpr double kLegendLabelOffset = 22;
// The width of a character at the larger text phones get (kStyle): only decides how many cells an
// entry takes.
constexpr double kLegendCharWidth = 11.5;
constexpr double kMinShadeWidth = 2;  // a single offline cycle must still show
constexpr double kSinglePointRadius = 2;

constexpr double kDefaultSpanS = 3600;
constexpr double kMaxSpanS = 366.0 * 86400;  // a longer span is a caller's bug; capping keeps x finite
constexpr double kMaxRttMs = 1e9;            // keeps the "nice" axis maximum finite
constexpr double kNsPerS = 1e9;

// Stroke colours of the targets' RTT lines, in track_ip order; readable on light and dark cards.
constexpr std::array<const char*, 8> kPalette{"#2f6fdb", "#8b5cf6", "#0f9d8a", "#a0612b",
                                              "#d0479b", "#6b8e23", "#4b7f9e", "#b59a00"};
constexpr const char* kLossColour = "#e5484d";
constexpr const char* kLatencyThresholdColour = "#e08a00";
constexpr const char* kOutageColour = "#e5484d";
constexpr const char* kDegradedColour = "#f0a000";

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();

// At most one decimal keeps a full hour of points small; a trailing ".0" is dropped for the same reason.
std::string num(double value) {
  const double tenths = std::round(value * 10);
  char buf[48];
  std::snprintf(buf, sizeof buf, "%.1f", tenths / 10 + 0.0);  // + 0.0: no "-0.0"
  std::string text = buf;
  if (text.size() > 2 && text.compare(text.size() - 2, 2, ".0") == 0) text.resize(text.size() - 2);
  return text;
}

// Tick labels: round numbers without a fixed number of decimals.
std::string short_num(double value) {
  char buf[48];
  std::snprintf(buf, sizeof buf, "%g", value + 0.0);
  return buf;
}

std::string attr(const char* name, double value) {
  return std::string(" ") + name + "=\"" + num(value) + "\"";
}

// A CSS class suffix from a word of the data: only [a-z0-9-] survives, so the class cannot break out.
std::string class_word(const std::string& word) {
  std::string out;
  for (const char c : word) {
    if ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-') {
      out += c;
    } else if (c >= 'A' && c <= 'Z') {
      out += static_cast<char>(c - 'A' + 'a');
    }
  }
  return out.empty() ? "unknown" : out;
}

// ---- time and durations ----

bool utc_time(int64_t unix_ms, std::tm& out) {
  const int64_t floor_s = unix_ms / 1000 - (unix_ms % 1000 < 0 ? 1 : 0);
  const auto seconds = static_cast<std::time_t>(floor_s);
  return gmtime_r(&seconds, &out) != nullptr;
}

std::string format_date(const std::tm& tm) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%04d-%02d-%02d", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday);
  return buf;
}

std::string format_clock(const std::tm& tm) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%02d:%02d:%02d", tm.tm_hour, tm.tm_min, tm.tm_sec);
  return buf;
}

std::string format_utc(int64_t unix_ms) {
  std::tm tm{};
  if (!utc_time(unix_ms, tm)) return "?";
  return format_date(tm) + " " + format_clock(tm);
}

// An event of today needs no date; older ones (or a clock that moved) show it.
std::string format_event_time(int64_t unix_ms, int64_t now_unix_ms) {
  std::tm event{};
  std::tm now{};
  if (!utc_time(unix_ms, event)) return "?";
  const bool same_day =
      utc_time(now_unix_ms, now) && now.tm_year == event.tm_year && now.tm_yday == event.tm_yday;
  return same_day ? format_clock(event) : format_date(event) + " " + format_clock(event);
}

std::string since_text(double seconds) {
  constexpr double kMaxSeconds = 1e12;  // tens of thousands of years: only guards the integer cast
  const auto s = static_cast<int64_t>(std::isfinite(seconds) ? std::clamp(seconds, 0.0, kMaxSeconds) : 0.0);
  const auto two_units = [](int64_t major, const char* major_unit, int64_t minor, const char* minor_unit) {
    std::string text = "for " + std::to_string(major) + " " + major_unit;
    if (minor > 0) text += " " + std::to_string(minor) + " " + minor_unit;
    return text;
  };
  if (s < 60) return "for " + std::to_string(s) + " s";
  if (s < 3600) return two_units(s / 60, "min", s % 60, "s");
  if (s < 86400) return two_units(s / 3600, "h", (s / 60) % 60, "min");
  return two_units(s / 86400, "d", (s / 3600) % 24, "h");
}

// "60 min", "90 s", "6 h": the unit a person would use for that span.
std::string span_text(double span_s) {
  if (span_s < 120) return short_num(std::round(span_s)) + " s";
  if (span_s <= 180 * 60) return short_num(std::round(span_s / 6) / 10) + " min";
  return short_num(std::round(span_s / 360) / 10) + " h";
}

double sane_span(double span_s) {
  if (!std::isfinite(span_s) || span_s <= 0) return kDefaultSpanS;
  return std::min(span_s, kMaxSpanS);
}

// ---- the series, read defensively: its rows may be shorter than t_ns ----

PointState state_at(const HistorySeries& s, size_t i) {
  return i < s.state.size() ? s.state[i] : PointState::Unknown;
}

float loss_at(const HistorySeries& s, size_t i) { return i < s.loss_pct.size() ? s.loss_pct[i] : kNaN; }

float rtt_at(const HistorySeries& s, size_t target, size_t i) {
  if (target >= s.rtt_ms.size() || i >= s.rtt_ms[target].size()) return kNaN;
  return s.rtt_ms[target][i];
}

// An RTT that can be drawn: a negative one is as meaningless as a missing one.
bool drawable_rtt(float rtt) { return std::isfinite(rtt) && rtt >= 0; }

// The x and y mapping of one plot.
struct Frame {
  double now_ns = 0;
  double span_s = kDefaultSpanS;
  double rtt_max = 1;

  [[nodiscard]] double age_s(int64_t t_ns) const { return (now_ns - static_cast<double>(t_ns)) / kNsPerS; }
  [[nodiscard]] bool covers(int64_t t_ns) const {
    const double age = age_s(t_ns);
    return age >= 0 && age <= span_s;
  }
  [[nodiscard]] double x(int64_t t_ns) const {
    return kPlotLeft + (span_s - age_s(t_ns)) / span_s * kPlotWidth;
  }
  [[nodiscard]] double y_rtt(double rtt_ms) const {
    return kPlotBottom - std::clamp(rtt_ms / rtt_max, 0.0, 1.0) * kPlotHeight;
  }
  [[nodiscard]] static double y_loss(double loss_pct) {
    return kPlotBottom - std::clamp(loss_pct / 100, 0.0, 1.0) * kPlotHeight;
  }
};

// The points inside [now - span, now], in time order (the ring is oldest first, but a sort costs
// little and keeps runs and lines right should a caller hand them unordered).
std::vector<size_t> visible_points(const HistorySeries& s, const Frame& frame) {
  std::vector<size_t> points;
  for (size_t i = 0; i < s.t_ns.size(); ++i) {
    if (frame.covers(s.t_ns[i])) points.push_back(i);
  }
  std::stable_sort(points.begin(), points.end(), [&](size_t a, size_t b) { return s.t_ns[a] < s.t_ns[b]; });
  return points;
}

size_t plotted_targets(const PageUplink& uplink) {
  return std::max(uplink.targets.size(), uplink.history.rtt_ms.size());
}

std::string target_label(const PageUplink& uplink, size_t target) {
  if (target < uplink.targets.size() && !uplink.targets[target].ip.empty()) return uplink.targets[target].ip;
  return "target " + std::to_string(target + 1);
}

const char* target_colour(size_t target) { return kPalette.at(target % kPalette.size()); }

bool threshold_set(double value) { return std::isfinite(value) && value > 0; }

// The RTT axis ends on 1, 2 or 5 x 10^k so that its ticks are round numbers.
struct RttScale {
  double max = 1;
  int intervals = 5;
};

RttScale rtt_scale(double largest_ms) {
  if (!(largest_ms > 1)) return {1, 5};
  const double capped = std::min(largest_ms, kMaxRttMs);
  const double magnitude = std::pow(10.0, std::floor(std::log10(capped)));
  // Slack for log10's rounding: 100 must stay 100, not become 200.
  const double wanted = capped * (1 - 1e-9);
  if (magnitude >= wanted) return {magnitude, 5};
  if (2 * magnitude >= wanted) return {2 * magnitude, 4};
  if (5 * magnitude >= wanted) return {5 * magnitude, 5};
  return {10 * magnitude, 5};
}

double largest_rtt(const PageUplink& uplink, const std::vector<size_t>& points) {
  double largest = threshold_set(uplink.failure_latency_ms) ? uplink.failure_latency_ms : 0;
  for (size_t target = 0; target < uplink.history.rtt_ms.size(); ++target) {
    for (const size_t i : points) {
      const float rtt = rtt_at(uplink.history, target, i);
      if (drawable_rtt(rtt)) largest = std::max(largest, static_cast<double>(rtt));
    }
  }
  return largest;
}

// ---- svg pieces ----

// A dashed horizontal line across the plot with a tooltip saying what it marks.
std::string threshold_line(const char* cls, double y, const char* colour, const char* dash,
                           const std::string& title) {
  return std::string("<line class=\"") + cls + "\"" + attr("x1", kPlotLeft) + attr("y1", y) +
         attr("x2", kPlotRight) + attr("y2", y) + " stroke=\"" + colour +
         "\" stroke-width=\"1.2\" stroke-dasharray=\"" + dash + "\"><title>" + title + "</title></line>\n";
}

std::string svg_text(double x, double y, const char* anchor, const std::string& escaped,
                     const char* cls = "") {
  std::string out = "<text";
  if (*cls != '\0') out += std::string(" class=\"") + cls + "\"";
  return out + attr("x", x) + attr("y", y) + " text-anchor=\"" + anchor + "\">" + escaped + "</text>\n";
}

// Text centred on y whatever its size (phones get larger text than desktops, see kStyle).
std::string svg_label(double x, double y, const char* anchor, const std::string& escaped) {
  return "<text" + attr("x", x) + attr("y", y) + " text-anchor=\"" + anchor +
         "\" dominant-baseline=\"central\">" + escaped + "</text>\n";
}

// Ticks every 1, 2, 5, 10, 15 or 30 of a unit, as few as keeps at most five intervals.
double x_tick_step(double span_s) {
  constexpr std::array<double, 20> kSteps{1,   2,    5,    10,   15,    30,    60,    120,   300,    600,
                                          900, 1800, 3600, 7200, 10800, 21600, 43200, 86400, 172800, 604800};
  for (const double step : kSteps) {
    if (span_s / step <= 5 + 1e-9) return step;
  }
  return std::ceil(span_s / 5 / 86400) * 86400;
}

std::string x_tick_label(double seconds_before, double step) {
  if (seconds_before <= 0) return "now";
  if (step < 60) return "-" + short_num(seconds_before) + " s";
  if (step < 3600) return "-" + short_num(seconds_before / 60) + " min";
  return "-" + short_num(seconds_before / 3600) + " h";
}

// Grid lines and their labels apart: the grid's group sets a stroke that text must not inherit.
struct AxisParts {
  std::string grid;
  std::string labels;
};

void x_axis(const Frame& frame, AxisParts& parts) {
  const double step = x_tick_step(frame.span_s);
  for (int k = 0; k * step <= frame.span_s + 1e-9; ++k) {
    const double x = kPlotRight - k * step / frame.span_s * kPlotWidth;
    parts.grid +=
        "<line" + attr("x1", x) + attr("y1", kPlotTop) + attr("x2", x) + attr("y2", kPlotBottom + 4) + "/>\n";
    parts.labels += svg_text(x, kXLabelBaseline, k == 0 ? "end" : "middle", x_tick_label(k * step, step));
  }
}

// RTT labels on the left, loss labels on the right, sharing the grid lines.
void y_axes(const RttScale& scale, AxisParts& parts) {
  for (int i = 0; i <= scale.intervals; ++i) {
    const double share = static_cast<double>(i) / scale.intervals;
    const double y = kPlotBottom - share * kPlotHeight;
    parts.grid += "<line" + attr("x1", kPlotLeft - 4) + attr("y1", y) + attr("x2", kPlotRight + 4) +
                  attr("y2", y) + "/>\n";
    parts.labels += svg_label(kPlotLeft - 7, y, "end", short_num(scale.max * share));
    parts.labels += svg_label(kPlotRight + 7, y, "start", short_num(std::round(100 * share)));
  }
  parts.labels += svg_text(2, kPlotTop - 10, "start", "RTT ms", "axis-title");
  parts.labels += svg_text(kViewWidth - 2, kPlotTop - 10, "end", "loss %", "axis-title");
}

// How a state shades the plot; Online and Unknown do not (cls stays null).
struct Shade {
  const char* cls = nullptr;
  const char* colour = nullptr;
  const char* title = nullptr;
};

Shade shade_of(PointState state) {
  switch (state) {
    case PointState::Offline:
      return {"outage", kOutageColour, "offline"};
    case PointState::Connecting:
      return {"degraded", kDegradedColour, "connecting"};
    case PointState::Disconnecting:
      return {"degraded", kDegradedColour, "disconnecting"};
    default:
      return {};
  }
}

// One rect per run of equal Offline/Connecting/Disconnecting points, up to the next point (the
// state held until then) or to now when the run is the latest.
std::string state_shading(const HistorySeries& s, const std::vector<size_t>& points, const Frame& frame) {
  std::string out;
  size_t run_start = 0;
  while (run_start < points.size()) {
    const PointState state = state_at(s, points[run_start]);
    size_t run_end = run_start + 1;
    while (run_end < points.size() && state_at(s, points[run_end]) == state) ++run_end;
    const Shade shade = shade_of(state);
    if (shade.cls != nullptr) {
      double x0 = frame.x(s.t_ns[points[run_start]]);
      const double x1 = run_end < points.size() ? frame.x(s.t_ns[points[run_end]]) : kPlotRight;
      const double width = std::max(x1 - x0, kMinShadeWidth);
      x0 = std::min(x0, kPlotRight - width);
      out += std::string("<rect class=\"") + shade.cls + "\"" + attr("x", x0) + attr("y", kPlotTop) +
             attr("width", width) + attr("height", kPlotHeight) + " fill=\"" + shade.colour +
             "\" fill-opacity=\".18\"><title>" + shade.title + "</title></rect>\n";
    }
    run_start = run_end;
  }
  return out;
}

// Coordinates in tenths of a unit: what gets printed, so comparing them finds what would print alike.
using Tenths = std::pair<int64_t, int64_t>;

Tenths to_tenths(double x, double y) {
  return {static_cast<int64_t>(std::llround(x * 10)), static_cast<int64_t>(std::llround(y * 10))};
}

// A point between two others of the same printed height adds nothing to a line: flat stretches
// (loss at 0 for an hour) then cost two points instead of thousands.
std::string points_attribute(const std::vector<Tenths>& line) {
  std::string out;
  const Tenths* last = nullptr;
  for (size_t i = 0; i < line.size(); ++i) {
    const bool flat_middle = i > 0 && i + 1 < line.size() && line[i - 1].second == line[i].second &&
                             line[i + 1].second == line[i].second;
    if (flat_middle || (last != nullptr && *last == line[i])) continue;
    if (last != nullptr) out += ' ';
    out += num(static_cast<double>(line[i].first) / 10) + "," + num(static_cast<double>(line[i].second) / 10);
    last = &line[i];
  }
  return out;
}

// Splits the points into runs of finite values: a missing value breaks the line.
template <typename ValueAt, typename YOf>
std::vector<std::vector<Tenths>> finite_segments(const HistorySeries& s, const std::vector<size_t>& points,
                                                 const Frame& frame, ValueAt value_at, YOf y_of) {
  std::vector<std::vector<Tenths>> segments;
  bool open = false;
  for (const size_t i : points) {
    const float value = value_at(i);
    if (!std::isfinite(value) || value < 0) {
      open = false;
      continue;
    }
    if (!open) segments.emplace_back();
    open = true;
    segments.back().push_back(to_tenths(frame.x(s.t_ns[i]), y_of(value)));
  }
  return segments;
}

// Each segment: a polyline, or a dot when it is a single point (a polyline of one point is invisible).
std::string draw_segments(const std::vector<std::vector<Tenths>>& segments, const std::string& cls,
                          const std::string& data_attr, const std::string& stroke_attrs, const char* colour) {
  std::string out;
  for (const auto& segment : segments) {
    if (segment.size() == 1) {
      out += "<circle class=\"";
      out += cls;
      out += "-point\"";
      out += data_attr;
      out += attr("cx", static_cast<double>(segment[0].first) / 10);
      out += attr("cy", static_cast<double>(segment[0].second) / 10);
      out += attr("r", kSinglePointRadius);
      out += std::string(" fill=\"") + colour + "\"/>\n";
      continue;
    }
    out += "<polyline class=\"";
    out += cls;
    out += "\"";
    out += data_attr;
    out += " points=\"";
    out += points_attribute(segment);
    out += std::string("\" fill=\"none\" stroke=\"") + colour + "\"";
    out += stroke_attrs;
    out += "/>\n";
  }
  return out;
}

std::string rtt_lines(const PageUplink& uplink, const std::vector<size_t>& points, const Frame& frame) {
  std::string out;
  const HistorySeries& s = uplink.history;
  for (size_t target = 0; target < s.rtt_ms.size(); ++target) {
    const auto segments = finite_segments(
        s, points, frame, [&](size_t i) { return rtt_at(s, target, i); },
        [&](double rtt) { return frame.y_rtt(rtt); });
    out +=
        draw_segments(segments, "rtt", " data-target=\"" + html_escape(target_label(uplink, target)) + "\"",
                      " stroke-width=\"1.2\" stroke-linejoin=\"round\"", target_colour(target));
  }
  return out;
}

std::string loss_lines(const HistorySeries& s, const std::vector<size_t>& points, const Frame& frame) {
  const auto segments = finite_segments(
      s, points, frame, [&](size_t i) { return loss_at(s, i); },
      [](double loss) { return Frame::y_loss(loss); });
  return draw_segments(segments, "loss", "", " stroke-width=\"1.2\" stroke-dasharray=\"4 3\"", kLossColour);
}

std::string threshold_lines(const PageUplink& uplink, const Frame& frame) {
  std::string out;
  if (threshold_set(uplink.failure_latency_ms)) {
    out +=
        threshold_line("threshold-latency", frame.y_rtt(uplink.failure_latency_ms), kLatencyThresholdColour,
                       "8 4", "failure latency " + short_num(uplink.failure_latency_ms) + " ms");
  }
  if (threshold_set(uplink.failure_loss_pct)) {
    out += threshold_line("threshold-loss", Frame::y_loss(uplink.failure_loss_pct), kLossColour, "2 4",
                          "failure loss " + short_num(uplink.failure_loss_pct) + " %");
  }
  return out;
}

// One legend entry: a swatch then its label.
struct LegendItem {
  std::string swatch;  // svg drawn in a kLegendSwatchWidth x 10 box whose top-left corner is (0, 0)
  std::string label;   // escaped
  size_t label_chars = 0;
};

std::string line_swatch(const char* colour, const char* dash) {
  return std::string("<line x1=\"0\" y1=\"5\"") + attr("x2", kLegendSwatchWidth) + " y2=\"5\" stroke=\"" +
         colour + "\" stroke-width=\"2\"" + dash + "/>";
}

std::string box_swatch(const char* colour) {
  return std::string("<rect") + attr("width", kLegendSwatchWidth) + " height=\"10\" fill=\"" + colour +
         "\" fill-opacity=\".3\"/>";
}

bool shades_with(const HistorySeries& s, const std::vector<size_t>& points, std::string_view cls) {
  return std::any_of(points.begin(), points.end(), [&](size_t i) {
    const char* shade = shade_of(state_at(s, i)).cls;
    return shade != nullptr && cls == shade;
  });
}

// Targets and loss always; shading and thresholds only when the plot shows them.
std::vector<LegendItem> legend_items(const PageUplink& uplink, const std::vector<size_t>& points) {
  std::vector<LegendItem> items;
  for (size_t target = 0; target < plotted_targets(uplink); ++target) {
    const std::string label = target_label(uplink, target);
    items.push_back({line_swatch(target_colour(target), ""), html_escape(label), label.size()});
  }
  items.push_back({line_swatch(kLossColour, " stroke-dasharray=\"4 3\""), "loss", 4});
  if (threshold_set(uplink.failure_latency_ms)) {
    items.push_back({line_swatch(kLatencyThresholdColour, " stroke-dasharray=\"8 4\""), "latency limit", 13});
  }
  if (threshold_set(uplink.failure_loss_pct)) {
    items.push_back({line_swatch(kLossColour, " stroke-dasharray=\"2 4\""), "loss limit", 10});
  }
  if (shades_with(uplink.history, points, "outage")) {
    items.push_back({box_swatch(kOutageColour), "offline", 7});
  }
  if (shades_with(uplink.history, points, "degraded")) {
    items.push_back({box_swatch(kDegradedColour), "(dis)connecting", 15});
  }
  return items;
}

size_t legend_cells(const LegendItem& item) {
  const double width = kLegendLabelOffset + static_cast<double>(item.label_chars) * kLegendCharWidth;
  const auto cells = static_cast<size_t>(std::ceil(width / kLegendCellWidth));
  return std::clamp<size_t>(cells, 1, kLegendColumns);
}

// Returns the legend's svg and sets `rows` to the number of rows it took.
std::string legend(const std::vector<LegendItem>& items, int& rows) {
  std::string out = "<g class=\"legend\">\n";
  size_t column = 0;
  rows = 1;
  for (const auto& item : items) {
    const size_t cells = legend_cells(item);
    if (column > 0 && column + cells > kLegendColumns) {
      column = 0;
      ++rows;
    }
    const double x = kPlotLeft + static_cast<double>(column) * kLegendCellWidth;
    const double centre = kLegendFirstRow + (rows - 1) * kLegendRowHeight;
    out += "<g transform=\"translate(" + num(x) + " " + num(centre - 5) + ")\">" + item.swatch + "</g>";
    out += svg_label(x + kLegendLabelOffset, centre, "start", item.label);
    column += cells;
  }
  return out + "</g>\n";
}

std::string no_data_text(const HistorySeries& s, double span_s) {
  const std::string text =
      s.t_ns.empty() ? "No probe results yet" : "No probe results in the last " + span_text(span_s);
  return svg_text((kPlotLeft + kPlotRight) / 2, (kPlotTop + kPlotBottom) / 2 + 5, "middle", text, "no-data");
}

// ---- the page ----

std::string figure(const char* name, const std::string& value) {
  return std::string("<div><dt>") + name + "</dt><dd>" + value + "</dd></div>";
}

std::string rtt_text(double rtt_ms, bool measured) {
  if (!std::isfinite(rtt_ms) || (rtt_ms == 0 && !measured)) return "—";
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.1f ms", rtt_ms);
  return buf;
}

std::string loss_text(double loss_pct) {
  if (!std::isfinite(loss_pct)) return "—";
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.0f %%", loss_pct);
  return buf;
}

std::string target_row(const PageTarget& target, size_t index) {
  // A skipped target was not needed by recent cycles, so its figures are stale: show only its state.
  const bool stale = target.state == "skipped" || target.state == "unknown";
  return std::string("<tr><td class=\"ip\"><span class=\"swatch\" style=\"background:") +
         target_colour(index) + "\"></span>" + html_escape(target.ip) +
         "</td><td><span class=\"tstate tstate-" + class_word(target.state) + "\">" +
         html_escape(target.state) + "</span></td><td class=\"num\">" +
         (stale ? "—" : rtt_text(target.rtt_ms, target.state == "up")) + "</td><td class=\"num\">" +
         (stale ? "—" : loss_text(target.loss_pct)) + "</td></tr>\n";
}

std::string targets_table(const PageUplink& uplink) {
  if (uplink.targets.empty()) return "<p class=\"muted\">No tracking targets.</p>\n";
  std::string out =
      "<div class=\"scroll\"><table class=\"targets\">\n<thead><tr><th>target</th><th>state</th>"
      "<th class=\"num\">RTT</th><th class=\"num\">loss</th></tr></thead>\n<tbody>\n";
  for (size_t i = 0; i < uplink.targets.size(); ++i) out += target_row(uplink.targets[i], i);
  return out + "</tbody></table></div>\n";
}

std::string uplink_card(const PageUplink& uplink, const PageData& data) {
  const std::string state = uplink.state.empty() ? "unknown" : uplink.state;
  std::string out = "<section class=\"uplink\" id=\"uplink-" + html_escape(uplink.name) + "\">\n";
  out += "<div class=\"card-head\"><h2>" + html_escape(uplink.name) + " <span class=\"device\">" +
         html_escape(uplink.device) + "</span></h2><span class=\"state state-" + class_word(state) + "\">" +
         html_escape(state) + "</span><span class=\"since\">" + since_text(uplink.state_s) +
         "</span></div>\n";
  out += "<dl class=\"figures\">" + figure("score", std::to_string(uplink.score)) +
         figure("RTT", rtt_text(uplink.rtt_ms, state == "online")) +
         figure("loss", loss_text(uplink.loss_pct)) +
         figure("path MTU", uplink.path_mtu > 0 ? std::to_string(uplink.path_mtu) : "—") + "</dl>\n";
  out += targets_table(uplink);
  out += render_plot(uplink, data.now_ns, data.span_s);
  return out + "</section>\n";
}

std::string event_row(const Event& event, int64_t now_unix_ms) {
  return "<tr><td class=\"time\"><time title=\"" + format_utc(event.unix_ms) + " UTC\">" +
         format_event_time(event.unix_ms, now_unix_ms) + "</time></td><td><span class=\"level level-" +
         class_word(event.level) + "\">" + html_escape(event.level) + "</span></td><td>" +
         html_escape(event.text) + "</td></tr>\n";
}

std::string events_section(const PageData& data) {
  std::string out = "<section id=\"events\">\n<h2>Last events</h2>\n";
  if (data.events.empty()) return out + "<p class=\"muted\">No events yet.</p>\n</section>\n";
  out +=
      "<div class=\"scroll\"><table class=\"events\">\n<thead><tr><th>time (UTC)</th><th>level</th>"
      "<th>event</th></tr></thead>\n<tbody>\n";
  for (const auto& event : data.events) out += event_row(event, data.now_unix_ms);
  return out + "</tbody></table></div>\n</section>\n";
}

constexpr const char* kStyle = R"css(
:root{color-scheme:light dark;--bg:#f3f4f6;--card:#fff;--fg:#1f2328;--muted:#5f6b76;--line:#dde1e6}
@media (prefers-color-scheme:dark){:root{--bg:#14171b;--card:#1d2126;--fg:#e4e7ea;--muted:#9aa4ae;--line:#30363d}}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--fg);font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif}
main{max-width:980px;margin:0 auto;padding:16px 12px 24px}
header{margin:4px 4px 14px}
header p{margin:2px 0}
h1{font-size:1.45rem;margin:0}
h2{font-size:1.15rem;margin:0}
.meta,.muted,.device,.since,footer,nav.span{color:var(--muted)}
nav.span a{color:inherit}
.device{font-weight:400;font-size:.95rem}
section{background:var(--card);border:1px solid var(--line);border-radius:10px;padding:14px 16px;margin:0 0 14px}
.card-head{display:flex;flex-wrap:wrap;align-items:center;gap:6px 12px}
.state,.level{display:inline-block;padding:1px 10px;border-radius:999px;font-size:.82rem;font-weight:600;color:#fff;background:#6b7280}
.state-online{background:#1f883d}.state-offline{background:#cf222e}
.state-connecting,.state-disconnecting{background:#bf7d00}.state-disabled{background:#6b7280}
.level{padding:0 8px;font-weight:500;background:transparent;color:var(--fg);border:1px solid var(--line)}
.level-warning{border-color:#bf7d00;color:#bf7d00}.level-error{border-color:#cf222e;color:#cf222e}
.figures{display:flex;flex-wrap:wrap;gap:4px 28px;margin:10px 0 8px}
.figures div{display:flex;gap:6px;align-items:baseline}
.figures dt{color:var(--muted);font-size:.85rem}
.figures dd{margin:0;font-weight:600;font-variant-numeric:tabular-nums}
.scroll{overflow-x:auto}
table{border-collapse:collapse;width:100%;font-size:.9rem}
th,td{text-align:left;padding:4px 8px;border-bottom:1px solid var(--line);vertical-align:top}
th{color:var(--muted);font-weight:500}
.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
td.time{white-space:nowrap;font-variant-numeric:tabular-nums}
.swatch{display:inline-block;width:10px;height:10px;border-radius:2px;margin-right:8px}
.tstate-up{color:#1f883d}.tstate-down{color:#cf222e}
.plot{display:block;width:100%;height:auto;margin-top:12px}
.plot text{fill:var(--muted)}
.plot .no-data{fill:var(--fg);font-size:15px}
footer{font-size:.85rem;margin:4px}
td.ip{white-space:nowrap}
@media (max-width:600px){
main{padding:10px 6px 16px}
section{padding:10px 8px}
th,td{padding:4px 5px}
.plot{font-size:18px}
}
)css";

std::string page_head(const PageData& data, const std::string& title) {
  std::string out =
      "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
      "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n";
  // Below one second the page would reload without pause: no refresh then.
  if (data.refresh_s >= 1) {
    out += "<meta http-equiv=\"refresh\" content=\"" + std::to_string(data.refresh_s) + "\">\n";
  }
  return out + "<title>" + title + "</title>\n<style>" + kStyle + "</style>\n</head>\n";
}

// Links that zoom every plot (the daemon reads `?minutes=`); the one shown is not a link.
std::string span_links(const PageData& data) {
  std::string out = "<nav class=\"span\">Plots over the last ";
  const std::pair<int, const char*> spans[] = {{10, "10 min"}, {30, "30 min"}, {60, "1 h"}};
  for (size_t i = 0; i < std::size(spans); ++i) {
    const auto& [minutes, label] = spans[i];
    out += i == 0 ? "" : " · ";
    if (std::lround(data.span_s) == minutes * 60) {
      out += std::string("<strong>") + label + "</strong>";
    } else {
      out += "<a href=\"/" + (minutes == 60 ? std::string() : "?minutes=" + std::to_string(minutes)) + "\">" +
             label + "</a>";
    }
  }
  return out + "</nav>";
}

}  // namespace

std::string render_plot(const PageUplink& uplink, int64_t now_ns, double span_s) {
  Frame frame;
  frame.now_ns = static_cast<double>(now_ns);
  frame.span_s = sane_span(span_s);
  const std::vector<size_t> points = visible_points(uplink.history, frame);
  const RttScale scale = rtt_scale(largest_rtt(uplink, points));
  frame.rtt_max = scale.max;

  int legend_rows = 1;
  const std::string legend_svg = legend(legend_items(uplink, points), legend_rows);
  const double height = kLegendFirstRow + (legend_rows - 1) * kLegendRowHeight + 14;

  std::string out = "<svg class=\"plot\" viewBox=\"0 0 " + num(kViewWidth) + " " + num(height) +
                    "\" width=\"100%\" role=\"img\" aria-label=\"RTT and loss of " +
                    html_escape(uplink.name) + " over the last " + span_text(frame.span_s) +
                    "\" font-family=\"system-ui, sans-serif\" font-size=\"12\" fill=\"currentColor\">\n";
  // SVG paints in document order: the grid goes first so that shading and lines cover it.
  AxisParts axes;
  y_axes(scale, axes);
  x_axis(frame, axes);
  out += "<g class=\"grid\" stroke=\"currentColor\" stroke-opacity=\".14\">\n" + axes.grid + "</g>\n" +
         axes.labels;
  out += "<rect class=\"frame\"" + attr("x", kPlotLeft) + attr("y", kPlotTop) + attr("width", kPlotWidth) +
         attr("height", kPlotHeight) + " fill=\"none\" stroke=\"currentColor\" stroke-opacity=\".35\"/>\n";
  out += state_shading(uplink.history, points, frame);
  out += threshold_lines(uplink, frame);
  out += rtt_lines(uplink, points, frame);
  out += loss_lines(uplink.history, points, frame);
  if (points.empty()) out += no_data_text(uplink.history, frame.span_s);
  out += legend_svg;
  return out + "</svg>\n";
}

std::string render_status_page(const PageData& data) {
  const std::string title = data.instance.empty() ? "uplinkd" : "uplinkd — " + html_escape(data.instance);
  std::string out = page_head(data, title);
  out += "<body>\n<main>\n<header><h1>" + title + "</h1><p class=\"meta\">version " +
         html_escape(data.version) + " · " + format_utc(data.now_unix_ms) + " UTC</p>" + span_links(data) +
         "</header>\n";
  if (data.uplinks.empty()) out += "<section><p>No interfaces are configured.</p></section>\n";
  for (const auto& uplink : data.uplinks) out += uplink_card(uplink, data);
  out += events_section(data);
  if (data.refresh_s >= 1) {
    out += "<footer>Reloads every " + std::to_string(data.refresh_s) + " s.</footer>\n";
  }
  return out + "</main>\n</body>\n</html>\n";
}

}  // namespace uplinkd::observability
