/* The C allocation contract, as glibc keeps it, checked under the preload.
 *
 * Alignment of malloc and of the aligned family, malloc_usable_size, calloc
 * zeroing of reused memory, realloc across the small/large/huge kinds, the
 * impossible sizes (NULL + ENOMEM, the old block intact), malloc(0), free(NULL),
 * free keeping errno, and glibc's extensions (mallinfo2, malloc_trim, mallopt).
 *
 * Every failure prints file:line and what was expected; the program goes on
 * with the next check and exits 1 at the end if anything failed. */
#define _GNU_SOURCE
#include <errno.h>
#include <malloc.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "on_zmm.h"

static int g_failures;
static int g_checks;

#define CHECK(cond, ...)                                                     \
    do {                                                                     \
        ++g_checks;                                                          \
        if (!(cond)) {                                                       \
            ++g_failures;                                                    \
            fprintf(stderr, "contract_c: FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond); \
            fprintf(stderr, __VA_ARGS__);                                    \
            fputc('\n', stderr);                                             \
            if (g_failures > 50) {                                           \
                fprintf(stderr, "contract_c: too many failures, giving up\n"); \
                exit(1);                                                     \
            }                                                                \
        }                                                                    \
    } while (0)

#define KiB ((size_t)1024)
#define MiB ((size_t)1024 * 1024)

/* Sizes the compiler must not see (it would warn about, or fold, impossible
 * requests): read through volatile. */
static volatile size_t v_size_max = SIZE_MAX;
static volatile size_t v_ptrdiff_max = PTRDIFF_MAX;
/* realloc and reallocarray through pointers, where a failed call leaves the old
   block in use (which -Wuse-after-free cannot know). */
static void* (*volatile v_realloc)(void*, size_t) = realloc;
static void* (*volatile v_reallocarray)(void*, size_t, size_t) = reallocarray;

static int aligned_to(const void* p, size_t a) { return ((uintptr_t)p & (a - 1)) == 0; }

static void fill(void* p, size_t n, unsigned seed) {
    unsigned char* b = p;
    for (size_t i = 0; i < n; ++i) b[i] = (unsigned char)(seed + i * 131u + (i >> 8));
}

/* Index of the first byte that differs from fill(seed), or n. */
static size_t first_bad(const void* p, size_t n, unsigned seed) {
    const unsigned char* b = p;
    for (size_t i = 0; i < n; ++i)
        if (b[i] != (unsigned char)(seed + i * 131u + (i >> 8))) return i;
    return n;
}

static size_t first_nonzero(const void* p, size_t n) {
    const unsigned char* b = p;
    for (size_t i = 0; i < n; ++i)
        if (b[i]) return i;
    return n;
}

/* ---- malloc: alignment and distinct blocks for every size 1..8192 ---- */
static void test_malloc_alignment(void) {
    enum { N = 8192 };
    static void* blocks[N + 1];
    for (size_t n = 1; n <= N; ++n) {
        void* p = malloc(n);
        blocks[n] = p;
        CHECK(p != NULL, "malloc(%zu) failed", n);
        if (!p) continue;
        size_t want = n >= 16 ? 16 : 8;
        CHECK(aligned_to(p, want), "malloc(%zu) = %p is not %zu-aligned", n, p, want);
        CHECK(malloc_usable_size(p) >= n, "malloc_usable_size(malloc(%zu)) = %zu", n, malloc_usable_size(p));
        fill(p, n, (unsigned)n);
    }
    /* All blocks live at once: a block overlapping another shows here. */
    for (size_t n = 1; n <= N; ++n) {
        if (!blocks[n]) continue;
        size_t bad = first_bad(blocks[n], n, (unsigned)n);
        CHECK(bad == n, "malloc(%zu) block %p overwritten at offset %zu (blocks overlap?)", n, blocks[n], bad);
    }
    for (size_t n = 1; n <= N; ++n) free(blocks[n]);
}

/* ---- posix_memalign, aligned_alloc, memalign, valloc, pvalloc ---- */
enum aligned_fn { F_POSIX_MEMALIGN, F_ALIGNED_ALLOC, F_MEMALIGN };
static const char* const k_fn_name[] = {"posix_memalign", "aligned_alloc", "memalign"};

static void* call_aligned(enum aligned_fn f, size_t a, size_t n) {
    switch (f) {
    case F_POSIX_MEMALIGN: {
        void* p = NULL;
        int rc = posix_memalign(&p, a, n);
        CHECK(rc == 0, "posix_memalign(%zu, %zu) returned %d", a, n, rc);
        return rc == 0 ? p : NULL;
    }
    case F_ALIGNED_ALLOC: return aligned_alloc(a, n);
    case F_MEMALIGN: return memalign(a, n);
    }
    return NULL;
}

static void check_aligned_block(const char* fn, void* p, size_t a, size_t n) {
    CHECK(p != NULL, "%s(%zu, %zu) returned NULL", fn, a, n);
    if (!p) return;
    CHECK(aligned_to(p, a), "%s(%zu, %zu) = %p is not %zu-aligned", fn, a, n, p, a);
    size_t usable = malloc_usable_size(p);
    CHECK(usable >= n, "%s(%zu, %zu): malloc_usable_size = %zu", fn, a, n, usable);
    memset(p, 0x5a, n);  /* the whole block is writable */
    unsigned char* b = p;
    CHECK(n == 0 || (b[0] == 0x5a && b[n - 1] == 0x5a), "%s(%zu, %zu): block not writable", fn, a, n);
}

static void test_aligned_family(void) {
    for (size_t a = 8; a <= 8 * MiB; a *= 2) {
        size_t sizes[] = {1, 8, 24, a / 2 + 1, a - 1, a, a + 1, 2 * a + 48, 3 * MiB};
        for (int f = F_POSIX_MEMALIGN; f <= F_MEMALIGN; ++f) {
            void* live[sizeof sizes / sizeof sizes[0]];
            for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; ++i) {
                size_t n = sizes[i];
                void* p = call_aligned((enum aligned_fn)f, a, n);
                check_aligned_block(k_fn_name[f], p, a, n);
                if (p && n) fill(p, n, (unsigned)(a + i));
                live[i] = p;
            }
            for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; ++i) {
                if (!live[i]) continue;
                size_t bad = first_bad(live[i], sizes[i], (unsigned)(a + i));
                CHECK(bad == sizes[i], "%s(%zu, %zu) block overwritten at %zu", k_fn_name[f], a, sizes[i], bad);
                free(live[i]);
            }
        }
    }
    /* Alignment 16 with sizes below 16: still 16-aligned (the contract is the
       alignment asked for, not the one malloc would give that size). */
    for (size_t n = 0; n <= 16; ++n) {
        void* p = NULL;
        CHECK(posix_memalign(&p, 16, n) == 0, "posix_memalign(16, %zu)", n);
        CHECK(aligned_to(p, 16), "posix_memalign(16, %zu) = %p", n, p);
        free(p);
        p = aligned_alloc(16, n);
        CHECK(p && aligned_to(p, 16), "aligned_alloc(16, %zu) = %p", n, p);
        free(p);
        p = memalign(16, n);
        CHECK(p && aligned_to(p, 16), "memalign(16, %zu) = %p", n, p);
        free(p);
    }

    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    size_t vsizes[] = {1, 100, page - 1, page, page + 1, 100 * KiB, 2 * MiB - page, 2 * MiB, 3 * MiB + 5};
    for (size_t i = 0; i < sizeof vsizes / sizeof vsizes[0]; ++i) {
        size_t n = vsizes[i];
        void* p = valloc(n);
        check_aligned_block("valloc", p, page, n);
        free(p);
        size_t rounded = (n + page - 1) / page * page;
        p = pvalloc(n);
        check_aligned_block("pvalloc", p, page, rounded);
        free(p);
    }
    void* p = pvalloc(0);  /* glibc: a page-aligned minimal block */
    CHECK(p != NULL && aligned_to(p, page), "pvalloc(0) = %p", p);
    free(p);
}

static void test_posix_memalign_einval(void) {
    size_t bad[] = {0, 1, 2, 4, 3, 12, 24, 48, 96, 4097, 3 * 4096, sizeof(void*) / 2, sizeof(void*) * 3};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; ++i) {
        void* p = (void*)0x1234;
        errno = 0;
        int rc = posix_memalign(&p, bad[i], 64);
        CHECK(rc == EINVAL, "posix_memalign(alignment %zu) returned %d, want EINVAL", bad[i], rc);
        CHECK(p == (void*)0x1234, "posix_memalign(alignment %zu) changed *memptr on failure to %p", bad[i], p);
        if (rc == 0) free(p);
    }
    /* sizeof(void*) itself is the smallest valid alignment */
    void* p = NULL;
    CHECK(posix_memalign(&p, sizeof(void*), 1) == 0 && p != NULL, "posix_memalign(sizeof(void*), 1)");
    free(p);
}

