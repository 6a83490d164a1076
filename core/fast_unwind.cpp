#include "fast_unwind.hpp"

#include <atomic>
#include <link.h>

#include "loader_guard.hpp"
#include "loader_watch.hpp"
#include "object_headers.hpp"
#include "os.hpp"

extern "C" void* __libc_stack_end;  // the loader's: the main stack at start

namespace zmm::fast_unwind {
namespace {

// ---- rules ----
//
// A return address's rule, 17 bits (a user-space address takes the other
// 47 of a cache entry):
//   bit 16     the CFA is the frame pointer (rbp) plus the offset, else the
//              stack pointer (rsp) plus it
//   bits 3-15  the CFA's offset, in 8-byte units (frames under 64 KiB)
//   bits 0-2   where the caller's rbp was saved, CFA minus 8 times this
//              (the return address and up to six registers pushed before
//              it); 0: not saved (rbp is the caller's)
// The return address of the caller is at CFA - 8 (checked in the CIE).
constexpr unsigned k_rule_bits = 17;
constexpr uint32_t k_rbp_base = 1u << 16;
constexpr unsigned k_offset_shift = 3;
constexpr uint32_t k_offset_units = 8190;    // (8190 and 8191 with slot 7: the two below)
constexpr uint32_t k_unsupported = 0x1FFFF;
constexpr uint32_t k_outermost = 0x1FFFE;    // the return address is undefined: the stack's end

constexpr unsigned k_rsp = 7, k_rbp = 6, k_ra = 16;  // DWARF register numbers

// ---- reading .eh_frame ----

struct Reader {
    const uint8_t* p;
    const uint8_t* end;
    bool ok = true;

