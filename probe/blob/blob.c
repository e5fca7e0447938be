// SPDX-License-Identifier: MIT
/* The in-target half of the probes: what runs inside the profiled process when a probed
 * function is entered. Freestanding: no libc (it may be the very thing we probe), no
 * writable data (the code area is r-x; all state lives in the shared area), no floating
 * point or SSE (-mgeneral-regs-only: the stubs save only integer registers), and no
 * absolute addresses (the image is position-independent; the build checks it has no
 * relocations).
 *
 * Entry: stubs.S calls probe_enter(call, site) with the caller-saved registers saved in
 * *call. 0 = take the original path (the stub restores them and jumps); 1 = call through:
 * the stub calls the original, then probe_exit(frame, site) with the result in the frame.
 *
 * Adding a site kind: one enter_* and one exit_* function below plus a case in each
 * switch; the stubs are kind-agnostic. */
#include <stddef.h>
#include <stdint.h>

#include "probe/abi/probe_abi.h"

#define HIDDEN __attribute__((visibility("hidden")))
#define LIKELY(x) __builtin_expect(!!(x), 1)
#define UNLIKELY(x) __builtin_expect(!!(x), 0)

/* The stub's saved registers and per-call scratch (layout fixed by stubs.S). */
struct probe_call {
  uint64_t state; /* PROBE_REC_ALLOC / PROBE_REC_FREED decided at entry */
  uint64_t value; /* bytes requested */
  uint64_t slot;  /* struct probe_thread_slot* of this thread */
  uint64_t pid;   /* getpid() at entry (the record path needs it anyway) */
  uint64_t tsc0;  /* reserved for block/mutex: rdtsc before the wait */
  uint64_t spare;
  uint64_t r11, r10, rax, r9, r8, rcx, rdx, rsi, rdi;
  uint64_t ret_addr; /* the caller's return address: &ret_addr is rsp at entry */
};

struct probe_frame {
  uint64_t r15, r14, r13, r12, rbp, rbx; /* entry values, pushed by the call-through path */
  struct probe_call call;
};

_Static_assert(sizeof(struct probe_call) == PROBE_CALL_SCRATCH + 8 * 10, "stub layout");
_Static_assert(offsetof(struct probe_frame, call.rax) == PROBE_FRAME_RAX, "stub layout");
_Static_assert(offsetof(struct probe_frame, call.rdx) == PROBE_FRAME_RDX, "stub layout");
_Static_assert(offsetof(struct probe_frame, call.rdi) == PROBE_FRAME_RDI, "stub layout");
_Static_assert(offsetof(struct probe_frame, call.r10) == PROBE_FRAME_R10, "stub layout");

/* Defined in stubs.S at offset 0 of the image; filled by profctl's image builder. */
extern struct probe_blob_header probe_blob_header HIDDEN;

int probe_enter(struct probe_call* call, uint32_t site) HIDDEN;
void probe_exit(struct probe_frame* frame, uint32_t site) HIDDEN;

/* ---- primitives -------------------------------------------------------------------- */

#define LOAD(p) __atomic_load_n((p), __ATOMIC_RELAXED)
#define LOAD_ACQ(p) __atomic_load_n((p), __ATOMIC_ACQUIRE)
#define STORE_REL(p, v) __atomic_store_n((p), (v), __ATOMIC_RELEASE)
#define STORE(p, v) __atomic_store_n((p), (v), __ATOMIC_RELAXED)
#define CAS(p, expected, desired) \
  __atomic_compare_exchange_n((p), (expected), (desired), 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)
#define COUNT(c, field) __atomic_fetch_add(&(c)->counters.field, 1, __ATOMIC_RELAXED)

static inline uint64_t thread_pointer(void) {
  uint64_t tp;
  __asm__("mov %%fs:0, %0" : "=r"(tp));
  return tp;
}

static inline uint64_t rdtsc(void) {
  uint32_t lo, hi;
  __asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
  return ((uint64_t)hi << 32) | lo;
}

static inline long syscall0(long nr) {
  long ret;
  __asm__ volatile("syscall" : "=a"(ret) : "a"(nr) : "rcx", "r11", "memory");
  return ret;
}

static inline long syscall6(long nr, long a, long b, long c, long d, long e, long f) {
  long ret;
  register long r10 __asm__("r10") = d;
  register long r8 __asm__("r8") = e;
  register long r9 __asm__("r9") = f;
  __asm__ volatile("syscall"
                   : "=a"(ret)
                   : "a"(nr), "D"(a), "S"(b), "d"(c), "r"(r10), "r"(r8), "r"(r9)
                   : "rcx", "r11", "memory");
  return ret;
}

#define SYS_nanosleep_ 35
#define SYS_getpid_ 39
#define SYS_gettid_ 186
#define SYS_process_vm_readv_ 310
#define SYS_process_vm_writev_ 311

struct iovec_ {
  void* base;
  uint64_t len;
};

static inline void copy_bytes(void* dst, const void* src, uint64_t n) {
  __asm__ volatile("rep movsb" : "+D"(dst), "+S"(src), "+c"(n) : : "memory");
}

/* The compiler may still emit calls to these for struct copies; keep them local. */
void* memcpy(void* dst, const void* src, size_t n) HIDDEN;
void* memset(void* dst, int c, size_t n) HIDDEN;
void* memcpy(void* dst, const void* src, size_t n) {
  copy_bytes(dst, src, n);
  return dst;
}
void* memset(void* dst, int c, size_t n) {
  void* d = dst;
  __asm__ volatile("rep stosb" : "+D"(d), "+c"(n) : "a"(c) : "memory");
  return dst;
}

static inline struct probe_ctl* ctl_area(void) {
  return (struct probe_ctl*)(uintptr_t)LOAD(&probe_blob_header.shared_area);
}

static inline uint64_t mix(uint64_t x) {
  return (x * (uint64_t)PROBE_HASH_MULTIPLIER) >> PROBE_HASH_SHIFT; /* as stubs.S */
}

/* ---- random sampling distance (Go's MemProfileRate) --------------------------------- */

static uint64_t rng_next(uint64_t* state) {
  uint64_t x = *state;
  x ^= x >> 12;
  x ^= x << 25;
  x ^= x >> 27;
  *state = x;
  return x * 0x2545F4914F6CDD1DULL;
}

/* log2(u) in Q16 for 1 <= u < 2^32, integer only (no FPU in the blob). */
static uint64_t log2_q16(uint64_t u) {
  int ip = 63 - __builtin_clzll(u);
  uint64_t m = u << (31 - ip); /* mantissa in [2^31, 2^32): Q31 in [1, 2) */
  uint64_t frac = 0;
  for (int b = 15; b >= 0; --b) {
    m = (m * m) >> 31;
    if (m >= (2ULL << 31)) {
      m >>= 1;
      frac |= 1ULL << b;
    }
  }
  return ((uint64_t)ip << 16) | frac;
}

/* Bytes until the next sample: exponential with mean `rate` (Go's fastexprand), so
 * sampling is a Poisson process over allocated bytes. */
static int64_t next_sample_distance(int64_t rate, uint64_t* rng) {
  if (rate <= 1) {
    return 0;
  }
  uint64_t u = (rng_next(rng) >> 38) + 1;   /* uniform in [1, 2^26] */
  uint64_t q = (26ULL << 16) - log2_q16(u); /* -log2(u / 2^26) in Q16, >= 0 */
  unsigned __int128 d = (unsigned __int128)(uint64_t)rate * q * 45426ULL; /* ln2 in Q16 */
  return (int64_t)(uint64_t)(d >> 32) + 1;
}

/* ---- thread slots ------------------------------------------------------------------- */

/* The calling thread's slot; claim: take a free one when it has none (else 0). */
static struct probe_thread_slot* find_thread_slot(struct probe_ctl* c, int claim) {
  uint64_t tp = thread_pointer();
  struct probe_thread_slot* table = (struct probe_thread_slot*)((char*)c + c->threads_offset);
  uint64_t mask = c->threads_capacity - 1;
  uint64_t limit = c->max_probe < c->threads_capacity ? c->max_probe : c->threads_capacity;
  uint64_t i = mix(tp) & mask;
  for (uint64_t n = 0; n < limit; ++n, i = (i + 1) & mask) {
    uint64_t key = LOAD_ACQ(&table[i].key);
    if (LIKELY(key == tp)) {
      return &table[i];
    }
    if (key == 0) {
      if (!claim) {
        return 0;
      }
      uint64_t expected = 0;
      if (CAS(&table[i].key, &expected, tp) || expected == tp) {
        return &table[i];
      }
    }
  }
  if (claim) {
    COUNT(c, dropped_thread_table_full);
  }
  return 0;
}

