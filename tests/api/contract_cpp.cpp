// The C++ allocation contract under the preload: every replaceable form of
// operator new and operator delete (plain, array, nothrow, sized, align_val_t
// and their combinations), the new_handler loop, std::bad_alloc, nothrow
// returning nullptr, and new-expressions of over-aligned types.
//
// Every failure prints file:line and what was expected; the program goes on
// and exits 1 at the end if anything failed.
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <malloc.h>
#include <memory>
#include <new>
#include <string>
#include <vector>

#include "on_zmm.h"

namespace {

int g_failures = 0;
int g_checks = 0;

#define CHECK(cond, ...)                                                                          \
    do {                                                                                          \
        ++g_checks;                                                                               \
        if (!(cond)) {                                                                            \
            ++g_failures;                                                                         \
            std::fprintf(stderr, "contract_cpp: FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond);    \
            std::fprintf(stderr, __VA_ARGS__);                                                    \
            std::fputc('\n', stderr);                                                             \
            if (g_failures > 50) {                                                                \
                std::fprintf(stderr, "contract_cpp: too many failures, giving up\n");             \
                std::exit(1);                                                                     \
            }                                                                                     \
        }                                                                                         \
    } while (0)

constexpr size_t KiB = 1024;
constexpr size_t MiB = 1024 * 1024;

// Impossible sizes, hidden from the compiler: far beyond the address space,
// yet below PTRDIFF_MAX, so that a new-expression really calls operator new
// (and does not throw bad_array_new_length on its own).
volatile size_t v_impossible = SIZE_MAX / 4;
volatile size_t v_size_max = SIZE_MAX;

// Keeps a pointer (and the stores through it) alive for the optimiser.
template <class T>
void escape(T* p) {
    asm volatile("" : : "g"(p) : "memory");
}

bool aligned_to(const void* p, size_t a) { return (reinterpret_cast<uintptr_t>(p) & (a - 1)) == 0; }

void fill_check(const char* what, void* p, size_t n, size_t align) {
    CHECK(p != nullptr, "%s(%zu, align %zu) returned nullptr", what, n, align);
    if (!p) return;
    CHECK(aligned_to(p, align), "%s(%zu, align %zu) = %p is misaligned", what, n, align, p);
    std::memset(p, 0xc3, n);
    auto* b = static_cast<unsigned char*>(p);
    CHECK(n == 0 || (b[0] == 0xc3 && b[n - 1] == 0xc3), "%s(%zu): block not writable", what, n);
    escape(p);
}

// ---- plain, array, nothrow, sized ----
void test_unaligned_forms() {
    const size_t sizes[] = {0, 1, 8, 16, 24, 100, 3072, 3073, 4096, 100 * KiB, 2 * MiB - 4 * KiB, 2 * MiB, 5 * MiB};
    for (size_t n : sizes) {
        void* p = ::operator new(n);
        fill_check("operator new", p, n, n >= 16 ? 16 : 8);
        ::operator delete(p);

        p = ::operator new(n);
        fill_check("operator new", p, n, n >= 16 ? 16 : 8);
        ::operator delete(p, n);  // sized

        p = ::operator new[](n);
        fill_check("operator new[]", p, n, n >= 16 ? 16 : 8);
        ::operator delete[](p);

        p = ::operator new[](n);
        fill_check("operator new[]", p, n, n >= 16 ? 16 : 8);
        ::operator delete[](p, n);  // sized

        p = ::operator new(n, std::nothrow);
        fill_check("operator new(nothrow)", p, n, n >= 16 ? 16 : 8);
        ::operator delete(p, std::nothrow);

        p = ::operator new[](n, std::nothrow);
        fill_check("operator new[](nothrow)", p, n, n >= 16 ? 16 : 8);
        ::operator delete[](p, std::nothrow);

        p = ::operator new(n, std::nothrow);
        fill_check("operator new(nothrow)", p, n, n >= 16 ? 16 : 8);
        ::operator delete(p);  // a nothrow block, deleted by the plain form
    }
    // Deleting nullptr, every form.
    ::operator delete(nullptr);
    ::operator delete[](nullptr);
    ::operator delete(nullptr, size_t{8});
    ::operator delete[](nullptr, size_t{8});
    ::operator delete(nullptr, std::nothrow);
    ::operator delete[](nullptr, std::nothrow);
    ::operator delete(nullptr, std::align_val_t{64});
    ::operator delete[](nullptr, std::align_val_t{64});
    ::operator delete(nullptr, size_t{8}, std::align_val_t{64});
    ::operator delete[](nullptr, size_t{8}, std::align_val_t{64});
    ::operator delete(nullptr, std::align_val_t{64}, std::nothrow);
    ::operator delete[](nullptr, std::align_val_t{64}, std::nothrow);
    // Many live blocks do not overlap.
    std::vector<unsigned char*> live;
    for (size_t i = 0; i < 2000; ++i) {
        size_t n = 1 + (i * 37) % 5000;
        auto* p = static_cast<unsigned char*>(::operator new(n));
        std::memset(p, static_cast<int>(i & 0xff), n);
        live.push_back(p);
    }
    for (size_t i = 0; i < live.size(); ++i) {
        size_t n = 1 + (i * 37) % 5000;
        bool ok = true;
        for (size_t k = 0; k < n; ++k) ok &= live[i][k] == static_cast<unsigned char>(i & 0xff);
        CHECK(ok, "operator new block %zu (%zu bytes) overwritten", i, n);
        ::operator delete(live[i], n);
    }
}

// ---- align_val_t ----
void test_aligned_forms() {
    const size_t aligns[] = {32, 64, 4096, 65536, 2 * MiB};
    for (size_t a : aligns) {
        std::align_val_t al{a};
        const size_t sizes[] = {1, 24, a / 2, a - 1, a, a + 1, 2 * a + 16, 3 * MiB};
        for (size_t n : sizes) {
            void* p = ::operator new(n, al);
            fill_check("operator new(align)", p, n, a);
            ::operator delete(p, al);

            p = ::operator new(n, al);
            fill_check("operator new(align)", p, n, a);
            ::operator delete(p, n, al);  // sized + aligned

            p = ::operator new[](n, al);
            fill_check("operator new[](align)", p, n, a);
            ::operator delete[](p, al);

            p = ::operator new[](n, al);
            fill_check("operator new[](align)", p, n, a);
            ::operator delete[](p, n, al);

            p = ::operator new(n, al, std::nothrow);
            fill_check("operator new(align, nothrow)", p, n, a);
            ::operator delete(p, al, std::nothrow);

            p = ::operator new[](n, al, std::nothrow);
            fill_check("operator new[](align, nothrow)", p, n, a);
            ::operator delete[](p, al, std::nothrow);

            p = ::operator new(n, al, std::nothrow);
            fill_check("operator new(align, nothrow)", p, n, a);
            ::operator delete(p, n, al);
        }
    }
}

// ---- new-expressions ----
template <size_t A>
struct alignas(A) Over {
    unsigned char bytes[A];
    Over() { std::memset(bytes, 0x11, sizeof bytes); }
};

template <size_t A>
void over_aligned_expressions() {
    auto* one = new Over<A>;
    CHECK(aligned_to(one, A), "new Over<%zu> = %p misaligned", A, static_cast<void*>(one));
    escape(one);
    delete one;
    auto* arr = new Over<A>[3];
    CHECK(aligned_to(arr, A), "new Over<%zu>[3] = %p misaligned", A, static_cast<void*>(arr));
    for (int i = 0; i < 3; ++i) CHECK(arr[i].bytes[A - 1] == 0x11, "new Over<%zu>[3] not constructed", A);
    escape(arr);
    delete[] arr;
    auto* nt = new (std::nothrow) Over<A>;
    CHECK(nt && aligned_to(nt, A), "new (nothrow) Over<%zu> = %p", A, static_cast<void*>(nt));
    escape(nt);
    delete nt;
    auto sp = std::make_shared<Over<A>>();
    CHECK(aligned_to(sp.get(), A), "make_shared<Over<%zu>> = %p misaligned", A, static_cast<void*>(sp.get()));
    auto up = std::make_unique<Over<A>[]>(2);
    CHECK(aligned_to(up.get(), A), "make_unique<Over<%zu>[]> = %p misaligned", A, static_cast<void*>(up.get()));
}

void test_expressions() {
    int* i = new int(42);
    CHECK(*i == 42 && aligned_to(i, alignof(int)), "new int");
    delete i;
    int* arr = new int[1000]();
    bool zero = true;
    for (int k = 0; k < 1000; ++k) zero &= arr[k] == 0;
    CHECK(zero, "new int[1000]() not value-initialised");
    delete[] arr;
    over_aligned_expressions<32>();
    over_aligned_expressions<64>();
    over_aligned_expressions<4096>();
    over_aligned_expressions<65536>();
    over_aligned_expressions<2 * MiB>();
    // containers: growth by reallocation through operator new/delete
    std::vector<std::string> v;
    for (int k = 0; k < 20000; ++k) v.emplace_back(std::string(static_cast<size_t>(k % 300), 'a' + static_cast<char>(k % 26)));
    size_t total = 0;
    for (const auto& s : v) total += s.size();
    CHECK(total == 20000 / 300 * (299 * 300 / 2) + (20000 % 300) * (20000 % 300 - 1) / 2, "vector<string> total %zu",
          total);
}

// ---- the new_handler loop ----
int g_handler_calls = 0;
void counting_handler() {
    ++g_handler_calls;
    if (g_handler_calls == 3) std::set_new_handler(nullptr);
}

struct my_bad_alloc : std::bad_alloc {
    const char* what() const noexcept override { return "my_bad_alloc"; }
};
int g_throwing_calls = 0;
void throwing_handler() {
    ++g_throwing_calls;
    throw my_bad_alloc();
}

template <class F>
void expect_handler_then_bad_alloc(const char* what, F f) {
    g_handler_calls = 0;
    std::set_new_handler(counting_handler);
    bool threw = false;
    try {
        void* p = f();
        escape(p);
        CHECK(false, "%s: an impossible allocation returned %p", what, p);
    } catch (const std::bad_alloc&) {
        threw = true;
    }
    CHECK(threw, "%s did not throw std::bad_alloc", what);
    CHECK(g_handler_calls == 3, "%s: new_handler called %d times, want 3", what, g_handler_calls);
    CHECK(std::get_new_handler() == nullptr, "%s: the handler is still installed", what);
    std::set_new_handler(nullptr);
}

template <class F>
void expect_handler_then_nullptr(const char* what, F f) {
    g_handler_calls = 0;
    std::set_new_handler(counting_handler);
    void* p = nullptr;
    bool threw = false;
    try {
        p = f();
    } catch (...) {
        threw = true;
    }
    CHECK(!threw, "%s threw", what);
    CHECK(p == nullptr, "%s: an impossible allocation returned %p", what, p);
    CHECK(g_handler_calls == 3, "%s: new_handler called %d times, want 3", what, g_handler_calls);
    std::set_new_handler(nullptr);
}

void test_new_handler() {
    size_t n = v_impossible;
    expect_handler_then_bad_alloc("new char[SIZE_MAX/4]", [n] {
        char* p = new char[n];
        return static_cast<void*>(p);
    });
    expect_handler_then_bad_alloc("operator new(SIZE_MAX/4)", [n] { return ::operator new(n); });
    expect_handler_then_bad_alloc("operator new(SIZE_MAX)", [] { return ::operator new(v_size_max); });
    expect_handler_then_bad_alloc("operator new[](SIZE_MAX/4)", [n] { return ::operator new[](n); });
    expect_handler_then_bad_alloc("operator new(SIZE_MAX/4, align 64)",
                                  [n] { return ::operator new(n, std::align_val_t{64}); });
    expect_handler_then_bad_alloc("operator new[](SIZE_MAX/4, align 4096)",
                                  [n] { return ::operator new[](n, std::align_val_t{4096}); });
    expect_handler_then_bad_alloc("operator new(SIZE_MAX/4, align 2 MiB)",
                                  [n] { return ::operator new(n, std::align_val_t{2 * MiB}); });
    expect_handler_then_nullptr("operator new(SIZE_MAX/4, nothrow)",
                                [n] { return ::operator new(n, std::nothrow); });
    expect_handler_then_nullptr("operator new[](SIZE_MAX/4, nothrow)",
                                [n] { return ::operator new[](n, std::nothrow); });
    expect_handler_then_nullptr("operator new(SIZE_MAX/4, align 64, nothrow)",
                                [n] { return ::operator new(n, std::align_val_t{64}, std::nothrow); });

    // A handler may throw (anything derived from bad_alloc): it propagates out
    // of operator new unchanged.
    std::set_new_handler(throwing_handler);
    g_throwing_calls = 0;
    bool caught = false;
    try {
        void* p = ::operator new(n);
        escape(p);
    } catch (const my_bad_alloc&) {
        caught = true;
    } catch (...) {
    }
    CHECK(caught && g_throwing_calls == 1, "a throwing new_handler: caught %d, calls %d", caught, g_throwing_calls);
    std::set_new_handler(nullptr);
}

// ---- without a handler ----
void test_failures() {
    size_t n = v_impossible;
    char* p = new (std::nothrow) char[n];
    CHECK(p == nullptr, "new (nothrow) char[SIZE_MAX/4] = %p", static_cast<void*>(p));
    delete[] p;
    void* q = ::operator new(v_size_max, std::nothrow);
    CHECK(q == nullptr, "operator new(SIZE_MAX, nothrow) = %p", q);
    q = ::operator new(n, std::align_val_t{65536}, std::nothrow);
    CHECK(q == nullptr, "operator new(SIZE_MAX/4, align 65536, nothrow) = %p", q);

    bool threw = false;
    try {
        char* r = new char[n];
        escape(r);
        delete[] r;
    } catch (const std::bad_alloc&) {
        threw = true;
    }
    CHECK(threw, "new char[SIZE_MAX/4] did not throw std::bad_alloc");
    threw = false;
    try {
        void* r = ::operator new(v_size_max);
        escape(r);
    } catch (const std::bad_alloc&) {
        threw = true;
    }
    CHECK(threw, "operator new(SIZE_MAX) did not throw std::bad_alloc");
    threw = false;
    try {
        void* r = ::operator new[](n, std::align_val_t{4096});
        escape(r);
    } catch (const std::bad_alloc&) {
        threw = true;
    }
    CHECK(threw, "operator new[](SIZE_MAX/4, align 4096) did not throw std::bad_alloc");
    // The process allocates normally afterwards.
    auto* ok = new char[100];
    escape(ok);
    delete[] ok;
}

}  // namespace

int main() {
    using plain_new = void* (*)(size_t);
    int zmm = on_zmm_check("contract_cpp", "_Znwm", reinterpret_cast<const void*>(static_cast<plain_new>(&::operator new)));
    test_unaligned_forms();
    test_aligned_forms();
    test_expressions();
    test_new_handler();
    test_failures();
    if (g_failures) {
        std::fprintf(stderr, "contract_cpp: %d of %d checks FAILED (%s)\n", g_failures, g_checks, zmm ? "zmm" : "not zmm");
        return 1;
    }
    std::fprintf(stderr, "contract_cpp: all %d checks passed (%s)\n", g_checks, zmm ? "zmm" : "not zmm");
    return 0;
}
