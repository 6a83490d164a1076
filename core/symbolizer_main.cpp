// zmm-symbolizer: names the frames of libzmm.so's leak reports in a process
// of its own (LeakSanitizer's llvm-symbolizer model), so that libdw's tables
// (tens of MiB with a libc debug package) never grow the program.
//
// Started by libzmm.so (symbolize.cpp) with its end of a socket pair on fd
// 3, all signals blocked and no LD_PRELOAD. Answers questions until the
// program closes its end (it exited, or gave the helper up), then exits.
// Not a command for people: it says nothing, and exits 2 when fd 3 is not
// a socket.
#include <cerrno>
#include <cstdlib>
#include <dirent.h>
#include <csignal>
#include <cstring>
#include <string>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>
#include <unordered_map>

#include "dwarf_names.hpp"
#include "symbolizer_protocol.hpp"

using namespace zmm;

namespace {

bool read_full(int fd, void* buf, size_t n) {
    char* p = static_cast<char*>(buf);
    while (n) {
        ssize_t r = read(fd, p, n);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) return false;
        p += r;
        n -= static_cast<size_t>(r);
    }
    return true;
}

}  // namespace

int main() {
    const int fd = k_symbolizer_fd;
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISSOCK(st.st_mode)) return 2;
    // None of the program's files (libzmm.so closed them already where the
    // kernel has close_range).
    if (DIR* d = opendir("/proc/self/fd")) {
        int self = dirfd(d);
        while (dirent* e = readdir(d)) {
            int n = atoi(e->d_name);
            if (n > fd && n != self) close(n);
        }
        closedir(d);
    }
    // Its own session: the terminal's ^C and ^Z are for the program, which
    // ends this process by closing its end.
    setsid();
    signal(SIGPIPE, SIG_IGN);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, nullptr);

    // One libdw session per module and load address.
    std::unordered_map<std::string, dwarf_names::Module*> modules;
    std::string path;
    char function[512], file[256];
    for (;;) {
        Symbolizer_question q;
        if (!read_full(fd, &q, sizeof q)) return 0;
        if (q.magic != k_symbolizer_magic || q.path_length > k_symbolizer_max_path) return 1;
        path.resize(q.path_length);
        if (!read_full(fd, path.data(), q.path_length)) return 0;
        std::string key = path + '@' + std::to_string(q.base);
        auto it = modules.find(key);
        if (it == modules.end()) it = modules.emplace(key, dwarf_names::open_module(path.c_str(), q.base)).first;
        unsigned line = 0;
        dwarf_names::lookup(it->second, q.at, function, sizeof function, file, sizeof file, &line);
        Symbolizer_answer a{k_symbolizer_magic, line, static_cast<uint16_t>(strlen(function)),
                            static_cast<uint16_t>(strlen(file))};
        if (!symbolizer_send(fd, &a, sizeof a) || !symbolizer_send(fd, function, a.function_length) ||
            !symbolizer_send(fd, file, a.file_length))
            return 0;
    }
}
