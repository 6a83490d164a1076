/* Planted cases for the leak scan (ZMM_LEAKS=lost), one request each, driven
 * by check.py (test_reach) which reads the JSON log:
 *
 *   lost         one block nothing points to: 1 definitely lost
 *   list         a list of 6 whose head is lost: 1 definitely + 5 indirectly
 *   global       a block a global points to: still reachable
 *   interior     a block a global points into (17 bytes in): still reachable
 *   other_stack  a block only another thread's stack points to, that thread
 *                blocked in read(2) during the scan, every signal blocked
 *                with pthread_sigmask: still reachable (and its read then
 *                completes normally)
 *   missed_stack the same, the thread blocking every signal with the raw
 *                system call (zmm cannot see it): the scan goes on without
 *                stopping it, reads its stack as it is, and says so
 *   cache1..5    a cache filled in request 1, emptied in request 5:
 *                reachable in 1-4, never lost
 *   threads      threads created and joined inside the request: no leak
 *   huge_cache   4 blocks only a freed 3 MiB pointer array pointed to (its
 *                mapping kept for reuse): 4 definitely lost
 *   huge_slack   the same in an 8 MiB array whose mapping a 4.2 MiB block
 *                then takes (the pointers 7 MiB in, past its end and its
 *                last 2 MiB granule): 4 definitely lost,
 *                the block (a global's) still reachable
 *   huge_tail    a block only a page mapped right after a live huge
 *                block points to, in the block's last 2 MiB granule (which
 *                the chunk registry marks whole): still reachable
 *   dead_stack   a thread ran on a stack the program mapped, then unmapped;
 *                a table mapped at the same address holds the only pointer
 *                to a block: still reachable
 *   reuse1, 2    a block lost (reported, carried), then, a request later
 *                (reuse_mid: nothing), freed after all and its slot taken
 *                by a block lost: 1 definitely lost each
 *   holder1, 2   a block lost in holder1 holds a pointer to a block a global
 *                holds too (reachable); holder2 drops the global: that
 *                block is lost then, 1 definitely lost (a block reported
 *                lost is no root, nor a candidate, any more)
 *   found1..3    a block lost in found1 (disguised); found2 shows it again
 *                (a global) and links a new block from it: both reachable
 *                (the lost block is found again, and is a candidate of
 *                found3 again)
 *   nofd1..2     in a forked child (the descriptor zmm keeps open for
 *                /proc/self/maps is the parent's, which describes the
 *                parent: closed in the child, checked): nofd1 ends without a descriptor left: no scan,
 *                its cache listed as a leak (kind live); nofd2 adds an
 *                entry to the cache: both reachable (a block no scan found
 *                lost stays a candidate)
 *   suppress     two lost blocks, from suppress_me_please and keep_me
 *
 * Addresses the program must not keep are stored disguised (xor with a
 * non-canonical bit), so that only the planted references count. stdout:
 * "NAME RETURN" per request (zmm_request_end's value). */
#include <zmm/zmm.h>

#include <pthread.h>
#include <signal.h>
#include <errno.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define NOINLINE __attribute__((noinline))
#define HIDE(p) ((uintptr_t)(p) ^ ((uintptr_t)1 << 62))
#define SHOW(h) ((void*)((h) ^ ((uintptr_t)1 << 62)))

static volatile uintptr_t g_hidden;
static void* volatile g_global;
static char* volatile g_interior;
static void* g_cache[10];

static long results[48];
static const char* names[48];
static int nresults;

static void end(const char* name) {
    names[nresults] = name;
    errno = EILSEQ; /* a request's end (its scan) leaves errno as it was */
    results[nresults++] = zmm_request_end();
    if (errno != EILSEQ) printf("FAIL %s: errno %d after zmm_request_end\n", name, errno);
}

static void* cleared(size_t n) {
    void* p = malloc(n);
    memset(p, 0, n);
    return p;
}

NOINLINE static void plant_lost(void) { g_hidden = HIDE(cleared(64)); }