static inline struct probe_thread_slot* thread_slot(struct probe_ctl* c) {
  return find_thread_slot(c, 1);
}

static void seed_slot(struct probe_ctl* c, struct probe_thread_slot* s) {
  uint64_t seed = rdtsc() ^ (s->key * 0xD1B54A32D192ED03ULL);
  s->rng = seed ? seed : 1;
  s->countdown = next_sample_distance(LOAD(&c->mem_rate), &s->rng);
}

/* ---- sampled-pointer table ---------------------------------------------------------- */

#define PTR_EMPTY 0ULL
#define PTR_TOMB 1ULL

static inline uint64_t* ptr_table(struct probe_ctl* c) {
  return (uint64_t*)((char*)c + c->ptrs_offset);
}

static inline uint32_t* ptr_filter(struct probe_ctl* c, uint64_t p) {
  uint64_t i = mix(p >> 12) & (c->filter_capacity - 1);
  return (uint32_t*)((char*)c + c->filter_offset) + i;
}

/* Consecutive blocks of one 64 MiB region get consecutive entries (a random start per
 * region): a program's live blocks cluster in a few regions, so at high rates the table's
 * hot part stays in cache instead of every insert and free missing in a 32 MiB table.
 * Regions land at random, so glibc's 64 MiB-aligned arenas do not pile up. */
static inline uint64_t ptr_home(struct probe_ctl* c, uint64_t p) {
  return ((p >> 4) + mix(p >> 26)) & (c->ptrs_capacity - 1);
}

/* The filter counter goes up before the pointer is visible in the table and down after it
 * left it, so a zero counter always means "not in the table". */
static int ptr_insert(struct probe_ctl* c, uint64_t p) {
  uint64_t* t = ptr_table(c);
  uint64_t mask = c->ptrs_capacity - 1;
  uint64_t home = ptr_home(c, p);
  uint32_t* counter = ptr_filter(c, p);
  __atomic_fetch_add(counter, 1, __ATOMIC_ACQ_REL);
  uint64_t i = home;
  for (uint32_t n = 0; n < c->max_probe; ++n, i = (i + 1) & mask) {
    uint64_t k = LOAD_ACQ(&t[i]);
    if (k == p) {
      __atomic_fetch_sub(counter, 1, __ATOMIC_ACQ_REL); /* already there */
      return 1;
    }
    while (k == PTR_EMPTY || k == PTR_TOMB) {
      if (CAS(&t[i], &k, p)) {
        return 1;
      }
    }
  }
  __atomic_fetch_sub(counter, 1, __ATOMIC_ACQ_REL);
  COUNT(c, dropped_ptr_table_full);
  return 0;
}

/* Index of p in the table, or -1. The common "not sampled" free stops at its filter
 * counter, else at the first empty entry. */
static int64_t ptr_find(struct probe_ctl* c, uint64_t p) {
  if (LIKELY(LOAD_ACQ(ptr_filter(c, p)) == 0)) {
    return -1;
  }
  uint64_t home = ptr_home(c, p);
  uint64_t* t = ptr_table(c);
  uint64_t mask = c->ptrs_capacity - 1;
  uint64_t i = home;
  for (uint32_t n = 0; n < c->max_probe; ++n, i = (i + 1) & mask) {
    uint64_t k = LOAD_ACQ(&t[i]);
    if (k == p) {
      return (int64_t)i;
    }
    if (k == PTR_EMPTY) {
      return -1;
    }
  }
  return -1;
}

static int ptr_remove_at(struct probe_ctl* c, int64_t i, uint64_t p) {
  uint64_t expected = p;
  if (!CAS(&ptr_table(c)[i], &expected, PTR_TOMB)) {
    return 0;
  }
  __atomic_fetch_sub(ptr_filter(c, p), 1, __ATOMIC_ACQ_REL);
  return 1;
}

/* ---- ring --------------------------------------------------------------------------- */

/* One more record committed by this slot's thread. Only the slot's own thread writes the
 * count (profctl reads it), so no lock prefix is needed against other CPUs; a signal
 * handler of the same thread that records too can only run between instructions, and this
 * is one instruction, so no count is lost. A locked add here cost ~10% of the target's
 * time at --mem-rate 1: as the record path's last instruction it waited for the record's
 * stores (cache misses on the ring's lines) to complete, which a plain add lets drain
 * while the program goes on. */
static inline void count_record(struct probe_thread_slot* slot) {
  __asm__ volatile("addq $1, %0" : "+m"(slot->records));
}

/* The slot's call-through depth, up or down: one plain instruction, as count_record and for
 * the same reasons (the slot's own thread alone writes it; a handler runs between
 * instructions). profctl reads depths only with every thread stopped (Probes::remove, the
 * leftover removal), when every store a thread made is visible. A locked add at the exit
 * waited for the record's stores to complete, the cost count_record moved here. */
static inline void depth_add(struct probe_thread_slot* slot, int64_t delta) {
  __asm__ volatile("addq %1, %0" : "+m"(slot->depth) : "er"(delta) : "memory");
}

static struct probe_record* ring_reserve(struct probe_ctl* c, uint64_t len) {
  char* ring = (char*)c + c->ring_offset;
  uint64_t size = c->ring_size;
  if (len > size / 2) {
    return 0;
  }
  /* Every writer CASes the head's line, so it is usually in another CPU's cache: a plain
   * load fetched it shared and the CAS then had to take it again for writing. prefetchw
   * asks for it writable once (a no-op on CPUs without it: the 0F 0D opcode is a NOP). */
  __asm__ volatile("prefetchw %0" : : "m"(c->ring_head));
  for (int attempt = 0; attempt < 64; ++attempt) {
    uint64_t head = LOAD_ACQ(&c->ring_head);
    uint64_t tail = LOAD_ACQ(&c->ring_tail);
    if (UNLIKELY(tail > head)) {
      continue; /* stale head: another writer and the reader moved on */
    }
    uint64_t off = head & (size - 1);
    uint64_t room = size - off;
    uint64_t total = len <= room ? len : room + len; /* a record never wraps */
    if (head + total - tail > size) {
      return 0;
    }
    if (CAS(&c->ring_head, &head, head + total)) {
      if (total != len) {
        STORE_REL((uint64_t*)(ring + off), room | ((uint64_t)PROBE_REC_STATE_PADDING << 32));
        off = 0;
      }
      struct probe_record* r = (struct probe_record*)(ring + off);
      STORE(&r->header, len | ((uint64_t)PROBE_REC_STATE_WRITING << 32));
      return r;
    }
  }
  return 0;
}

/* A record that finds the ring full waits for room while profctl is alive (ring_wait set):
 * profctl refreshes heartbeat_tsc every few milliseconds while it drains. A heartbeat older
 * than liveness_ticks means profctl died or stopped draining: the record is dropped and the
 * probes fall silent (enabled = 0, stalled = 1) so that no other call waits; a profctl that
 * comes back clears stalled and enables them again (and reports the gap). Sleeping in the
 * kernel gives the CPU to profctl's reader, which on a busy machine is what makes room. */
static struct probe_record* ring_reserve_waiting(struct probe_ctl* c, uint64_t len) {
  struct probe_record* r = ring_reserve(c, len);
  if (LIKELY(r != 0) || !LOAD(&c->ring_wait) || len > c->ring_size / 2) {
    return r;
  }
  COUNT(c, ring_waits);
  for (;;) {
    if (LOAD(&c->stalled)) {
      return 0;
    }
    uint64_t beat = LOAD_ACQ(&c->heartbeat_tsc);
    uint64_t now = rdtsc();
    if (now > beat && now - beat > LOAD(&c->liveness_ticks)) {
      STORE(&c->enabled, 0);
      STORE_REL(&c->stalled, 1);
      COUNT(c, dropped_stalled);
      return 0;
    }
    struct {
      long sec, nsec;
    } ts = {0, 20000};
    syscall6(SYS_nanosleep_, (long)&ts, 0, 0, 0, 0, 0);
    r = ring_reserve(c, len);
    if (r) {
      return r;
    }
  }
}

