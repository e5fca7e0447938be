// SPDX-License-Identifier: MIT
/* probe_abi.h: the one contract between the in-target trampoline blob (freestanding C and
 * GNU as, probe/blob/) and profctl (C++20, probe/). Plain C11, also valid C++20 and, for
 * the constants only, GNU as (guarded by __ASSEMBLER__).
 *
 * Two areas live in the target:
 *  - the CODE area (private anonymous, r-x, within +-2 GiB of the probed module): the blob
 *    image, starting with struct probe_blob_header, then the relocated original paths;
 *  - the SHARED area (a memfd mapped MAP_SHARED in the target and in profctl): struct
 *    probe_ctl, the thread slot table, the sampled-pointer table and the record ring.
 *
 * Every field is naturally aligned and fixed-size; the offsets are asserted below so a
 * layout change cannot go unnoticed. Bump PROBE_ABI_VERSION on any change: profctl refuses
 * a blob whose version differs (both are built from this header, so that only happens if
 * a stale blob is embedded). */
#ifndef PROFCTL_PROBE_ABI_H
#define PROFCTL_PROBE_ABI_H

#define PROBE_ABI_MAGIC 0x3145424f52504650ULL /* "PFPROBE1" read as a little-endian u64 */
#define PROBE_ABI_VERSION 8

/* ---- site kinds (record.kind, probe_blob_site.kind) ---------------------------------- */
#define PROBE_KIND_NONE 0
#define PROBE_KIND_MALLOC 1         /* void* malloc(size_t n) */
#define PROBE_KIND_CALLOC 2         /* void* calloc(size_t k, size_t n) */
#define PROBE_KIND_REALLOC 3        /* void* realloc(void* old, size_t n) */
#define PROBE_KIND_REALLOCARRAY 4   /* void* reallocarray(void* old, size_t k, size_t n) */
#define PROBE_KIND_POSIX_MEMALIGN 5 /* int posix_memalign(void** out, size_t align, size_t n) */
#define PROBE_KIND_ALIGNED_ALLOC 6  /* void* aligned_alloc(size_t align, size_t n) */
#define PROBE_KIND_MEMALIGN 7       /* void* memalign(size_t align, size_t n) */
#define PROBE_KIND_VALLOC 8         /* void* valloc(size_t n) */
#define PROBE_KIND_PVALLOC 9        /* void* pvalloc(size_t n) */
#define PROBE_KIND_FREE 10          /* void free(void* p) */
/* Waits, timed in the target by return-address hijack (no frame of ours on the stack while
 * the thread waits, see blob.c): record.value = delay in TSC ticks, record.args[0] = the
 * lock or futex address, record.args[1] = the TSC when the wait began.
 *  MUTEX: the contended slow path of a lock (__lll_lock_wait and its private twin): the
 *         mutex profile, and the block profile too (Go counts lock waits as blocking).
 *  BLOCK: any other futex wait (condition variables, semaphores, join, rwlocks: the
 *         futex_abstimed_wait funnel; barriers as the whole call). */
#define PROBE_KIND_BLOCK 16
#define PROBE_KIND_MUTEX 17
/* The release of a contended lock (__lll_lock_wake*: only called when a waiter sleeps, so
 * uncontended unlocks never reach it): the holder side of the mutex profile. Timed like a
 * wait; the record carries PROBE_REC_WAKE and args[0] = the lock. Recorded only while a
 * lock wait chosen for the mutex profile waits on a lock of the same lock-filter counter
 * (probe_ctl.lock_filter_*, ABI v6): the releases that can end a recorded wait. */
#define PROBE_KIND_MUTEX_WAKE 18
/* An entry of an unwinder: glibc's __pthread_unwind (every pthread_cancel and pthread_exit
 * goes through it), libgcc's _Unwind_RaiseException and _Unwind_ForcedUnwind (a throw, a
 * forced unwind). Never recorded: before the unwinder runs, the thread's hijacked wait (if
 * any) gets its real return address back, so the unwinder finds every frame above it
 * (blob.c, "unwinds"). Taken whether or not the probes are enabled. */