NOINLINE static void plant_list(void) {
    void* head = NULL;
    for (int i = 0; i < 6; ++i) {
        void** node = cleared(32);
        node[1] = head;
        head = node;
    }
    g_hidden = HIDE(head);
}

NOINLINE static void plant_global(void) { g_global = cleared(80); }
NOINLINE static void plant_interior(void) { g_interior = (char*)cleared(96) + 17; }

/* ---- another thread's stack ---- */

static int to_thread[2], to_main[2];

/* arg: 0 blocks every signal with pthread_sigmask, 1 with the system call. */
NOINLINE static void* holder(void* arg) {
    sigset_t all;
    sigfillset(&all);
    if (arg)
        syscall(SYS_rt_sigprocmask, SIG_BLOCK, &all, NULL, _NSIG / 8);
    else
        pthread_sigmask(SIG_BLOCK, &all, NULL);
    char c;
    if (read(to_thread[0], &c, 1) != 1) abort();  /* "take it" */
    void* volatile mine = SHOW(g_hidden);         /* only on this stack now */
    g_hidden = 0;
    if (write(to_main[1], "k", 1) != 1) abort();
    /* Blocked here while main ends its request and the scan runs. */
    ssize_t n = read(to_thread[0], &c, 1);
    if (n != 1 || c != 'x') {
        static const char msg[] = "FAIL holder: read after the scan did not complete\n";
        if (write(1, msg, sizeof msg - 1) < 0) abort();
    }
    free(mine);
    return NULL;
}

NOINLINE static void plant_on_other_stack(void) { g_hidden = HIDE(cleared(48)); }

/* ---- threads inside a request ---- */

static void* worker(void* arg) {
    long n = (long)(intptr_t)arg;
    for (long i = 0; i < 1000 + n; ++i) free(malloc((size_t)(i % 500) + 1));
    return NULL;
}

/* ---- freed huge blocks, reused stacks ---- */

NOINLINE static void plant_under_huge_array(void) {
    size_t n = (3u << 20) / sizeof(void*);
    void** array = malloc(n * sizeof(void*));
    memset(array, 0, n * sizeof(void*));
    for (int i = 0; i < 4; ++i) array[i * 1000] = cleared(64);
    free(array);
}

static void* volatile g_smaller;

// The same, the freed array's mapping then taken by a smaller block: the
// pointers lie in its slack, past the block's end.
NOINLINE static void plant_in_huge_slack(void) {
    size_t n = (8u << 20) / sizeof(void*);
    void** array = malloc(n * sizeof(void*));
    memset(array, 0, n * sizeof(void*));
    for (int i = 0; i < 4; ++i) array[(7u << 20) / sizeof(void*) + (size_t)i * 1000] = cleared(64);
    free(array);
    g_smaller = malloc((4u << 20) + (200u << 10));
}

// A page mapped right after a live huge block's mapping, in the block's
// last granule (the first free page there), or NULL. A block whose mapping
// ends where something else begins is kept and another tried.
static char* g_huge_before[4];

