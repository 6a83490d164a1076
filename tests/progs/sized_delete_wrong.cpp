// A sized delete that names the wrong size (a delete through a base class
// without a virtual destructor): reported once per call site, not trusted:
// the block is freed by what zmm knows of it, and the program goes on.
// MODE=remote: the deletes come from another thread (the blocks are in the
// main thread's heap: the cross-thread path checks the size too).
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <new>
#include <thread>

struct Base {
    long a;
};
struct Derived : Base {
    char payload[200];
};

// Every wrong delete comes from this one call site.
__attribute__((noinline)) void drop(Base* b) {
    ::operator delete(b, sizeof(Base));
    asm volatile("" ::: "memory");  // not a tail call: the site stays here
}

__attribute__((noinline)) Base* make() { return new (::operator new(sizeof(Derived))) Derived{}; }

int main() {
    const char* mode = std::getenv("MODE");
    const bool remote = mode && std::strcmp(mode, "remote") == 0;
    Base* first = make();
    std::printf("%p\n", static_cast<void*>(first));
    std::fflush(stdout);
    Base* more[2] = {make(), make()};
    void* ok = ::operator new(100);
    auto deletes = [&] {
        drop(first);  // sizeof(Base) = 8; the block holds 224 (the bin of 208)
        for (Base* b : more) drop(b);
        ::operator delete(ok, 100);  // the right size: silent
    };
    if (remote)
        std::thread(deletes).join();
    else
        deletes();
    std::puts("survived");
    return 0;
}
