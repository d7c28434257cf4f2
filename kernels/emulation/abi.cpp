// The C entry points of the emulated GPU: kernel lookup and launch.
//
// Launches from several host threads are serialised by one mutex; a launch
// runs on the calling thread. Every failure (unknown kernel, argument
// mismatch, bad launch shape, an error inside the kernel) is reported as a
// message and a non-zero return, never by aborting the process.
#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <string>
#include <unordered_map>

#include "scheduler.h"

namespace ferrite_emu {
namespace {

std::mutex g_mutex;

// Every kernel by name, built on first use.
const std::unordered_map<std::string, const KernelEntry*>& kernel_index() {
    static const auto* index = [] {
        auto* m = new std::unordered_map<std::string, const KernelEntry*>();
        for (size_t f = 0; f < kFamilyCount; f++) {
            for (size_t i = 0; i < kFamilies[f]->count; i++) {
                m->emplace(kFamilies[f]->entries[i].name, &kFamilies[f]->entries[i]);
            }
        }
        return m;
    }();
    return *index;
}

const KernelEntry* find_kernel(const char* name) {
    const auto& index = kernel_index();
    auto it = index.find(name);
    return it == index.end() ? nullptr : it->second;
}

// printf into a std::string.
std::string format(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
std::string format(const char* fmt, ...) {
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    return buf;
}

// Checks the launch shape like the driver: non-empty grid and block, at
// most 1024 threads, block z at most 64.
std::string check_shape(const unsigned grid[3], const unsigned block[3], unsigned dynamic_shared) {
    for (int d = 0; d < 3; d++) {
        if (grid[d] == 0 || block[d] == 0) {
            return format("empty launch: grid (%u,%u,%u), block (%u,%u,%u)", grid[0], grid[1],
                          grid[2], block[0], block[1], block[2]);
        }
    }
    unsigned long long threads = (unsigned long long)block[0] * block[1] * block[2];
    if (threads > 1024 || block[0] > 1024 || block[1] > 1024 || block[2] > 64) {
        return format("block (%u,%u,%u) exceeds the limits (1024 threads, z <= 64)", block[0],
                      block[1], block[2]);
    }
    if (dynamic_shared != 0) {
        return format("%u bytes of dynamic shared memory requested; the emulator supports only "
                      "static __shared__ arrays",
                      dynamic_shared);
    }
    return "";
}

// Runs a checked launch: the blocks in order (x fastest), or all reversed.
std::string run(const KernelEntry* k, const unsigned grid[3], const unsigned block[3],
                void* const* args, bool reverse, bool* synchronised) {
    const unsigned threads = block[0] * block[1] * block[2];
    if (!reserve_stacks(threads)) return "cannot map the fiber stacks";
    Launch L;
    L.kernel = k;
    L.args = args;
    L.threads = threads;
    L.fibers.resize(threads);
    g_launch = &L;
    g_block_dim = {block[0], block[1], block[2]};
    g_grid_dim = {grid[0], grid[1], grid[2]};
    const unsigned long long blocks = (unsigned long long)grid[0] * grid[1] * grid[2];
    for (unsigned long long i = 0; i < blocks; i++) {
        unsigned long long b = reverse ? blocks - 1 - i : i;
        g_block_idx = {(unsigned)(b % grid[0]), (unsigned)(b / grid[0] % grid[1]),
                       (unsigned)(b / ((unsigned long long)grid[0] * grid[1]))};
        if (!run_block(L, reverse)) {
            L.error += format(" of block (%u,%u,%u)", g_block_idx.x, g_block_idx.y, g_block_idx.z);
            break;
        }
    }
    g_launch = nullptr;
    g_current = nullptr;
    *synchronised = L.synchronised;
    return L.failed ? L.error : "";
}

// Copies `message` into the caller's buffer (truncated, NUL-terminated).
int report(const std::string& message, char* err, size_t err_len) {
    if (err && err_len > 0) {
        size_t n = std::min(message.size(), err_len - 1);
        std::memcpy(err, message.data(), n);
        err[n] = '\0';
    }
    return 1;
}

}  // namespace
}  // namespace ferrite_emu

using namespace ferrite_emu;

// Number of kernels in the binary.
extern "C" size_t ferrite_emu_kernel_count() { return kernel_index().size(); }

// Name of kernel `i` (in family order), or null past the end.
extern "C" const char* ferrite_emu_kernel_name(size_t i) {
    for (size_t f = 0; f < kFamilyCount; f++) {
        if (i < kFamilies[f]->count) return kFamilies[f]->entries[i].name;
        i -= kFamilies[f]->count;
    }
    return nullptr;
}

// 1 and the parameter count and sizes of kernel `name`, or 0 if absent.
extern "C" int ferrite_emu_kernel_info(const char* name, size_t* n_args,
                                       const size_t** arg_sizes) {
    const KernelEntry* k = name ? find_kernel(name) : nullptr;
    if (!k) return 0;
    if (n_args) *n_args = k->n_args;
    if (arg_sizes) *arg_sizes = k->arg_sizes;
    return 1;
}

// Runs kernel `name` over `grid` blocks of `block` threads. `args[i]` points
// to the `arg_sizes[i]` bytes of argument i (copied to aligned storage
// before the call). `reverse` runs blocks and threads in descending order.
// On success returns 0 and sets *synchronised to whether any thread reached
// a barrier or warp collective; otherwise returns 1 with a message in err.
extern "C" int ferrite_emu_launch(const char* name, const unsigned grid[3],
                                  const unsigned block[3], unsigned dynamic_shared_bytes,
                                  void* const* args, const size_t* arg_sizes, size_t n_args,
                                  int reverse, int* synchronised, char* err, size_t err_len) {
    try {
        std::lock_guard<std::mutex> lock(g_mutex);
        const KernelEntry* k = name ? find_kernel(name) : nullptr;
        if (!k) return report(std::string("no kernel named ") + (name ? name : "(null)"), err, err_len);
        if (n_args != k->n_args) {
            return report(format("%zu arguments given, the kernel takes %zu", n_args, k->n_args),
                          err, err_len);
        }
        size_t total = 0;
        for (size_t i = 0; i < n_args; i++) {
            if (arg_sizes[i] != k->arg_sizes[i]) {
                return report(format("argument %zu has %zu bytes, the kernel's parameter %zu",
                                     i, arg_sizes[i], k->arg_sizes[i]),
                              err, err_len);
            }
            total += (arg_sizes[i] + 15) & ~size_t(15);
        }
        std::string bad = check_shape(grid, block, dynamic_shared_bytes);
        if (!bad.empty()) return report(bad, err, err_len);
        // Aligned copies of the arguments (the host's bytes may be unaligned).
        std::vector<max_align_t> storage(total / sizeof(max_align_t) + 1);
        std::vector<void*> ptrs(n_args);
        char* at = reinterpret_cast<char*>(storage.data());
        for (size_t i = 0; i < n_args; i++) {
            std::memcpy(at, args[i], arg_sizes[i]);
            ptrs[i] = at;
            at += (arg_sizes[i] + 15) & ~size_t(15);
        }
        bool sync = false;
        std::string failure = run(k, grid, block, ptrs.data(), reverse != 0, &sync);
        if (synchronised) *synchronised = sync;
        if (!failure.empty()) return report(failure, err, err_len);
        return 0;
    } catch (...) {
        return report("the emulator ran out of memory", err, err_len);
    }
}
