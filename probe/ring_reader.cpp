// SPDX-License-Identifier: MIT
#include "probe/ring_reader.h"

#include <atomic>
#include <cstring>

namespace profctl::probe {
namespace {

template <class T>
std::atomic_ref<T> at(T& field) {
  return std::atomic_ref<T>(field);
}

}  // namespace

RingReader::RingReader(SharedArea& area, std::chrono::nanoseconds abandon_after)
    : area_(area),
      ring_(area.data() + area.ctl()->ring_offset),
      size_(area.ctl()->ring_size),
      abandon_after_(abandon_after) {}

void RingReader::consume(uint64_t pos, uint64_t len) {
  // Writers reserve only below tail + size, so zeroing before the release store of the
  // tail is seen by the next writer of these bytes: state 0 = not written yet.
  uint64_t off = pos & (size_ - 1);
  std::memset(ring_ + off, 0, len);
  at(area_.ctl()->ring_tail).store(pos + len, std::memory_order_release);
  stats_.bytes += len;
}

void RingReader::resync(uint64_t head) {
  probe_ctl* c = area_.ctl();
  uint64_t tail = at(c->ring_tail).load(std::memory_order_relaxed);
  ++stats_.corrupt;
  // Drop everything reserved so far; writers still filling it write into freed space,
  // which is zeroed again when its next owner's record is consumed.
  while (tail < head) {
    uint64_t off = tail & (size_ - 1);
    uint64_t len = std::min(head - tail, size_ - off);
    consume(tail, len);
    tail += len;
  }
}

size_t RingReader::drain(const std::function<void(const RecordView&)>& fn, size_t max_records) {
  probe_ctl* c = area_.ctl();
  size_t handed = 0;
  while (handed < max_records) {
    uint64_t tail = at(c->ring_tail).load(std::memory_order_relaxed);
    uint64_t head = at(c->ring_head).load(std::memory_order_acquire);
    if (tail >= head) {
      if (tail > head || head - tail > size_) {
        resync(head);
      }
      break;
    }
    uint64_t off = tail & (size_ - 1);
    auto* rec = reinterpret_cast<probe_record*>(ring_ + off);
    uint64_t header = at(rec->header).load(std::memory_order_acquire);
    uint64_t len = header & 0xffffffffULL;
    uint32_t state = static_cast<uint32_t>(header >> 32);
    bool len_ok = len >= 8 && len % 8 == 0 && len <= size_ - off && len <= head - tail;
    if (state == PROBE_REC_STATE_PADDING) {
      if (!len_ok) {
        resync(head);
        break;
      }
      consume(tail, len);
      continue;
    }
    if (state == PROBE_REC_STATE_COMMITTED) {
      if (!len_ok || len < sizeof(probe_record) || rec->stack_len > len - sizeof(probe_record)) {
        resync(head);
        break;
      }
      stalled_at_ = UINT64_MAX;
      if (rec->pid == at(c->owner_pid).load(std::memory_order_relaxed)) {
        const auto* stack = reinterpret_cast<const std::byte*>(rec + 1);
        fn(RecordView{*rec, {stack, static_cast<size_t>(rec->stack_len)}});
        ++stats_.records;
        ++handed;
      } else {
        ++stats_.foreign_pid;
      }
      consume(tail, len);
      continue;
    }
    if (state != PROBE_REC_STATE_EMPTY && state != PROBE_REC_STATE_WRITING) {
      resync(head);
      break;
    }
    // Not committed yet. Skip it only once it has been stuck for abandon_after_ and its
    // length is known (a writer dies between its reservation and the header store only
    // within a few instructions).
    auto now = std::chrono::steady_clock::now();
    if (stalled_at_ != tail) {
      stalled_at_ = tail;
      stalled_since_ = now;
    } else if (now - stalled_since_ >= abandon_after_ && state == PROBE_REC_STATE_WRITING &&
               len_ok) {
      ++stats_.abandoned;
      stalled_at_ = UINT64_MAX;
      consume(tail, len);
      continue;
    }
    break;
  }
  return handed;
}

std::vector<ProbeRecord> RingReader::drain_records(size_t max_records) {
  std::vector<ProbeRecord> out;
  drain([&](const RecordView& v) { out.push_back(to_probe_record(v)); }, max_records);
  return out;
}

ProbeRecord to_probe_record(const RecordView& v) {
  const probe_record& r = v.rec;
  ProbeRecord p;
  p.kind = r.kind;
  p.flags = r.flags;
  p.site = r.site;
  p.pid = r.pid;
  p.tid = r.tid;
  p.tsc = r.tsc;
  p.value = r.value;
  p.ptr = r.ptr;
  for (size_t i = 0; i < p.args.size(); ++i) {
    p.args[i] = r.args[i];
  }
  p.ret = r.ret;
  p.regs.rip = r.rip;
  p.regs.rsp = r.rsp;
  p.regs.rbp = r.rbp;
  p.regs.rbx = r.rbx;
  p.regs.r12 = r.r12;
  p.regs.r13 = r.r13;
  p.regs.r14 = r.r14;
  p.regs.r15 = r.r15;
  p.stack_base = r.rsp;
  p.stack.assign(v.stack.begin(), v.stack.end());
  return p;
}

Snapshot to_snapshot(ProbeRecord&& record) {
  Snapshot s;
  s.pid = record.pid;
  s.tid = record.tid;
  s.regs = record.regs;
  s.stack_base = record.stack_base;
  s.stack_size = record.stack.size();
  s.stack_bytes = std::make_unique<std::byte[]>(s.stack_size);
  if (s.stack_size != 0) {
    std::memcpy(s.stack_bytes.get(), record.stack.data(), s.stack_size);
  }
  s.stack_end = s.stack_base + s.stack_size;
  s.stack_cut = (record.flags & PROBE_REC_STACK_CUT) != 0;
  if (s.stack_cut) {
    s.stack_cut_reason = "probe stack budget";
  } else if (record.flags & PROBE_REC_STACK_FAILED) {
    s.stack_cut = true;
    s.stack_cut_reason = "probe stack copy failed";
  }
  return s;
}

}  // namespace profctl::probe