#define PROBE_KIND_UNWIND 19
#define PROBE_KIND_LAST 19

/* ---- site flags (probe_blob_site.flags) ---------------------------------------------- */
/* UNWIND: this is the path of every cancellation (__pthread_unwind). While its patch is in
 * place a cancellable wait may be hijacked; without it, it is not (see the next flag). */
#define PROBE_SITE_CANCEL_UNWIND 0x1u
/* BLOCK: the wait function's sixth argument (r9, a bool) says the wait is a cancellation
 * point (glibc's __futex_abstimed_wait_common). Such a wait is hijacked only while a
 * PROBE_SITE_CANCEL_UNWIND site's jump is in place. */
#define PROBE_SITE_CANCELLABLE_ARG6 0x2u
/* Allocation kinds: the function calls (or tail-jumps to) another probed allocation
 * function, e.g. tcmalloc's posix_memalign calls tc_memalign, mimalloc's valloc jumps to
 * mi_malloc_aligned. Every call goes through a frame, sampled or not, so that the depth
 * keeps the inner probe quiet: one call, one sampling decision (ABI v5). */
#define PROBE_SITE_NESTS 0x4u

/* ---- record header states and flags -------------------------------------------------- */
/* probe_record.header = len | (state << 32). Ring bytes are zero until a writer reserves
 * them, so state 0 means "reserved, header not written yet". */
#define PROBE_REC_STATE_EMPTY 0u
#define PROBE_REC_STATE_WRITING 1u   /* len is valid, body is being written */
#define PROBE_REC_STATE_COMMITTED 2u /* release-stored after the body: safe to read */
#define PROBE_REC_STATE_PADDING 3u   /* skip len bytes: the record did not fit before the end */

#define PROBE_REC_ALLOC 0x1u            /* ptr is a sampled allocation of value bytes */
#define PROBE_REC_FREED 0x2u            /* args[0] was a sampled pointer and is now freed */
#define PROBE_REC_STACK_BOUNDS 0x4u     /* stack copied with memcpy inside registered bounds */
#define PROBE_REC_STACK_VMREADV 0x8u    /* stack copied with process_vm_readv (bounds unknown) */
#define PROBE_REC_STACK_FAILED 0x10u    /* process_vm_readv failed: no stack bytes */
#define PROBE_REC_STACK_CUT 0x20u       /* the copy stopped at ctl.stack_bytes, not at the end */
#define PROBE_REC_PTR_NOT_TRACKED 0x40u /* pointer table full: this pointer's free is not seen */
/* The blob's sampling decisions, each made once, in the target: profctl weighs what they
 * chose (fraction; rate/delay) and never samples again. MUTEX: 1 in fraction, drawn at the
 * wait's entry. BLOCK: delay >= rate, else with p = delay/rate, drawn at its end. */
#define PROBE_REC_WAIT_MUTEX 0x80u  /* a wait chosen for the mutex profile */
#define PROBE_REC_WAIT_BLOCK 0x100u /* a wait chosen for the block profile */
#define PROBE_REC_WAKE 0x200u       /* a contended lock's release (PROBE_KIND_MUTEX_WAKE) */
/* ABI v7: the record is a struct probe_record_walked (the target walked its own stack with
 * the compiled tables, or the record has no stack: a free). stack_id names the pcs; they
 * follow the record (npcs of them) the first time an id is written, else npcs is 0 and an
 * earlier record of the same ring defined them. */
#define PROBE_REC_WALKED 0x400u

/* ---- the fields of a walked record (probe_record_walked.fields, ABI v8) --------------- */
/* After its 32 bytes, a walked record holds one u64 for each bit set in `fields`, in bit
 * order, then its pcs: a field that is not there is 0. A free is 40 bytes, an allocation
 * 56, where every field written whole made 80 of each: at --mem-rate 1 the ring carries
 * every call, and its bytes are what the target and profctl pay for (cache lines moving
 * between their CPUs). Allocations carry no args (value is the request); frees and moved
 * reallocs carry ARG0 (the old pointer), waits ARG0 (the lock) and ARG1 (the start). */
