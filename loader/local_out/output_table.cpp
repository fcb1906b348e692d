#include "local_out/output_table.h"

#include <nftables/libnftables.h>

#include <stdexcept>
#include <utility>

#include "common/log.h"
#include "lifecycle/teardown.h"

namespace uplinkd::local_out {
namespace {

bool is_identifier(const std::string& name) {
  auto letter = [](char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_'; };
  if (name.empty() || name.size() > 255 || !letter(name[0])) return false;
  for (char c : name) {
    if (!letter(c) && !(c >= '0' && c <= '9') && c != '.' && c != '-') return false;
  }
  return true;
}

std::string error_text(nft_ctx* nft) {
  const char* text = nft_ctx_get_error_buffer(nft);
  std::string message = text != nullptr ? text : "";
  while (!message.empty() && (message.back() == '\n' || message.back() == ' ')) message.pop_back();
  return message.empty() ? "nft gave no message" : message;
}

}  // namespace

OutputTable::OutputTable(std::string table) : table_(std::move(table)) {
  if (!is_identifier(table_)) {
    throw std::invalid_argument("output table: '" + table_ + "' is not an nft identifier");
  }
  nft_ = nft_ctx_new(NFT_CTX_DEFAULT);
  if (nft_ == nullptr)
    throw std::runtime_error("output table: cannot create an nftables context (out of memory?)");
  nft_ctx_buffer_output(nft_);
  nft_ctx_buffer_error(nft_);
}

OutputTable::~OutputTable() {
  if (nft_ == nullptr) return;
  if (built_ && !lifecycle::keep_kernel_state()) {
    try {
      run("delete table inet " + table_ + "\n", "removing");
    } catch (const std::exception& e) {
      log::warn(e.what());  // someone removed it already (`nft flush ruleset`)
    }
  }
  nft_ctx_free(nft_);
}

void OutputTable::remove_leftover(const std::string& table) {
  if (!is_identifier(table)) return;
  nft_ctx* nft = nft_ctx_new(NFT_CTX_DEFAULT);
  if (nft == nullptr) return;
  nft_ctx_buffer_output(nft);
  nft_ctx_buffer_error(nft);
  // `list` first: deleting a table that is not there is an error nft would print.
  const std::string list = "list table inet " + table + "\n";
  if (nft_run_cmd_from_buffer(nft, list.c_str()) == 0) {
    const std::string del = "delete table inet " + table + "\n";
    if (nft_run_cmd_from_buffer(nft, del.c_str()) == 0) {
      log::notice("removed nft table inet " + table + " left by a predecessor (option local_rules is off)");
    } else {
      log::warn("removing nft table inet " + table + " left by a predecessor: " + error_text(nft));
    }
  }
  nft_ctx_free(nft);
}

void OutputTable::rebuild(OutputPlan plan, const policy::PolicyTable& resolved,
                          const std::map<std::string, uint32_t>& policy_ids,
                          const std::vector<netlink::SetPrefix>& connected,
                          const std::vector<std::vector<netlink::SetPrefix>>& ipsets) {
  policy::CompiledRules rules = *plan.rules;
  plan.table = table_;
  plan.rules = &rules;
  std::string commands = table_commands(plan);
  commands += policy_commands(plan, resolved, policy_ids);
  commands += address_set_commands(table_, "connected", connected);
  for (size_t k = 0; k < ipsets.size() && k < rules.sets.size(); ++k) {
    commands += address_set_commands(table_, "ipset" + std::to_string(k + 1), ipsets[k]);
  }
  run(commands, "installing");
  rules_ = std::move(rules);
  plan_ = std::move(plan);
  plan_.rules = &rules_;
  built_ = true;
}

void OutputTable::publish(const policy::PolicyTable& resolved,
                          const std::map<std::string, uint32_t>& policy_ids) {
  if (!built_) return;
  run(policy_commands(plan_, resolved, policy_ids), "updating the policies of");
}

void OutputTable::set_connected(const std::vector<netlink::SetPrefix>& connected) {
  if (!built_) return;
  run(address_set_commands(table_, "connected", connected), "updating the connected networks of");
}

void OutputTable::set_ipset(size_t id, const std::vector<netlink::SetPrefix>& prefixes) {
  if (!built_ || id == 0 || id > rules_.sets.size()) return;
  run(address_set_commands(table_, "ipset" + std::to_string(id), prefixes), "updating an ipset copy in");
}

void OutputTable::uplink_down(uint32_t id) {
  if (!built_) return;
  const std::string commands = sticky_flush_commands(plan_, id);
  if (!commands.empty()) run(commands, "dropping sticky entries in");
}

void OutputTable::run(const std::string& commands, const std::string& what) {
  if (nft_run_cmd_from_buffer(nft_, commands.c_str()) != 0) {
    throw std::runtime_error("router traffic rules: " + what + " table inet " + table_ + ": " +
                             error_text(nft_) + " (needs CAP_NET_ADMIN and nf_tables)");
  }
}

}  // namespace uplinkd::local_out
