// SPDX-License-Identifier: MIT
// Naming a data address (a lock, a global) by the symbol that holds it: "g_queue_mutex",
// "counters+0x10". What the mutex profile shows for a lock in static storage.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "unwind/target_dwfl.h"

namespace profctl {

// The object symbol (STT_OBJECT or STT_TLS) whose extent covers `address`, with "+0x.."
// when the address is inside it; nullopt for heap, stack or unknown memory.
std::optional<std::string> data_symbol(const TargetDwfl& dwfl, uint64_t address);

}  // namespace profctl