/* ---- malloc_usable_size ---- */
static void test_usable_size(void) {
    size_t sizes[] = {1, 15, 16, 100, 3072, 3073, 4096, 100 * KiB, 2 * MiB - 4 * KiB, 2 * MiB, 5 * MiB};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; ++i) {
        size_t n = sizes[i];
        void* p = malloc(n);
        CHECK(p != NULL, "malloc(%zu)", n);
        if (!p) continue;
        size_t u = malloc_usable_size(p);
        CHECK(u >= n, "malloc_usable_size(malloc(%zu)) = %zu", n, u);
        memset(p, 0x77, u);  /* usable means usable */
        for (int k = 0; k < 3; ++k)
            CHECK(malloc_usable_size(p) == u, "malloc_usable_size(malloc(%zu)) changed: %zu then %zu", n, u,
                  malloc_usable_size(p));
        free(p);
    }
    CHECK(malloc_usable_size(NULL) == 0, "malloc_usable_size(NULL) = %zu", malloc_usable_size(NULL));
}

/* ---- calloc zeroes memory that was dirty ---- */
static void test_calloc_zeroes(void) {
    size_t sizes[] = {1,         8,         16,       24,      100,     256,
                      1000,      3072,      3073,     4096,    8192,    100 * KiB,
                      1 * MiB,   2 * MiB - 4 * KiB,   2 * MiB, 5 * MiB};
    enum { COUNT = 16 };
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; ++i) {
        size_t n = sizes[i];
        int count = n >= 1 * MiB ? 3 : COUNT;
        for (int round = 0; round < 3; ++round) {
            void* blocks[COUNT];
            for (int k = 0; k < count; ++k) {
                blocks[k] = malloc(n);
                CHECK(blocks[k] != NULL, "malloc(%zu)", n);
                if (blocks[k]) memset(blocks[k], 0xa5, malloc_usable_size(blocks[k]));
            }
            for (int k = count - 1; k >= 0; --k) free(blocks[k]);
            for (int k = 0; k < count; ++k) {
                /* n bytes, asked for three ways */
                void* q = round == 0 ? calloc(1, n) : round == 1 ? calloc(n, 1) : (n % 8 == 0 ? calloc(n / 8, 8) : calloc(1, n));
                blocks[k] = q;
                CHECK(q != NULL, "calloc for %zu bytes", n);
                if (!q) continue;
                size_t bad = first_nonzero(q, n);
                CHECK(bad == n, "calloc(%zu bytes) round %d block %d = %p: byte %zu is 0x%02x, not zero", n, round, k,
                      q, bad, ((unsigned char*)q)[bad]);
                memset(q, 0xa5, n);  /* dirty again for the next round */
            }
            for (int k = 0; k < count; ++k) free(blocks[k]);
        }
    }
    /* A huge block shrunk by realloc, freed, then calloc'd back (the tail that
       was given back must come back zero too). */
    for (int round = 0; round < 3; ++round) {
        char* p = malloc(6 * MiB);
        CHECK(p != NULL, "malloc(6 MiB)");
        if (!p) break;
        memset(p, 0xee, 6 * MiB);
        char* q = v_realloc(p, 3 * MiB);
        CHECK(q != NULL, "realloc(6 MiB -> 3 MiB)");
        if (q) p = q;
        free(p);
        char* z = calloc(6 * MiB, 1);
        CHECK(z != NULL, "calloc(6 MiB)");
        if (!z) break;
        size_t bad = first_nonzero(z, 6 * MiB);
        CHECK(bad == 6 * MiB, "calloc(6 MiB) after a shrunk huge block: byte %zu not zero", bad);
        free(z);
    }
    /* calloc(0, n) and calloc(n, 0): a unique freeable pointer (glibc) */
    void* a = calloc(0, 16);
    void* b = calloc(16, 0);
    CHECK(a != NULL && b != NULL && a != b, "calloc(0, 16) = %p, calloc(16, 0) = %p", a, b);
    free(a);
    free(b);
}

