// Fiber stacks and context switches (see fiber.h).
#include "fiber.h"

#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <vector>

namespace ferrite_emu {

namespace {

constexpr uint64_t kCanary = 0xfe77173ca4a21e55ull;

std::vector<Stack>& pool() {
    static std::vector<Stack> stacks;
    return stacks;
}

// Maps one stack with a guard page below it and writes its canary.
bool map_stack(Stack* s) {
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    size_t total = kStackSize + page;
    void* m = mmap(nullptr, total, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) return false;
    if (mprotect(m, page, PROT_NONE) != 0) {
        munmap(m, total);
        return false;
    }
    s->mapping = m;
    s->mapping_size = total;
    s->base = static_cast<char*>(m) + page;
    s->size = kStackSize;
    std::memcpy(s->base, &kCanary, sizeof kCanary);
    return true;
}

}  // namespace

// Grows the pool to `n` stacks (never shrinks: launches reuse them).
bool reserve_stacks(size_t n) {
    auto& stacks = pool();
    while (stacks.size() < n) {
        Stack s;
        if (!map_stack(&s)) return false;
        stacks.push_back(s);
    }
    return true;
}

Stack& stack_at(size_t i) { return pool()[i]; }

// Compares the word at the bottom of the stack with the canary.
bool stack_canary_ok(const Stack& stack) {
    uint64_t v;
    std::memcpy(&v, stack.base, sizeof v);
    return v == kCanary;
}

#ifdef FERRITE_EMU_ASM_SWITCH

// ferrite_emu_switch(void** save_sp, void* load_sp): pushes the callee-saved
// registers and the FP control state (MXCSR, x87 control word) on the
// current stack, stores the stack pointer in *save_sp, switches to load_sp
// and pops the same frame from there.
//
// ferrite_emu_fiber_start: where a fresh fiber's first switch returns to;
// calls the entry function held in r13 on a 16-byte aligned stack.
asm(R"(
    .text
    .globl ferrite_emu_switch
    .hidden ferrite_emu_switch
    .type ferrite_emu_switch, @function
ferrite_emu_switch:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    subq $8, %rsp
    stmxcsr (%rsp)
    fnstcw 4(%rsp)
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    ldmxcsr (%rsp)
    fldcw 4(%rsp)
    addq $8, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .size ferrite_emu_switch, .-ferrite_emu_switch

    .globl ferrite_emu_fiber_start
    .hidden ferrite_emu_fiber_start
    .type ferrite_emu_fiber_start, @function
ferrite_emu_fiber_start:
    andq $-16, %rsp
    callq *%r13
    ud2
    .size ferrite_emu_fiber_start, .-ferrite_emu_fiber_start
)");

extern "C" void ferrite_emu_switch(void** save_sp, void* load_sp);
extern "C" void ferrite_emu_fiber_start();

// Builds the frame ferrite_emu_switch pops: FP control state (copied from
// the current thread), six zeroed registers with r13 = entry, and the
// return address ferrite_emu_fiber_start.
void context_init(Context* ctx, Stack& stack, void (*entry)()) {
    uintptr_t top = reinterpret_cast<uintptr_t>(stack.base + stack.size) & ~uintptr_t(15);
    uint64_t* frame = reinterpret_cast<uint64_t*>(top) - 8;
    uint32_t mxcsr;
    uint16_t fpucw;
    asm volatile("stmxcsr %0" : "=m"(mxcsr));
    asm volatile("fnstcw %0" : "=m"(fpucw));
    uint64_t csr = (uint64_t)mxcsr | ((uint64_t)fpucw << 32);
    frame[0] = csr;
    frame[1] = 0;                                         // r15
    frame[2] = 0;                                         // r14
    frame[3] = reinterpret_cast<uint64_t>(entry);         // r13
    frame[4] = 0;                                         // r12
    frame[5] = 0;                                         // rbx
    frame[6] = 0;                                         // rbp
    frame[7] = reinterpret_cast<uint64_t>(&ferrite_emu_fiber_start);  // return address
    ctx->sp = frame;
}

void context_switch(Context* from, Context* to) { ferrite_emu_switch(&from->sp, to->sp); }

#else

// The portable fallback: makecontext / swapcontext (one syscall per switch).
void context_init(Context* ctx, Stack& stack, void (*entry)()) {
    getcontext(&ctx->uc);
    ctx->uc.uc_stack.ss_sp = stack.base + 64;  // above the canary
    ctx->uc.uc_stack.ss_size = stack.size - 64;
    ctx->uc.uc_link = nullptr;
    makecontext(&ctx->uc, entry, 0);
}

void context_switch(Context* from, Context* to) { swapcontext(&from->uc, &to->uc); }

#endif

}  // namespace ferrite_emu