/* ---- the stack walk: compiled unwind tables in the shared area -------------------------
 *
 * A recorded call's stack is walked here, in the target, with the CFI profctl compiled and
 * placed in the area's unwind region (struct probe_unwind_dir), the same rows and lookup as
 * profctl's CfiWalker (unwind/cfi_walker.cpp): per frame, the module of the pc (a binary
 * search of the directory), its row (the block index, then a short scan), the CFA from rsp
 * or rbp, and two loads from the stack. The record then carries pcs (or only the id of pcs
 * written before) instead of a 16 KiB stack copy, and profctl unwinds nothing.
 *
 * Every read is bounded: the directory, module entries, rows and block index against the
 * region (memory the target itself can write: a corrupted table gives wrong pcs, never a
 * fault), the stack against the thread's registered bounds. A walk that cannot finish (a pc
 * in no tabled module, no row, a "not expressible" row, a read outside the stack, a frame
 * that does not move up, more than PROBE_MAX_PCS frames) returns 0 and the record falls
 * back to the stack copy, for profctl to unwind with libdwfl (counted: walk_fallbacks). */

struct walk_tables {
  const char* region;
  uint64_t size;
  const struct probe_unwind_module* mods;
  uint32_t count;
};

static int walk_tables_of(struct probe_ctl* c, struct walk_tables* t) {
  uint64_t off = LOAD(&c->unwind_offset);
  uint64_t size = LOAD(&c->unwind_size);
  uint64_t area = LOAD(&c->area_size);
  uint64_t dir = LOAD_ACQ(&c->unwind_dir);
  if (dir == 0 || off > area || size > area - off || dir > size ||
      size - dir < sizeof(struct probe_unwind_dir)) {
    return 0;
  }
  t->region = (const char*)c + off;
  t->size = size;
  const struct probe_unwind_dir* d = (const struct probe_unwind_dir*)(t->region + dir);
  uint32_t count = LOAD(&d->count);
  uint64_t room = (size - dir - sizeof(*d)) / sizeof(struct probe_unwind_module);
  if (count == 0 || count > room) {
    return 0;
  }
  t->mods = (const struct probe_unwind_module*)(d + 1);
  t->count = count;
  return 1;
}

static const struct probe_unwind_module* walk_module_of(const struct walk_tables* t, uint64_t pc) {
  uint32_t lo = 0, hi = t->count; /* the first module starting after pc is at hi */
  while (lo < hi) {
    uint32_t mid = lo + (hi - lo) / 2;
    if (pc < t->mods[mid].start) {
      hi = mid;
    } else {
      lo = mid + 1;
    }
  }
  if (lo == 0) {
    return 0;
  }
  const struct probe_unwind_module* m = &t->mods[lo - 1];
  return pc < m->end ? m : 0;
}

/* The row for pc in m, as CfiTable::find; 0 = none (a gap, or a malformed table). */
static const struct probe_unwind_row* walk_row(const struct walk_tables* t,
                                               const struct probe_unwind_module* m, uint64_t pc) {
  uint64_t nrows = m->nrows, nblocks = m->nblocks, shift = m->block_shift;
  if (nrows == 0 || shift > 40 || m->rows > t->size || nrows > (t->size - m->rows) / 16 ||
      m->blocks > t->size || nblocks + 1 > (t->size - m->blocks) / 4 || pc < m->base ||
      pc - m->base > 0xffffffffULL) {
    return 0;
  }
  const struct probe_unwind_row* rows = (const struct probe_unwind_row*)(t->region + m->rows);
  const uint32_t* blocks = (const uint32_t*)(t->region + m->blocks);
  uint32_t rel = (uint32_t)(pc - m->base);
  uint64_t block = rel >> shift;
  if (block >= nblocks) {
    return 0;
  }
  uint32_t i = blocks[block];
  uint32_t last = blocks[block + 1];
  if (last >= nrows) {
    return 0;
  }
  if (i == 0xffffffffu) {
    if (rel < rows[0].pc) {
      return 0;
    }
    i = 0;
  } else if (i >= nrows) {
    return 0; /* an index past the rows: the region was written over */
  }
  for (uint32_t n = 0; i < last && rows[i + 1].pc <= rel; ++i) {
    if (++n > 4096) {
      return 0; /* a sane index leaves a few rows per block */
    }
  }
  return rows[i].cfa == PROBE_CFA_NONE ? 0 : &rows[i];
}

/* The walk's view of the stack: [lo, hi) of the thread's registered stack, where the word
 * at `patched` reads as `patched_value` (a wait's hijacked return address). */
struct walk_stack {
  uint64_t lo, hi, patched, patched_value;
};

static inline int walk_read(const struct walk_stack* s, uint64_t at, uint64_t* out) {
  if (at < s->lo || s->hi < 8 || at > s->hi - 8 || (at & 7) != 0) {
    return 0;
  }
  *out = at == s->patched ? s->patched_value : *(const volatile uint64_t*)(uintptr_t)at;
  return 1;
}

/* ---- the walk memo: a thread's last walk, to skip the next one when it is the same -------
 *
 * A walk is a function of its inputs alone: the tables (one directory offset names one set:
 * profctl places a new directory for every change, never over an old one), the function,
 * rsp and rbp at its entry, and the stack words it reads, each at an address the earlier
 * inputs decide (rbp is an input only when a frame's CFA is computed from it before a
 * saved rbp was read: code without frame pointers uses rbp as any other register). So when
 * the function, rsp and rbp are those of the thread's last walk and
 * every word that walk read reads the same again, this walk would read the same words and
 * end with the same pcs, and its stack id: the record names the id without walking, and
 * without looking it up (the memo is kept only once the id's pcs were committed to the
 * ring). A loop that allocates from the same place, the common case at --mem-rate 1, pays
 * a few compares of words in its own stack's cache lines instead of a table lookup per
 * frame. The memo is in the shared area, where the target can write: a corrupt one names a
 * wrong stack id (profctl shows what that id names, or an empty stack), never a fault. */
struct walk_memo {
  uint64_t dir, rip, rsp, rbp, id;
  uint32_t n;        /* reads below; > PROBE_WALK_MEMO_READS: the walk read more (no memo) */
  uint16_t valid;    /* 1: everything here describes a walk whose id is in the ring */
  uint16_t rbp_used; /* 1: a frame's CFA came from the entry's rbp (else rbp is no input) */
  /* Bit i: read i's value is an input (every return address; a saved rbp only when a
   * frame's CFA came from it). The others are checked in bounds only: code without frame
   * pointers saves rbp as any callee-saved register, with a value of the moment. */
  uint64_t keep;
  uint64_t addr[PROBE_WALK_MEMO_READS];
  uint64_t value[PROBE_WALK_MEMO_READS];
};
_Static_assert(sizeof(struct walk_memo) == PROBE_WALK_MEMO_WORDS * 8, "memo size");

static inline struct walk_memo* memo_of(uint64_t* scratch) {
  return (struct walk_memo*)(scratch + PROBE_MAX_PCS);
}

/* Whether the memo's walk is this one's (see above). */
static int memo_matches(const struct walk_memo* m, const struct walk_stack* st, uint64_t dir,
                        uint64_t rip, uint64_t rsp, uint64_t rbp) {
  uint32_t n = m->n;
  if (!m->valid || m->dir != dir || m->rip != rip || m->rsp != rsp ||
      (m->rbp_used && m->rbp != rbp) || n > PROBE_WALK_MEMO_READS) {
    return 0;
  }
  uint64_t keep = m->keep;
  for (uint32_t i = 0; i < n; ++i) {
    uint64_t v = 0;
    if (!walk_read(st, m->addr[i], &v) || (((keep >> i) & 1) && v != m->value[i])) {
      return 0;
    }
  }
  return 1;
}

/* Notes a read; returns its index (PROBE_WALK_MEMO_READS: not kept). */
static inline uint32_t memo_note(struct walk_memo* m, uint64_t at, uint64_t value, int input) {
  if (m == 0) {
    return PROBE_WALK_MEMO_READS;
  }
  uint32_t n = m->n;
  if (n < PROBE_WALK_MEMO_READS) {
    m->addr[n] = at;
    m->value[n] = value;
    m->keep |= (uint64_t)(input != 0) << n;
  }
  m->n = n + (n <= PROBE_WALK_MEMO_READS);
  return n;
}

/* The read that rbp holds became an input (a frame's CFA came from it). */
static inline void memo_rbp_used(struct walk_memo* m, int from_entry, uint32_t read) {
  if (m == 0) {
    return;
  }
  if (from_entry) {
    m->rbp_used = 1;
  } else if (read < PROBE_WALK_MEMO_READS) {
    m->keep |= 1ULL << read;
  }
}