static void test_calloc_overflow(void) {
    struct { size_t n, size; } cases[] = {
        {v_size_max / 2, 3}, {3, v_size_max / 2}, {v_size_max, v_size_max}, {(size_t)1 << 33, (size_t)1 << 31},
        {1, v_size_max}, {v_size_max, 1}, {v_ptrdiff_max, 2}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; ++i) {
        errno = 0;
        void* p = calloc(cases[i].n, cases[i].size);
        int e = errno;
        CHECK(p == NULL, "calloc(%zu, %zu) = %p, want NULL", cases[i].n, cases[i].size, p);
        CHECK(e == ENOMEM, "calloc(%zu, %zu): errno %d, want ENOMEM", cases[i].n, cases[i].size, e);
        free(p);
    }
}

/* ---- realloc ---- */
static void test_realloc_chain(void) {
    /* small -> large -> huge -> bigger huge -> smaller huge -> large -> small,
       the content kept at every step (the common prefix). */
    size_t steps[] = {1,       40,      100,     3072,    3073,        5000,     100 * KiB,
                      1 * MiB, 2 * MiB - 4 * KiB, 2 * MiB, 5 * MiB, 9 * MiB + 123, 64 * MiB,
                      7 * MiB, 3 * MiB, 2 * MiB - 4 * KiB - 1, 1 * MiB, 50 * KiB, 8192, 3000, 100, 16, 1};
    const unsigned seed = 77;
    for (int round = 0; round < 2; ++round) {
        size_t cur = steps[0];
        unsigned char* p = malloc(cur);
        CHECK(p != NULL, "malloc(%zu)", cur);
        if (!p) return;
        fill(p, cur, seed);
        for (size_t i = 1; i < sizeof steps / sizeof steps[0]; ++i) {
            size_t next = steps[i];
            unsigned char* q = v_realloc(p, next);
            CHECK(q != NULL, "realloc(%zu -> %zu)", cur, next);
            if (!q) {
                free(p);
                return;
            }
            p = q;
            size_t keep = cur < next ? cur : next;
            size_t bad = first_bad(p, keep, seed);
            CHECK(bad == keep, "realloc(%zu -> %zu) = %p lost the content at offset %zu", cur, next, (void*)p, bad);
            CHECK(malloc_usable_size(p) >= next, "realloc(%zu -> %zu): usable %zu", cur, next, malloc_usable_size(p));
            CHECK(aligned_to(p, 16), "realloc(%zu -> %zu) = %p not 16-aligned", cur, next, (void*)p);
            fill(p, next, seed);
            cur = next;
        }
        free(p);
    }
    /* Growing and shrinking by a page at a time in the large range, and by a
       few bytes in the small range: in place or not, the content stays. */
    unsigned char* p = malloc(4000);
    size_t cur = 4000;
    fill(p, cur, 5);
    for (size_t n = 4000; n <= 400 * KiB; n += 4 * KiB + 7) {
        unsigned char* q = v_realloc(p, n);
        CHECK(q != NULL, "realloc(%zu -> %zu)", cur, n);
        if (!q) break;
        p = q;
        size_t keep = cur < n ? cur : n;
        CHECK(first_bad(p, keep, 5) == keep, "realloc grow %zu -> %zu lost content", cur, n);
        fill(p, n, 5);
        cur = n;
    }
    for (size_t n = cur; n > 64; n = n * 3 / 4) {
        unsigned char* q = v_realloc(p, n);
        CHECK(q != NULL, "realloc(%zu -> %zu)", cur, n);
        if (!q) break;
        p = q;
        CHECK(first_bad(p, n, 5) == n, "realloc shrink %zu -> %zu lost content", cur, n);
        cur = n;
    }
    free(p);
    /* The same size: the same content. */
    size_t same[] = {100, 10000, 3 * MiB};
    for (size_t i = 0; i < 3; ++i) {
        unsigned char* a = malloc(same[i]);
        fill(a, same[i], 9);
        unsigned char* b = v_realloc(a, same[i]);
        CHECK(b != NULL && first_bad(b, same[i], 9) == same[i], "realloc to the same size %zu", same[i]);
        free(b ? b : a);
    }
}

