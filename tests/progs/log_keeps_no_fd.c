// ZMM_LOG keeps no descriptor open: none of the program's fds is the log, and
// a program that closes its spare descriptors and opens a file does not find
// zmm's reports in it.
#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int main(void) {
    free(malloc(100));
    DIR* d = opendir("/proc/self/fd");
    for (struct dirent* e; (e = readdir(d));) {
        char link[64], target[256];
        snprintf(link, sizeof link, "/proc/self/fd/%s", e->d_name);
        ssize_t n = readlink(link, target, sizeof target - 1);
        target[n > 0 ? n : 0] = 0;
        if (strstr(target, "zmm-progs-")) {
            fprintf(stderr, "fd %s is zmm's log\n", e->d_name);
            return 1;
        }
    }
    closedir(d);
    for (int fd = 3; fd < 64; fd++) close(fd);
    char path[] = "/tmp/zmm-log-test-XXXXXX";
    int fd = mkstemp(path);
    if (write(fd, "data\n", 5) != 5) return 1;
    close(fd);
    free(malloc(200));
    puts("ok");
    fflush(stdout);
    // At exit zmm writes its statistics to ZMM_LOG, not into `path`.
    char buf[64];
    fd = open(path, O_RDONLY);
    ssize_t n = read(fd, buf, sizeof buf);
    close(fd);
    unlink(path);
    return n == 5 ? 0 : 1;
}