/* Walks from the probed function's entry into pcs[0..PROBE_MAX_PCS); returns the number of
 * pcs when the walk reached the outermost frame, else 0. *hash: of the pcs. */
static uint32_t walk_stack(struct probe_ctl* c, const struct walk_stack* st, uint64_t rip,
                           uint64_t rsp, uint64_t rbp, uint64_t* pcs, uint64_t* hash,
                           struct walk_memo* memo) {
  struct walk_tables t;
  if (!walk_tables_of(c, &t)) {
    return 0;
  }
  uint64_t h = 0x243F6A8885A308D3ULL;
  uint32_t n = 0;
  pcs[n++] = rip;
  h = (h ^ rip) * 0x9E3779B97F4A7C15ULL;
  uint64_t lookup = rip;
  const struct probe_unwind_module* mod = 0;
  int rbp_known = 1;
  int rbp_from_entry = 1;                    /* rbp is still the entry's value */
  uint32_t rbp_read = PROBE_WALK_MEMO_READS; /* else the memo's read it came from */
  for (;;) {
    if (mod == 0 || lookup < mod->start || lookup >= mod->end) {
      mod = walk_module_of(&t, lookup);
      if (mod == 0) {
        return 0;
      }
    }
    const struct probe_unwind_row* row = walk_row(&t, mod, lookup);
    if (row == 0 || row->cfa == PROBE_CFA_NOT_EXPRESSIBLE ||
        (row->cfa == PROBE_CFA_RBP && !rbp_known) || row->cfa > PROBE_CFA_NOT_EXPRESSIBLE) {
      return 0;
    }
    if (row->ra == PROBE_SAVED_UNDEFINED) {
      break;
    }
    if (row->cfa == PROBE_CFA_RBP) {
      memo_rbp_used(memo, rbp_from_entry, rbp_read);
    }
    uint64_t cfa = (row->cfa == PROBE_CFA_RSP ? rsp : rbp) + (uint64_t)(int64_t)row->cfa_offset;
    uint64_t ra = 0;
    uint64_t ra_at = cfa + (uint64_t)(int64_t)row->ra_offset;
    if (!walk_read(st, ra_at, &ra)) {
      return 0;
    }
    memo_note(memo, ra_at, ra, 1);
    uint64_t caller_rbp = rbp;
    if (row->rbp == PROBE_SAVED_AT_CFA) {
      uint64_t rbp_at = cfa + (uint64_t)(int64_t)row->rbp_offset;
      if (!walk_read(st, rbp_at, &caller_rbp)) {
        return 0;
      }
      rbp_read = memo_note(memo, rbp_at, caller_rbp, 0);
      rbp_from_entry = 0;
    }
    if (ra == 0) {
      break; /* as libdwfl: no pc 0 on x86-64, the end */
    }
    if (cfa <= rsp || n == PROBE_MAX_PCS) {
      return 0;
    }
    rbp_known = row->rbp != PROBE_SAVED_UNDEFINED;
    rsp = cfa;
    rbp = caller_rbp;
    pcs[n++] = ra;
    h = (h ^ ra) * 0x9E3779B97F4A7C15ULL;
    h ^= h >> 31;
    lookup = ra - 1;
  }
  if (n < 2) {
    return 0; /* what a stub without CFI looks like: libdwfl has a retry for it */
  }
  h ^= n;
  *hash = (h & ~1ULL) ? (h & ~1ULL) : 2;
  return n;
}

/* Whether the ring already holds the pcs of `id`: 1 = yes, write the id alone. 0 = write
 * the pcs; *claim is then the table entry this record defines (publish it once the record
 * is committed), or 0 when another writer is defining it right now or the table is full. */
static int stack_id_known(struct probe_ctl* c, uint64_t id, uint64_t** claim) {
  *claim = 0;
  uint64_t cap = LOAD(&c->stackid_capacity);
  uint64_t off = LOAD(&c->stackid_offset);
  uint64_t area = LOAD(&c->area_size);
  if (cap == 0 || (cap & (cap - 1)) != 0 || off > area || cap > (area - off) / 8) {
    return 0;
  }
  uint64_t* t = (uint64_t*)((char*)c + off);
  uint64_t mask = cap - 1;
  uint64_t i = mix(id) & mask;
  for (uint32_t n = 0; n < c->max_probe; ++n, i = (i + 1) & mask) {
    uint64_t e = LOAD_ACQ(&t[i]);
    if (e == 0) {
      if (CAS(&t[i], &e, id)) {
        *claim = &t[i];
        return 0;
      }
    }
    if ((e & ~1ULL) == id) {
      return (int)(e & 1);
    }
  }
  return 0;
}

/* The thread's walk scratch, or 0: per slot two buffers of PROBE_SCRATCH_WORDS words (the
 * pcs, then the walk memo), one for the call-throughs and one for the waits' returns, the
 * two record paths that can interrupt each other (a signal handler's lock wait during an
 * allocation's record, or its allocation during a wait's record; neither path nests in
 * itself: depth and wait_active see to it). */
static uint64_t* walk_scratch(struct probe_ctl* c, struct probe_thread_slot* slot, int wait) {
  uint64_t off = LOAD(&c->scratch_offset);
  uint64_t area = LOAD(&c->area_size);
  uint64_t cap = c->threads_capacity;
  uint64_t* table = (uint64_t*)((char*)c + c->threads_offset);
  uint64_t index = (uint64_t)((struct probe_thread_slot*)slot - (struct probe_thread_slot*)table);
  uint64_t per = 2 * PROBE_SCRATCH_WORDS * 8;
  if (off == 0 || index >= cap || off > area || cap > (area - off) / per) {
    return 0;
  }
  return (uint64_t*)((char*)c + off + index * per) + (wait ? PROBE_SCRATCH_WORDS : 0);
}

/* What one record says, whichever path wrote it (call-through or wait return). */
struct rec_in {
  uint32_t kind, flags, site;
  int32_t pid;
  uint64_t value, ptr, ret;
  uint64_t args[4];
  uint64_t rsp;      /* rsp at the probed function's entry: the stack copy starts here */
  uint64_t ret_addr; /* the real return address: the copy's first word */
  uint64_t rbp, rbx, r12, r13, r14, r15;
};

/* How many stack bytes a record copies and how (PROBE_REC_STACK_* added to *flags):
 * memcpy inside the thread's registered bounds, else the kernel's process_vm_readv. */
static uint64_t plan_stack_copy(struct probe_ctl* c, struct probe_thread_slot* slot, uint64_t rsp,
                                uint32_t* flags) {
  uint64_t want = LOAD(&c->stack_bytes) & ~7ULL;
  uint64_t hi = LOAD_ACQ(&slot->stack_hi);
  uint64_t lo = LOAD(&slot->stack_lo);
  if (hi != 0 && lo <= rsp && rsp < hi && LOAD_ACQ(&slot->stack_hi) == hi) {
    *flags |= PROBE_REC_STACK_BOUNDS;
    if (hi - rsp < want) {
      want = hi - rsp;
    } else {
      *flags |= PROBE_REC_STACK_CUT;
    }
  } else {
    *flags |= PROBE_REC_STACK_VMREADV;
  }
  return want;
}

/* Copies the stack from rsp into the record as planned; returns the bytes copied. */
static uint64_t copy_stack(struct probe_ctl* c, struct probe_record* r, int32_t pid, uint64_t rsp,
                           uint64_t want, uint32_t* flags) {
  if (*flags & PROBE_REC_STACK_BOUNDS) {
    copy_bytes(r + 1, (const void*)rsp, want);
    return want;
  }
  if (!(*flags & PROBE_REC_STACK_VMREADV)) {
    return 0;
  }
  /* Bounds unknown: let the kernel copy, so an unmapped page ends the copy instead of
   * faulting the target. */
  struct iovec_ local = {r + 1, want};
  struct iovec_ remote = {(void*)rsp, want};
  long n = syscall6(SYS_process_vm_readv_, (long)pid, (long)&local, 1, (long)&remote, 1, 0);
  if (n < 0) {
    *flags |= PROBE_REC_STACK_FAILED;
    COUNT(c, stack_copy_failed);
    return 0;
  }
  if ((uint64_t)n == want) {
    *flags |= PROBE_REC_STACK_CUT;
  }
  return (uint64_t)n;
}

