// Fibers of the emulated GPU: one per CUDA thread of the running block.
//
// A fiber is a stack and a saved context. Switching is a few instructions
// in user space (no syscall, unlike glibc's swapcontext, which calls
// rt_sigprocmask): on x86-64 an assembly routine saves the callee-saved
// registers, MXCSR and the x87 control word on the old stack and restores
// them from the new one. Other targets (or -DFERRITE_EMU_UCONTEXT) fall
// back to <ucontext.h>.
// Stacks come from a pool that only grows, are reused by every launch, and
// have a PROT_NONE guard page below them and a canary just above it.
#pragma once

#include <cstddef>

#if defined(__x86_64__) && defined(__ELF__) && !defined(FERRITE_EMU_UCONTEXT)
#define FERRITE_EMU_ASM_SWITCH 1
#else
#include <ucontext.h>
#endif

namespace ferrite_emu {

// The saved state of a suspended fiber (or of the scheduler).
struct Context {
#ifdef FERRITE_EMU_ASM_SWITCH
    void* sp = nullptr;
#else
    ucontext_t uc;
#endif
};

// One fiber stack: `size` usable bytes at `base` (lowest address), with a
// guard page below and a canary word at `base`.
struct Stack {
    void* mapping = nullptr;
    size_t mapping_size = 0;
    char* base = nullptr;
    size_t size = 0;
};

// Usable bytes per fiber stack.
constexpr size_t kStackSize = 64 * 1024;

// Makes sure the pool holds at least `n` stacks; false when the memory
// cannot be mapped.
bool reserve_stacks(size_t n);

// Stack `i` of the pool (i < the last successful reserve_stacks).
Stack& stack_at(size_t i);

// True when the canary of `stack` is intact (no overflow seen).
bool stack_canary_ok(const Stack& stack);

// Prepares `ctx` to run `entry()` on `stack` when first switched to.
void context_init(Context* ctx, Stack& stack, void (*entry)());

// Saves the current state into `from` and resumes `to`.
void context_switch(Context* from, Context* to);

}  // namespace ferrite_emu
