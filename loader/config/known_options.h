// Which option names each section type of the mwan3 file knows, so a misspelt option is pointed out
// instead of silently doing nothing. mwan3 ignores unknown options, and so does uplinkd: they only
// draw a warning ("did you mean 'reliability'?"), never an error, so a file mwan3 accepted still loads.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "config/uci.h"

namespace uplinkd::config {

// Whether `option` is one mwan3 (any release since 2.8) or uplinkd reads in a section of `type`.
// Section types neither reads (a `config foo`) know every option: they are not checked.
[[nodiscard]] bool is_known_option(std::string_view type, std::string_view option);

// The known option of `type` closest to `option` by edit distance, when it is close enough to be a
// typo of it (at most 2 edits, and fewer than half the name's letters).
[[nodiscard]] std::optional<std::string> nearest_known_option(std::string_view type, std::string_view option);

// The section types (globals, interface, ...) where `option` is known, for an option put in the wrong
// section ("metrics_listen is an option of config globals").
[[nodiscard]] std::vector<std::string> section_types_knowing(std::string_view option);

// One sentence per unknown option in the package, in file order:
// "<file>:<line>: option 'relability': unknown in interface 'wan', ignored; did you mean 'reliability'?"
[[nodiscard]] std::vector<std::string> unknown_option_warnings(const uci::Package& package);

}  // namespace uplinkd::config
