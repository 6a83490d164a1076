// A traced allocation on a stack the thread switched to (as coroutine
// libraries do): a mapping below the thread's own stack with a guard page
// above it, whose entry frame returns, as far as the unwind tables can
// tell, into a function with an 8 KiB frame. Its CFA lies past the guard:
// the unwinder must not read there (it did when it bounded reads by the
// thread block instead of the stack the thread runs on). Prints "ok".
#define _GNU_SOURCE
#include <pthread.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "zmm/zmm.h"

static jmp_buf g_out, g_back;
static uintptr_t g_return_address;  // a return address inside big_frame
static void* volatile sink;

__attribute__((noinline, noreturn)) static void note_and_leave(void) {
    g_return_address = (uintptr_t)__builtin_return_address(0);
    longjmp(g_out, 1);
}

__attribute__((noinline)) static void big_frame(void) {
    char buf[8192];
    memset(buf, 1, sizeof buf);
    __asm__ volatile("" : : "r"(buf) : "memory");
    note_and_leave();
}

void coroutine_entry(void);  // jumped to, not called
__attribute__((noinline, used)) void coroutine_entry(void) {
    sink = malloc(40);
    free(sink);
    __asm__ volatile("" ::: "memory");
    longjmp(g_back, 1);
}

static void* thread_main(void* arg) {
    if (!setjmp(g_out)) big_frame();
    const size_t size = 1 << 20;
    uintptr_t below = ((uintptr_t)__builtin_thread_pointer() - (32u << 20)) & ~(uintptr_t)0xfff;
    char* stack = mmap((void*)below, size + 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE,
                       -1, 0);
    if (stack == MAP_FAILED) stack = mmap(NULL, size + 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (stack == MAP_FAILED || mprotect(stack + size, 4096, PROT_NONE) != 0) {
        printf("FAIL mmap\n");
        return arg;
    }
    uintptr_t* top = (uintptr_t*)(stack + size) - 1;
    *top = g_return_address;  // what coroutine_entry "returns" to
    zmm_request_begin("coroutine");
    if (!setjmp(g_back)) __asm__ volatile("mov %0, %%rsp\n\tjmp coroutine_entry" : : "r"(top) : "memory");
    zmm_request_end();
    printf("ok\n");
    return arg;
}

int main(void) {
    pthread_t t;
    pthread_create(&t, NULL, thread_main, NULL);
    pthread_join(t, NULL);
    return 0;
}
