// A sized delete that names the wrong size (a delete through a base class
// without a virtual destructor): reported once per call site, not trusted:
// the block is freed by what zmm knows of it, and the program goes on.
#include <cstdio>
#include <new>

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
    Base* first = make();
    std::printf("%p\n", static_cast<void*>(first));
    std::fflush(stdout);
    drop(first);  // sizeof(Base) = 8; the block holds 224 (the bin of 208)
    for (int i = 0; i < 2; ++i) drop(make());
    void* ok = ::operator new(100);
    ::operator delete(ok, 100);  // the right size: silent
    std::puts("survived");
    return 0;
}
