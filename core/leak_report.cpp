#include "leak_report.hpp"

#include <algorithm>

#include "format.hpp"
#include "os.hpp"
#include "stack_depot.hpp"
#include "symbolize.hpp"

namespace zmm {
namespace {

struct Group {
    size_t first;  // index of its first leak (lowest address) in the sorted array
    size_t blocks;
    uint64_t bytes;
};

// JSON string body, escaped.
void json_string(Text& t, const char* s) {
    t.chr('"');
    for (; *s; ++s) {
        unsigned char c = static_cast<unsigned char>(*s);
        if (c == '"' || c == '\\') {
            t.chr('\\').chr(static_cast<char>(c));
        } else if (c < 0x20) {
            static const char hexd[] = "0123456789abcdef";
            t.str("\\u00").chr(hexd[c >> 4]).chr(hexd[c & 15]);
        } else {
            t.chr(static_cast<char>(c));
        }
    }
    t.chr('"');
}

}  // namespace

void write_frames(Text& t, uint32_t stack) {
    stack_depot::Frame frames[stack_depot::k_max_frames];
    unsigned n = stack_depot::get(stack, frames, stack_depot::k_max_frames);
    if (n == 0) {
        t.str("    (no backtrace: ZMM_BACKTRACE=0)\n");
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

namespace {

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

size_t group_leaks(Leak* leaks, size_t count, Group* groups) {
    std::sort(leaks, leaks + count, [](const Leak& a, const Leak& b) {
        return a.stack != b.stack ? a.stack < b.stack : a.address < b.address;
    });
    size_t n = 0;
    for (size_t i = 0; i < count; ++i) {
        // Without backtraces (stack 0) every block is its own group.
        if (i == 0 || leaks[i].stack != leaks[i - 1].stack || leaks[i].stack == 0)
            groups[n++] = Group{i, 0, 0};
        groups[n - 1].blocks++;
        groups[n - 1].bytes += leaks[i].size;
    }
    std::sort(groups, groups + n, [&](const Group& a, const Group& b) {
        return a.bytes != b.bytes ? a.bytes > b.bytes : leaks[a.first].address < leaks[b.first].address;
    });
    return n;
}

}  // namespace

Leak_totals leak_totals(const Leak* leaks, size_t count) {
    Leak_totals t{count, 0, 0};
    for (size_t i = 0; i < count; ++i) t.bytes += leaks[i].size;
    return t;
}

void write_leak_report(int fd, const Request_summary& r, Leak* leaks, size_t count, bool always) {
    if (count == 0 && !always) return;
    Group* groups = nullptr;
    size_t groups_bytes = count * sizeof(Group);
    if (count) {
        groups = static_cast<Group*>(os::map(groups_bytes));
        if (!groups) return;
    }
    size_t n = count ? group_leaks(leaks, count, groups) : 0;
    Leak_totals totals = leak_totals(leaks, count);
    const char* name = r.name ? r.name : "";
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
        t.str(",\"duration_ns\":").dec(r.duration_ns).str(",\"leaks\":").dec(totals.blocks)
            .str(",\"leaked_bytes\":").dec(totals.bytes).str(",\"groups\":[");
        for (size_t g = 0; g < n; ++g) {
            const Group& gr = groups[g];
            if (g) t.chr(',');
            t.str("{\"blocks\":").dec(gr.blocks).str(",\"bytes\":").dec(gr.bytes).str(",\"blocks_at\":[");
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
        t.str("zmm: request ").dec(r.id).str(" '").str(name).str("' (pid ").dec(static_cast<uint64_t>(r.pid))
            .str(", tid ").dec(static_cast<uint64_t>(r.tid)).str(") ended: ").dec(totals.blocks)
            .str(totals.blocks == 1 ? " leak, " : " leaks, ").dec(totals.bytes).str(" bytes; peak ")
            .bytes_human(r.peak).chr('\n');
        for (size_t g = 0; g < n; ++g) {
            const Group& gr = groups[g];
            const Leak& first = leaks[gr.first];
            t.str("Freeing ").hex(first.address).str(" (").dec(first.size).str(" bytes): ").dec(gr.blocks)
                .str(gr.blocks == 1 ? " block, " : " blocks, ").dec(gr.bytes).str(" bytes, allocated at:\n");
            write_frames(t, first.stack);
        }
        if (totals.blocks) t.str("=== Total ").dec(totals.blocks).str(" memory leaks detected ===\n");
    }
    t.flush(fd);
    if (groups) os::unmap(groups, groups_bytes);
}

}  // namespace zmm