static void test_realloc_edges(void) {
    /* realloc(NULL, n) is malloc(n) */
    size_t sizes[] = {0, 1, 100, 5000, 3 * MiB};
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; ++i) {
        void* p = realloc(NULL, sizes[i]);
        CHECK(p != NULL, "realloc(NULL, %zu) = NULL", sizes[i]);
        if (p) {
            CHECK(malloc_usable_size(p) >= sizes[i], "realloc(NULL, %zu): usable %zu", sizes[i], malloc_usable_size(p));
            memset(p, 1, sizes[i]);
        }
        free(p);
    }
    /* realloc(p, 0) frees p and returns NULL (glibc). A freed block comes back
       to the next malloc of its size, which shows it was freed (not leaked). */
    size_t zsizes[] = {1, 100, 5000, 3 * MiB};
    for (size_t i = 0; i < sizeof zsizes / sizeof zsizes[0]; ++i) {
        void* p = malloc(zsizes[i]);
        CHECK(p != NULL, "malloc(%zu)", zsizes[i]);
        void* r = realloc(p, 0);
        CHECK(r == NULL, "realloc(malloc(%zu), 0) = %p, want NULL (glibc frees)", zsizes[i], r);
        if (r) free(r);
    }
    /* An impossible realloc: NULL + ENOMEM, and the old block still whole. */
    size_t olds[] = {100, 5000, 3 * MiB};
    size_t bads[] = {v_size_max, v_size_max - 1, v_size_max - 4095, v_size_max - 4096, v_ptrdiff_max + 1,
                     v_size_max - 2 * MiB};
    for (size_t i = 0; i < sizeof olds / sizeof olds[0]; ++i)
        for (size_t j = 0; j < sizeof bads / sizeof bads[0]; ++j) {
            unsigned char* p = malloc(olds[i]);
            fill(p, olds[i], (unsigned)(i + j));
            errno = 0;
            void* r = v_realloc(p, bads[j]);
            int e = errno;
            CHECK(r == NULL, "realloc(%zu-byte block, %zu) = %p", olds[i], bads[j], r);
            CHECK(e == ENOMEM, "realloc(%zu-byte block, %zu): errno %d, want ENOMEM", olds[i], bads[j], e);
            if (r) {
                free(r);
                continue;
            }
            CHECK(first_bad(p, olds[i], (unsigned)(i + j)) == olds[i], "failed realloc damaged the %zu-byte block",
                  olds[i]);
            CHECK(malloc_usable_size(p) >= olds[i], "failed realloc: block of %zu now has usable size %zu", olds[i],
                  malloc_usable_size(p));
            free(p);
        }
}

