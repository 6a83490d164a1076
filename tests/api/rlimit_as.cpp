// Out of address space (RLIMIT_AS): every allocation that cannot be served
// fails cleanly (NULL and ENOMEM, std::bad_alloc), inside a request too, and
// zmm's own work at the request's end (tables for the leak scan, the
// report) degrades instead of crashing. When memory comes back, everything
// works again.
#include <zmm/zmm.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <new>
#include <sys/resource.h>
#include <vector>

#define CHECK(c)                                                        \
    do {                                                                \
        if (!(c)) {                                                     \
            std::fprintf(stderr, "FAIL %s:%d: %s\n", __FILE__, __LINE__, #c); \
            std::exit(1);                                               \
        }                                                               \
    } while (0)

namespace {

long vm_kib() {
    FILE* f = std::fopen("/proc/self/status", "r");
    char line[256];
    long kib = 0;
    while (f && std::fgets(line, sizeof line, f))
        if (std::strncmp(line, "VmSize:", 7) == 0) kib = std::atol(line + 7);
    if (f) std::fclose(f);
    return kib;
}

// Fills the address space with blocks of `size` until malloc fails (into
// `blocks`, reserved beforehand: it must not grow now).
void exhaust(size_t size, std::vector<void*>& blocks) {
    for (;;) {
        errno = 0;
        void* p = std::malloc(size);
        if (!p) {
            CHECK(errno == ENOMEM);
            return;
        }
        std::memset(p, 1, size < 4096 ? size : 4096);
        CHECK(blocks.size() < blocks.capacity());
        blocks.push_back(p);
    }
}

void release(std::vector<void*>& blocks) {
    for (void* p : blocks) std::free(p);  // free(NULL) for the freed ones
    blocks.clear();
}

}  // namespace

int main() {
    std::vector<void*> blocks, in_request;
    blocks.reserve(1 << 20);
    in_request.reserve(1 << 12);
    std::free(std::malloc(100));  // zmm is running (and the heap exists)
    rlimit lim{};
    CHECK(getrlimit(RLIMIT_AS, &lim) == 0);
    rlimit tight = lim;
    tight.rlim_cur = static_cast<rlim_t>(vm_kib() + 96 * 1024) * 1024;  // 96 MiB more than now
    CHECK(setrlimit(RLIMIT_AS, &tight) == 0);

    for (int round = 0; round < 2; ++round) {
        // Huge, large, small: each kind fails in turn with ENOMEM.
        exhaust(8 << 20, blocks);
        exhaust(64 << 10, blocks);
        exhaust(256, blocks);
        CHECK(!blocks.empty());
        errno = 0;
        CHECK(std::calloc(1 << 20, 64) == nullptr && errno == ENOMEM);
        CHECK(std::realloc(blocks[0], size_t{1} << 30) == nullptr);  // the block stays valid
        CHECK(blocks.size() > 2);
        bool threw = false;
        try {
            char* p = new char[size_t{1} << 28];
            p[0] = 0;
            delete[] p;
        } catch (const std::bad_alloc&) {
            threw = true;
        }
        CHECK(threw);
        CHECK(new (std::nothrow) char[size_t{1} << 28] == nullptr);

        // A request that runs out (room made first: the first two 8 MiB
        // blocks, which a heap keeps for reuse but must give back when the
        // OS refuses a new mapping): its allocations fail, its end (the
        // scan, the report) still works or says it could not, and the
        // program goes on.
        std::free(blocks[0]);
        std::free(blocks[1]);
        blocks[0] = blocks[1] = nullptr;
        zmm_request_begin("out of memory");
        for (int i = 0; i < 4000; ++i) {
            void* p = std::malloc(2048);
            if (!p) break;
            in_request.push_back(p);
        }
        size_t got = in_request.size();
        for (size_t i = 0; i < got; i += 2) std::free(in_request[i]);  // the odd ones stay, reachable
        long leaked = zmm_request_end();
        CHECK(leaked >= -1);  // -1 without zmm
        std::printf("round %d: %zu blocks in the request, zmm_request_end %ld\n", round, got, leaked);
        for (size_t i = 0; i < got; i += 2) in_request[i] = nullptr;
        release(in_request);
        release(blocks);

        // Memory is back: everything works.
        void* big = std::malloc(32 << 20);
        CHECK(big != nullptr);
        std::memset(big, 2, 32 << 20);
        std::free(big);
    }
    CHECK(setrlimit(RLIMIT_AS, &lim) == 0);
    std::puts("ok");
    return 0;
}