/* The tid profctl registered for the slot's thread, else the kernel's word. */
static inline int32_t record_tid(struct probe_thread_slot* slot) {
  int32_t tid = LOAD(&slot->tid);
  return tid ? tid : (int32_t)syscall0(SYS_gettid_);
}

/* The record's fixed part, from `in` and the thread's slot. */
static void fill_record(struct probe_record* r, struct probe_thread_slot* slot,
                        const struct rec_in* in, uint32_t flags, uint64_t got) {
  const struct probe_blob_site* s = &probe_blob_header.sites[in->site];
  r->kind = (uint16_t)in->kind;
  r->flags = (uint16_t)flags;
  r->site = in->site;
  r->pid = in->pid;
  r->tid = record_tid(slot);
  r->tsc = rdtsc();
  r->value = in->value;
  r->ptr = in->ptr;
  r->args[0] = in->args[0];
  r->args[1] = in->args[1];
  r->args[2] = in->args[2];
  r->args[3] = in->args[3];
  r->ret = in->ret;
  r->rip = LOAD(&s->function);
  r->rsp = in->rsp;
  r->rbp = in->rbp;
  r->rbx = in->rbx;
  r->r12 = in->r12;
  r->r13 = in->r13;
  r->r14 = in->r14;
  r->r15 = in->r15;
  r->stack_len = got;
}

/* Which profiles lose a record the ring has no room for: each says so, with its share. */
static void count_ring_drop(struct probe_ctl* c, uint32_t kind, uint32_t flags) {
  if (flags & PROBE_REC_ALLOC) {
    COUNT(c, dropped_ring_alloc);
  }
  if (flags & PROBE_REC_FREED) {
    COUNT(c, dropped_ring_free);
  }
  if (kind == PROBE_KIND_MUTEX && (flags & PROBE_REC_WAIT_MUTEX)) {
    COUNT(c, dropped_ring_mutex);
  }
  if (flags & PROBE_REC_WAIT_BLOCK) {
    COUNT(c, dropped_ring_block);
  }
}

/* A short record (struct probe_record_walked): a walked stack's id and, the first time, its
 * pcs; or no stack at all (npcs 0, id 0: a free). Only the fields profctl reads for the
 * kind, and only those that are not 0 (PROBE_FIELD_*). */
static int write_walked(struct probe_ctl* c, struct probe_thread_slot* slot,
                        const struct rec_in* in, const uint64_t* pcs, uint32_t npcs, uint64_t id) {
  uint64_t* claim = 0;
  int in_ring = npcs == 0;
  if (npcs != 0 && stack_id_known(c, id, &claim)) {
    npcs = 0;
    in_ring = 1;
  }
  const int wait = in->kind >= PROBE_KIND_BLOCK;
  const int arg0 = wait || (in->flags & PROBE_REC_FREED);
  const uint64_t field[PROBE_FIELDS_MAX] = {in->value, in->ptr, arg0 ? in->args[0] : 0,
                                            wait ? in->args[1] : 0, id};
  uint64_t words[PROBE_FIELDS_MAX];
  uint32_t fields = 0;
  uint32_t nwords = 0;
  for (uint32_t i = 0; i < PROBE_FIELDS_MAX; ++i) {
    if (field[i] != 0) {
      fields |= 1u << i;
      words[nwords++] = field[i];
    }
  }
  uint64_t len = sizeof(struct probe_record_walked) + (uint64_t)(nwords + npcs) * 8;
  struct probe_record_walked* r = (struct probe_record_walked*)ring_reserve_waiting(c, len);
  if (!r) {
    COUNT(c, dropped_ring_full);
    count_ring_drop(c, in->kind, in->flags);
    return 0; /* a claimed id stays unpublished: later records carry its pcs */
  }
  r->kind = (uint16_t)in->kind;
  r->flags = (uint16_t)(in->flags | PROBE_REC_WALKED);
  r->site = (uint16_t)in->site;
  r->fields = (uint8_t)fields;
  r->npcs = (uint8_t)npcs;
  r->pid = in->pid;
  r->tid = record_tid(slot);
  r->tsc = rdtsc();
  uint64_t* out = (uint64_t*)(r + 1);
  for (uint32_t i = 0; i < nwords; ++i) {
    out[i] = words[i];
  }
  if (npcs != 0) {
    copy_bytes(out + nwords, pcs, (uint64_t)npcs * 8);
  }
  STORE_REL(&r->header, len | ((uint64_t)PROBE_REC_STATE_COMMITTED << 32));
  if (claim) {
    STORE_REL(claim, id | 1);
    in_ring = 1;
  }
  count_record(slot);
  return in_ring;
}

/* Writes one record. with_stack: walk the caller's stack (a short record with pcs), else,
 * if the walk cannot finish, copy it (a full record for profctl to unwind); without a
 * stack, a short record. */
static void write_record_in(struct probe_ctl* c, struct probe_thread_slot* slot, struct rec_in* in,
                            int with_stack) {
  if (!with_stack) {
    write_walked(c, slot, in, 0, 0, 0);
    return;
  }
  uint64_t hi = LOAD_ACQ(&slot->stack_hi);
  uint64_t lo = LOAD(&slot->stack_lo);
  uint64_t* pcs = walk_scratch(c, slot, in->kind >= PROBE_KIND_BLOCK);
  uint64_t dir = LOAD_ACQ(&c->unwind_dir);
  if (pcs && hi != 0 && lo <= in->rsp && in->rsp < hi && dir != 0) {
    struct walk_stack st = {lo, hi, in->rsp, in->ret_addr};
    const struct probe_blob_site* s = &probe_blob_header.sites[in->site];
    const uint64_t rip = LOAD(&s->function);
    struct walk_memo* memo = memo_of(pcs);
    if (memo_matches(memo, &st, dir, rip, in->rsp, in->rbp)) {
      write_walked(c, slot, in, 0, 0, memo->id);
      return;
    }
    memo->valid = 0;
    memo->n = 0;
    memo->rbp_used = 0;
    memo->keep = 0;
    uint64_t id = 0;
    uint32_t n = walk_stack(c, &st, rip, in->rsp, in->rbp, pcs, &id, memo);
    if (n != 0) {
      /* counted by profctl: a shared counter per record would cost more than the walk */
      if (write_walked(c, slot, in, pcs, n, id) && memo->n <= PROBE_WALK_MEMO_READS) {
        memo->dir = dir;
        memo->rip = rip;
        memo->rsp = in->rsp;
        memo->rbp = in->rbp;
        memo->id = id;
        memo->valid = 1;
      }
      return;
    }
    COUNT(c, walk_fallbacks);
  } else if (LOAD(&c->unwind_dir) != 0) {
    COUNT(c, walk_fallbacks);
  }
  uint32_t flags = in->flags;
  uint64_t want = plan_stack_copy(c, slot, in->rsp, &flags);
  uint64_t len = sizeof(struct probe_record) + ((want + 7) & ~7ULL);
  struct probe_record* r = ring_reserve_waiting(c, len);
  if (!r) {
    COUNT(c, dropped_ring_full);
    count_ring_drop(c, in->kind, in->flags);
    return;
  }
  uint64_t got = copy_stack(c, r, in->pid, in->rsp, want, &flags);
  if (got >= 8) {
    *(uint64_t*)(r + 1) = in->ret_addr; /* never our own word (a wait's hijacked return) */
  }
  fill_record(r, slot, in, flags, got);
  STORE_REL(&r->header, len | ((uint64_t)PROBE_REC_STATE_COMMITTED << 32));
  count_record(slot);
}

/* Writes one record for the call-through in `f`. */
static void write_record(struct probe_ctl* c, uint32_t site, struct probe_frame* f, uint32_t kind,
                         uint32_t flags, uint64_t ptr, int with_stack) {
  struct rec_in in;
  in.kind = kind;
  in.flags = flags;
  in.site = site;
  in.pid = (int32_t)f->call.pid;
  in.value = f->call.value;
  in.ptr = ptr;
  in.ret = f->call.rax;
  in.args[0] = f->call.rdi;
  in.args[1] = f->call.rsi;
  in.args[2] = f->call.rdx;
  in.args[3] = f->call.rcx;
  in.rsp = (uint64_t)&f->call.ret_addr;
  in.ret_addr = f->call.ret_addr;
  in.rbp = f->rbp;
  in.rbx = f->rbx;
  in.r12 = f->r12;
  in.r13 = f->r13;
  in.r14 = f->r14;
  in.r15 = f->r15;
  write_record_in(c, (struct probe_thread_slot*)f->call.slot, &in, with_stack);
}

