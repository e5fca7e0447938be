// SPDX-License-Identifier: MIT
// RingReader: drains the records that trampolines commit into the shared ring, from
// profctl's own mapping, without stopping anything. Single consumer.
//
// The ring is written by the target, so its contents are untrusted: every length is
// checked against the ring and the record; a malformed entry resynchronizes the reader
// (everything up to the head is dropped and counted) rather than being trusted.
#pragma once

#include <sys/types.h>
#include <sys/user.h>

#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <span>
#include <vector>

#include "attach/snapshot.h"
#include "probe/abi/probe_abi.h"
#include "probe/shared_area.h"

namespace profctl::probe {

// A committed record in place in the ring; valid only during the drain callback.
struct RecordView {
  const probe_record& rec;
  std::span<const std::byte> stack;  // copy of target memory [rec.rsp, rec.rsp + size)
};

// A record copied out of the ring.
struct ProbeRecord {
  uint16_t kind = 0;   // PROBE_KIND_*
  uint16_t flags = 0;  // PROBE_REC_*
  uint32_t site = 0;   // SitePatch::site_index
  pid_t pid = 0;
  pid_t tid = 0;
  uint64_t tsc = 0;    // see TscClock
  uint64_t value = 0;  // alloc: bytes requested; block/mutex: delay in TSC ticks
  uint64_t ptr = 0;    // alloc: the allocated pointer
  std::array<uint64_t, 4> args{};
  uint64_t ret = 0;
  // At the probed function's entry: rip (= the function), rsp (-> return address), rbp,
  // rbx, r12-r15; every other register is 0.
  user_regs_struct regs{};
  uint64_t stack_base = 0;  // = regs.rsp
  std::vector<std::byte> stack;
};

struct RingReaderStats {
  uint64_t records = 0;      // committed records of the owner pid handed out
  uint64_t foreign_pid = 0;  // committed records of other pids, skipped
  uint64_t abandoned = 0;    // records left uncommitted past the timeout, skipped
  uint64_t corrupt = 0;      // resynchronizations after a malformed entry
  uint64_t bytes = 0;        // ring bytes consumed
};

class RingReader {
 public:
  // `abandon_after`: how long a record may stay uncommitted before it is skipped (its
  // writer died, e.g. a forked child killed mid-record). Too short a timeout would skip a
  // writer that is merely descheduled or stopped, and its late writes would land in freed
  // ring space, so keep it long.
  explicit RingReader(SharedArea& area,
                      std::chrono::nanoseconds abandon_after = std::chrono::seconds(2));

  // Hands committed records to `fn` in ring order, consuming them, until the ring is empty,
  // an uncommitted record is reached, or `max_records` were handed out. Returns how many.
  size_t drain(const std::function<void(const RecordView&)>& fn, size_t max_records = SIZE_MAX);
  std::vector<ProbeRecord> drain_records(size_t max_records = SIZE_MAX);

  const RingReaderStats& stats() const { return stats_; }

 private:
  void consume(uint64_t pos, uint64_t len);
  void resync(uint64_t head);

  SharedArea& area_;
  std::byte* ring_;
  uint64_t size_;
  std::chrono::nanoseconds abandon_after_;
  uint64_t stalled_at_ = UINT64_MAX;
  std::chrono::steady_clock::time_point stalled_since_{};
  RingReaderStats stats_;
};

ProbeRecord to_probe_record(const RecordView& view);

// The record as the unwinder's input: registers at the function's entry and the stack
// copy (stack_end is unknown to the trampoline: the end of the copy).
Snapshot to_snapshot(ProbeRecord&& record);

}  // namespace profctl::probe
