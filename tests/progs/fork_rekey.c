// A forked child gets a free-list key of its own (ZendMM's
// zend_mm_refresh_key_child): a link forged with the parent's key (which a
// bug in the parent, or in a sibling child, could have leaked) fails the
// child's check before the allocator follows it.
//
// The parent reads its key off a free slot (link ^ shadow ^ address); the
// child forges a link to a static buffer with that key. Without a new key
// the child's second malloc would return the static buffer.
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

static _Alignas(64) char g_target[128];

int main(void) {
    uintptr_t* p = malloc(48);
    uintptr_t* q = malloc(48);
    free(q);
    free(p);  // the free list: p -> q -> ...
    uintptr_t parent_key = p[1] ^ p[0] ^ (uintptr_t)p;
    pid_t child = fork();
    if (child == 0) {
        printf("%p\n", (void*)p);
        fflush(stdout);
        // A use after free in the child: p's link now points at g_target,
        // with the shadow the parent's key would accept.
        p[0] = (uintptr_t)g_target;
        p[1] = (uintptr_t)g_target ^ parent_key ^ (uintptr_t)p;
        void* a = malloc(48);  // takes p: its link is checked first
        void* b = malloc(48);  // would be g_target
        _exit(b == (void*)g_target ? 3 : (a == NULL));
    }
    int status;
    waitpid(child, &status, 0);
    // The driver sees the child's message and abort as the program's own.
    if (WIFSIGNALED(status)) {
        signal(WTERMSIG(status), SIG_DFL);
        raise(WTERMSIG(status));
    }
    return WIFEXITED(status) ? WEXITSTATUS(status) : 1;
}