static void** map_after_huge(void) {
    const size_t n = (2u << 20) + (64u << 10), granule = 2u << 20;
    for (int i = 0; i < 4; ++i) {
        char* big = malloc(n);
        g_huge_before[i] = big;
        if (!big) return NULL;
        uintptr_t a = (uintptr_t)big + n, end = (a + granule - 1) & ~(uintptr_t)(granule - 1);
        for (; a < end; a += 4096) {
            void* r = mmap((void*)a, 4096, PROT_READ | PROT_WRITE,
                           MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
            if (r == (void*)a) return r;
            if (r != MAP_FAILED) munmap(r, 4096); /* (a kernel without MAP_FIXED_NOREPLACE) */
        }
    }
    return NULL;
}

static void** volatile g_after_huge;

NOINLINE static void plant_after_huge(void) { g_after_huge[10] = cleared(56); }

static void* takes_a_heap(void* arg) {
    free(malloc(16));
    return arg;
}

static void** volatile g_table;

NOINLINE static void plant_in_table(void) { g_table[100] = cleared(48); }

/* ---- a lost block's pointer; a lost block found again; no scan ---- */

static void* volatile g_found;
static void** volatile g_nofd_cache;

static void* volatile g_held;

NOINLINE static void plant_holder(void) {
    g_held = cleared(72);
    void** lost = cleared(40);
    lost[2] = g_held;
    g_hidden = HIDE(lost);
}


/* Their own frames: main's would keep copies of the pointers. */
NOINLINE static void run_found(void) {
    zmm_request_begin("found1");
    g_hidden = HIDE(cleared(56));
    end("found1");
    zmm_request_begin("found2");
    g_found = SHOW(g_hidden);
    g_hidden = 0;
    ((void**)g_found)[1] = cleared(24);
    end("found2");
    zmm_request_begin("found3");
    end("found3");
    free(((void**)g_found)[1]);
    free(g_found);
    g_found = NULL;

}

NOINLINE static void run_nofd(void) {
    const int first = nresults;
    fflush(stdout);
    pid_t child = fork();
    if (child < 0) {
        printf("FAIL fork\n");
        return;
    }
    if (child > 0) {
        int status = 0;
        waitpid(child, &status, 0);
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) printf("FAIL nofd child: status %d\n", status);
        return;
    }
    {
        /* The parent's scans kept a descriptor for its /proc/PID/maps: the
         * child's fork handler closed it. */
        char parent_maps[64], link[256], fd_path[64];
        snprintf(parent_maps, sizeof parent_maps, "/proc/%d/maps", (int)getppid());
        for (int fd = 0; fd < 1024; ++fd) {
            snprintf(fd_path, sizeof fd_path, "/proc/self/fd/%d", fd);
            ssize_t n = readlink(fd_path, link, sizeof link - 1);
            if (n <= 0) continue;
            link[n] = 0;
            if (strcmp(link, parent_maps) == 0) printf("FAIL the child has the parent's maps open (fd %d)\n", fd);
        }
    }
    {
        struct rlimit was;
        getrlimit(RLIMIT_NOFILE, &was);
        int fds[64], nfds = 0;
        struct rlimit low = {0, was.rlim_max};
        int probe = open("/dev/null", O_RDONLY);
        low.rlim_cur = (rlim_t)probe + 8;
        close(probe);
        setrlimit(RLIMIT_NOFILE, &low);
        zmm_request_begin("nofd1");
        g_nofd_cache = cleared(16 * sizeof(void*));
        while (nfds < 64 && (fds[nfds] = open("/dev/null", O_RDONLY)) >= 0) ++nfds;
        end("nofd1");
        while (nfds) close(fds[--nfds]);
        setrlimit(RLIMIT_NOFILE, &was);
        zmm_request_begin("nofd2");
        g_nofd_cache[3] = cleared(40);
        end("nofd2");
        free(g_nofd_cache[3]);
        free(g_nofd_cache);
        g_nofd_cache = NULL;
    }
    for (int i = first; i < nresults; ++i) printf("%s %ld\n", names[i], results[i]);  /* the parent's list has not them */
    fflush(stdout);
    _exit(0);

}

/* ---- suppressions ---- */

NOINLINE void suppress_me_please(void) { g_hidden = HIDE(cleared(123)); }
NOINLINE void keep_me(void) { g_hidden = HIDE(cleared(456)); }

