// `/metrics`: the Prometheus text exposition (format 0.0.4) of one snapshot of the daemon.
//
// A pure function of JSON the daemon already gives `uplinkctl`: `status` is `uplinkctl status
// --json`, `flows` is `uplinkctl flows --json`, `wireguard` is `uplinkctl wireguard --json`. So a
// scrape and the CLI show the same numbers by construction, and no scrape walks a flow table (the
// flow counts are the periodic sweep's). Names:
// - mwan3_interface_*: prometheus-node-exporter-lua-mwan3's names, labels and meanings, from the
//   same object `ubus call mwan3 status` answers with (mwan3/mwan3_view.h);
// - uplinkd_*: uplinkd's own, in base units (seconds, ratios), with `interface` and `target` labels.
#pragma once

#include <nlohmann/json.hpp>
#include <string>

namespace uplinkd::observability {

// snapshot: {"status": ..., "flows": ..., "wireguard": ..., "version": "..."}; missing parts give
// no samples.
std::string render_metrics(const nlohmann::json& snapshot);

// The Content-Type of what render_metrics() returns.
inline constexpr const char* kMetricsContentType = "text/plain; version=0.0.4; charset=utf-8";

}  // namespace uplinkd::observability
