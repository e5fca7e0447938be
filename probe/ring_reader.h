// SPDX-License-Identifier: MIT
// RingReader: drains the records that trampolines commit into the shared ring, from
// profctl's own mapping, without stopping anything. Single consumer.
//
// The ring is written by the target, so everything in it is hostile input:
//  - the ring's place and size, the owner pid and the stack budget are the SharedArea's own
//    copies; the tail is kept here (the one in the area is only published for writers);
//  - each record is copied ONCE into private memory (its header word, the fixed part, then
//    the stack copy up to the validated length and at most profctl's stack budget) and
//    validated and handed out from there: a target changing a record while it is read
//    changes nothing profctl already decided on;
//  - every loop is bounded: one drain() consumes at most one ring's worth of bytes, and a
//    resynchronization drops at most one ring's worth;
//  - a malformed entry, or a head that is behind the tail or more than a ring ahead of it,
//    resynchronizes the reader (drops everything up to the head, counted as corrupt); after
//    `max_resyncs` of them the ring is taken as corrupt for good: the reader stops reading
//    it and says so (gave_up(), note()).
#pragma once

#include <sys/types.h>
#include <sys/user.h>

#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <vector>

#include "attach/snapshot.h"
#include "probe/abi/probe_abi.h"
#include "probe/shared_area.h"

namespace profctl::probe {

// A committed record, copied out of the ring and validated (private memory: the target
// cannot change it any more); valid only during the drain callback. stack.size() ==
// rec.stack_len <= the SharedArea's stack_bytes().
struct RecordView {
  const probe_record& rec;
  std::span<const std::byte> stack;  // copy of target memory [rec.rsp, rec.rsp + size)
  // A PROBE_REC_WALKED record (rec holds its common fields, args[0..1], no registers and no
  // stack): the target walked the stack. stack_id names its pcs (0: no stack); pcs holds
  // them when this record defines the id (at most PROBE_MAX_PCS), else it is empty.
  bool walked = false;
  uint64_t stack_id = 0;
  std::span<const uint64_t> pcs;
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
  // As RecordView: a walked record's stack id and, when it defines the id, its pcs.
  bool walked = false;
  uint64_t stack_id = 0;
  std::vector<uint64_t> pcs;
};

struct RingReaderStats {
  uint64_t records = 0;      // committed records of the owner pid handed out
  uint64_t foreign_pid = 0;  // committed records of other pids, skipped
  uint64_t abandoned = 0;    // records left uncommitted past the timeout, skipped
  uint64_t corrupt = 0;      // resynchronizations after a malformed entry or head
  uint64_t stack_cut = 0;    // records whose stack copy was longer than profctl's budget: cut
  uint64_t bytes = 0;        // ring bytes consumed
};

struct RingReaderLimits {
  // Resynchronizations before the ring is taken as corrupt for good. A well-behaved target
  // needs none (a writer that dies mid-record is abandoned, not a corruption); one whose
  // stopped writer finished into freed space may cause one.
  uint64_t max_resyncs = 8;
};

// One reader per area, from the area's creation (the tail starts at 0).
class RingReader {
 public:
  // `abandon_after`: how long a record may stay uncommitted before it is skipped (its
  // writer died, e.g. a forked child killed mid-record). Too short a timeout would skip a
  // writer that is merely descheduled or stopped, and its late writes would land in freed
  // ring space, so keep it long.
  explicit RingReader(SharedArea& area,
                      std::chrono::nanoseconds abandon_after = std::chrono::seconds(2),
                      RingReaderLimits limits = {});

  // Hands committed records to `fn` in ring order, consuming them, until the ring is empty,
  // an uncommitted record is reached, `max_records` were handed out, or one ring's worth of
  // bytes was consumed (so that a target writing as fast as it is read cannot keep a call
  // going). Returns how many. Returns 0 at once once the reader gave up.
  size_t drain(const std::function<void(const RecordView&)>& fn, size_t max_records = SIZE_MAX);
  std::vector<ProbeRecord> drain_records(size_t max_records = SIZE_MAX);

  const RingReaderStats& stats() const { return stats_; }
  // True once the ring was corrupt max_resyncs times: nothing more is read from it.
  bool gave_up() const { return gave_up_; }
  // A line for the capture's warnings when records were lost to corruption or cut (empty
  // otherwise).
  std::string note() const;

 private:
  // The entry at the tail, as its header word said once.
  struct Entry {
    uint64_t off = 0;  // in the ring
    uint64_t header = 0;
    uint64_t len = 0;
    uint32_t state = 0;
    bool len_ok = false;  // a whole number of words, inside the ring and the available bytes
  };
  // Each takes the entry at the tail and returns the bytes it consumed: 0 stops the drain
  // (the ring was resynchronized, or the entry is not written yet).
  uint64_t take_entry(const Entry& e, uint64_t head,
                      const std::function<void(const RecordView&)>& fn, size_t& handed);
  uint64_t take_record(const Entry& e, uint64_t head,
                       const std::function<void(const RecordView&)>& fn, size_t& handed);
  uint64_t take_walked(const Entry& e, uint64_t head,
                       const std::function<void(const RecordView&)>& fn, size_t& handed);
  uint64_t take_uncommitted(const Entry& e, uint64_t head);
  void consume(uint64_t len);
  void publish_tail();   // zeroes what was consumed, then the tail for the writers (release)
  void zero_consumed();  // [zeroed_, tail_)
  static constexpr uint64_t kPublishEvery = 4096;
  void resync(uint64_t head);

  SharedArea& area_;
  std::byte* ring_;
  uint64_t size_;
  uint64_t stack_budget_;
  uint64_t tail_ = 0;       // profctl's: the area's ring_tail is written, never read
  uint64_t published_ = 0;  // the last tail stored in the area
  uint64_t zeroed_ = 0;     // consumed bytes below this are zero again
  std::chrono::nanoseconds abandon_after_;
  RingReaderLimits limits_;
  uint64_t stalled_at_ = UINT64_MAX;
  std::chrono::steady_clock::time_point stalled_since_{};
  RingReaderStats stats_;
  bool gave_up_ = false;
  std::vector<std::byte> stack_;  // the current record's stack copy (private)
  std::vector<uint64_t> pcs_;     // the current walked record's pcs (private)
  probe_record walked_{};         // the current walked record's fields (the rest stays 0)
};

ProbeRecord to_probe_record(const RecordView& view);

// The record as the unwinder's input: registers at the function's entry and the stack
// copy (stack_end is unknown to the trampoline: the end of the copy).
Snapshot to_snapshot(ProbeRecord&& record);

}  // namespace profctl::probe
