/* SPDX-License-Identifier: MIT */
/* Entry stubs of the probe blob (GNU as, AT&T syntax). See blob.c for the contract.
 *
 * The image starts with struct probe_blob_header (probe_abi.h); then one entry stub per
 * site, PROBE_STUB_STRIDE bytes apart, each with its site index built in (a fixed array:
 * nothing is patched in the code at install, only the header's site table is filled).
 *
 * A patched function F jumps to its stub with every register as at F's entry and rsp
 * pointing at the caller's return address. The stub must hand F's original path exactly
 * that state (fast path), or call it with the same arguments and return its rax:rdx with
 * the callee-saved registers intact (call-through). Nothing here touches the red zone of
 * the caller (a call already overwrote it) or any SSE register (the C code is built with
 * -mgeneral-regs-only, so x/y/zmm and the MXCSR reach F untouched).
 */
#include "probe/abi/probe_abi.h"

        .section .blob_header, "ax", @progbits
        .balign 64
        .globl probe_blob_header
        .hidden probe_blob_header
probe_blob_header:
        .quad PROBE_ABI_MAGIC
        .long PROBE_ABI_VERSION
        .long PROBE_BLOB_HEADER_SIZE
        .long probe_blob_end - probe_blob_header      /* image_size */
        .long PROBE_MAX_SITES
        .long probe_stubs - probe_blob_header         /* stubs_offset */
        .long PROBE_STUB_STRIDE
        .quad 0                                       /* shared_area (filled at install) */
        .quad 0                                       /* process_token (filled at install) */
        .quad probe_wait_return - probe_blob_header   /* wait_return_offset */
        .quad 0                                       /* reserved */
        .fill PROBE_MAX_SITES * PROBE_BLOB_SITE_SIZE, 1, 0
        .if (. - probe_blob_header) != PROBE_BLOB_HEADER_SIZE
        .error "probe_blob_header size does not match probe_abi.h"
        .endif

        .text
        .balign PROBE_STUB_STRIDE
        .globl probe_stubs
        .hidden probe_stubs
probe_stubs:
        .irp i, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31
        .balign PROBE_STUB_STRIDE
probe_stub_\i:
        endbr64
        /* The fast path, in each stub: a call that is not recorded (the common case at every
         * rate but 1) costs five saved registers and no C frame. It uses rax rcx rdx r10 r11
         * and the flags (dead at a function's entry), restored before either path. It
         * decides exactly as probe_enter would, for the two kinds it knows and only where
         * probe_enter takes the original path with nothing else to do; anything else (a
         * slot not at its home entry, an unseeded thread, a sampled call, rate 1 or below,
         * other kinds) goes on to probe_enter (.Lfull):
         *  - MALLOC (no PROBE_SITE_NESTS): disabled; or the thread's slot is at its home
         *    entry and is inside a call-through (depth > 0); or the allocation stays under
         *    the countdown, which it lowers (sample_alloc, enter_alloc);
         *  - FREE at a rate above 1: disabled, a null pointer, or a pointer whose page's
         *    filter counter is 0 (enter_free, ptr_find).
         * Inline rather than called: the call and its return were a sixth of its cost. */
        push %rax
        push %rcx
        push %rdx
        push %r10
        push %r11
        mov (probe_blob_header + PROBE_BLOB_SHARED_AREA_OFFSET)(%rip), %rax  /* probe_ctl* */
        test %rax, %rax
        jz .Lfull\i
        lea (probe_blob_header + PROBE_BLOB_SITES_OFFSET + \i * PROBE_BLOB_SITE_SIZE)(%rip), %r11
        mov PROBE_BLOB_SITE_KIND_OFFSET(%r11), %ecx
        cmp $PROBE_KIND_MALLOC, %ecx
        je .Lmalloc\i
        cmp $PROBE_KIND_FREE, %ecx
        je .Lfree\i
        jmp .Lfull\i
.Lmalloc\i:
        testl $PROBE_SITE_NESTS, PROBE_BLOB_SITE_FLAGS_OFFSET(%r11)
        jnz .Lfull\i
        cmpl $0, PROBE_CTL_ENABLED_OFFSET(%rax)
        je .Lorig\i
        cmpq $1, PROBE_CTL_MEM_RATE_OFFSET(%rax)
        jle .Lfull\i
        mov %fs:0, %rcx                                        /* the thread pointer: the key */
        movabs $PROBE_HASH_MULTIPLIER, %r10
        imul %rcx, %r10
        shr $PROBE_HASH_SHIFT, %r10
        mov PROBE_CTL_THREADS_CAPACITY_OFFSET(%rax), %rdx
        dec %rdx
        and %rdx, %r10
        shl $7, %r10                                           /* * PROBE_SLOT_SIZE */
        add PROBE_CTL_THREADS_OFFSET_OFFSET(%rax), %r10
        add %rax, %r10                                         /* the home slot */
        cmp %rcx, PROBE_SLOT_KEY_OFFSET(%r10)
        jne .Lfull\i
        cmpq $0, PROBE_SLOT_DEPTH_OFFSET(%r10)
        jne .Lorig\i
        cmpq $0, PROBE_SLOT_RNG_OFFSET(%r10)
        je .Lfull\i
        mov PROBE_SLOT_COUNTDOWN_OFFSET(%r10), %rcx
        test %rcx, %rcx
        jle .Lfull\i
        cmp %rcx, %rdi                                         /* size < countdown */
        jae .Lfull\i
        sub %rdi, PROBE_SLOT_COUNTDOWN_OFFSET(%r10)
        jmp .Lorig\i
