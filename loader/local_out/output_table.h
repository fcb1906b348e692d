// uplinkd's nft table for the router's own traffic (output_ruleset.h says what it holds and why),
// loaded and kept current through libnftables: nft's own parser and transactions, as the ct mark
// table does (netlink/ct_mark.h).
//
// Lifecycle, as for the ct mark table: the constructor replaces a table of the same name that a
// crashed or restarted predecessor left, in one transaction (packets see the old table or the new
// one, never none); the destructor deletes it unless the teardown keeps kernel state (`uplinkctl
// restart`, `stop --keep-datapath`): then the next daemon replaces it the same way. A reload
// rebuilds the table (rules, marks and policies may all change); a failover only rewrites policy
// map and member set elements; an uplink that goes down loses its sticky entries.
//
// Works in the network namespace of the thread that constructs it.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "local_out/output_ruleset.h"

struct nft_ctx;

namespace uplinkd::local_out {

class OutputTable {
 public:
  // Throws std::invalid_argument for a table name that is not an nft identifier,
  // std::runtime_error with nft's message when the table cannot be installed.
  explicit OutputTable(std::string table);
  ~OutputTable();
  OutputTable(const OutputTable&) = delete;
  OutputTable& operator=(const OutputTable&) = delete;

  // Builds the whole table for `plan` with the policies, connected networks and ipset copies given,
  // in one transaction. `plan.table` is overwritten with this table's name. Throws
  // std::runtime_error; the old table stays on failure.
  void rebuild(OutputPlan plan, const policy::PolicyTable& resolved,
               const std::map<std::string, uint32_t>& policy_ids,
               const std::vector<netlink::SetPrefix>& connected,
               const std::vector<std::vector<netlink::SetPrefix>>& ipsets);
  // Policies changed (an uplink went online or offline): map and set elements only.
  void publish(const policy::PolicyTable& resolved, const std::map<std::string, uint32_t>& policy_ids);
  void set_connected(const std::vector<netlink::SetPrefix>& connected);
  // ipsets[k - 1]: the prefixes of set id k.
  void set_ipset(size_t id, const std::vector<netlink::SetPrefix>& prefixes);
  void uplink_down(uint32_t id);

  // Deletes a table of this name that a predecessor left (it ran with `local_rules` on, this one
  // runs with it off); nothing when there is none. Logs what it did or could not do.
  static void remove_leftover(const std::string& table);

  [[nodiscard]] const std::string& table() const { return table_; }
  [[nodiscard]] bool built() const { return built_; }

 private:
  void run(const std::string& commands, const std::string& what);

  std::string table_;
  OutputPlan plan_;
  policy::CompiledRules rules_;  // plan_.rules points here
  bool built_ = false;
  ::nft_ctx* nft_ = nullptr;
};

}  // namespace uplinkd::local_out
