#!/usr/bin/env bash
# An upgrade from an earlier uplinkd build, under traffic: the previous binary runs the lab with
# clients connected (restart_scenario.sh), then the binary file is replaced by this build's and
# `uplinkctl restart` executes it in place, as a package upgrade does. Checks:
#   - no client loses its connection, conntrack keeps the same entries, a new flow works;
#   - maps the previous build did not have are created and filled (the classifier's rule tables:
#     a new flow is classified by the rules);
#   - the previous build's unconditional source rules (it ran without the output table) are
#     replaced by the fwmark form, and none is left behind.
# Not in the suite: it needs a build of an earlier commit. One command:
#   git worktree add /tmp/prev <commit> && cmake -S /tmp/prev -B /tmp/prev/build -DUPLINKD_BUILD_TESTS=OFF \
#     && cmake --build /tmp/prev/build --target uplinkd
#   sudo UPLINKD_PREVIOUS=/tmp/prev/build/uplinkd tests/integration/upgrade_from_previous.sh
# shellcheck source-path=SCRIPTDIR
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
ul_init upgrade_previous daemon
source "$(dirname "${BASH_SOURCE[0]}")/restart_scenario.sh"
[[ -n ${UPLINKD_PREVIOUS:-} ]] || skip "set UPLINKD_PREVIOUS to an earlier build's uplinkd (see the header)"
[[ -x $UPLINKD_PREVIOUS ]] || skip "UPLINKD_PREVIOUS=$UPLINKD_PREVIOUS is not an executable"
command -v conntrack >/dev/null 2>&1 || skip "needs the 'conntrack' tool (Debian package conntrack)"
CURRENT=$UPLINKD
UPLINKD=$UPLINKD_PREVIOUS
P=$UL_PREFIX

rs_setup
rs_start
ul_wait_tracking wan1 wan2
rs_traffic
sleep 1
CT0=$(rs_ct_ids)
[[ $(wc -l <<<"$CT0") == 3 ]] || fail "expected conntrack entries of the 3 clients, got: $CT0"
source_rules() { ip -n "$P-rtr" -4 rule show | awk -F: '$1 > 1500 && $1 < 2000'; }
info "source rules of the previous build: $(source_rules | tr '\n' ';')"
# Only a build from before local_rules was the default leaves unconditional ones to replace.
LEGACY_BEFORE=$(source_rules | grep -vc 'fwmark')

rs_upgrade_in_place "$CURRENT"
[[ -z $(rs_client_errors) ]] || fail "a client failed across the upgrade: $(rs_client_errors)"
[[ $(rs_ct_ids) == "$CT0" ]] || fail "conntrack entries changed across the upgrade: $(rs_ct_ids)"
rs_new_flow_works || fail "a new TCP connection failed after the upgrade"
pass "upgrade from $UPLINKD_PREVIOUS under traffic: no connection lost, a new flow works"

RULES_AFTER=$(source_rules)
info "source rules after: $(tr '\n' ';' <<<"$RULES_AFTER")"
grep -q 'fwmark' <<<"$RULES_AFTER" || fail "no fwmark source rule after the upgrade: $RULES_AFTER"
grep -v 'fwmark' <<<"$RULES_AFTER" | grep -q 'lookup' &&
  fail "an unconditional source rule of the previous build stayed: $RULES_AFTER"
if ((LEGACY_BEFORE > 0)); then
  pass "the previous build's $LEGACY_BEFORE unconditional source rule(s) gave way to the fwmark form"
else
  info "the previous build left no unconditional source rule: their replacement was not exercised"
fi