/* ---- decisions shared by the kinds ------------------------------------------------- */

/* Go's rule: a sample when the allocation reaches the countdown. Fast path: one
 * subtraction on the thread's own cache line. */
static inline int sample_alloc(struct probe_ctl* c, struct probe_thread_slot* s, uint64_t size) {
  int64_t rate = LOAD(&c->mem_rate);
  if (rate <= 0) {
    return 0;
  }
  if (rate == 1) {
    return 1;
  }
  if (UNLIKELY(s->rng == 0)) {
    seed_slot(c, s);
  }
  if (s->countdown > 0 && size < (uint64_t)s->countdown) {
    s->countdown -= (int64_t)size;
    return 0;
  }
  s->countdown = next_sample_distance(rate, &s->rng);
  return 1;
}

/* This process's pid: the token profctl left on a wipe-on-fork page (no syscall), or, when
 * there is none or this is a forked child (the page reads 0 there), the kernel's word. */
static long current_pid(void) {
  const uint64_t* token = (const uint64_t*)(uintptr_t)LOAD(&probe_blob_header.process_token);
  long pid = token ? (long)LOAD(token) : 0;
  return pid ? pid : syscall0(SYS_getpid_);
}

/* Commits to a call-through: the events of another process (a child that inherited the
 * patched code and the shared ring) are counted, not recorded. */
static int begin_call(struct probe_ctl* c, struct probe_call* call, struct probe_thread_slot* s,
                      uint64_t state, uint64_t value) {
  long pid = current_pid();
  if (pid != LOAD(&c->owner_pid)) {
    COUNT(c, foreign_pid_events);
    return 0;
  }
  /* depth > 0 is also what tells profctl a thread is inside a call-through (the areas stay
   * mapped until every slot is back at 0): no shared counter on this path. */
  depth_add(s, 1);
  call->state = state;
  call->value = value;
  call->slot = (uint64_t)s;
  call->pid = (uint64_t)pid;
  return 1;
}

static inline int mul_overflows(uint64_t a, uint64_t b, uint64_t* out) {
  return __builtin_mul_overflow(a, b, out);
}

/* ---- per kind: entry ---------------------------------------------------------------- */

/* A frame that only raises the depth: no pid check, no record. The inner probes of the
 * call stay quiet, so a call that enters another probed function is sampled once. */
static int guard_call(struct probe_call* call, struct probe_thread_slot* s, uint64_t size) {
  /* depth > 0 is also what tells profctl a thread is inside a call-through (the areas stay
   * mapped until every slot is back at 0): no shared counter on this path. */
  depth_add(s, 1);
  call->state = 0;
  call->value = size;
  call->slot = (uint64_t)s;
  return 1;
}

/* `nests`: the function calls another probed allocation function (PROBE_SITE_NESTS), so an
 * unsampled call still goes through a frame. */
static int enter_alloc(struct probe_ctl* c, struct probe_call* call, uint64_t size, int nests) {
  struct probe_thread_slot* s = thread_slot(c);
  if (!s || s->depth != 0) {
    return 0;
  }
  if (!sample_alloc(c, s, size)) {
    return nests ? guard_call(call, s, size) : 0;
  }
  return begin_call(c, call, s, PROBE_REC_ALLOC, size);
}

/* At --mem-rate 1 every allocation is recorded, so every free is too: no table of sampled
 * pointers to keep (its CAS and filter counter on every call, and a cache miss in a large
 * table, were a quarter of the target's time at that rate). A free of a pointer allocated
 * before the attach then reaches profctl, which counts it as not charged. */
static inline int records_all(struct probe_ctl* c) { return LOAD(&c->mem_rate) == 1; }

/* A free is recorded here, before the memory is released: once it is, another thread can
 * get the same address from the allocator and record its allocation, which must come
 * after this free in the ring. No frame of ours stays under the call (returns 0). */
static int enter_free(struct probe_ctl* c, struct probe_call* call, uint32_t site) {
  uint64_t p = call->rdi;
  if (p == 0) {
    return 0;
  }
  const int all = records_all(c);
  int64_t at = -1;
  if (!all) {
    at = ptr_find(c, p);
    if (LIKELY(at < 0)) {
      return 0;
    }
  }
  struct probe_thread_slot* s = thread_slot(c);
  if (!s || s->depth != 0) {
    return 0;
  }
  /* The raised depth keeps a signal handler's allocation meanwhile quiet, as in a call. */
  if (!begin_call(c, call, s, PROBE_REC_FREED, 0)) {
    return 0;
  }
  if (all || ptr_remove_at(c, at, p)) { /* else another thread freed it first: no record */
    struct rec_in in = {0};
    in.kind = PROBE_KIND_FREE;
    in.flags = PROBE_REC_FREED;
    in.site = site;
    in.pid = (int32_t)call->pid;
    in.args[0] = p;
    write_record_in(c, s, &in, 0);
  }
  depth_add(s, -1);
  return 0;
}

/* realloc and reallocarray. glibc's realloc(NULL, n) enters malloc and realloc(p, 0)
 * enters free; reallocarray enters realloc. Those calls go through a frame even when not
 * sampled, so the depth counter keeps the nested probe quiet: the event is recorded once,
 * as the outer call. */
static int enter_realloc(struct probe_ctl* c, struct probe_call* call, uint64_t old, uint64_t size,
                         int always_nests) {
  struct probe_thread_slot* s = thread_slot(c);
  if (!s || s->depth != 0) {
    return 0;
  }
  const int all = records_all(c);
  int64_t at = old && !all ? ptr_find(c, old) : -1;
  int freed = old != 0 && (all || at >= 0);
  int sampled = size != 0 && size != UINT64_MAX && sample_alloc(c, s, size);
  uint64_t state = (freed ? PROBE_REC_FREED : 0) | (sampled ? PROBE_REC_ALLOC : 0);
  if (state == 0 && !always_nests && old != 0 && size != 0) {
    return 0;
  }
  if (state != 0) {
    if (!begin_call(c, call, s, state, size)) {
      return 0;
    }
  } else {
    guard_call(call, s, size);
  }
  if (at >= 0 && !ptr_remove_at(c, at, old)) {
    call->state &= ~(uint64_t)PROBE_REC_FREED;
  }
  return 1;
}

/* ---- waits: timed by return-address hijack ---------------------------------------------
 *
 * A wait can last minutes, so it must not run under a frame of ours: a thread blocked in a
 * call-through would keep the code area mapped after detach, and every unwinder (the
 * target's own for a cancellation, profctl's for a stack dump) would meet a frame it has no
 * CFI for. Instead, the entry saves the caller's return address in the thread's slot,
 * replaces it on the stack with probe_wait_return, and lets the original run with every
 * register as it was. When the wait returns there, rsp is the caller's again and every
 * callee-saved register holds its entry value (the ABI guarantees it), which is exactly what
 * the record needs; probe_wait_exit times it, records it, and returns the real address to
 * jump to. profctl puts the real address back in every stack copy it reads and, at detach,
 * in the stack of every thread still waiting, so no trace of the hijack is left. */

extern char probe_wait_return[] HIDDEN;
extern char probe_stubs[] HIDDEN;
uint64_t probe_wait_exit(uint64_t* frame) HIDDEN;

/* ---- lock filter: which releases can end a recorded wait ------------------------------
 *
 * A lock wait chosen for the mutex profile raises the counter of its lock's hash for as
 * long as it waits; a contended release (__lll_lock_wake) is recorded only when its lock's
 * counter is not 0. The holder side needs, per recorded wait, the last release of its lock
 * before the wait ended; that release hands the lock on while the waiter waits (the waiter
 * raised the counter before its futex exchange, which the releaser's exchange reads), so
 * every release it can need is recorded, and at fraction N about 1/N of the releases cost
 * a record instead of all of them. A hash collision only records a release too many. */

static inline uint32_t* lock_counter(struct probe_ctl* c, uint64_t lock) {
  uint64_t cap = LOAD(&c->lock_filter_capacity);
  return (uint32_t*)((char*)c + c->lock_filter_offset) + (mix(lock) & (cap - 1));
}

/* True when a release of `lock` may end a recorded wait (no filter: every release). */
static inline int lock_has_recorded_waiter(struct probe_ctl* c, uint64_t lock) {
  return LOAD(&c->lock_filter_capacity) == 0 || LOAD_ACQ(lock_counter(c, lock)) != 0;
}