/* ---- impossible sizes ---- */
static void test_impossible(void) {
    size_t bads[] = {v_size_max, v_size_max - 4096, v_ptrdiff_max + 1, v_size_max - 2 * MiB, v_size_max / 2 + 4096,
                     v_ptrdiff_max - 4096 * 2};
    for (size_t i = 0; i < sizeof bads / sizeof bads[0]; ++i) {
        size_t n = bads[i];
        errno = 0;
        void* p = malloc(n);
        int e = errno;
        CHECK(p == NULL && e == ENOMEM, "malloc(%zu) = %p, errno %d; want NULL, ENOMEM", n, p, e);
        free(p);

        size_t aligns[] = {64, 4096, 2 * MiB};
        for (int k = 0; k < 3; ++k) {
            void* q = (void*)0x1234;
            int rc = posix_memalign(&q, aligns[k], n);
            CHECK(rc == ENOMEM, "posix_memalign(%zu, %zu) returned %d, want ENOMEM", aligns[k], n, rc);
            CHECK(q == (void*)0x1234, "posix_memalign(%zu, %zu) failed but set *memptr to %p", aligns[k], n, q);
            if (rc == 0) free(q);
            errno = 0;
            q = aligned_alloc(aligns[k], n);
            e = errno;
            CHECK(q == NULL && e == ENOMEM, "aligned_alloc(%zu, %zu) = %p, errno %d", aligns[k], n, q, e);
            free(q);
            errno = 0;
            q = memalign(aligns[k], n);
            e = errno;
            CHECK(q == NULL && e == ENOMEM, "memalign(%zu, %zu) = %p, errno %d", aligns[k], n, q, e);
            free(q);
        }
        errno = 0;
        p = valloc(n);
        e = errno;
        CHECK(p == NULL && e == ENOMEM, "valloc(%zu) = %p, errno %d", n, p, e);
        free(p);
        errno = 0;
        p = pvalloc(n);
        e = errno;
        CHECK(p == NULL && e == ENOMEM, "pvalloc(%zu) = %p, errno %d", n, p, e);
        free(p);
    }
    /* the process still allocates normally afterwards */
    void* p = malloc(100);
    CHECK(p != NULL, "malloc(100) after impossible requests");
    free(p);
}