#define PROBE_FIELD_VALUE 0x1u
#define PROBE_FIELD_PTR 0x2u
#define PROBE_FIELD_ARG0 0x4u
#define PROBE_FIELD_ARG1 0x8u
#define PROBE_FIELD_STACK_ID 0x10u
#define PROBE_FIELDS_ALL 0x1fu
#define PROBE_FIELDS_MAX 5

/* ---- blob header layout --------------------------------------------------------------- */
#define PROBE_MAX_SITES 32
/* Bytes between the entry stubs of consecutive sites (each holds its own fast path). */
#define PROBE_STUB_STRIDE 512
#define PROBE_BLOB_HEADER_SIZE 1088
#define PROBE_BLOB_SHARED_AREA_OFFSET 32
#define PROBE_BLOB_PROCESS_TOKEN_OFFSET 40
#define PROBE_BLOB_WAIT_RETURN_OFFSET 48
#define PROBE_BLOB_SITES_OFFSET 64
#define PROBE_BLOB_SITE_SIZE 32
#define PROBE_BLOB_SITE_ORIGINAL_OFFSET 0
#define PROBE_BLOB_SITE_KIND_OFFSET 16
#define PROBE_BLOB_SITE_FLAGS_OFFSET 20

/* ---- what the stubs' fast path reads (stubs.S) ------------------------------------- */
#define PROBE_CTL_THREADS_OFFSET_OFFSET 24
#define PROBE_CTL_THREADS_CAPACITY_OFFSET 32
#define PROBE_CTL_MEM_RATE_OFFSET 80
#define PROBE_CTL_ENABLED_OFFSET 92
#define PROBE_CTL_FILTER_OFFSET_OFFSET 112
#define PROBE_CTL_FILTER_CAPACITY_OFFSET 120
#define PROBE_SLOT_SIZE 128
#define PROBE_SLOT_KEY_OFFSET 0
#define PROBE_SLOT_DEPTH_OFFSET 8
#define PROBE_SLOT_COUNTDOWN_OFFSET 16
#define PROBE_SLOT_RNG_OFFSET 24
#define PROBE_HASH_MULTIPLIER 0x9E3779B97F4A7C15 /* the slot and filter hash: (x * this) >> 29 */
#define PROBE_HASH_SHIFT 29

/* ---- stub frame layout (shared by stubs.S and blob.c) -------------------------------- */
/* The entry stub pushes rdi rsi rdx rcx r8 r9 rax r10 r11 (9) and reserves
 * PROBE_CALL_SCRATCH bytes; the call-through path then pushes rbx rbp r12 r13 r14 r15.
 * 9 + 6 + 6 = 21 quadwords (odd): the original function sees the same rsp alignment as
 * at the probed entry. */
#define PROBE_CALL_SCRATCH 48
#define PROBE_FRAME_CALLEE_SAVED 48 /* r15 r14 r13 r12 rbp rbx below struct probe_call */
#define PROBE_FRAME_RAX (PROBE_FRAME_CALLEE_SAVED + PROBE_CALL_SCRATCH + 16)
#define PROBE_FRAME_R10 (PROBE_FRAME_CALLEE_SAVED + PROBE_CALL_SCRATCH + 8)
#define PROBE_FRAME_R9 (PROBE_FRAME_CALLEE_SAVED + PROBE_CALL_SCRATCH + 24)
#define PROBE_FRAME_R8 (PROBE_FRAME_CALLEE_SAVED + PROBE_CALL_SCRATCH + 32)
#define PROBE_FRAME_RCX (PROBE_FRAME_CALLEE_SAVED + PROBE_CALL_SCRATCH + 40)
#define PROBE_FRAME_RDX (PROBE_FRAME_CALLEE_SAVED + PROBE_CALL_SCRATCH + 48)
#define PROBE_FRAME_RSI (PROBE_FRAME_CALLEE_SAVED + PROBE_CALL_SCRATCH + 56)
#define PROBE_FRAME_RDI (PROBE_FRAME_CALLEE_SAVED + PROBE_CALL_SCRATCH + 64)