static inline void lock_count(struct probe_ctl* c, struct probe_thread_slot* s, uint64_t lock) {
  uint64_t cap = LOAD(&c->lock_filter_capacity);
  if (cap == 0) {
    return;
  }
  uint64_t i = mix(lock) & (cap - 1);
  __atomic_fetch_add((uint32_t*)((char*)c + c->lock_filter_offset) + i, 1, __ATOMIC_ACQ_REL);
  STORE_REL(&s->wait_counted, i + 1);
}

/* Lowers the counter the slot's wait raised, once (profctl may race to do it at exit). */
static inline void lock_uncount(struct probe_ctl* c, struct probe_thread_slot* s) {
  uint64_t counted = __atomic_exchange_n(&s->wait_counted, 0, __ATOMIC_ACQ_REL);
  uint64_t cap = LOAD(&c->lock_filter_capacity);
  if (counted != 0 && cap != 0) {
    uint32_t* counter = (uint32_t*)((char*)c + c->lock_filter_offset) + ((counted - 1) & (cap - 1));
    __atomic_fetch_sub(counter, 1, __ATOMIC_ACQ_REL);
  }
}

/* ---- unwinds ------------------------------------------------------------------------
 *
 * While a wait is hijacked, its caller's return address is probe_wait_return, for which no
 * unwinder finds CFI (the code area has none, and nothing registers any). glibc's forced
 * unwind (pthread_cancel, pthread_exit) stops there and longjmps to the thread's start,
 * skipping every C++ destructor and -fexceptions cleanup handler above; a C++ throw from a
 * signal handler that interrupted the wait finds no catch and terminates. So the unwinders'
 * entries are probed too (PROBE_KIND_UNWIND): before an unwind starts, the thread's hijacked
 * stack word gets the real return address back and the wait is forgotten (not recorded: it
 * never returned; counted in waits_unwound). The stub then takes the original path, so the
 * unwinder meets only the target's own frames. A slot holds one hijack per thread (a signal
 * handler's wait inside a hijacked wait is not hijacked), so there is one word to fix.
 *
 * A cancellable wait (PROBE_SITE_CANCELLABLE_ARG6) is hijacked only while the cancellation
 * path's patch (PROBE_SITE_CANCEL_UNWIND) is in place: without it, it is timed by nobody
 * rather than left unwindable. */

/* True when a PROBE_SITE_CANCEL_UNWIND site's entry jumps to its stub right now: read from
 * the probed function's own text (mapped while its module is), so a patch that was never
 * written, or was removed, counts as missing. An int3 patch does not count: it needs
 * profctl alive to be redirected. */
static int cancel_unwind_armed(void) {
  for (uint32_t i = 0; i < PROBE_MAX_SITES; ++i) {
    const struct probe_blob_site* site = &probe_blob_header.sites[i];
    if (LOAD(&site->kind) != PROBE_KIND_UNWIND ||
        !(LOAD(&site->flags) & PROBE_SITE_CANCEL_UNWIND) || LOAD(&site->original) == 0) {
      continue;
    }
    const volatile uint8_t* p = (const volatile uint8_t*)(uintptr_t)LOAD(&site->function);
    if (p[0] == 0xf3 && p[1] == 0x0f && p[2] == 0x1e && p[3] == 0xfa) {
      p += 4; /* endbr64 stays in place; the jump follows it */
    }
    if (p[0] != 0xe9) {
      continue;
    }
    uint32_t rel =
        (uint32_t)p[1] | (uint32_t)p[2] << 8 | (uint32_t)p[3] << 16 | (uint32_t)p[4] << 24;
    uint64_t target = (uint64_t)(uintptr_t)p + 5 + (uint64_t)(int64_t)(int32_t)rel;
    if (target == (uint64_t)(probe_stubs + (uint64_t)i * PROBE_STUB_STRIDE)) {
      return 1;
    }
  }
  return 0;
}

/* Reads (write = 0) or writes the word at `at` of this thread's stack: with plain loads and
 * stores inside the bounds profctl registered, else through the kernel, so a word that is
 * not mapped (any more) fails instead of faulting. 1 on success. */
static int stack_word(struct probe_thread_slot* s, uint64_t at, uint64_t* value, int write,
                      long pid) {
  uint64_t hi = LOAD_ACQ(&s->stack_hi);
  uint64_t lo = LOAD(&s->stack_lo);
  if (hi != 0 && lo <= at && at + 8 <= hi) {
    if (write) {
      *(volatile uint64_t*)(uintptr_t)at = *value;
    } else {
      *value = *(volatile uint64_t*)(uintptr_t)at;
    }
    return 1;
  }
  struct iovec_ local = {value, 8};
  struct iovec_ remote = {(void*)(uintptr_t)at, 8};
  long n = syscall6(write ? SYS_process_vm_writev_ : SYS_process_vm_readv_, pid, (long)&local, 1,
                    (long)&remote, 1, 0);
  return n == 8;
}

/* At an unwinder's entry (call: the stub's frame; &call->ret_addr is rsp there). */
static void unwind_unhijack(struct probe_ctl* c, struct probe_call* call) {
  struct probe_thread_slot* s = find_thread_slot(c, 0);
  if (!s || !LOAD_ACQ(&s->wait_active)) {
    return;
  }
  uint64_t at = LOAD(&s->wait_slot);
  uint64_t ret = LOAD(&s->wait_ret);
  uint64_t hijack = LOAD(&s->wait_hijack); /* another code area's, maybe: libc's waits */
  uint64_t entry_rsp = (uint64_t)&call->ret_addr;
  uint64_t sp;
  __asm__ volatile("mov %%rsp, %0" : "=r"(sp));
  long pid = current_pid();
  /* The word is fixed where it still holds our address. Usually it is above entry_rsp (the
   * wait's frame is an outer frame of this unwind), or on the thread's stack while this runs
   * on a signal stack. A stale wait (left by longjmp) lies below entry_rsp: dead stack,
   * where a word that still holds our address is ours, harmless to fix, except inside this
   * very call's frames, which are never touched. */
  uint64_t word = 0;
  int own_frames = at + 256 >= sp && at <= entry_rsp;
  if ((at & 7) == 0 && at > 4096 && !own_frames && stack_word(s, at, &word, 0, pid) &&
      word == hijack && hijack != 0 && stack_word(s, at, &ret, 1, pid)) {
    COUNT(c, waits_unwound);
  }
  /* A forked child shares the slot with its parent's thread, whose stack still holds the
   * hijack: only the owner forgets the wait. */
  if (pid == LOAD(&c->owner_pid)) {
    lock_uncount(c, s);
    STORE_REL(&s->wait_active, 0);
  }
}

static inline uint64_t wait_random(struct probe_thread_slot* s) {
  if (UNLIKELY(s->wait_rng == 0)) {
    uint64_t seed = rdtsc() ^ (s->key * 0xD1B54A32D192ED03ULL);
    s->wait_rng = seed ? seed : 1;
  }
  return rng_next(&s->wait_rng);
}

/* The sampling decisions, made here in the target so that what is not kept costs no record
 * (profctl weighs what is kept and never samples again):
 *  - mutex: 1 in `fraction` lock waits, an unbiased draw from the thread's own PRNG at the
 *    entry (Go's mutexevent: cheaprandn(fraction) == 0). A wait not chosen, with no block
 *    profile, is not even hijacked: it costs the slot lookup and one draw.
 *  - block: Go's blockevent rule (delay >= rate always, else with probability delay/rate)
 *    needs the delay, so it is drawn at the wait's end (probe_wait_exit), where the record
 *    is written; with a block rate every wait is hijacked (timed), few are recorded.
 *  - a release (MUTEX_WAKE): recorded only while a wait chosen for mutex waits on its lock
 *    (the lock filter), the only releases the holder side can charge. */
