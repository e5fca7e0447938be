// SPDX-License-Identifier: MIT
// A flame graph of one profile as a single self-contained HTML page (<kind>.html): no
// network, no external script or font, so it opens from disk or as a CI artifact.
#pragma once

#include <ostream>
#include <string>

#include "report/capture.h"

namespace profctl {

struct FlamegraphOptions {
  bool lines = false;        // boxes per function and source line, as --lines
  std::string sample_index;  // the sample type shown first (heap); empty: the profile's main
  // Boxes narrower than this share of the whole are folded into their parent's "[other]" box:
  // a pixel's share of a wide screen, so what is drawn is what could be seen, and 50,000
  // distinct stacks still make a page of a few MB that renders in well under a second.
  double min_share = 1.0 / 4000;
};

// The page draws an icicle (root on top, callees below) with the profile's values in its
// unit; boxes carry data-name, data-total, data-self and data-share (of the whole, as
// the text's cum%) for scripts. It shows the details
// of the box under the pointer, zooms on click, highlights the matches of a search (a
// regular expression, case-insensitive) and sums them without counting a match inside
// another twice, and switches between the profile's sample types. "#search=RE&type=TYPE&
// zoom=NAME" in the URL sets them on load (zoom: the widest box of that name), and the page
// keeps them there as they change, so a link shows the same view; "details=NAME" opens with
// the details of the widest box of that name shown, as if the pointer were on it. Writes a page
// that says so when there is no such profile.
void write_flamegraph(const Capture& capture, const std::string& kind, std::ostream& out,
                      const FlamegraphOptions& opts = {});

}  // namespace profctl
