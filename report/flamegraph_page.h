// SPDX-License-Identifier: MIT
// The HTML, CSS and script of the flame graph page (flamegraph_writer.h), with one marker
// where the profile's data goes.
#pragma once

#include <string_view>

namespace profctl::report_detail {

inline constexpr std::string_view kFlamegraphDataMarker = "@@PROFCTL_DATA@@";

// The whole page; kFlamegraphDataMarker stands once for a JSON document (with every '<'
// escaped) inside <script type="application/json">.
extern const std::string_view kFlamegraphPage;

}  // namespace profctl::report_detail