static int enter_wait(struct probe_ctl* c, struct probe_call* call, uint32_t site, uint32_t kind) {
  uint64_t fraction = LOAD(&c->mutex_fraction);
  uint64_t rate = LOAD(&c->block_rate_ticks);
  /* Every kind may be a lock wait: profctl tells rwlock waits (BLOCK) apart by stack. A
   * release (WAKE) matters to the mutex profile only. */
  int wake = kind == PROBE_KIND_MUTEX_WAKE;
  int mutex = fraction != 0;
  if (!mutex && (rate == 0 || wake)) {
    return 0;
  }
  if (wake && !lock_has_recorded_waiter(c, call->rdi)) {
    return 0;
  }
  /* A cancellation point's wait is hijacked only while the cancellation path puts the
   * return address back before it unwinds (see "unwinds"). */
  if ((LOAD(&probe_blob_header.sites[site].flags) & PROBE_SITE_CANCELLABLE_ARG6) &&
      (uint8_t)call->r9 != 0 && !cancel_unwind_armed()) {
    COUNT(c, waits_not_hijacked);
    return 0;
  }
  struct probe_thread_slot* s = thread_slot(c);
  if (!s) {
    return 0;
  }
  uint64_t rsp = (uint64_t)&call->ret_addr;
  if (LOAD_ACQ(&s->wait_active)) {
    if (s->wait_slot > rsp) {
      return 0; /* a wait of an outer frame is still on (a signal handler waits): leave it */
    }
    /* That frame is gone without returning (longjmp, cancellation): forget it. */
    lock_uncount(c, s);
    STORE_REL(&s->wait_active, 0);
  }
  if (current_pid() != LOAD(&c->owner_pid)) {
    COUNT(c, foreign_pid_events);
    return 0;
  }
  COUNT(c, waits_seen);
  if (!wake && mutex && fraction > 1 && wait_random(s) % fraction != 0) {
    mutex = 0;
    if (rate == 0) {
      return 0;
    }
  }
  s->wait_site = site | (mutex ? 0x80000000u : 0);
  s->wait_ret = call->ret_addr;
  s->wait_slot = rsp;
  s->wait_addr = call->rdi;
  s->wait_tsc0 = rdtsc();
  s->wait_hijack = (uint64_t)(uintptr_t)probe_wait_return;
  if (mutex && kind == PROBE_KIND_MUTEX) {
    /* Before the original's futex exchange: a release that hands this lock on sees it. */
    lock_count(c, s, call->rdi);
  }
  STORE_REL(&s->wait_active, 1);
  /* The stub jumps to the original with rsp at this word: it returns to us. */
  call->ret_addr = (uint64_t)probe_wait_return;
  return 0;
}

/* Called by probe_wait_return with rsp = frame: r15 r14 r13 r12 rbp rbx rdx rax pushed
 * (frame[7], the saved rax, sits where the return address was). Returns where to go. */
uint64_t probe_wait_exit(uint64_t* frame) {
  uint64_t now = rdtsc();
  struct probe_ctl* c = ctl_area();
  struct probe_thread_slot* s = thread_slot(c);
  /* The slot exists: the entry found it (a full table never hijacks). */
  uint64_t ret = s->wait_ret;
  uint32_t site = s->wait_site & 0x7fffffffu;
  int mutex = (s->wait_site & 0x80000000u) != 0;
  lock_uncount(c, s);
  uint64_t delay = now - s->wait_tsc0;
  uint64_t rate = LOAD(&c->block_rate_ticks);
  uint32_t kind = LOAD(&probe_blob_header.sites[site].kind);
  int wake = kind == PROBE_KIND_MUTEX_WAKE;
  /* Go's rule, unbiased: a draw uniform in [0, rate) is below delay with p = delay/rate. */
  int block = !wake && rate != 0 && (delay >= rate || wait_random(s) % rate < delay);
  if ((mutex || block) && LOAD(&c->enabled)) {
    struct rec_in in;
    in.kind = kind;
    in.flags = wake ? PROBE_REC_WAKE
                    : (mutex ? PROBE_REC_WAIT_MUTEX : 0) | (block ? PROBE_REC_WAIT_BLOCK : 0);
    in.site = site;
    in.pid = (int32_t)current_pid();
    in.value = delay;
    in.ptr = 0;
    in.ret = frame[7];
    in.args[0] = s->wait_addr;
    in.args[1] = s->wait_tsc0;
    in.args[2] = rate;
    in.args[3] = LOAD(&c->mutex_fraction);
    in.rsp = s->wait_slot;
    in.ret_addr = ret;
    in.r15 = frame[0];
    in.r14 = frame[1];
    in.r13 = frame[2];
    in.r12 = frame[3];
    in.rbp = frame[4];
    in.rbx = frame[5];
    write_record_in(c, s, &in, 1);
    COUNT(c, waits_recorded);
  }
  STORE_REL(&s->wait_active, 0);
  return ret;
}

int probe_enter(struct probe_call* call, uint32_t site) {
  struct probe_ctl* c = ctl_area();
  if (UNLIKELY(c == 0) || site >= PROBE_MAX_SITES) {
    return 0;
  }
  uint32_t kind = LOAD(&probe_blob_header.sites[site].kind);
  if (UNLIKELY(kind == PROBE_KIND_UNWIND)) {
    /* Also when disabled: a wait hijacked before stays hijacked until it returns or profctl
     * restores it at detach. */
    unwind_unhijack(c, call);
    return 0;
  }
  if (!LOAD(&c->enabled)) {
    return 0;
  }
  uint64_t n;
  const int nests = (LOAD(&probe_blob_header.sites[site].flags) & PROBE_SITE_NESTS) != 0;
  switch (kind) {
    case PROBE_KIND_MALLOC:
    case PROBE_KIND_VALLOC:
    case PROBE_KIND_PVALLOC:
      return enter_alloc(c, call, call->rdi, nests);
    case PROBE_KIND_CALLOC:
      return mul_overflows(call->rdi, call->rsi, &n) ? 0 : enter_alloc(c, call, n, nests);
    case PROBE_KIND_ALIGNED_ALLOC:
    case PROBE_KIND_MEMALIGN:
      return enter_alloc(c, call, call->rsi, nests);
    case PROBE_KIND_POSIX_MEMALIGN:
      return enter_alloc(c, call, call->rdx, nests);
    case PROBE_KIND_FREE:
      return enter_free(c, call, site);
    case PROBE_KIND_REALLOC:
      return enter_realloc(c, call, call->rdi, call->rsi, nests);
    case PROBE_KIND_REALLOCARRAY:
      n = mul_overflows(call->rsi, call->rdx, &n) ? UINT64_MAX : n;
      return enter_realloc(c, call, call->rdi, n, 1);
    case PROBE_KIND_BLOCK:
    case PROBE_KIND_MUTEX:
    case PROBE_KIND_MUTEX_WAKE:
      return enter_wait(c, call, site, kind);
    default:
      return 0;
  }
}

/* ---- per kind: exit ----------------------------------------------------------------- */

static void exit_alloc(struct probe_ctl* c, uint32_t site, struct probe_frame* f, uint32_t kind,
                       uint64_t ptr) {
  uint32_t flags = 0;
  uint64_t state = f->call.state;
  if ((state & PROBE_REC_ALLOC) && ptr != 0) {
    flags |= PROBE_REC_ALLOC;
    if (!records_all(c) && !ptr_insert(c, ptr)) {
      flags |= PROBE_REC_PTR_NOT_TRACKED;
    }
  }
  if (state & PROBE_REC_FREED) {
    flags |= PROBE_REC_FREED;
  }
  if (flags != 0) {
    write_record(c, site, f, kind, flags, ptr, (flags & PROBE_REC_ALLOC) != 0);
  }
}

void probe_exit(struct probe_frame* f, uint32_t site) {
  struct probe_ctl* c = ctl_area();
  uint32_t kind = LOAD(&probe_blob_header.sites[site].kind);
  uint64_t ret = f->call.rax;
  switch (kind) {
    case PROBE_KIND_FREE:
      break; /* recorded at the entry (enter_free), which keeps no frame */
    case PROBE_KIND_POSIX_MEMALIGN: {
      uint64_t ptr = 0;
      if ((uint32_t)ret == 0 && f->call.rdi != 0) {
        ptr = *(const uint64_t*)f->call.rdi; /* written by the call that just succeeded */
      }
      exit_alloc(c, site, f, kind, ptr);
      break;
    }
    case PROBE_KIND_REALLOC:
    case PROBE_KIND_REALLOCARRAY:
      if ((f->call.state & PROBE_REC_FREED) && ret == 0 && f->call.value != 0) {
        /* Failed: the old block is still live and still sampled. */
        if (!records_all(c)) {
          ptr_insert(c, f->call.rdi);
        }
        f->call.state &= ~(uint64_t)PROBE_REC_FREED;
      }
      exit_alloc(c, site, f, kind, ret);
      break;
    default:
      exit_alloc(c, site, f, kind, ret);
      break;
  }
  struct probe_thread_slot* s = (struct probe_thread_slot*)f->call.slot;
  depth_add(s, -1);
}
