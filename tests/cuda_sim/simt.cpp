// The scheduler of the SIMT emulation (simt.h): fibers, barriers, warp exchanges, launches.
//
// A fiber is a ucontext stack entered once with setcontext and switched with
// _setjmp/_longjmp afterwards (no signal-mask system call per switch). Under
// AddressSanitizer every switch is announced with __sanitizer_{start,finish}_switch_fiber so
// that ASan knows which stack is live.
#undef _FORTIFY_SOURCE  // longjmp's fortified check rejects jumps between stacks

#include <setjmp.h>
#include <stdarg.h>
#include <stdio.h>
#include <sys/mman.h>
#include <ucontext.h>

#include <algorithm>
#include <map>
#include <mutex>
#include <random>
#include <string>
#include <vector>

#include "half.h"
#include "simt.h"

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/common_interface_defs.h>
#define WMK_SIM_ASAN 1
#else
#define WMK_SIM_ASAN 0
#endif

namespace wmk_sim {

enum class State { Ready, Barrier, Shuffle, Exited };

struct Fiber {
  uint3 idx;
  int linear = 0;
  State state = State::Ready;
  const char* site = nullptr;  // barrier file, or shuffle name
  int line = 0;
  bool started = false;
  jmp_buf jb;
  ucontext_t uc;
  char* stack = nullptr;
  void* fake_stack = nullptr;
};

struct Warp {
  unsigned present = 0;  // lanes that exist in the block
  unsigned mask = 0, arrived = 0;
  uint64_t value[32];
  int src[32];
  uint64_t result[32];
};

namespace {

constexpr size_t kStack = size_t(1) << 18;  // ASan frames are several times larger
constexpr size_t kGuard = 4096;
constexpr size_t kDefaultSmem = 48 * 1024, kMaxSmem = 227 * 1024;  // sm_90 limits

std::mutex launch_mutex;
std::vector<Fiber> pool;
std::vector<Warp> warps;
int nthreads = 0;
bool pool_dirty = false;
jmp_buf sched_jb;
#if WMK_SIM_ASAN
void* sched_fake = nullptr;
const void* sched_stack_bottom = nullptr;
size_t sched_stack_size = 0;
#endif
const std::function<void()>* body = nullptr;

unsigned char* dyn_smem_storage = nullptr;  // exactly the launch's bytes: ASan sees overruns
std::map<const void*, size_t> static_smem;  // first-use registrations of this block
uint64_t block_serial = 0;
std::map<const void*, uint64_t> poisoned_in;  // static __shared__ -> block it was poisoned in
std::map<const void*, int> max_dynamic;       // cudaFuncSetAttribute

int schedule_mode = 0;  // 0 forward, 1 reversed, 2 seeded shuffle
uint64_t schedule_seed = 0;

bool failed = false;
std::string message;
thread_local cudaError_t last_error = cudaSuccess;
thread_local std::string last_message;

void set_error(cudaError_t err, const std::string& what) {
  if (last_error == cudaSuccess) {
    last_error = err;
    last_message = what;
  }
}

// The CUDA name of an error, with the emulator's details of the latest failed launch.
const char* described(const char* name) {
  thread_local std::string text;
  text = last_message.empty() ? name : std::string(name) + ": " + last_message;
  return text.c_str();
}

std::string format(const char* fmt, va_list ap) {
  char buf[1024];
  vsnprintf(buf, sizeof buf, fmt, ap);
  return buf;
}

std::string where_block() {
  char buf[160];
  snprintf(buf, sizeof buf, "block (%u, %u, %u) of grid (%u, %u, %u), %d threads",
           detail::block_idx.x, detail::block_idx.y, detail::block_idx.z, detail::grid_dim.x,
           detail::grid_dim.y, detail::grid_dim.z, nthreads);
  return buf;
}

void record_failure(const std::string& what) {
  if (failed) return;
  failed = true;
  message = what + " [" + where_block() + "]";
}

void fiber_main();

// Back to the scheduler; returns when the scheduler resumes this fiber.
void yield(Fiber* f, bool final_exit = false) {
  if (!_setjmp(f->jb)) {
#if WMK_SIM_ASAN
    __sanitizer_start_switch_fiber(final_exit ? nullptr : &f->fake_stack, sched_stack_bottom,
                                   sched_stack_size);
#endif
    _longjmp(sched_jb, 1);
  }
#if WMK_SIM_ASAN
  __sanitizer_finish_switch_fiber(f->fake_stack, &sched_stack_bottom, &sched_stack_size);
#endif
  (void)final_exit;
}

void fiber_main() {
#if WMK_SIM_ASAN
  __sanitizer_finish_switch_fiber(nullptr, &sched_stack_bottom, &sched_stack_size);
#endif
  for (;;) {
    (*body)();
    Fiber* f = detail::current;
    f->state = State::Exited;
    yield(f);
  }
}

void run(Fiber* f) {
  detail::current = f;
  if (!_setjmp(sched_jb)) {
#if WMK_SIM_ASAN
    __sanitizer_start_switch_fiber(&sched_fake, f->stack + kGuard, kStack);
#endif
    if (!f->started) {
      f->started = true;
      setcontext(&f->uc);
    }
    _longjmp(f->jb, 1);
  }
#if WMK_SIM_ASAN
  __sanitizer_finish_switch_fiber(sched_fake, nullptr, nullptr);
#endif
  detail::current = nullptr;
}

void prepare_pool(int n) {
  if (static_cast<int>(pool.size()) < n) {
    const size_t old = pool.size();
    pool.resize(n);  // Fibers are only moved while none is running
    for (size_t i = old; i < pool.size(); ++i) {
      void* mem = mmap(nullptr, kStack + kGuard, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_STACK, -1, 0);
      if (mem == MAP_FAILED) {
        perror("wmk_sim: fiber stack");
        abort();
      }
      mprotect(mem, kGuard, PROT_NONE);  // a stack overflow faults instead of corrupting
      pool[i].stack = static_cast<char*>(mem);
    }
    pool_dirty = true;
  }
  if (!pool_dirty) return;
  for (Fiber& f : pool) {
    getcontext(&f.uc);
    f.uc.uc_stack.ss_sp = f.stack + kGuard;
    f.uc.uc_stack.ss_size = kStack;
    f.uc.uc_link = nullptr;
    makecontext(&f.uc, fiber_main, 0);
    f.started = false;
    f.fake_stack = nullptr;
  }
  pool_dirty = false;
}

void fill_order(std::vector<int>& order, uint64_t round) {
  for (int i = 0; i < nthreads; ++i) order[i] = i;
  if (schedule_mode == 1) {
    std::reverse(order.begin(), order.end());
  } else if (schedule_mode == 2) {
    std::mt19937_64 rng(schedule_seed * 0x9E3779B97F4A7C15ull + block_serial * 1000003ull +
                        round);
    std::shuffle(order.begin(), order.end(), rng);
  }
}

// Nothing can run: release a barrier that every live thread reached, or say why not.
bool resolve() {
  const Fiber* first = nullptr;
  char buf[512];
  for (int i = 0; i < nthreads; ++i) {
    const Fiber& f = pool[i];
    if (f.state == State::Shuffle) {
      const Warp& w = warps[i / 32];
      const unsigned missing = w.mask & ~w.arrived;
      const Fiber& m = pool[i / 32 * 32 + __builtin_ctz(missing)];
      if (m.state == State::Exited) {
        snprintf(buf, sizeof buf, "%s: thread %d waits for lane %d of its mask 0x%08x, which "
                 "has exited", f.site, i, m.linear % 32, w.mask);
      } else {
        snprintf(buf, sizeof buf, "%s: thread %d waits for lane %d of its mask 0x%08x, which "
                 "waits at __syncthreads (%s:%d)", f.site, i, m.linear % 32, w.mask, m.site,
                 m.line);
      }
      record_failure(buf);
      return false;
    }
    if (f.state != State::Barrier) continue;
    if (first == nullptr) {
      first = &f;
    } else if (f.line != first->line || strcmp(f.site, first->site) != 0) {
      snprintf(buf, sizeof buf, "threads of one block wait at different barriers: thread %d "
               "at %s:%d, thread %d at %s:%d", first->linear, first->site, first->line, i,
               f.site, f.line);
      record_failure(buf);
      return false;
    }
  }
  if (first == nullptr) return false;  // every thread has exited: the block is done
  for (int i = 0; i < nthreads; ++i) {
    if (pool[i].state == State::Exited) {
      snprintf(buf, sizeof buf, "thread %d exited while others wait at __syncthreads (%s:%d)",
               i, first->site, first->line);
      record_failure(buf);
      return false;
    }
  }
  for (int i = 0; i < nthreads; ++i) pool[i].state = State::Ready;
  return true;
}

void run_block(std::vector<int>& order) {
  for (int i = 0; i < nthreads; ++i) {
    Fiber& f = pool[i];
    f.state = State::Ready;
    f.linear = i;
    f.idx = uint3{static_cast<unsigned>(i) % detail::block_dim.x,
                  static_cast<unsigned>(i) / detail::block_dim.x % detail::block_dim.y,
                  static_cast<unsigned>(i) / (detail::block_dim.x * detail::block_dim.y)};
  }
  for (size_t w = 0; w < warps.size(); ++w) {
    const int lanes = std::min(32, nthreads - static_cast<int>(w) * 32);
    warps[w] = Warp{};
    warps[w].present = lanes == 32 ? 0xffffffffu : (1u << lanes) - 1u;
  }
  for (uint64_t round = 0;; ++round) {
    fill_order(order, round);
    bool ran = false;
    for (int i : order) {
      while (pool[i].state == State::Ready) {
        run(&pool[i]);
        ran = true;
        if (failed) return;
      }
    }
    if (!ran && !resolve()) return;  // a completed shuffle may have woken earlier fibers
  }
}

}  // namespace

namespace detail {

Fiber* current = nullptr;
uint3 block_idx{0, 0, 0};
dim3 block_dim, grid_dim;

const uint3& thread_idx(const Fiber* f) {
  if (f == nullptr) {
    fprintf(stderr, "wmk_sim: threadIdx read outside a kernel\n");
    abort();
  }
  return f->idx;
}

unsigned char* dynamic_shared() { return dyn_smem_storage; }

int lane_id() { return current->linear % 32; }

void fail(const char* fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  record_failure(format(fmt, ap));
  va_end(ap);
  Fiber* f = current;
  yield(f);  // never resumed: the scheduler abandons the launch
  abort();
}

void syncthreads(const char* file, int line) {
  Fiber* f = current;
  f->state = State::Barrier;
  f->site = file;
  f->line = line;
  yield(f);
}

uint64_t exchange(unsigned mask, uint64_t value, int src, const char* what) {
  Fiber* f = current;
  const int lane = f->linear % 32;
  Warp& w = warps[f->linear / 32];
  if (mask & ~w.present)
    fail("%s: mask 0x%08x names lanes 0x%08x that do not exist (warp %d has %d threads)", what,
         mask, mask & ~w.present, f->linear / 32, __builtin_popcount(w.present));
  if (!(mask & (1u << lane)))
    fail("%s: lane %d is not in its own mask 0x%08x", what, lane, mask);
  if (!(mask & (1u << src)))
    fail("%s: lane %d reads lane %d, which is not in the mask 0x%08x", what, lane, src, mask);
  if (w.arrived == 0) {
    w.mask = mask;
  } else if (w.mask != mask) {
    fail("%s: lane %d syncs with mask 0x%08x while lanes 0x%08x wait with mask 0x%08x", what,
         lane, mask, w.arrived, w.mask);
  }
  w.value[lane] = value;
  w.src[lane] = src;
  w.arrived |= 1u << lane;
  if (w.arrived == w.mask) {
    const int base = f->linear / 32 * 32;
    for (int l = 0; l < 32; ++l) {
      if (!(w.mask & (1u << l))) continue;
      w.result[l] = w.value[w.src[l]];
      if (l != lane) pool[base + l].state = State::Ready;
    }
    w.arrived = 0;
    return w.result[lane];
  }
  f->state = State::Shuffle;
  f->site = what;
  yield(f);
  return w.result[lane];
}

cudaError_t set_max_dynamic_shared(const void* kernel, int bytes) {
  if (bytes < 0 || static_cast<size_t>(bytes) > kMaxSmem) {
    set_error(cudaErrorInvalidValue, "cudaFuncSetAttribute: dynamic shared memory of " +
                                         std::to_string(bytes) + " bytes is over the limit");
    return cudaErrorInvalidValue;
  }
  std::lock_guard<std::mutex> lock(launch_mutex);
  max_dynamic[kernel] = bytes;
  return cudaSuccess;
}

cudaError_t launch(dim3 grid, dim3 block, size_t smem, const void* kernel,
                   const std::function<void()>& kernel_body) {
  const uint64_t threads = uint64_t(block.x) * block.y * block.z;
  if (threads == 0 || threads > 1024 || block.x > 1024 || block.y > 1024 || block.z > 64 ||
      grid.x == 0 || grid.y == 0 || grid.z == 0 || grid.x > 0x7fffffffu || grid.y > 65535 ||
      grid.z > 65535) {
    char buf[160];
    snprintf(buf, sizeof buf, "invalid launch configuration: grid (%u, %u, %u), block (%u, %u, %u)",
             grid.x, grid.y, grid.z, block.x, block.y, block.z);
    set_error(cudaErrorInvalidConfiguration, buf);
    return cudaErrorInvalidConfiguration;
  }
  std::lock_guard<std::mutex> lock(launch_mutex);
  last_message.clear();
  const auto opt_in = max_dynamic.find(kernel);
  const size_t limit = opt_in == max_dynamic.end() ? kDefaultSmem : opt_in->second;
  if (smem > limit) {
    set_error(cudaErrorInvalidValue,
              "launch with " + std::to_string(smem) + " bytes of dynamic shared memory, over "
              "the kernel's limit of " + std::to_string(limit) + " (cudaFuncSetAttribute)");
    return cudaErrorInvalidValue;
  }
  nthreads = static_cast<int>(threads);
  block_dim = block;
  grid_dim = grid;
  body = &kernel_body;
  free(dyn_smem_storage);
  dyn_smem_storage = static_cast<unsigned char*>(malloc(smem > 0 ? smem : 1));
  warps.assign((nthreads + 31) / 32, Warp{});
  prepare_pool(nthreads);
  failed = false;
  std::vector<int> order(nthreads);
  for (unsigned z = 0; z < grid.z && !failed; ++z) {
    for (unsigned y = 0; y < grid.y && !failed; ++y) {
      for (unsigned x = 0; x < grid.x && !failed; ++x) {
        block_idx = uint3{x, y, z};
        ++block_serial;
        static_smem.clear();
        memset(dyn_smem_storage, 0xff, smem);
        run_block(order);
        size_t total = smem;
        for (const auto& s : static_smem) total += s.second;
        if (!failed && total > std::max(limit, kDefaultSmem)) {
          record_failure("the block uses " + std::to_string(total) +
                         " bytes of shared memory, over the limit of " +
                         std::to_string(std::max(limit, kDefaultSmem)));
        }
      }
    }
  }
  body = nullptr;
  if (failed) {
    pool_dirty = true;  // fibers were abandoned mid-kernel
    set_error(cudaErrorLaunchFailure, message);
    return cudaErrorLaunchFailure;
  }
  return cudaSuccess;
}

}  // namespace detail

void block_shared(void* ptr, size_t bytes) {
  uint64_t& serial = poisoned_in[ptr];
  if (serial == block_serial) return;
  serial = block_serial;
  static_smem[ptr] = bytes;
  memset(ptr, 0xff, bytes);
}

}  // namespace wmk_sim

