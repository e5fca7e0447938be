// SPDX-License-Identifier: MIT
#include "probe/ring_reader.h"

#include <algorithm>
#include <atomic>
#include <cstring>

namespace profctl::probe {
namespace {

template <class T>
std::atomic_ref<T> at(T& field) {
  return std::atomic_ref<T>(field);
}

constexpr uint64_t kLenMask = 0xffffffffULL;

}  // namespace

RingReader::RingReader(SharedArea& area, std::chrono::nanoseconds abandon_after,
                       RingReaderLimits limits)
    : area_(area),
      ring_(area.ring()),
      size_(area.ring_size()),
      stack_budget_(area.stack_bytes()),
      abandon_after_(abandon_after),
      limits_(limits) {
  stack_.resize(stack_budget_);
  pcs_.resize(PROBE_MAX_PCS);
}

void RingReader::consume(uint64_t len) {
  // len never runs past the end of the ring (checked by the caller). The bytes are zeroed
  // when the tail is published (zero_consumed), not here: one memset per few KiB instead of
  // a call per record.
  tail_ += len;
  // Published every few KiB (and at the end of each drain), not per record: every writer
  // reads the tail, so a store per record would move its cache line to them and back for
  // each 80-byte record.
  if (tail_ - published_ >= kPublishEvery) {
    publish_tail();
  }
  stats_.bytes += len;
}

// Writers reserve only below the published tail + size, so zeroing before the release store
// of the tail is seen by the next writer of these bytes: state 0 = not written yet.
void RingReader::zero_consumed() {
  const uint64_t n = std::min(tail_ - zeroed_, size_);
  const uint64_t off = zeroed_ & (size_ - 1);
  const uint64_t first = std::min(n, size_ - off);
  std::memset(ring_ + off, 0, first);
  std::memset(ring_, 0, n - first);
  zeroed_ = tail_;
}

void RingReader::publish_tail() {
  zero_consumed();
  published_ = tail_;
  at(area_.ctl()->ring_tail).store(tail_, std::memory_order_release);
}

void RingReader::resync(uint64_t head) {
  ++stats_.corrupt;
  // Drop everything reserved so far: at most the whole ring is zeroed, once, whatever the
  // head says. Writers still filling it write into freed space, which is zeroed again when
  // its next owner's record is consumed. The tail jumps to the head (aligned down: a head
  // that is not a multiple of 8 is a lie, and the next look at it resynchronizes again).
  zero_consumed();
  const uint64_t dirty = std::min(head - tail_, size_);
  const uint64_t off = tail_ & (size_ - 1);
  const uint64_t first = std::min(dirty, size_ - off);
  std::memset(ring_ + off, 0, first);
  std::memset(ring_, 0, dirty - first);
  stats_.bytes += dirty;
  tail_ = head & ~uint64_t{7};
  zeroed_ = tail_;
  publish_tail();
  stalled_at_ = UINT64_MAX;
  if (stats_.corrupt >= limits_.max_resyncs) {
    gave_up_ = true;
  }
}

size_t RingReader::drain(const std::function<void(const RecordView&)>& fn, size_t max_records) {
  probe_ctl* c = area_.ctl();
  size_t handed = 0;
  uint64_t consumed = 0;  // at most one ring's worth per call
  // The head is read again only once the tail has caught up with it: writers CAS that line
  // for every record, so a load per record moved it to this CPU and back each time. Every
  // reservation moves the head past its whole record, so whatever starts below a head read
  // once also ends below it.
  uint64_t head = tail_;
  while (!gave_up_ && handed < max_records && consumed < size_) {
    if (head == tail_) {
      head = at(c->ring_head).load(std::memory_order_acquire);  // the target's
    }
    const uint64_t avail = head - tail_;  // wraps when the head is behind: caught below
    if (avail == 0) {
      break;
    }
    if (avail > size_ || avail % 8 != 0) {
      resync(head);
      break;
    }
    Entry e;
    e.off = tail_ & (size_ - 1);
    // The header word once; len and state are decided on this value alone.
    e.header = at(*reinterpret_cast<uint64_t*>(ring_ + e.off)).load(std::memory_order_acquire);
    e.len = e.header & kLenMask;
    e.state = static_cast<uint32_t>(e.header >> 32);
    e.len_ok = e.len >= 8 && e.len % 8 == 0 && e.len <= size_ - e.off && e.len <= avail;
    const uint64_t taken = take_entry(e, head, fn, handed);
    if (taken == 0) {
      break;
    }
    consumed += taken;
  }
  if (published_ != tail_) {
    publish_tail();
  }
  return handed;
}

uint64_t RingReader::take_entry(const Entry& e, uint64_t head,
                                const std::function<void(const RecordView&)>& fn, size_t& handed) {
  if (e.state == PROBE_REC_STATE_PADDING) {
    if (!e.len_ok) {
      resync(head);
      return 0;
    }
    consume(e.len);
    return e.len;
  }
  if (e.state == PROBE_REC_STATE_COMMITTED) {
    return take_record(e, head, fn, handed);
  }
  if (e.state != PROBE_REC_STATE_EMPTY && e.state != PROBE_REC_STATE_WRITING) {
    resync(head);
    return 0;
  }
  return take_uncommitted(e, head);
}

uint64_t RingReader::take_record(const Entry& e, uint64_t head,
                                 const std::function<void(const RecordView&)>& fn, size_t& handed) {
  if (e.len_ok && e.len >= sizeof(probe_record_walked)) {
    uint16_t flags = 0;
    std::memcpy(&flags, ring_ + e.off + offsetof(probe_record_walked, flags), sizeof flags);
    if (flags & PROBE_REC_WALKED) {
      return take_walked(e, head, fn, handed);
    }
  }
  if (!e.len_ok || e.len < sizeof(probe_record)) {
    resync(head);
    return 0;
  }
  // The fixed part once, into private memory; from here on only the copy is read.
  probe_record rec{};
  std::memcpy(&rec, ring_ + e.off, sizeof rec);
  rec.header = e.header;
  if (rec.stack_len > e.len - sizeof(probe_record)) {
    resync(head);
    return 0;
  }
  stalled_at_ = UINT64_MAX;
  if (rec.pid == area_.owner_pid()) {
    // The stack copy once, up to profctl's own budget (the blob honours the budget in
    // the area, which the target can rewrite).
    uint64_t n = rec.stack_len;
    if (n > stack_budget_) {
      n = stack_budget_;
      rec.flags = static_cast<uint16_t>(rec.flags | PROBE_REC_STACK_CUT);
      ++stats_.stack_cut;
    }
    rec.stack_len = n;
    std::memcpy(stack_.data(), ring_ + e.off + sizeof(probe_record), n);
    fn(RecordView{rec, {stack_.data(), static_cast<size_t>(n)}, false, 0, {}});
    ++stats_.records;
    ++handed;
  } else {
    ++stats_.foreign_pid;
  }
  consume(e.len);
  return e.len;
}

// The words of each PROBE_FIELD_* mask (a table: std::popcount is a libgcc call on the
// baseline x86-64 this is built for, once per record).
constexpr auto kFieldWords = [] {
  std::array<uint8_t, PROBE_FIELDS_ALL + 1> t{};
  for (unsigned m = 0; m <= PROBE_FIELDS_ALL; ++m) {
    t[m] =
        static_cast<uint8_t>((m & 1) + (m >> 1 & 1) + (m >> 2 & 1) + (m >> 3 & 1) + (m >> 4 & 1));
  }
  return t;
}();

// A walked record: the fixed part once, then its fields and at most PROBE_MAX_PCS pcs, into
// private memory.
uint64_t RingReader::take_walked(const Entry& e, uint64_t head,
                                 const std::function<void(const RecordView&)>& fn, size_t& handed) {
  probe_record_walked w{};
  std::memcpy(&w, ring_ + e.off, sizeof w);
  const uint64_t nwords = kFieldWords[w.fields & PROBE_FIELDS_ALL];
  if ((w.fields & ~PROBE_FIELDS_ALL) != 0 || w.npcs > PROBE_MAX_PCS ||
      nwords + w.npcs > (e.len - sizeof w) / 8) {
    resync(head);
    return 0;
  }
  uint64_t words[PROBE_FIELDS_MAX] = {};
  uint64_t field[PROBE_FIELDS_MAX] = {};  // value, ptr, arg0, arg1, stack id
  std::memcpy(words, ring_ + e.off + sizeof w, nwords * 8);
  for (unsigned i = 0, n = 0; i < PROBE_FIELDS_MAX; ++i) {
    if (w.fields & (1u << i)) {
      field[i] = words[n++];
    }
  }
  const uint64_t stack_id = field[4];
  if (w.npcs != 0 && stack_id == 0) {
    resync(head);
    return 0;
  }
  stalled_at_ = UINT64_MAX;
  if (w.pid == area_.owner_pid()) {
    // walked_ holds nothing but these fields (zeroed once): no 160-byte clear per record.
    probe_record& rec = walked_;
    rec.header = e.header;
    rec.kind = w.kind;
    rec.flags = w.flags;
    rec.site = w.site;
    rec.pid = w.pid;
    rec.tid = w.tid;
    rec.tsc = w.tsc;
    rec.value = field[0];
    rec.ptr = field[1];
    rec.args[0] = field[2];
    rec.args[1] = field[3];
    std::memcpy(pcs_.data(), ring_ + e.off + sizeof w + nwords * 8, size_t{w.npcs} * 8);
    fn(RecordView{rec, {}, true, stack_id, {pcs_.data(), w.npcs}});
    ++stats_.records;
    ++handed;
  } else {
    ++stats_.foreign_pid;
  }
  consume(e.len);
  return e.len;
}

// Not committed yet. Skipped only once it has been stuck for abandon_after_ and its length
// is known (a writer dies between its reservation and the header store only within a few
// instructions); stuck that long without a usable length, it is garbage.
uint64_t RingReader::take_uncommitted(const Entry& e, uint64_t head) {
  auto now = std::chrono::steady_clock::now();
  if (stalled_at_ != tail_) {
    stalled_at_ = tail_;
    stalled_since_ = now;
    return 0;
  }
  if (now - stalled_since_ < abandon_after_) {
    return 0;
  }
  if (e.state != PROBE_REC_STATE_WRITING || !e.len_ok) {
    resync(head);
    return 0;
  }
  ++stats_.abandoned;
  stalled_at_ = UINT64_MAX;
  consume(e.len);
  return e.len;
}

std::string RingReader::note() const {
  std::string out;
  if (gave_up_) {
    out = "the probe ring was found corrupt " + std::to_string(stats_.corrupt) +
          " times (the target wrote into the memory it shares with profctl): profctl stopped "
          "reading it, and the probe-driven profiles end there";
  } else if (stats_.corrupt > 0) {
    out = "the probe ring was found corrupt " + std::to_string(stats_.corrupt) +
          " times: the records in it then were dropped";
  }
  if (stats_.stack_cut > 0) {
    out += (out.empty() ? "" : "; ") + std::to_string(stats_.stack_cut) +
           " probe records carried a stack copy longer than the budget (" +
           std::to_string(stack_budget_) + " bytes): cut to it";
  }
  return out;
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
  p.walked = v.walked;
  p.stack_id = v.stack_id;
  p.pcs.assign(v.pcs.begin(), v.pcs.end());
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