static void test_reallocarray(void) {
    errno = 0;
    void* p = reallocarray(NULL, v_size_max / 2, 3);
    int e = errno;
    CHECK(p == NULL && e == ENOMEM, "reallocarray(NULL, SIZE_MAX/2, 3) = %p, errno %d", p, e);
    free(p);
    unsigned char* a = reallocarray(NULL, 10, 10);
    CHECK(a != NULL && malloc_usable_size(a) >= 100, "reallocarray(NULL, 10, 10)");
    fill(a, 100, 3);
    errno = 0;
    void* r = v_reallocarray(a, v_size_max, 2);
    e = errno;
    CHECK(r == NULL && e == ENOMEM, "reallocarray(p, SIZE_MAX, 2) = %p, errno %d", r, e);
    CHECK(first_bad(a, 100, 3) == 100, "failed reallocarray damaged the block");
    unsigned char* b = v_reallocarray(a, 1000, 1000);
    CHECK(b != NULL && first_bad(b, 100, 3) == 100, "reallocarray(p, 1000, 1000) lost the content");
    free(b ? b : a);
}

/* ---- malloc(0), free(NULL), errno ---- */
static void test_zero_and_null(void) {
    enum { N = 100 };
    void* z[N];
    for (int i = 0; i < N; ++i) {
        z[i] = malloc(0);
        CHECK(z[i] != NULL, "malloc(0) returned NULL");
        for (int j = 0; j < i; ++j) CHECK(z[i] != z[j], "malloc(0) returned %p twice", z[i]);
    }
    for (int i = 0; i < N; ++i) free(z[i]);
    void* p = malloc(0);
    CHECK(p != NULL, "malloc(0) after frees");
    free(p);
    free(NULL);
    errno = 4321;
    free(NULL);
    CHECK(errno == 4321, "free(NULL) changed errno to %d", errno);
}

static void test_free_keeps_errno(void) {
    /* every kind of block, and frees that give memory back to the OS */
    size_t sizes[] = {1, 100, 3072, 3073, 100 * KiB, 1536 * KiB, 2 * MiB, 5 * MiB, 40 * MiB};
    enum { N = sizeof sizes / sizeof sizes[0], REP = 12 };
    void* blocks[N][REP];
    for (size_t i = 0; i < N; ++i)
        for (int r = 0; r < REP; ++r) {
            blocks[i][r] = NULL;
            if (sizes[i] >= 5 * MiB && r >= 2) continue; /* keep the test's memory small */
            blocks[i][r] = malloc(sizes[i]);
            CHECK(blocks[i][r] != NULL, "malloc(%zu)", sizes[i]);
            if (blocks[i][r]) memset(blocks[i][r], 0x33, sizes[i]);
        }
    for (size_t i = 0; i < N; ++i)
        for (int r = 0; r < REP; ++r) {
            if (!blocks[i][r]) continue;
            errno = 1234;
            free(blocks[i][r]);
            CHECK(errno == 1234, "free of a %zu-byte block changed errno to %d", sizes[i], errno);
        }
    void* a = NULL;
    CHECK(posix_memalign(&a, 4 * MiB, 3 * MiB) == 0, "posix_memalign(4 MiB, 3 MiB)");
    errno = 1234;
    free(a);
    CHECK(errno == 1234, "free of a 4 MiB-aligned block changed errno to %d", errno);
    void* big = malloc(6 * MiB);
    void* shrunk = v_realloc(big, 3 * MiB);
    errno = 1234;
    free(shrunk ? shrunk : big);
    CHECK(errno == 1234, "free of a shrunk huge block changed errno to %d", errno);
    /* with malloc_trim in between, so the frees after it unmap */
    errno = 1234;
    malloc_trim(0);
    void* c = malloc(100 * KiB);
    errno = 1234;
    free(c);
    CHECK(errno == 1234, "free after malloc_trim changed errno to %d", errno);
}

