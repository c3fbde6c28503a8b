#pragma once
// The Hub API answers HubClient reads, as pure functions of the bytes received,
// so they can be fuzzed (fuzz/) and tested without a server.
#include <optional>
#include <string>
#include <vector>

#include "fetch/hub.h"

namespace kaio::fetch {

// The commit sha of a /revision/ answer. Throws Error(corrupt) naming `what`.
std::string parse_revision(const std::string& body, const std::string& what);
// The files of one /tree/ page that the globs select, in the page's order.
// Throws Error(corrupt) naming `what` when the page is not a list of entries.
std::vector<RepoFile> parse_tree_page(const std::string& body, const std::string& what,
                                      const std::vector<std::string>& include, const std::vector<std::string>& exclude);
// The rel="next" URL of a Link header, if there is one.
std::optional<std::string> next_link(const std::string& link_header);

}  // namespace kaio::fetch
