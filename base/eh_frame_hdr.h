// SPDX-License-Identifier: MIT
// The function starts an ELF module's .eh_frame_hdr lists: one per FDE, i.e. per function
// with CFI, stripped or not. The symbolizer names pcs of unnamed functions by them; the
// probe engine bounds a function's code by the next start. Pure parsing of untrusted bytes.
#pragma once

#include <cstdint>
#include <string_view>
#include <vector>

namespace profctl {

// `hdr`: the PT_GNU_EH_FRAME segment's bytes, loaded at link-time address `vaddr`.
// Version 1, the table as DW_EH_PE_datarel | DW_EH_PE_sdata4 (what GNU ld, gold, lld and
// mold write); any other form yields no starts. Sorted, link-time addresses.
std::vector<uint64_t> parse_eh_frame_hdr(std::string_view hdr, uint64_t vaddr);

}  // namespace profctl