/* ---- glibc's extensions ---- */
static void test_extensions(int zmm) {
    /* One 10 MB block. glibc counts an mmap'd block in hblkhd, zmm in uordblks. */
    struct mallinfo2 before = mallinfo2();
    size_t in_use_before = zmm ? before.uordblks : before.uordblks + before.hblkhd;
    void* big = malloc(10 * 1000 * 1000);
    CHECK(big != NULL, "malloc(10 MB)");
    memset(big, 1, 10 * 1000 * 1000);
    struct mallinfo2 during = mallinfo2();
    size_t in_use_during = zmm ? during.uordblks : during.uordblks + during.hblkhd;
    CHECK(in_use_during >= in_use_before + 10 * 1000 * 1000,
          "mallinfo2 in use %zu before, %zu with a 10 MB block", in_use_before, in_use_during);
    free(big);
    struct mallinfo2 after = mallinfo2();
    size_t in_use_after = zmm ? after.uordblks : after.uordblks + after.hblkhd;
    CHECK(in_use_after + 10 * 1000 * 1000 <= in_use_during,
          "mallinfo2 in use %zu with the 10 MB block, %zu after free", in_use_during, in_use_after);

    /* 10 MB in 256-byte blocks: uordblks for both allocators. */
    enum { N = 10 * 1000 * 1000 / 256 };
    void** many = malloc(N * sizeof(void*));
    before = mallinfo2();
    for (int i = 0; i < N; ++i) {
        many[i] = malloc(256);
        CHECK(many[i] != NULL, "malloc(256) #%d", i);
    }
    during = mallinfo2();
    CHECK(during.uordblks >= before.uordblks + (size_t)N * 256, "mallinfo2 uordblks %zu before, %zu with 10 MB of 256 B",
          before.uordblks, during.uordblks);
    for (int i = 0; i < N; ++i) free(many[i]);
    after = mallinfo2();
    CHECK(after.uordblks + (size_t)N * 256 <= during.uordblks, "mallinfo2 uordblks %zu with, %zu after free",
          during.uordblks, after.uordblks);
    free(many);

    int t = malloc_trim(0);
    CHECK(t == 0 || t == 1, "malloc_trim(0) = %d", t);
    t = malloc_trim(1 * MiB);
    CHECK(t == 0 || t == 1, "malloc_trim(1 MiB) = %d", t);
    void* p = malloc(1000);
    CHECK(p != NULL, "malloc after malloc_trim");
    free(p);
    CHECK(mallopt(M_TRIM_THRESHOLD, 256 * 1024) == 1, "mallopt(M_TRIM_THRESHOLD) did not return 1");
    CHECK(mallopt(M_TOP_PAD, 64 * 1024) == 1, "mallopt(M_TOP_PAD) did not return 1");
}

int main(void) {
    int zmm = on_zmm_check("contract_c", "malloc", (const void*)&malloc);
    test_malloc_alignment();
    test_aligned_family();
    test_posix_memalign_einval();
    test_usable_size();
    test_calloc_zeroes();
    test_calloc_overflow();
    test_realloc_chain();
    test_realloc_edges();
    test_impossible();
    test_reallocarray();
    test_zero_and_null();
    test_free_keeps_errno();
    test_extensions(zmm);
    if (g_failures) {
        fprintf(stderr, "contract_c: %d of %d checks FAILED (%s)\n", g_failures, g_checks, zmm ? "zmm" : "not zmm");
        return 1;
    }
    fprintf(stderr, "contract_c: all %d checks passed (%s)\n", g_checks, zmm ? "zmm" : "not zmm");
    return 0;
}
