#include "leak_report.hpp"

#include <algorithm>
#include <time.h>

#include "backtrace.hpp"
#include "diag.hpp"
#include "format.hpp"
#include "os.hpp"
#include "stack_depot.hpp"
#include "suppressions.hpp"
#include "symbolize.hpp"

namespace zmm {
namespace {
bool is_continuation(unsigned char c) { return (c & 0xc0) == 0x80; }

// The length of the well-formed UTF-8 sequence at s (1-4), or 0.
unsigned utf8_length(const unsigned char* s) {
    const unsigned char c = s[0];
    if (c < 0x80) return 1;
    if (c < 0xc2 || c > 0xf4) return 0;  // a continuation, an overlong lead, past U+10FFFF
    if (c < 0xe0) return is_continuation(s[1]) ? 2 : 0;
    if (c < 0xf0) {
        const unsigned char lo = c == 0xe0 ? 0xa0 : 0x80, hi = c == 0xed ? 0x9f : 0xbf;  // overlong; surrogates
        return s[1] >= lo && s[1] <= hi && is_continuation(s[2]) ? 3 : 0;
    }
    const unsigned char lo = c == 0xf0 ? 0x90 : 0x80, hi = c == 0xf4 ? 0x8f : 0xbf;
    return s[1] >= lo && s[1] <= hi && is_continuation(s[2]) && is_continuation(s[3]) ? 4 : 0;
}
}  // namespace

void printable(Text& t, const char* s) {
    for (; *s; ++s) t.chr(static_cast<unsigned char>(*s) < 0x20 || *s == 0x7f ? '?' : *s);
}

// JSON string, escaped; a byte that is not part of well-formed UTF-8 (a
// request name is the program's bytes) becomes U+FFFD, so that every line
// parses.
void json_string(Text& t, const char* s) {
    t.chr('"');
    const auto* u = reinterpret_cast<const unsigned char*>(s);
    while (*u) {
        const unsigned char c = *u;
        if (c == '"' || c == '\\') {
            t.chr('\\').chr(static_cast<char>(c));
        } else if (c < 0x20) {
            static const char hexd[] = "0123456789abcdef";
            t.str("\\u00").chr(hexd[c >> 4]).chr(hexd[c & 15]);
        } else if (const unsigned n = utf8_length(u); n == 0) {
            t.str("\\ufffd");
        } else {
            for (unsigned i = 0; i < n; ++i) t.chr(static_cast<char>(u[i]));
            u += n;
            continue;
        }
        ++u;
    }
    t.chr('"');
}

namespace {

struct Group {
    size_t first;  // index of its first leak (lowest address) in the sorted array
    size_t blocks;
    uint64_t bytes;
};

}  // namespace

void write_frames(Text& t, uint32_t stack) {
    stack_depot::Frame frames[stack_depot::k_max_frames];
    unsigned n = stack_depot::get(stack, frames, stack_depot::k_max_frames);
    if (n == 0) {
        t.str(backtrace::prepared() ? "    (no backtrace: the stack could not be unwound)\n"
                                    : "    (no backtrace: ZMM_BACKTRACE=0)\n");
        return;
    }
    for (unsigned i = 0; i < n; ++i) {
        symbolize::Location loc;
        symbolize::locate(frames[i], loc);
        t.str("    #").dec(i).chr(' ').hex(frames[i].pc);
        if (loc.function[0]) t.str(" in ").str(loc.function);
        if (loc.file[0]) t.chr(' ').str(loc.file).chr(':').dec(loc.line);
        t.str(" (").str(loc.module_name).str("+").hex(loc.offset).str(")\n");
    }
}

void json_frames(Text& t, uint32_t stack) {
    stack_depot::Frame frames[stack_depot::k_max_frames];
    unsigned n = stack_depot::get(stack, frames, stack_depot::k_max_frames);
    t.str("\"frames\":[");
    for (unsigned i = 0; i < n; ++i) {
        symbolize::Location loc;
        symbolize::locate(frames[i], loc);
        if (i) t.chr(',');
        t.str("{\"pc\":\"").hex(frames[i].pc).str("\",\"function\":");
        json_string(t, loc.function);
        t.str(",\"file\":");
        json_string(t, loc.file);
        t.str(",\"line\":").dec(loc.line).str(",\"module\":");
        json_string(t, loc.module_name);
        t.str(",\"offset\":\"").hex(loc.offset).str("\"}");
    }
    t.chr(']');
}

namespace {

size_t group_leaks(Leak* leaks, size_t count, Group* groups) {
    // One group per backtrace and kind (a lost list's head is definitely
    // lost, its other nodes, from the same line, indirectly).
    std::sort(leaks, leaks + count, [](const Leak& a, const Leak& b) {
        if (a.stack != b.stack) return a.stack < b.stack;
        if (a.kind != b.kind) return a.kind > b.kind;
        return a.address < b.address;
    });
    size_t n = 0;
    for (size_t i = 0; i < count; ++i) {
        // Without backtraces (stack 0) every block is its own group.
        if (i == 0 || leaks[i].stack != leaks[i - 1].stack || leaks[i].kind != leaks[i - 1].kind ||
            leaks[i].stack == 0)
            groups[n++] = Group{i, 0, 0};
        groups[n - 1].blocks++;
        groups[n - 1].bytes += leaks[i].size;
    }
    std::sort(groups, groups + n, [&](const Group& a, const Group& b) {
        return a.bytes != b.bytes ? a.bytes > b.bytes : leaks[a.first].address < leaks[b.first].address;
    });
    return n;
}

// How the text report (`name`) and the JSON (`key`) call each kind, by
// Leak_kind's value.
struct Kind_words {
    const char* name;
    const char* key;
};
constexpr Kind_words k_kind_words[] = {
    {"live", "live"},                   // live: no scan ran
    {"still reachable", "reachable"},   // reachable
    {"indirectly lost", "indirect"},    // indirect
    {"definitely lost", "definite"},    // definite
    {"gone", "gone"},                   // gone: freed before the scan
};
static_assert(sizeof k_kind_words / sizeof k_kind_words[0] == static_cast<unsigned>(Leak_kind::gone) + 1,
              "a name for every Leak_kind");
const Kind_words& words_of(Leak_kind k) { return k_kind_words[static_cast<unsigned>(k)]; }

}  // namespace

size_t write_leak_report(int fd, const Request_summary& r, Leak* leaks, size_t count, bool always) {
    // The leaks first (lost or, without a scan, live; not reported before);
    // still-reachable blocks are only counted.
    size_t m = 0, reachable = 0;
    uint64_t reachable_bytes = 0;
    for (size_t i = 0; i < count; ++i) {
        const Leak& l = leaks[i];
        if (l.kind == Leak_kind::gone) continue;  // freed before the scan
        if (l.kind == Leak_kind::reachable) {
            ++reachable;
            reachable_bytes += l.size;
        } else if (!l.reported) {
            Leak t = leaks[m];
            leaks[m++] = l;
            leaks[i] = t;
        }
    }
    Group* groups = nullptr;
    size_t groups_bytes = m * sizeof(Group);
    if (m) {
        groups = static_cast<Group*>(os::map_unzeroed(groups_bytes));
        if (!groups) return m;
    }
    size_t n = m ? group_leaks(leaks, m, groups) : 0;
    // Suppressed groups leave the list; they are counted.
    suppressions::load(r.suppressions);
    size_t kept = 0, suppressed = 0, suppressed_groups = 0;
    uint64_t suppressed_bytes = 0;
    for (size_t g = 0; g < n; ++g) {
        if (suppressions::match(leaks[groups[g].first].stack)) {
            suppressed += groups[g].blocks;
            suppressed_bytes += groups[g].bytes;
            ++suppressed_groups;
        } else {
            groups[kept++] = groups[g];
        }
    }
    n = kept;
    struct {
        size_t blocks, bytes;
    } totals{0, 0};
    for (size_t g = 0; g < n; ++g) {
        totals.blocks += groups[g].blocks;
        totals.bytes += groups[g].bytes;
    }
    if (totals.blocks == 0 && !always && !r.json) {
        if (groups) os::unmap(groups, groups_bytes);
        return 0;
    }
    const char* name = r.name ? r.name : "";
    const bool opens_file = fd == k_report_file;
    if (opens_file) fd = report_open();
    Text t;
    t.set_fd(fd);
    if (r.json) {
        t.str("{\"request\":").dec(r.id).str(",\"name\":");
        json_string(t, name);
        t.str(",\"pid\":").dec(static_cast<uint64_t>(r.pid)).str(",\"tid\":").dec(static_cast<uint64_t>(r.tid))
            .str(",\"usage\":").dec(r.usage).str(",\"peak\":").dec(r.peak).str(",\"real_usage\":").dec(r.real_usage)
            .str(",\"real_peak\":").dec(r.real_peak).str(",\"limit\":");
        if (r.limit == SIZE_MAX)
            t.str("null");
        else
            t.dec(r.limit);
        timespec now{};
        clock_gettime(CLOCK_REALTIME, &now);
        t.str(",\"time_ns\":").dec(static_cast<uint64_t>(now.tv_sec) * 1'000'000'000u + static_cast<uint64_t>(now.tv_nsec));
        t.str(",\"duration_ns\":").dec(r.duration_ns).str(",\"leaks\":").dec(totals.blocks)
            .str(",\"leaked_bytes\":").dec(totals.bytes).str(",\"reachable\":").dec(reachable)
            .str(",\"reachable_bytes\":").dec(reachable_bytes).str(",\"suppressed\":").dec(suppressed)
            .str(",\"suppressed_bytes\":").dec(suppressed_bytes).str(",\"suppressed_groups\":").dec(suppressed_groups)
            .str(",\"scan\":");
        if (r.scan.failed)
            t.str("{\"failed\":true}");
        else if (r.scan.ran)
            t.str("{\"ns\":").dec(r.scan.ns).str(",\"bytes\":").dec(r.scan.bytes).str(",\"threads\":")
                .dec(r.scan.threads).str(",\"threads_missed\":").dec(r.scan.threads_missed).chr('}');
        else
            t.str("null");
        t.str(",\"groups\":[");
        for (size_t g = 0; g < n; ++g) {
            const Group& gr = groups[g];
            if (g) t.chr(',');
            t.str("{\"kind\":\"").str(words_of(leaks[gr.first].kind).key).str("\",\"blocks\":").dec(gr.blocks)
                .str(",\"bytes\":").dec(gr.bytes).str(",\"blocks_at\":[");
            for (size_t i = 0; i < gr.blocks; ++i) {
                const Leak& l = leaks[gr.first + i];
                if (i) t.chr(',');
                t.str("{\"address\":\"").hex(l.address).str("\",\"size\":").dec(l.size).chr('}');
            }
            t.str("],");
            json_frames(t, leaks[gr.first].stack);
            t.chr('}');
        }
        t.str("]}\n");
    } else {
        t.str("zmm: request ").dec(r.id).str(" '");
        printable(t, name);
        t.str("' (pid ").dec(static_cast<uint64_t>(r.pid))
            .str(", tid ").dec(static_cast<uint64_t>(r.tid)).str(") ended: ").dec(totals.blocks)
            .str(totals.blocks == 1 ? " leak, " : " leaks, ").dec(totals.bytes).str(" bytes; peak ")
            .bytes_human(r.peak).chr('\n');
        for (size_t g = 0; g < n; ++g) {
            const Group& gr = groups[g];
            const Leak& first = leaks[gr.first];
            t.str("Freeing ").hex(first.address).str(" (").dec(first.size).str(" bytes): ").dec(gr.blocks)
                .str(gr.blocks == 1 ? " block, " : " blocks, ").dec(gr.bytes).str(" bytes");
            if (first.kind != Leak_kind::live) t.str(", ").str(words_of(first.kind).name);
            t.str(", allocated at:\n");
            write_frames(t, first.stack);
        }
        if (totals.blocks) t.str("=== Total ").dec(totals.blocks).str(" memory leaks detected ===\n");
        if (reachable || suppressed) {
            t.str("zmm: request ").dec(r.id).str(": ");
            if (reachable) t.dec(reachable).str(reachable == 1 ? " block" : " blocks").str(" (").dec(reachable_bytes)
                .str(" bytes) still reachable");
            if (reachable && suppressed) t.str("; ");
            if (suppressed) t.dec(suppressed).str(suppressed == 1 ? " block" : " blocks").str(" (")
                .dec(suppressed_bytes).str(" bytes) in ").dec(suppressed_groups)
                .str(suppressed_groups == 1 ? " group" : " groups").str(" suppressed");
            t.chr('\n');
        }
        if (r.scan.failed)
            t.str("zmm: request ").dec(r.id)
                .str(": the leak scan could not run (no memory, or no descriptor for /proc/self/maps): every live "
                     "block is listed\n");
        if (r.scan.threads_missed)
            t.str("zmm: request ").dec(r.id).str(": ").dec(r.scan.threads_missed)
                .str(" threads block zmm's stop signal: their stacks were read while they ran\n");
    }
    t.flush(fd);
    if (opens_file) report_close(fd);
    if (groups) os::unmap(groups, groups_bytes);
    return totals.blocks;
}

}  // namespace zmm