cudaError_t cudaGetLastError() {
  const cudaError_t err = wmk_sim::last_error;
  wmk_sim::last_error = cudaSuccess;
  return err;
}

cudaError_t cudaPeekAtLastError() { return wmk_sim::last_error; }

const char* cudaGetErrorString(cudaError_t err) {
  switch (err) {
    case cudaSuccess: return "no error";
    case cudaErrorInvalidValue: return wmk_sim::described("invalid argument");
    case cudaErrorInvalidConfiguration: return wmk_sim::described("invalid configuration");
    case cudaErrorMisalignedAddress: return wmk_sim::described("misaligned address");
    case cudaErrorLaunchFailure: return wmk_sim::described("unspecified launch failure");
  }
  return "unknown error";
}

cudaError_t cudaMemsetAsync(void* ptr, int value, size_t bytes, cudaStream_t) {
  memset(ptr, value, bytes);
  return cudaSuccess;
}

// Entry points for the test suite (ctypes).
extern "C" {

// 0: threads of a block run in thread order, 1: reversed, 2: shuffled (seeded, reshuffled
// at every sync round).
int wmk_sim_set_schedule(int mode, uint64_t seed) {
  if (mode < 0 || mode > 2) return -1;
  std::lock_guard<std::mutex> lock(wmk_sim::launch_mutex);
  wmk_sim::schedule_mode = mode;
  wmk_sim::schedule_seed = seed;
  return 0;
}

// The emulated conversions, for a bit-exact comparison with torch's.
void wmk_sim_convert(const float* in, int64_t n, uint16_t* half, uint16_t* bf16,
                     float* half_back, float* bf16_back) {
  for (int64_t i = 0; i < n; ++i) {
    half[i] = __float2half_rn(in[i]).x;
    bf16[i] = __float2bfloat16_rn(in[i]).x;
    half_back[i] = __half2float(__half{half[i]});
    bf16_back[i] = __bfloat162float(__nv_bfloat16{bf16[i]});
  }
}

}  // extern "C"