    bool need(size_t n) {
        if (p > end || static_cast<size_t>(end - p) < n) ok = false;
        return ok;
    }
    template <class T>
    T fixed() {
        T v{};
        if (!need(sizeof v)) return v;
        __builtin_memcpy(&v, p, sizeof v);
        p += sizeof v;
        return v;
    }
    uint64_t uleb() {
        uint64_t v = 0;
        for (unsigned shift = 0; need(1); shift += 7) {
            uint8_t b = *p++;
            if (shift < 64) v |= uint64_t{b & 0x7fu} << shift;
            if (!(b & 0x80)) return v;
        }
        return 0;
    }
    int64_t sleb() {
        int64_t v = 0;
        unsigned shift = 0;
        for (; need(1);) {
            uint8_t b = *p++;
            if (shift < 64) v |= static_cast<int64_t>(uint64_t{b & 0x7fu} << shift);
            shift += 7;
            if (!(b & 0x80)) {
                if (shift < 64 && (b & 0x40)) v |= -(int64_t{1} << shift);
                return v;
            }
        }
        return 0;
    }
    // A pointer in DWARF's exception-header encoding `enc`; `data` is the
    // base of DW_EH_PE_datarel.
    uintptr_t encoded(uint8_t enc, uintptr_t data = 0) {
        if (enc == 0xff) return 0;  // omitted
        const uintptr_t here = reinterpret_cast<uintptr_t>(p);
        uintptr_t v = 0;
        switch (enc & 0x0f) {
        case 0x00: v = fixed<uint64_t>(); break;
        case 0x01: v = uleb(); break;
        case 0x02: v = fixed<uint16_t>(); break;
        case 0x03: v = fixed<uint32_t>(); break;
        case 0x04: v = fixed<uint64_t>(); break;
        case 0x09: v = static_cast<uintptr_t>(sleb()); break;
        case 0x0a: v = static_cast<uintptr_t>(static_cast<int64_t>(fixed<int16_t>())); break;
        case 0x0b: v = static_cast<uintptr_t>(static_cast<int64_t>(fixed<int32_t>())); break;
        case 0x0c: v = fixed<uint64_t>(); break;
        default: ok = false; return 0;
        }
        switch (enc & 0x70) {
        case 0x00: break;
        case 0x10: v += here; break;
        case 0x30: v += data; break;
        default: ok = false; return 0;
        }
        if (enc & 0x80) ok = false;  // indirect: not for code addresses
        return v;
    }
};

// The module holding a code address: its .eh_frame_hdr, and the loaded
// segment that holds it, [lo, hi): every table read stays inside it (the
// linker puts .eh_frame beside .eh_frame_hdr; segments may have unmapped
// gaps between them).
struct Module {
    uintptr_t pc;
    uintptr_t lo, hi;
    uintptr_t eh_frame_hdr;
};

// The loader's count of objects unloaded, when the rules were last checked
// against it: an unloaded library's addresses may be another's since (glibc
// unloads some itself: iconv's modules), so its rules are forgotten.
std::atomic<unsigned long long> g_unloads{0};

// m's fields from one object's program headers (loaded at `bias`): whether
// m.pc is in one of its executable segments.
bool fill_module(Module& m, const ElfW(Phdr)* phdr, int phnum, uintptr_t bias) {
    bool holds = false;
    uintptr_t hdr = 0;
    for (int i = 0; i < phnum; ++i) {
        const ElfW(Phdr)& ph = phdr[i];
        uintptr_t a = bias + ph.p_vaddr;
        if (ph.p_type == PT_LOAD && (ph.p_flags & PF_X) && m.pc >= a && m.pc < a + ph.p_memsz) holds = true;
        if (ph.p_type == PT_GNU_EH_FRAME) hdr = a;
    }
    if (!holds) return false;
    m.eh_frame_hdr = 0;
    for (int i = 0; hdr && i < phnum; ++i) {
        const ElfW(Phdr)& ph = phdr[i];
        uintptr_t a = bias + ph.p_vaddr;
        if (ph.p_type == PT_LOAD && hdr >= a && hdr < a + ph.p_filesz) {
            m.lo = a;
            m.hi = a + ph.p_filesz;  // (what the file backs: the tables are data of the file)
            m.eh_frame_hdr = hdr;
        }
    }
    return true;
}

int find_module(dl_phdr_info* info, size_t, void* data) {
    auto* m = static_cast<Module*>(data);
    return fill_module(*m, info->dlpi_phdr, info->dlpi_phnum, info->dlpi_addr) ? 1 : 0;
}

// m by object_headers (no lock). 1: found; 0: no object holds m.pc; -1:
// the headers are not there as expected (dl_iterate_phdr knows).
int find_module_unlocked(Module& m) {
    object_headers::Object o;
    switch (object_headers::find(m.pc, o)) {
    case object_headers::Found::none: return 0;
    case object_headers::Found::unusual: return -1;
    case object_headers::Found::yes: break;
    }
    if (!fill_module(m, o.phdr, o.phnum, o.bias)) return 0;
    return m.eh_frame_hdr == o.eh_frame ? 1 : -1;
}

// The CFA rule state while the instructions run.
struct State {
    unsigned cfa_reg;
    int64_t cfa_offset;
    int64_t rbp_at;  // rbp saved at CFA + rbp_at; 0: not saved
    int64_t ra_at;   // the return address at CFA + ra_at; 1: undefined
    bool bad;
};

struct Cie {
    uint64_t code_align;
    int64_t data_align;
    uint8_t fde_encoding;
    bool augmented;  // 'z': FDEs carry augmentation data
    const uint8_t* instructions;
    const uint8_t* end;
};

bool read_cie(const uint8_t* at, const Module& m, Cie& cie) {
    Reader r{at, reinterpret_cast<const uint8_t*>(m.hi)};
    uint32_t length = r.fixed<uint32_t>();
    if (!r.ok || length == 0 || length == 0xffffffff) return false;
    const uint8_t* end = r.p + length;
    if (end > r.end) return false;
    r.end = end;
    if (r.fixed<uint32_t>() != 0) return false;  // a CIE's id
    uint8_t version = r.fixed<uint8_t>();
    if (version != 1 && version != 3) return false;
    const char* aug = reinterpret_cast<const char*>(r.p);
    size_t aug_len = 0;
    while (r.need(aug_len + 1) && aug[aug_len]) ++aug_len;
    if (!r.ok) return false;
    r.p += aug_len + 1;
    cie.code_align = r.uleb();
    cie.data_align = r.sleb();
    uint64_t ra = version == 1 ? r.fixed<uint8_t>() : r.uleb();
    if (ra != k_ra) return false;
    cie.fde_encoding = 0;  // absptr
    cie.augmented = aug[0] == 'z';
    if (cie.augmented) {
        uint64_t len = r.uleb();
        const uint8_t* data_end = r.p + len;
        if (!r.need(len)) return false;
        for (size_t i = 1; i < aug_len; ++i) {
            switch (aug[i]) {
            case 'R': cie.fde_encoding = r.fixed<uint8_t>(); break;
            case 'P': {
                uint8_t enc = r.fixed<uint8_t>();
                Reader skip = r;
                skip.encoded(static_cast<uint8_t>(enc & 0x7f));  // the personality: only its size matters
                r.p = skip.p;
                break;
            }
            case 'L': r.fixed<uint8_t>(); break;
            default: return false;  // 'S' (a signal frame), or one we cannot read past
            }
        }
        if (!r.ok || r.p > data_end) return false;
        r.p = data_end;
    } else if (aug_len != 0) {
        return false;
    }
    cie.instructions = r.p;
    cie.end = end;
    return r.ok;
}

// Runs CFA instructions [p, end) while the location stays at or before
// `target`. `initial`: the CIE's state, for DW_CFA_restore.
void run(State& s, const State& initial, const uint8_t* p, const uint8_t* end, const Cie& cie, uintptr_t& loc,
         uintptr_t target) {
    Reader r{p, end};
    State stack[8];
    unsigned depth = 0;
    auto set_reg = [&](uint64_t reg, int64_t at) {
        if (reg == k_rbp) s.rbp_at = at;
        if (reg == k_ra) s.ra_at = at;
    };
    auto restore_reg = [&](uint64_t reg) {
        if (reg == k_rbp) s.rbp_at = initial.rbp_at;
        if (reg == k_ra) s.ra_at = initial.ra_at;
    };
    auto unsupported_for = [&](uint64_t reg) {
        if (reg == k_rbp || reg == k_ra) s.bad = true;
    };
    while (r.ok && r.p < r.end && !s.bad) {
        uint8_t op = r.fixed<uint8_t>();
        uintptr_t advance = 0;
        switch (op & 0xc0) {
        case 0x40: advance = (op & 0x3f) * cie.code_align; break;
        case 0x80: set_reg(op & 0x3f, static_cast<int64_t>(r.uleb()) * cie.data_align); continue;
        case 0xc0: restore_reg(op & 0x3f); continue;
        default: break;
        }
        if ((op & 0xc0) == 0) {
            switch (op) {
            case 0x00: continue;  // nop
            case 0x01: {          // set_loc
                uintptr_t to = r.encoded(cie.fde_encoding);
                if (to > target) return;
                loc = to;
                continue;
            }
            case 0x02: advance = r.fixed<uint8_t>() * cie.code_align; break;
            case 0x03: advance = r.fixed<uint16_t>() * cie.code_align; break;
            case 0x04: advance = r.fixed<uint32_t>() * cie.code_align; break;
            case 0x05: {  // offset_extended
                uint64_t reg = r.uleb();
                set_reg(reg, static_cast<int64_t>(r.uleb()) * cie.data_align);
                continue;
            }
            case 0x06: restore_reg(r.uleb()); continue;  // restore_extended
            case 0x07: {                                 // undefined
                uint64_t reg = r.uleb();
                if (reg == k_ra) s.ra_at = 1;
                if (reg == k_rbp) s.rbp_at = 0;  // (the outermost frame's: no caller to restore)
                continue;
            }
            case 0x08: {  // same_value
                uint64_t reg = r.uleb();
                if (reg == k_rbp) s.rbp_at = 0;
                if (reg == k_ra) s.bad = true;
                continue;
            }
            case 0x09:    // register
            case 0x14: {  // val_offset
                uint64_t reg = r.uleb();
                r.uleb();
                unsupported_for(reg);
                continue;
            }
            case 0x0a:  // remember_state
                if (depth == 8) {
                    s.bad = true;
                    continue;
                }
                stack[depth++] = s;
                continue;
            case 0x0b:  // restore_state (the CFA too, as GCC's unwinder does)
                if (depth == 0) {
                    s.bad = true;
                    continue;
                }
                s = stack[--depth];
                continue;
            case 0x0c:  // def_cfa
                s.cfa_reg = static_cast<unsigned>(r.uleb());
                s.cfa_offset = static_cast<int64_t>(r.uleb());
                continue;
            case 0x0d: s.cfa_reg = static_cast<unsigned>(r.uleb()); continue;  // def_cfa_register
            case 0x0e: s.cfa_offset = static_cast<int64_t>(r.uleb()); continue;  // def_cfa_offset
            case 0x0f: s.bad = true; continue;                                    // def_cfa_expression
            case 0x10:
            case 0x16: {  // expression, val_expression
                uint64_t reg = r.uleb();
                uint64_t len = r.uleb();
                if (r.need(len)) r.p += len;
                unsupported_for(reg);
                continue;
            }
            case 0x11: {  // offset_extended_sf
                uint64_t reg = r.uleb();
                set_reg(reg, r.sleb() * cie.data_align);
                continue;
            }
            case 0x12:  // def_cfa_sf
                s.cfa_reg = static_cast<unsigned>(r.uleb());
                s.cfa_offset = r.sleb() * cie.data_align;
                continue;
            case 0x13: s.cfa_offset = r.sleb() * cie.data_align; continue;  // def_cfa_offset_sf
            case 0x15: {  // val_offset_sf
                uint64_t reg = r.uleb();
                r.sleb();
                unsupported_for(reg);
                continue;
            }
            case 0x2e: r.uleb(); continue;  // GNU_args_size
            case 0x2f: {                    // GNU_negative_offset_extended
                uint64_t reg = r.uleb();
                set_reg(reg, -static_cast<int64_t>(r.uleb()) * cie.data_align);
                continue;
            }
            default: s.bad = true; continue;
            }
        }
        if (loc + advance > target) return;
        loc += advance;
    }
    if (!r.ok) s.bad = true;
}

// The rule for return address `ra` (a call's next instruction: the call's
// own rules hold at ra - 1).
__attribute__((noinline)) uint32_t compute_rule(uintptr_t ra) {
    const uintptr_t pc = ra - 1;
    Module m{pc, 0, 0, 0};
    {
        loader::Use use;
        // (dl_iterate_phdr, the loader's counts: a look at its first object.)
        const bool locked = loader::may_be_locked();
        if (!locked) {
            const unsigned long long unloads = loader_watch::counts().unloads;
            if (unloads != g_unloads.load(std::memory_order_relaxed)) {
                g_unloads.store(unloads, std::memory_order_relaxed);
                forget_rules();
            }
        }
        int found = find_module_unlocked(m);
        if (found < 0) found = locked ? 0 : dl_iterate_phdr(find_module, &m);
        if (!found || !m.eh_frame_hdr) return k_unsupported;
    }
    // .eh_frame_hdr: version 1, then a table sorted by initial location
    // (datarel sdata4 pairs, searched in halves).
    Reader h{reinterpret_cast<const uint8_t*>(m.eh_frame_hdr), reinterpret_cast<const uint8_t*>(m.hi)};
    uint8_t version = h.fixed<uint8_t>(), frame_enc = h.fixed<uint8_t>(), count_enc = h.fixed<uint8_t>(),
            table_enc = h.fixed<uint8_t>();
    if (!h.ok || version != 1 || table_enc != 0x3b) return k_unsupported;
    h.encoded(frame_enc, m.eh_frame_hdr);
    uint64_t count = h.encoded(count_enc, m.eh_frame_hdr);
    if (!h.ok || count == 0 || count > (m.hi - reinterpret_cast<uintptr_t>(h.p)) / 8) return k_unsupported;
    const int32_t* table = reinterpret_cast<const int32_t*>(h.p);
    const uintptr_t base = m.eh_frame_hdr;
    uint64_t lo = 0, hi = count;
    while (hi - lo > 1) {
        uint64_t mid = (lo + hi) / 2;
        if (base + static_cast<intptr_t>(table[2 * mid]) <= pc)
            lo = mid;
        else
            hi = mid;
    }
    if (base + static_cast<intptr_t>(table[2 * lo]) > pc) return k_unsupported;
    const uint8_t* fde = reinterpret_cast<const uint8_t*>(base + static_cast<intptr_t>(table[2 * lo + 1]));
    if (reinterpret_cast<uintptr_t>(fde) < m.lo || reinterpret_cast<uintptr_t>(fde) >= m.hi) return k_unsupported;

    Reader f{fde, reinterpret_cast<const uint8_t*>(m.hi)};
    uint32_t length = f.fixed<uint32_t>();
    if (!f.ok || length == 0 || length == 0xffffffff || !f.need(length)) return k_unsupported;
    const uint8_t* fde_end = f.p + length;
    f.end = fde_end;
    const uint8_t* id_at = f.p;
    uint32_t cie_offset = f.fixed<uint32_t>();
    if (!f.ok || cie_offset == 0) return k_unsupported;
    const uint8_t* cie_at = id_at - cie_offset;
    if (reinterpret_cast<uintptr_t>(cie_at) < m.lo || reinterpret_cast<uintptr_t>(cie_at) >= m.hi) return k_unsupported;
    Cie cie;
    if (!read_cie(cie_at, m, cie)) return k_unsupported;
    uintptr_t begin = f.encoded(cie.fde_encoding);
    uintptr_t range = f.encoded(static_cast<uint8_t>(cie.fde_encoding & 0x0f));
    if (!f.ok || pc < begin || pc - begin >= range) return k_unsupported;
    if (cie.augmented) {
        uint64_t len = f.uleb();
        if (!f.need(len)) return k_unsupported;
        f.p += len;
    }

    State initial{k_rsp, 8, 0, -8, false};
    uintptr_t loc = begin;
    run(initial, initial, cie.instructions, cie.end, cie, loc, UINTPTR_MAX);
    State s = initial;
    loc = begin;
    run(s, initial, f.p, fde_end, cie, loc, pc);
    if (s.bad) return k_unsupported;
    if (s.ra_at == 1) return k_outermost;
    if (s.ra_at != -8) return k_unsupported;
    if (s.cfa_reg != k_rsp && s.cfa_reg != k_rbp) return k_unsupported;
    if (s.cfa_offset < 8 || s.cfa_offset % 8 || s.cfa_offset / 8 >= k_offset_units) return k_unsupported;
    uint32_t slot = 0;
    if (s.rbp_at) {
        if (s.rbp_at > -16 || s.rbp_at % 8 || -s.rbp_at / 8 > 7) return k_unsupported;
        slot = static_cast<uint32_t>(-s.rbp_at / 8);
    }
    return (s.cfa_reg == k_rbp ? k_rbp_base : 0) | static_cast<uint32_t>(s.cfa_offset / 8) << k_offset_shift | slot;
}

// ---- the rule cache: (return address << 17) | rule, open addressing ----

constexpr unsigned k_slot_bits = 15;
constexpr size_t k_slots = size_t{1} << k_slot_bits;
constexpr unsigned k_probes = 8;

// The first slot a return address probes.
size_t slot_of(uintptr_t ra) { return static_cast<size_t>((ra * 0x9E3779B97F4A7C15ull) >> (64 - k_slot_bits)); }
std::atomic<std::atomic<uint64_t>*> g_rules{nullptr};
std::atomic<uint64_t> g_computed{0}, g_unsupported{0};
// Raised by forget_rules once the rules are forgotten: a memo entry of an
// earlier generation is void. A capture reads it before its first rule and
// stamps its entries with that: a forget_rules during the unwinding (a
// rule's lookup may call it) leaves them void.
std::atomic<uint64_t> g_generation{1};

std::atomic<uint64_t>* rules() {
    std::atomic<uint64_t>* t = g_rules.load(std::memory_order_acquire);
    if (t) return t;
    auto* fresh = static_cast<std::atomic<uint64_t>*>(os::map(k_slots * sizeof(uint64_t)));
    if (!fresh) return nullptr;
    if (!g_rules.compare_exchange_strong(t, fresh, std::memory_order_acq_rel)) {
        os::unmap(fresh, k_slots * sizeof(uint64_t));
        return t;
    }
    return fresh;
}

// A return address not seen before: its rule computed and cached, out of
// the unwinding loop's way.
__attribute__((noinline)) uint32_t new_rule(std::atomic<uint64_t>* table, uintptr_t ra) {
    uint32_t rule = compute_rule(ra);
    g_computed.fetch_add(1, std::memory_order_relaxed);
    if (rule == k_unsupported) g_unsupported.fetch_add(1, std::memory_order_relaxed);
    const uint64_t entry = uint64_t{ra} << k_rule_bits | rule;
    size_t i = slot_of(ra);
    for (unsigned probe = 0; probe < k_probes; ++probe, i = (i + 1) & (k_slots - 1)) {
        uint64_t e = 0;
        if (table[i].compare_exchange_strong(e, entry, std::memory_order_relaxed)) break;
        if ((e >> k_rule_bits) == ra) break;  // another thread's, the same
    }
    return rule;
}

// The probes after the first, out of the unwinding loop's way.
__attribute__((noinline)) uint32_t probe_rule(std::atomic<uint64_t>* table, uintptr_t ra, size_t i) {
    for (unsigned probe = 1; probe < k_probes; ++probe) {
        i = (i + 1) & (k_slots - 1);
        uint64_t e = table[i].load(std::memory_order_relaxed);
        if (e == 0) break;
        if ((e >> k_rule_bits) == ra) return static_cast<uint32_t>(e & ((1u << k_rule_bits) - 1));
    }
    return new_rule(table, ra);
}

inline uint32_t rule_for(std::atomic<uint64_t>* table, uintptr_t ra) {
    const size_t i = slot_of(ra);
    const uint64_t e = table[i].load(std::memory_order_relaxed);
    if (__builtin_expect((e >> k_rule_bits) == ra, 1)) return static_cast<uint32_t>(e & ((1u << k_rule_bits) - 1));
    return e == 0 ? new_rule(table, ra) : probe_rule(table, ra, i);
}

// A word of the stack (bounds checked by the caller; any alignment).
uintptr_t load(uintptr_t at) {
    uintptr_t v;
    __builtin_memcpy(&v, reinterpret_cast<const void*>(at), sizeof v);
    return v;
}

// The calling thread's stack: reads stay inside it, and a stack pointer
// outside it (a coroutine's stack, a signal's alternate stack) is
// libunwind's. No system call: no file is opened inside malloc (a seccomp
// filter may kill for it).
//
// A thread the preload started notes its stack as it starts
// (note_thread_stack): glibc's stack block ends at its thread block. The
// main thread's stack ends at __libc_stack_end's page; nothing else is
// mapped in the 8 MiB below it (the kernel keeps its mmap area 128 MiB or
// more below the stack's top).
thread_local uintptr_t t_stack_lo, t_stack_hi;
constexpr uintptr_t k_main_stack = uintptr_t{8} << 20;

bool stack_range(uintptr_t sp, uintptr_t& hi) {
    if (sp >= t_stack_lo && sp < t_stack_hi) {
        hi = t_stack_hi;
        return true;
    }
    const uintptr_t end = (reinterpret_cast<uintptr_t>(__libc_stack_end) | 4095) + 1;
    if (sp < end && end - sp < k_main_stack) {
        hi = end;
        return true;
    }
    return false;
}

// ---- the memo (fast_unwind.hpp) ----

// The set of entries a first frame's pc and sp may be in: two ways, of
// which a miss replaces the one the set did not use last. (Direct-mapped,
// bench_requests' captures hit 99.9% in some runs and 83% in others: two
// of its sites, alternating, took one entry in the stack layout ASLR gave
// those. 128 entries: 64 hit 87.6%, and 256 no more.)
unsigned set_for(uintptr_t pc, uintptr_t sp) {
    static_assert(Memo::k_entries == 2 * Memo::k_sets && Memo::k_sets == 1 << 6);
    return static_cast<unsigned>(((pc ^ (sp >> 4)) * 0x9E3779B97F4A7C15ull) >> (64 - 6));
}

// Does the stack still hold what `e` read, from a start at pc, sp, fp on the
// stack [lo, hi)? Then its frames are e's. (The same sp: each word is read
// where the unwinding read it, inside [e.lowest_read, e.highest_cfa), which
// is checked against the stack once.)
__attribute__((always_inline)) inline bool replay(const Memo_entry& e, uint64_t generation, uintptr_t pc,
                                                  uintptr_t sp, uintptr_t fp, unsigned max, uintptr_t lo,
                                                  uintptr_t hi) {
    if (e.generation != generation || e.pc != pc || e.sp != sp || (e.fp_read && e.fp != fp) || e.max != max ||
        e.n > k_memo_frames || e.steps > e.n || e.fp_reads > e.steps || e.lowest_read < lo || e.highest_cfa > hi)
        return false;  // (the counts bounded whatever e holds)
    for (unsigned k = 0; k < e.steps; ++k)
        if (load(sp + static_cast<intptr_t>(e.ra_off[k])) != e.pcs[k + 1]) return false;
    for (unsigned k = 0; k < e.fp_reads; ++k)
        if (load(sp + static_cast<intptr_t>(e.fp_off[k])) != e.fp_val[k]) return false;
    return true;
}

// The way of `set` whose unwinding replays from the state pc, sp, fp (one
// with a tag, when `tagged_only`), or null. A hit is counted, and its way
// becomes the one the set used last.
__attribute__((always_inline)) inline const Memo_entry* replayed(Memo& memo, unsigned set,
                                                                 uint64_t generation, uintptr_t pc,
                                                                 uintptr_t sp, uintptr_t fp, unsigned max,
                                                                 uintptr_t lo, uintptr_t hi,
                                                                 bool tagged_only) {
    for (unsigned way = 0; way < 2; ++way) {
        const Memo_entry& e = memo.entries[2 * set + way];
        if ((tagged_only && !e.tag) || !replay(e, generation, pc, sp, fp, max, lo, hi)) continue;
        memo.recent[set] = static_cast<uint8_t>(way);
        ++memo.hits;
        return &e;
    }
    return nullptr;
}

// Replays the skipped frames of `e` from the state pc, sp, fp: true if the
// stack holds e's return addresses there, the last one (the program's
// first frame) outside [skip_lo, skip_hi); pc, sp, fp are then the state
// the skipping ends in.
bool replay_skip(const Memo_skip& e, uint64_t generation, uintptr_t& pc, uintptr_t& sp, uintptr_t& fp, uintptr_t lo,
                 uintptr_t hi, uintptr_t skip_lo, uintptr_t skip_hi) {
    if (e.generation != generation || e.pc != pc || e.n == 0 || e.n > k_max_skipped)
        return false;
    uintptr_t cfa = sp, next = pc, saved = fp;
    for (unsigned k = 0; k < e.n; ++k) {
        cfa = sp + e.cfa_off[k];
        const unsigned slot = e.slot[k] & k_slot_mask;
        if (cfa <= sp || cfa > hi || cfa - 8 * slot < lo) return false;  // (reads stay on the stack)
        next = load(cfa - 8);
        if (k + 1 < e.n ? next != e.pcs[k + 1] : (next >= skip_lo && next < skip_hi)) return false;
        if (slot) saved = load(cfa - 8 * slot);
    }
    pc = next;
    sp = cfa;
    fp = saved;
    return true;
}

// What an unwinding that writes an entry keeps of each step besides its
// return address's offset: the rbp it reloaded (slot 1-7: from CFA - 8 *
// slot; 0: none) and the word read there, compared on replay when a later
// rule read it (k_fp_used).
constexpr uint32_t k_fp_used = 8;
struct Recording {
    uint32_t slot[k_memo_frames];
    uintptr_t fp[k_memo_frames];
};

// An entry about to be written from the state pc, sp, fp.
void begin_entry(Memo_entry& e, uintptr_t pc, uintptr_t sp, uintptr_t fp, uintptr_t hi) {
    e.generation = 0;  // (valid once done)
    e.pc = pc;
    e.sp = sp;
    e.fp = fp;
    e.fp_read = false;
    e.lowest_read = hi;
    e.highest_cfa = sp;
    e.tag = 0;
    e.steps = 0;
    e.fp_reads = 0;
}

// Before a step by `rule`: the fp it reads (an rbp-based rule) is the
// entry's first, or the word the last step that reloaded it read, which
// replay must then compare (the others it need not: rbp is often just a
// register the program keeps a value in).
void note_fp_use(Memo_entry& e, Recording& rec, uint32_t rule, int reloaded_at) {
    if (rule >= k_outermost || !(rule & k_rbp_base)) return;
    if (reloaded_at < 0)
        e.fp_read = true;
    else
        rec.slot[reloaded_at] |= k_fp_used;
}

// Notes in `e` a step taken by `rule` to the state sp (the CFA), fp;
// `reloaded_at`, the last step that reloaded fp, -1 for none.
void note_step(Memo_entry& e, Recording& rec, uint32_t rule, uintptr_t sp, uintptr_t fp, int& reloaded_at) {
    const unsigned k = e.steps;
    e.ra_off[k] = static_cast<int32_t>(sp - 8 - e.sp);  // (end_entry checks that it fits)
    rec.slot[k] = rule & k_slot_mask;
    rec.fp[k] = fp;
    if (sp - 8 < e.lowest_read) e.lowest_read = sp - 8;
    if (rec.slot[k]) {
        reloaded_at = static_cast<int>(k);
        if (sp - 8 * rec.slot[k] < e.lowest_read) e.lowest_read = sp - 8 * rec.slot[k];
    }
    if (sp > e.highest_cfa) e.highest_cfa = sp;
    ++e.steps;
}

// The entry done: n frames, the last step having read pc; valid for the
// generation of rules the capture began with. The saved rbp words a later
// rule read join the words a replay compares.
void end_entry(Memo& memo, Memo_entry& e, const Recording& rec, uint64_t generation, unsigned max, unsigned n,
               uintptr_t pc) {
    // (Offsets that do not fit leave it invalid: CFAs only grow, and no read
    // is more than 56 bytes below the first sp.)
    if (e.highest_cfa - e.sp > INT32_MAX) return;
    for (unsigned k = 0; k < e.steps; ++k) {
        if (!(rec.slot[k] & k_fp_used)) continue;
        const uintptr_t cfa = e.sp + static_cast<intptr_t>(e.ra_off[k]) + 8;
        e.fp_off[e.fp_reads] = static_cast<int32_t>(cfa - 8 * (rec.slot[k] & k_slot_mask) - e.sp);
        e.fp_val[e.fp_reads++] = rec.fp[k];
    }
    e.max = static_cast<uint8_t>(max);
    e.n = static_cast<uint8_t>(n);
    e.pcs[n] = pc;
    e.generation = generation;
    memo.last = &e;
}

}  // namespace

int capture(uintptr_t* out, unsigned max, uintptr_t skip_lo, uintptr_t skip_hi, Memo* memo, uint64_t* tag,
            uintptr_t start_frame) {
    if (memo) {
        *tag = 0;
        memo->last = nullptr;
    }
    const uint64_t generation = g_generation.load(std::memory_order_acquire);
    std::atomic<uint64_t>* table = rules();
    if (!table) return -1;
    if (max == 0) return 0;
    // This frame has a frame pointer (taking its address makes one): the
    // caller's return address above it, the caller's rbp in it.
    const uintptr_t frame = reinterpret_cast<uintptr_t>(__builtin_frame_address(0));
    uintptr_t hi;
    if (!stack_range(frame, hi) || frame + 16 > hi) return -1;
    const uintptr_t lo = frame;  // nothing below this frame is read
    // The caller's frame to start from, when it named one on this stack
    // (one of its callers': the frames between are the allocator's).
    const bool start_here = start_frame > frame && start_frame <= hi - 16 && start_frame % 8 == 0;
    const uintptr_t from = start_here ? start_frame : frame;
    uintptr_t pc = load(from + 8);
    uintptr_t sp = from + 16;
    uintptr_t fp = load(from);
    // One frame up, from pc's rule.
    enum Step { up, stack_end, give_up };
    auto step = [&](const uint32_t rule) -> Step {
        static_assert(k_unsupported == k_outermost + 1);  // (the two largest: one test)
        if (__builtin_expect(rule >= k_outermost, 0)) return rule == k_outermost ? stack_end : give_up;
        const uintptr_t cfa = ((rule & k_rbp_base) ? fp : sp) + ((rule >> k_offset_shift) & 8191) * 8;
        // The CFA is above this frame's stack pointer (so above this
        // function's frame, where sp starts) and inside the stack, and so
        // is what is read below it.
        if (cfa <= sp || cfa > hi) return give_up;
        const uintptr_t next_pc = load(cfa - 8);
        if (uint32_t slot = rule & 7) {
            const uintptr_t at = cfa - slot * 8;
            if (at < lo) return give_up;
            fp = load(at);
        }
        sp = cfa;
        pc = next_pc;
        return up;
    };
    // The innermost return addresses inside [skip_lo, skip_hi): unwound, not
    // kept (those above the start frame: a traced allocation starts at the
    // allocator's entry, where there are none, or one or two when an entry
    // calls another). Through the memo, they are the same few call chains of
    // the allocator's, each from the same first frame, whatever the
    // program's frames above them (their own entries, every one tried).
    if (pc >= skip_lo && pc < skip_hi) {
        Memo_skip* noted = nullptr;  // the entry this unwinding is noted in
        if (memo && !memo->skip_hi) {  // the range the skip entries are for, from now on
            memo->skip_lo = skip_lo;
            memo->skip_hi = skip_hi;
        }
        if (memo && memo->skip_lo == skip_lo && memo->skip_hi == skip_hi) {
            for (const Memo_skip& e : memo->skips)
                if (replay_skip(e, generation, pc, sp, fp, lo, hi, skip_lo, skip_hi)) {
                    ++memo->skip_hits;
                    break;
                }
            if (pc >= skip_lo && pc < skip_hi) {  // (not replayed)
                noted = &memo->skips[memo->skip_next++ % Memo::k_skip_entries];  // the oldest makes room
                noted->generation = 0;  // (valid once done)
                noted->pc = pc;
            }
        }
        const uintptr_t sp0 = sp;
        bool relative = true;  // every rule from rsp, every CFA within 4 GiB of the first sp
        for (unsigned skipped = 0; pc >= skip_lo && pc < skip_hi;) {
            if (++skipped > k_max_skipped) return -1;
            const uint32_t rule = rule_for(table, pc);
            if (noted) noted->pcs[skipped - 1] = pc;
            const Step s = step(rule);
            if (s != up) return s == stack_end ? 0 : -1;
            if (noted) {
                relative &= !(rule & k_rbp_base) && sp - sp0 <= UINT32_MAX;
                noted->cfa_off[skipped - 1] = static_cast<uint32_t>(sp - sp0);
                noted->slot[skipped - 1] = static_cast<uint8_t>(rule & k_slot_mask);
                noted->n = skipped;
                if (!(pc >= skip_lo && pc < skip_hi) && relative) noted->generation = generation;
            }
        }
    }
    // The program's frames; through the memo when it can hold them.
    Memo_entry* noted = nullptr;
    unsigned noted_slot = 0;  // the entry `noted` goes into
    if (memo && max <= k_memo_frames && pc) {
        const unsigned set = set_for(pc, sp);
        if (const Memo_entry* e = replayed(*memo, set, generation, pc, sp, fp, max, lo, hi, false)) {
            // Tagged, the frames are the caller's already (it tagged them).
            // (A loop, not memcpy's rep movs: the caller reads them at once,
            // and a load waits for a string store to retire.)
            if (!e->tag)
                for (unsigned i = 0; i < e->n; ++i) out[i] = e->pcs[i];
            *tag = e->tag;
            return static_cast<int>(e->n);
        }
        // A miss unwinds into the scratch entry, copied into a way once it
        // is done: an unwinding that gives up (a frame without CFI) takes
        // no way from a stack that replays. The way: one that holds nothing
        // valid, else the one the set did not use last.
        const Memo_entry* ways = &memo->entries[2 * set];
        const unsigned way = ways[0].generation != generation   ? 0
                             : ways[1].generation != generation ? 1
                                                                : (memo->recent[set] & 1) ^ 1;
        noted_slot = 2 * set + way;
        noted = &memo->scratch;
        begin_entry(*noted, pc, sp, fp, hi);
    }
    int reloaded_at = -1;
    unsigned n = 0;
    Recording rec;  // (written only for steps taken)
    while (n < max && pc) {
        if (noted) noted->pcs[n] = pc;
        out[n++] = pc;
        const uint32_t rule = rule_for(table, pc);
        if (noted) note_fp_use(*noted, rec, rule, reloaded_at);
        const Step s = step(rule);
        if (s == give_up) return -1;
        if (s == stack_end) break;
        if (noted) note_step(*noted, rec, rule, sp, fp, reloaded_at);
    }
    if (noted) {
        end_entry(*memo, *noted, rec, generation, max, n, pc);
        if (memo->last == noted) {  // (else left invalid: an offset too far)
            memo->entries[noted_slot] = *noted;
            memo->last = &memo->entries[noted_slot];
            memo->recent[noted_slot / 2] = static_cast<uint8_t>(noted_slot & 1);
        }
    }
    return static_cast<int>(n);
}

uint64_t replay_tag(Memo& memo, unsigned max, uintptr_t skip_lo, uintptr_t skip_hi, uintptr_t start_frame) {
    // capture's start and its memo's test, for a start frame it would take.
    const uintptr_t frame = reinterpret_cast<uintptr_t>(__builtin_frame_address(0));
    uintptr_t hi;
    if (max == 0 || max > k_memo_frames || !stack_range(frame, hi) || frame + 16 > hi) return 0;
    if (start_frame <= frame || start_frame > hi - 16 || start_frame % 8 != 0) return 0;
    const uintptr_t pc = load(start_frame + 8);
    if (pc == 0 || (pc >= skip_lo && pc < skip_hi)) return 0;
    const uintptr_t sp = start_frame + 16;
    const uintptr_t fp = load(start_frame);
    const uint64_t generation = g_generation.load(std::memory_order_acquire);
    const Memo_entry* e = replayed(memo, set_for(pc, sp), generation, pc, sp, fp, max, frame, hi, true);
    if (!e) return 0;
    memo.last = nullptr;  // (as capture leaves it: nothing to remember)
    return e->tag;
}

void remember(Memo& memo, uint64_t tag) {
    if (memo.last) memo.last->tag = tag;
    memo.last = nullptr;
}

void note_thread_stack(uintptr_t lo, uintptr_t hi) {
    const uintptr_t here = reinterpret_cast<uintptr_t>(__builtin_frame_address(0));
    if (here < lo || here >= hi) return;  // not what it seems: libunwind's
    t_stack_lo = lo;
    t_stack_hi = hi;
}

void forget_rules() {
    if (std::atomic<uint64_t>* table = g_rules.load(std::memory_order_acquire))
        for (size_t i = 0; i < k_slots; ++i) table[i].store(0, std::memory_order_relaxed);
    // After: a capture that reads the new generation finds no old rule.
    g_generation.fetch_add(1, std::memory_order_release);
}

Stats stats() {
    return Stats{g_computed.load(std::memory_order_relaxed), g_unsupported.load(std::memory_order_relaxed)};
}

}  // namespace zmm::fast_unwind