#ifndef __ASSEMBLER__

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
#define PROBE_STATIC_ASSERT(c, m) static_assert(c, m)
extern "C" {
#else
#define PROBE_STATIC_ASSERT(c, m) _Static_assert(c, m)
#endif

/* One probed function, in the code area's header. Written by profctl's image builder
 * before the code area is written to the target; read-only at run time. */
struct probe_blob_site {
  uint64_t original; /* target address of the relocated original path (0: site unused) */
  uint64_t function; /* target address of the probed function (records' rip) */
  uint32_t kind;     /* PROBE_KIND_* */
  uint32_t flags;    /* PROBE_SITE_* */
  uint64_t reserved;
};

/* At offset 0 of the blob image (and so of the code area). */
struct probe_blob_header {
  uint64_t magic;        /* PROBE_ABI_MAGIC */
  uint32_t abi_version;  /* PROBE_ABI_VERSION */
  uint32_t header_size;  /* sizeof(struct probe_blob_header) */
  uint32_t image_size;   /* bytes of the flat image; free code-area space starts after it */
  uint32_t max_sites;    /* PROBE_MAX_SITES */
  uint32_t stubs_offset; /* entry stub of site i: code area + stubs_offset + i*stub_stride */
  uint32_t stub_stride;  /* PROBE_STUB_STRIDE */
  uint64_t shared_area;  /* filled at install: target address of struct probe_ctl */
  /* Target address of the process token: a u64 on a private page marked MADV_WIPEONFORK
   * (the last page of the code area). profctl writes the owner pid there only after the
   * madvise succeeded; a forked child then reads 0. Non-zero: the record path uses it as
   * its pid without a syscall; 0: it asks getpid(). */
  uint64_t process_token;
  /* Offset of probe_wait_return in the image: the address a timed wait's hijacked stack
   * word holds (profctl puts the real return address back wherever it sees it). */
  uint64_t wait_return_offset;
  uint64_t reserved[1];
  struct probe_blob_site sites[PROBE_MAX_SITES];
};

/* Per-thread state, keyed by the thread pointer (%fs:0, the TCB self pointer). 128 bytes:
 * two cache lines of its own, so threads never share a line. */
struct probe_thread_slot {
  uint64_t key;      /* thread pointer; 0 = free. Claimed with CAS, never released */
  uint64_t depth;    /* > 0 while inside a call-through: nested probes take the original */
  int64_t countdown; /* bytes left before the next sampled allocation */
  uint64_t rng;      /* xorshift64* state; 0 = not seeded yet */
  uint64_t stack_lo; /* [stack_lo, stack_hi): the thread's stack, set by profctl */
  uint64_t stack_hi; /*   (stack_hi is written last; 0 = unknown) */
  int32_t tid;       /* set by profctl with the bounds; 0 = unknown (the blob asks gettid) */
  int32_t reserved32;
  /* Records this thread committed (ABI v7: per thread, so that recording costs no shared
   * counter; profctl sums the slots for records_written). */
  uint64_t records;
  /* The wait in progress (second line). While wait_active, the stack word at wait_slot
   * holds wait_hijack (the blob's wait-return address) instead of wait_ret: profctl puts
   * wait_ret back in every stack copy it reads, and in the stack itself at detach; the blob
   * puts it back and clears wait_active at an unwinder's entry (PROBE_KIND_UNWIND). */
  uint32_t wait_active; /* 1 between the hijack at entry and the return (release-stored) */
  uint32_t wait_site;   /* index into probe_blob_header.sites */
  uint64_t wait_ret;    /* the caller's real return address */
  uint64_t wait_slot;   /* target address of the hijacked stack word (rsp at entry) */
  uint64_t wait_tsc0;   /* rdtsc at entry */
  uint64_t wait_addr;   /* the lock / futex word (rdi at entry) */
  uint64_t wait_rng;    /* xorshift64* state of the wait sampling; 0 = not seeded */
  uint64_t wait_hijack; /* the word written there: the hijacking code area's
                           probe_wait_return (each code area has its own) */
  /* 1 + the index of the lock-filter counter this wait raised (a lock wait chosen for the
   * mutex profile); 0 = none. Whoever ends the wait (the blob at its return or at an
   * unwind, profctl at thread exit) takes it with an atomic exchange and lowers that
   * counter, so it is lowered once (ABI v6). */
  uint64_t wait_counted;
};

/* Counters: bumped with atomic adds by the target, read by profctl. */
struct probe_counters {
  uint64_t records_written_unused;    /* (ABI v7: counted per slot, probe_thread_slot.records) */
  uint64_t dropped_ring_full;         /* records that found no room */
  uint64_t dropped_ptr_table_full;    /* sampled pointers not tracked (their free is lost) */
  uint64_t dropped_thread_table_full; /* probe hits from a thread that found no slot */
  uint64_t foreign_pid_events;        /* sampled events in another process (a forked child) */
  uint64_t stack_copy_failed;         /* process_vm_readv failed outright */
  uint64_t inflight_unused;           /* (ABI v7: a slot's depth > 0 says it, per thread) */
  uint64_t waits_seen;                /* waits entered (recorded or not) */
  uint64_t waits_recorded;            /* waits written to the ring */
  uint64_t waits_unwound;             /* hijacked waits undone at an unwinder's entry */
  uint64_t waits_not_hijacked;        /* cancellable waits left alone: no cancel site */
  /* Of dropped_ring_full, by the profile that loses them (one record may count twice: a
   * moved realloc is an allocation and a free; a lock wait may be chosen for both). */
  uint64_t dropped_ring_alloc; /* records with PROBE_REC_ALLOC */
  uint64_t dropped_ring_free;  /* records with PROBE_REC_FREED */
  uint64_t dropped_ring_mutex; /* PROBE_KIND_MUTEX records with PROBE_REC_WAIT_MUTEX */
  uint64_t dropped_ring_block; /* records with PROBE_REC_WAIT_BLOCK */
  /* ABI v7 */
  /* (Walked stacks and new stack ids are counted by profctl's reader, not here: a shared
   * counter per record costs more than the walk.) */
  uint64_t walk_fallbacks;  /* stacks the walk could not finish: copied instead */
  uint64_t ring_waits;      /* records that waited for room in the ring */
  uint64_t dropped_stalled; /* records dropped because profctl stopped draining */
  uint64_t reserved[5];
};

/* At offset 0 of the shared area. Everything after the first line is written by profctl
 * once (layout) or rarely (enabled, mem_rate); the ring indices have their own lines. */
struct probe_ctl {
  uint64_t magic;       /* PROBE_ABI_MAGIC */
  uint32_t abi_version; /* PROBE_ABI_VERSION */
  uint32_t ctl_size;    /* sizeof(struct probe_ctl) */
  uint64_t area_size;   /* bytes of the whole shared area */
  uint64_t threads_offset;
  uint64_t threads_capacity; /* power of two; struct probe_thread_slot entries */
  uint64_t ptrs_offset;
  uint64_t ptrs_capacity; /* power of two; uint64_t entries: 0 empty, 1 tombstone, else a pointer */
  uint64_t ring_offset;
  uint64_t ring_size;        /* power of two, bytes */
  uint32_t max_probe;        /* bound on linear probing in both tables */
  uint32_t stack_bytes;      /* budget of each stack copy (multiple of 8) */
  int64_t mem_rate;          /* Go MemProfileRate: mean bytes between samples; 1 all; 0 none */
  int32_t owner_pid;         /* the profiled process; records of other pids are foreign */
  uint32_t enabled;          /* 0: every trampoline takes the original path at once */
  uint64_t block_rate_ticks; /* Go's block profile rate in TSC ticks: longer waits always,
                                shorter ones with probability delay/rate; 0 = no block profile */
  uint64_t mutex_fraction;   /* Go's mutex profile fraction: 1 in N lock waits; 0 = none */
  /* Counting filter in front of the pointer table: u32 counters indexed by a hash of the
   * pointer's 4 KiB page, each the number of live sampled pointers in the pages that hash
   * there. A free whose counter is 0 is not sampled; consecutive frees in one page hit the
   * same counter, so the common free costs an L1 hit instead of a miss in the big table. */
  uint64_t filter_offset;
  uint64_t filter_capacity; /* power of two; uint32_t counters */
  /* Lock filter (ABI v6): u32 counters indexed by a hash of a lock's address, each the
   * number of lock waits chosen for the mutex profile that wait now on the locks hashing
   * there. A contended release (PROBE_KIND_MUTEX_WAKE) whose counter is 0 cannot end a
   * recorded wait and is not recorded, so the holder side costs what the fraction keeps. */
  uint64_t lock_filter_offset;
  uint64_t lock_filter_capacity; /* power of two; uint32_t counters; 0 = record every release */
  /* ABI v7: the stack walk in the target (see "compiled unwind tables" below).
   * unwind_*: the region holding the tables; unwind_dir: offset in it of the current
   * struct probe_unwind_dir (release-stored by profctl after the tables it names are
   * written; 0 = no tables: every record carries a stack copy). */
  uint64_t unwind_offset;
  uint64_t unwind_size;
  uint64_t unwind_dir;
  /* Stack ids already written to the ring: u64 entries, 0 empty, else an id with bit 0
   * clear while its defining record is being written and set once it is committed. */
  uint64_t stackid_offset;
  uint64_t stackid_capacity; /* power of two; 0 = no interning: every walked record has pcs */
  /* Per thread slot (same index), 2 * PROBE_SCRATCH_WORDS u64 of scratch for the walk. */
  uint64_t scratch_offset;
  /* Back-pressure (ring_wait != 0): a writer that finds the ring full waits for room as long
   * as profctl is alive: heartbeat_tsc (rdtsc, refreshed by profctl every few ms) no older
   * than liveness_ticks. Past that the writer drops its record, and the probes fall silent
   * (enabled = 0, stalled = 1) until profctl is back. ring_wait == 0: drop at once. */
  uint32_t ring_wait;
  uint32_t stalled;
  uint64_t heartbeat_tsc;
  uint64_t liveness_ticks;
  uint64_t reserved0[5];
  /* offset 256 */
  uint64_t ring_head; /* bytes ever reserved (writers, CAS) */
  uint64_t pad_head[7];
  /* offset 320 */
  uint64_t ring_tail; /* bytes ever consumed (profctl, release store) */
  uint64_t pad_tail[7];
  /* offset 384 */
  struct probe_counters counters;
  uint64_t reserved1[41];
};

/* One ring entry; the stack copy (stack_len bytes) follows it. len is a multiple of 8 and
 * counts the header, the stack copy and any slack after it. */
struct probe_record {
  uint64_t header; /* len | state << 32 (PROBE_REC_STATE_*) */
  uint16_t kind;   /* PROBE_KIND_* */
  uint16_t flags;  /* PROBE_REC_* */
  uint32_t site;   /* index into probe_blob_header.sites */
  int32_t pid;
  int32_t tid;
  uint64_t tsc;   /* rdtsc when the event completed */
  uint64_t value; /* alloc kinds: bytes requested; block/mutex: delay in TSC ticks */
  uint64_t ptr;   /* alloc kinds: the allocated pointer (also for posix_memalign) */
  uint64_t args[4];
  uint64_t ret; /* rax after the call */
  /* Registers at the probed function's entry: rip = the function, rsp points at the
   * return address (waits: the real one is in the copy, never the hijacked word). */
  uint64_t rip, rsp, rbp, rbx, r12, r13, r14, r15;
  uint64_t stack_len; /* valid bytes of the copy of [rsp, rsp + stack_len) that follows */
};

/* PROBE_REC_WALKED records (ABI v8): the same first 12 bytes as struct probe_record
 * (header, kind, flags), then the site, which fields follow (PROBE_FIELD_*: value, ptr,
 * args[0], args[1], the stack id, each a u64 when its bit is set, in that order) and how
 * many pcs follow them, innermost first: pcs[0] is the probed function (the activation),
 * the rest return addresses, the last one's frame outermost (the walk reached a frame
 * whose return address is undefined). A free, or a realloc's freed half only, has no stack
 * id and no pcs. */
struct probe_record_walked {
  uint64_t header;
  uint16_t kind;
  uint16_t flags;
  uint16_t site;  /* index into probe_blob_header.sites */
  uint8_t fields; /* PROBE_FIELD_* */
  uint8_t npcs;   /* pcs following the fields (0: stack_id was defined before, or none) */
  int32_t pid;
  int32_t tid;
  uint64_t tsc;
  /* the fields, then the pcs */
};

/* ---- compiled unwind tables (ABI v7) ---------------------------------------------------
 * profctl compiles each module's CFI into rows sorted by pc (unwind/cfi_table.h: the same
 * 16-byte rows) and writes them into the shared area's unwind region with a block index
 * and a directory; the blob walks a recorded call's stack with them (blob.c, "walk").
 * Every offset is relative to the region and checked against its size before use: the
 * region is in memory the target can write. */
#define PROBE_MAX_PCS 128
/* Per thread slot and record path (call-throughs, waits): PROBE_MAX_PCS words of pcs, then
 * the path's walk memo (blob.c, struct walk_memo): PROBE_SCRATCH_WORDS u64 in all (ABI v8). */
#define PROBE_WALK_MEMO_READS 48
#define PROBE_WALK_MEMO_WORDS (7 + 2 * PROBE_WALK_MEMO_READS)
#define PROBE_SCRATCH_WORDS (PROBE_MAX_PCS + PROBE_WALK_MEMO_WORDS)
#define PROBE_CFA_NONE 0
#define PROBE_CFA_RSP 1
#define PROBE_CFA_RBP 2
#define PROBE_CFA_NOT_EXPRESSIBLE 3
#define PROBE_SAVED_UNDEFINED 0
#define PROBE_SAVED_SAME 1
#define PROBE_SAVED_AT_CFA 2

struct probe_unwind_row {
  uint32_t pc; /* first address the row applies to, relative to the module's base */
  int32_t cfa_offset;
  int16_t ra_offset;
  int16_t rbp_offset;
  uint8_t cfa; /* PROBE_CFA_* */
  uint8_t ra;  /* PROBE_SAVED_* */
  uint8_t rbp; /* PROBE_SAVED_* */
  uint8_t reserved;
};

struct probe_unwind_module {
  uint64_t start; /* [start, end): target addresses the table answers for */
  uint64_t end;
  uint64_t base;   /* target address of row pc 0 (link-time table base + load bias) */
  uint64_t rows;   /* region offset of nrows rows, the last one PROBE_CFA_NONE */
  uint64_t blocks; /* region offset of nblocks + 1 u32: for each 2^block_shift bytes from
                      base, the row holding the block's first address (UINT32_MAX: before
                      the first row) */
  uint32_t nrows;
  uint32_t nblocks;
  uint32_t block_shift;
  uint32_t reserved;
};

struct probe_unwind_dir {
  uint32_t count; /* modules, sorted by start, not overlapping */
  uint32_t reserved;
  /* struct probe_unwind_module modules[count] follows */
};

PROBE_STATIC_ASSERT(sizeof(struct probe_blob_site) == PROBE_BLOB_SITE_SIZE, "site size");
PROBE_STATIC_ASSERT(sizeof(struct probe_blob_header) == PROBE_BLOB_HEADER_SIZE, "header size");
PROBE_STATIC_ASSERT(offsetof(struct probe_blob_header, shared_area) ==
                        PROBE_BLOB_SHARED_AREA_OFFSET,
                    "shared_area offset");
PROBE_STATIC_ASSERT(offsetof(struct probe_blob_header, process_token) ==
                        PROBE_BLOB_PROCESS_TOKEN_OFFSET,
                    "process_token offset");
PROBE_STATIC_ASSERT(offsetof(struct probe_blob_header, wait_return_offset) ==
                        PROBE_BLOB_WAIT_RETURN_OFFSET,
                    "wait_return_offset offset");
PROBE_STATIC_ASSERT(offsetof(struct probe_blob_header, sites) == PROBE_BLOB_SITES_OFFSET,
                    "sites offset");
PROBE_STATIC_ASSERT(sizeof(struct probe_thread_slot) == PROBE_SLOT_SIZE, "slot is two lines");
PROBE_STATIC_ASSERT(offsetof(struct probe_blob_site, kind) == PROBE_BLOB_SITE_KIND_OFFSET, "kind");
PROBE_STATIC_ASSERT(offsetof(struct probe_blob_site, flags) == PROBE_BLOB_SITE_FLAGS_OFFSET,
                    "flags");
PROBE_STATIC_ASSERT(offsetof(struct probe_ctl, threads_offset) == PROBE_CTL_THREADS_OFFSET_OFFSET,
                    "fast path: threads_offset");
PROBE_STATIC_ASSERT(offsetof(struct probe_ctl, threads_capacity) ==
                        PROBE_CTL_THREADS_CAPACITY_OFFSET,
                    "fast path: threads_capacity");
PROBE_STATIC_ASSERT(offsetof(struct probe_ctl, mem_rate) == PROBE_CTL_MEM_RATE_OFFSET,
                    "fast path: mem_rate");
PROBE_STATIC_ASSERT(offsetof(struct probe_ctl, enabled) == PROBE_CTL_ENABLED_OFFSET,
                    "fast path: enabled");
PROBE_STATIC_ASSERT(offsetof(struct probe_ctl, filter_offset) == PROBE_CTL_FILTER_OFFSET_OFFSET,
                    "fast path: filter_offset");
PROBE_STATIC_ASSERT(offsetof(struct probe_ctl, filter_capacity) == PROBE_CTL_FILTER_CAPACITY_OFFSET,
                    "fast path: filter_capacity");
PROBE_STATIC_ASSERT(offsetof(struct probe_thread_slot, key) == PROBE_SLOT_KEY_OFFSET, "key");
PROBE_STATIC_ASSERT(offsetof(struct probe_thread_slot, depth) == PROBE_SLOT_DEPTH_OFFSET, "depth");
PROBE_STATIC_ASSERT(offsetof(struct probe_thread_slot, countdown) == PROBE_SLOT_COUNTDOWN_OFFSET,
                    "countdown");
PROBE_STATIC_ASSERT(offsetof(struct probe_thread_slot, rng) == PROBE_SLOT_RNG_OFFSET, "rng");
PROBE_STATIC_ASSERT(offsetof(struct probe_ctl, ring_head) == 256, "head line");
PROBE_STATIC_ASSERT(offsetof(struct probe_ctl, ring_tail) == 320, "tail line");
PROBE_STATIC_ASSERT(offsetof(struct probe_ctl, counters) == 384, "counters line");
PROBE_STATIC_ASSERT(sizeof(struct probe_ctl) == 896, "ctl size");
PROBE_STATIC_ASSERT(sizeof(struct probe_record) == 160, "record size");
PROBE_STATIC_ASSERT(sizeof(struct probe_record_walked) == 32, "walked record size");
PROBE_STATIC_ASSERT(PROBE_MAX_PCS <= 255 && PROBE_MAX_SITES <= 65535, "npcs and site fit");
PROBE_STATIC_ASSERT(PROBE_FIELDS_ALL == (1u << PROBE_FIELDS_MAX) - 1, "one bit per field");
PROBE_STATIC_ASSERT(offsetof(struct probe_record_walked, flags) ==
                        offsetof(struct probe_record, flags),
                    "common prefix");
PROBE_STATIC_ASSERT(offsetof(struct probe_record_walked, tsc) == offsetof(struct probe_record, tsc),
                    "common prefix");
PROBE_STATIC_ASSERT(sizeof(struct probe_unwind_row) == 16, "row size");
PROBE_STATIC_ASSERT(sizeof(struct probe_unwind_module) == 56, "module size");

#ifdef __cplusplus
}
#endif

#endif /* __ASSEMBLER__ */
#endif /* PROFCTL_PROBE_ABI_H */