int main(void) {
    /* What zmm keeps open from the first request (traced: libunwind's
     * pipe; the scan's /proc/self/maps) takes no standard descriptor: a
     * program that closed stdin gets 0 back from its next open. */
    close(0);
    zmm_request_begin("lost");
    plant_lost();
    end("lost");
    {
        int lowest = open("/dev/null", O_RDONLY);
        char link[64] = "";
        ssize_t n = lowest >= 0 ? readlink("/proc/self/fd/0", link, sizeof link - 1) : -1;
        if (n > 0) link[n] = 0;
        if (lowest != 0) printf("FAIL zmm kept descriptor 0 (%s; open gave %d)\n", link, lowest);
    }

    zmm_request_begin("list");
    plant_list();
    end("list");

    zmm_request_begin("global");
    plant_global();
    end("global");
    free(g_global); /* not carried into the next requests' counts */
    g_global = NULL; /* nor a dangling pointer to a block that takes its slot */

    zmm_request_begin("interior");
    plant_interior();
    end("interior");
    free(g_interior - 17);
    g_interior = NULL;

    if (pipe(to_thread) || pipe(to_main)) return 2;
    static const char* stack_names[] = {"other_stack", "missed_stack"};
    for (long k = 0; k < 2; ++k) {
        pthread_t t;
        if (pthread_create(&t, NULL, holder, (void*)k)) return 2;
        zmm_request_begin(stack_names[k]);
        plant_on_other_stack();
        char c;
        if (write(to_thread[1], "g", 1) != 1 || read(to_main[0], &c, 1) != 1) return 2;
        usleep(20000); /* the holder is in read(2) now */
        end(stack_names[k]);
        if (write(to_thread[1], "x", 1) != 1) return 2;
        pthread_join(t, NULL);
    }

    static const char* cache_names[] = {"cache1", "cache2", "cache3", "cache4", "cache5"};
    for (int r = 0; r < 5; ++r) {
        zmm_request_begin(cache_names[r]);
        if (r == 0)
            for (int i = 0; i < 10; ++i) g_cache[i] = cleared(200);
        if (r == 4)
            for (int i = 0; i < 10; ++i) {
                free(g_cache[i]);
                g_cache[i] = NULL;
            }
        end(cache_names[r]);
    }

    zmm_request_begin("threads");
    pthread_t ts[4];
    for (long i = 0; i < 4; ++i)
        if (pthread_create(&ts[i], NULL, worker, (void*)(intptr_t)i)) return 2;
    for (int i = 0; i < 4; ++i) pthread_join(ts[i], NULL);
    end("threads");

    zmm_request_begin("huge_cache");
    plant_under_huge_array();
    end("huge_cache");

    zmm_request_begin("huge_slack");
    plant_in_huge_slack();
    end("huge_slack");
    free(g_smaller);

    g_after_huge = map_after_huge();
    if (!g_after_huge) printf("FAIL: no free page after a huge block in its last granule\n");
    zmm_request_begin("huge_tail");
    if (g_after_huge) plant_after_huge();
    end("huge_tail");
    if (g_after_huge) {
        free(g_after_huge[10]);
        munmap((void*)g_after_huge, 4096);
    }
    for (int i = 0; i < 4; ++i) free(g_huge_before[i]);

    {
        const size_t sz = 1u << 20;
        void* stack = mmap(NULL, sz, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        pthread_attr_t at;
        pthread_attr_init(&at);
        pthread_attr_setstack(&at, stack, sz);
        pthread_t st;
        if (pthread_create(&st, &at, takes_a_heap, NULL)) return 2;
        pthread_join(st, NULL);
        munmap(stack, sz);
        g_table = mmap(NULL, sz, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        zmm_request_begin("dead_stack");
        plant_in_table();
        end("dead_stack");
        free(g_table[100]);
        g_table[100] = NULL;  /* its slot is taken again below */
    }

    // A carried block freed, its slot taken at once by a block then lost:
    // that one is the request's leak, not the carried block.
    zmm_request_begin("reuse1");
    g_hidden = HIDE(cleared(200));
    end("reuse1");
    zmm_request_begin("reuse_mid");  // the carried block stays marked across an end
    end("reuse_mid");
    zmm_request_begin("reuse2");
    free(SHOW(g_hidden));  // reported lost in reuse1, freed after all
    g_hidden = HIDE(cleared(200));
    end("reuse2");

    zmm_request_begin("holder1");
    plant_holder();
    end("holder1");
    zmm_request_begin("holder2");
    g_held = NULL;  // dropped, never freed: only the lost block points to it
    end("holder2");

    run_found();
    run_nofd();

    zmm_request_begin("suppress");
    suppress_me_please();
    keep_me();
    end("suppress");

    for (int i = 0; i < nresults; ++i) printf("%s %ld\n", names[i], results[i]);
    return 0;
}