.Lfree\i:
        cmpl $0, PROBE_CTL_ENABLED_OFFSET(%rax)
        je .Lorig\i
        test %rdi, %rdi
        jz .Lorig\i
        cmpq $1, PROBE_CTL_MEM_RATE_OFFSET(%rax)
        je .Lfull\i                                              /* every free is recorded */
        mov %rdi, %rcx
        shr $12, %rcx                                          /* the pointer's page */
        movabs $PROBE_HASH_MULTIPLIER, %r10
        imul %rcx, %r10
        shr $PROBE_HASH_SHIFT, %r10
        mov PROBE_CTL_FILTER_CAPACITY_OFFSET(%rax), %rdx
        dec %rdx
        and %rdx, %r10
        shl $2, %r10                                           /* u32 counters */
        add PROBE_CTL_FILTER_OFFSET_OFFSET(%rax), %r10
        add %rax, %r10
        cmpl $0, (%r10)
        jne .Lfull\i
.Lorig\i:
        pop %r11
        pop %r10
        pop %rdx
        pop %rcx
        pop %rax
        jmp *(probe_blob_header + PROBE_BLOB_SITES_OFFSET + \i * PROBE_BLOB_SITE_SIZE + PROBE_BLOB_SITE_ORIGINAL_OFFSET)(%rip)
.Lfull\i:
        pop %r11
        pop %r10
        pop %rdx
        pop %rcx
        pop %rax
        /* Save what the original path or the caller may rely on and C may clobber. */
        push %rdi
        push %rsi
        push %rdx
        push %rcx
        push %r8
        push %r9
        push %rax
        push %r10
        push %r11
        sub $PROBE_CALL_SCRATCH, %rsp
        mov %rsp, %rdi                 /* struct probe_call* */
        mov $\i, %esi
        call probe_enter
        test %eax, %eax
        jnz 1f
        /* Not sampled: restore everything and continue in the original path, leaving no
         * frame behind. */
        add $PROBE_CALL_SCRATCH, %rsp
        pop %r11
        pop %r10
        pop %rax
        pop %r9
        pop %r8
        pop %rcx
        pop %rdx
        pop %rsi
        pop %rdi
        jmp *(probe_blob_header + PROBE_BLOB_SITES_OFFSET + \i * PROBE_BLOB_SITE_SIZE + PROBE_BLOB_SITE_ORIGINAL_OFFSET)(%rip)
1:      mov $\i, %esi
        jmp probe_callthrough
        .endr
        .globl probe_stub_last
        .hidden probe_stub_last
        .set probe_stub_last, probe_stub_31   /* blob.ld checks the stubs stayed in stride */

/* Call-through: rsp = struct probe_call, esi = site. Calls the original path with the
 * saved arguments, then probe_exit(frame, site), then returns the original's rax:rdx to
 * the caller with rbx rbp r12-r15 as they were at F's entry. */
        .balign 16
probe_callthrough:
        push %rbx
        push %rbp
        push %r12
        push %r13
        push %r14
        push %r15
        mov %rsp, %rbx                 /* struct probe_frame*; callee-saved from here on */
        mov %esi, %r12d                /* site index; callee-saved */
        lea probe_blob_header(%rip), %r11
        mov %r12, %r10
        shl $5, %r10                   /* * PROBE_BLOB_SITE_SIZE */
        mov (PROBE_BLOB_SITES_OFFSET + PROBE_BLOB_SITE_ORIGINAL_OFFSET)(%r11,%r10), %r11
        mov PROBE_FRAME_RDI(%rbx), %rdi
        mov PROBE_FRAME_RSI(%rbx), %rsi
        mov PROBE_FRAME_RDX(%rbx), %rdx
        mov PROBE_FRAME_RCX(%rbx), %rcx
        mov PROBE_FRAME_R8(%rbx), %r8
        mov PROBE_FRAME_R9(%rbx), %r9
        mov PROBE_FRAME_RAX(%rbx), %rax
        mov PROBE_FRAME_R10(%rbx), %r10
        call *%r11
        mov %rax, PROBE_FRAME_RAX(%rbx)
        mov %rdx, PROBE_FRAME_RDX(%rbx)
        mov %rbx, %rdi
        mov %r12d, %esi
        call probe_exit
        mov PROBE_FRAME_RAX(%rbx), %rax
        mov PROBE_FRAME_RDX(%rbx), %rdx
        mov %rbx, %rsp
        pop %r15
        pop %r14
        pop %r13
        pop %r12
        pop %rbp
        pop %rbx
        add $(PROBE_CALL_SCRATCH + 9 * 8), %rsp
        ret

/* Where a timed wait returns (blob.c, "waits"): rsp is the caller's again (the return
 * address popped), rax:rdx the result, the callee-saved registers their entry values.
 * Saves the result and the callee-saved registers (the record's unwind registers), asks
 * probe_wait_exit for the real return address, and goes there with everything intact.
 * rsp is 16-byte aligned here (it was 8 mod 16 at the function's entry), and 8 pushes
 * keep it so for the call. */
        .balign 16
        .globl probe_wait_return
        .hidden probe_wait_return
probe_wait_return:
        push %rax
        push %rdx
        push %rbx
        push %rbp
        push %r12
        push %r13
        push %r14
        push %r15
        mov %rsp, %rdi
        call probe_wait_exit
        mov %rax, %r11
        pop %r15
        pop %r14
        pop %r13
        pop %r12
        pop %rbp
        pop %rbx
        pop %rdx
        pop %rax
        jmp *%r11

        .section .note.GNU-stack, "", @progbits
