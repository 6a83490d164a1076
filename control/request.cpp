#include "request.hpp"

#include "process_request.hpp"
#include "reentry.hpp"
#include "request_internal.hpp"

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <new>
#include <unistd.h>

#include "backtrace.hpp"
#include "diag.hpp"
#include "format.hpp"
#include "heap_pool.hpp"
#include "leak_scan.hpp"
#include "leak_report.hpp"
#include "options.hpp"
#include "os.hpp"
#include "stack_depot.hpp"
#include "symbolize.hpp"
#include "thread_heap.hpp"

namespace zmm {

std::atomic<uint64_t> g_next_id{0};
std::atomic<uint64_t> g_leaky_requests{0};

namespace {

Request* new_record() {
    void* mem = os::map(sizeof(Request));
    if (!mem) return nullptr;
    Request* r = new (mem) Request{};
    r->avg_chunks = 1.0;
    return r;
}

}  // namespace

size_t thread_limit() { return t_state.limit_set ? t_state.limit : options().memory_limit; }

namespace {

struct Collect_context {
    Request* request;
    Leak_list* leaks;
    bool with_carried;  // carried blocks found by the walk are listed too
    size_t own_bytes;  // in the request's own blocks listed
    bool dropped;      // a block the list could not take (no memory)
};

// An untraced request's live block: carried from an earlier request (in the
// table), or the request's own.
void collect_leak(void* ctx, void* block, size_t rounded) {
    auto* c = static_cast<Collect_context*>(ctx);
    Leak l{reinterpret_cast<uintptr_t>(block), rounded, 0, Leak_kind::live, false};
    // Only a block that may be carried needs the lookup, and only to list it.
    const Heap::Carried_mark mark = Heap::carried_mark(block);
    if (mark == Heap::k_carried && !c->with_carried) return;
    const Block_info* info = mark != Heap::k_not_carried ? c->request->table.find(l.address) : nullptr;
    if (info && (info->flags & k_block_carried)) {
        if (!c->with_carried) return;  // reported, or counted, by the request that left it (or listed from the table)
        l.size = info->size;
        l.reported = info->flags & k_block_reported;
    } else {
        c->own_bytes += rounded;
    }
    if (!c->leaks->push(l)) c->dropped = true;
}

// Appends the request's live blocks to `leaks`: with a table, each one not
// the C runtime's (and, unless `rescan`, not reported before: those are then
// marked reported); without, every live block of the heap, less those
// carried from earlier requests unless `rescan`. With `skip_lost` (a
// thread's own request, whose scan leaves its heap's lost blocks out:
// leak_scan::Own_heap) a rescan leaves out the carried blocks found lost by
// an earlier scan (k_block_lost; their number grows with every leaky
// request). false when the list could not take every block (no memory).
bool gather_live_blocks(Request& r, Leak_list* leaks, bool rescan, bool skip_lost) {
    bool complete = true;
    auto push = [&](const Leak& l) { complete &= leaks->push(l); };
    if (!r.traced) {
        // Without the rescan only the request's own blocks are wanted from
        // the walk (with skip_lost the carried ones come from the table,
        // below): it skips the runs that cannot hold one (unless a carried
        // block is missing from the table). They add up to the request's
        // usage. Should they fall short with no free of another thread's or
        // a signal handler's waiting (one that came during the walk: its
        // block looked free, its bytes are still counted), or exceed it,
        // the per-bin counts are wrong: the whole heap is walked.
        const bool walk_carried = rescan && !skip_lost;
        size_t before = leaks->count;
        Collect_context ctx{&r, leaks, walk_carried, 0, false};
        const bool own_runs = !walk_carried && !r.heap->carried_untracked;
        r.heap->for_each_live_block(collect_leak, &ctx, own_runs);
        const size_t usage = r.heap->size_in_request();
        if (own_runs && !(ctx.own_bytes == usage || (ctx.own_bytes < usage && r.heap->has_remote()))) {
            leaks->count = before;
            ctx.own_bytes = 0;
            ctx.dropped = false;
            r.heap->for_each_live_block(collect_leak, &ctx);
        }
        complete = !ctx.dropped;
        if (rescan && skip_lost && r.carried_candidates) {
            size_t n = 0;
            r.table.for_each([&](const Block_info& b) {
                if ((b.flags & k_block_carried) && !(b.flags & k_block_lost)) {
                    push(Leak{b.address, b.size, 0, Leak_kind::live, (b.flags & k_block_reported) != 0});
                    ++n;
                }
            });
            r.carried_candidates = n;
        }
        return complete;
    }
    r.table.for_each_mutable([&](Block_info& b) {
        if (b.flags & k_block_runtime) return;
        bool reported = b.flags & k_block_reported;
        if (reported && !rescan) return;
        if (skip_lost && (b.flags & k_block_lost)) return;
        push(Leak{b.address, b.size, b.stack, Leak_kind::live, reported});
        if (!rescan) b.flags |= k_block_reported;
    });
    return complete;
}

// Carried blocks an untraced request heap keeps before they go to the
// thread's heap (end_on_thread): 16384 cost an end about 0.7 ms.
constexpr size_t k_carried_merge = 16384;

// The request heap's blocks and chunks go into the thread's own heap: still
// valid, no longer tracked (reported or counted already); `h` starts empty.
void merge_into_thread_heap(Heap& h, Heap& persistent) {
    if (h.blocks) h.blocks->clear();
    h.blocks = nullptr;
    h.merge_into(persistent);
}

// An untraced request's own live blocks (leaks[from..]), carried from now on:
// into the table, their pages' frees made slow. Reported ones are those
// every live block is (ZMM_LEAKS=all); with the scan, end_on_thread marks
// the lost ones after classifying.
void carry_new_blocks(Request& r, Leak_list& leaks, size_t from, bool rescan) {
    for (size_t i = from; i < leaks.count; ++i) {
        const Leak& l = leaks.items[i];
        if (l.reported) continue;
        uint32_t flags = k_block_carried | (rescan ? 0 : k_block_reported);
        void* block = reinterpret_cast<void*>(l.address);
        if (Block_info* b = r.table.find(l.address)) {  // ZMM_DEBUG's entry (its requested size), or carried
            if (!(b->flags & k_block_carried)) {
                if (!(b->flags & k_block_lost)) r.carried_candidates += rescan;
                b->flags |= flags;
                r.heap->mark_carried(block);
            }
            continue;
        }
        if (r.table.insert(Block_info{l.address, l.size, 0, flags})) {
            r.carried_candidates += rescan;
            r.heap->mark_carried(block);
        } else {
            r.heap->carried_untracked = true;
        }
    }
}

// A request heap an earlier owner of the thread's heap `p` left retired in
// it (merged at that thread's exit: no chunk in use, its empty ones kept),
// for this thread's requests: one per heap, not one per thread that ever
// held it (3.4 KiB each, and every drain walked them all).
Heap* reusable_request_heap(Heap& p) {
    for (Heap* r = p.retired; r; r = r->retired_next) {
        if (r->owner.load(std::memory_order_relaxed) != thread_token()) continue;  // (acquire gave them all to us)
        if (r->chunks || r->huge || r->request || r->blocks) continue;
        t_state.request_heap = r;
        return r;
    }
    return nullptr;
}
}  // namespace

Request* begin_on_thread(const char* name, bool process_wide) {
    Heap* p = persistent_heap();
    if (!p) return nullptr;
    Request* r = t_state.spare ? t_state.spare : new_record();
    if (!r) return nullptr;
    t_state.spare = r;
    Heap* h = t_state.request_heap;
    if (!h) h = reusable_request_heap(*p);
    if (!h) {
        h = heap_pool::new_request_heap(thread_token());
        if (!h) return nullptr;
        t_state.request_heap = h;
        // Retired into the thread's heap for good: late remote frees pushed
        // onto it are drained with the thread's own, and it moves with the
        // thread's heap to the pool at thread exit.
        h->retired_next = p->retired;
        p->retired = h;
    } else if (h->remote.load(std::memory_order_relaxed)) {
        h->drain_remote();  // blocks of the last request, merged since
    }
    h->reset_for_request(thread_limit());
    h->chunk_source = p;
    // A share of a process-wide request takes that request's id (join).
    r->id = process_wide ? 0 : g_next_id.fetch_add(1, std::memory_order_relaxed) + 1;
    size_t len = name ? strnlen(name, sizeof r->name - 1) : 0;
    if (len) memcpy(r->name, name, len);
    r->name[len] = 0;
    r->heap = h;
    r->process_wide = process_wide;
    r->generation = t_state.process_generation;
    r->tid = os::thread_id();
    r->begin_ns = os::monotonic_ns();
    r->traced = options().backtrace > 0 && backtrace::prepared();
    r->direct = r->traced && !options().debug;
    // A request heap keeps what earlier requests leaked and its warm chunks.
    // Traced, every block is in its table; untraced, the table holds the
    // blocks carried from earlier requests (k_block_carried), whose frees
    // take the slow path (Heap::mark_carried) and so leave it. (Merged into
    // the thread's heap instead, each leaky request's chunk would stay there:
    // a new 2 MiB chunk per request.)
    h->blocks = &r->table;
    h->table_only_carried = !r->traced && !options().debug;
    h->request = r;
    std::atomic_signal_fence(std::memory_order_seq_cst);  // (a signal handler's call finds the request whole)
    t_state.request = r;
    t_heap = r->traced ? &g_empty_heap : fast_path_heap(h);
    return r;
}

long end_on_thread(Leak_list* into, Share_totals* totals) {
    Request* r = t_state.request;
    if (!r) return -1;
    os::Errno_keeper keep_errno;  // (the scan's and the report's system calls)
    Heap* h = r->heap;
    Heap* p = t_state.persistent;
    // From here the thread allocates from its own heap again; the report's
    // own allocations (symbol names) are persistent.
    t_state.request = nullptr;
    t_heap = fast_path_heap(p);
    Depth_guard guard;
    Leak_list own;
    Leak_list* leaks = into ? into : &own;
    size_t before = leaks->count;
    const Options& o = options();
    // ZMM_LEAKS=lost reads, at a request's end, every block the heap holds
    // for it, earlier requests' too: a cache filled before is still
    // reachable now, or was dropped (lost) during this one. What is found
    // lost is marked reported below (a request of its own) or when the
    // thread next joins a process-wide request (process_request::join).
    const bool rescan = o.leaks == Leaks_mode::lost;
    bool listed_all = true;
    {
        // The heap changes (remote frees drained): a scan's stop waits until
        // this is done, never while the report runs (the scan itself).
        Busy_section busy;
        h->drain_remote();
        listed_all = gather_live_blocks(*r, leaks, rescan, !into);
        if (!r->traced && !o.reclaim) carry_new_blocks(*r, *leaks, before, rescan);
    }
    long leaked = static_cast<long>(leaks->count - before);
    size_t usage = h->size_in_request(), peak = h->peak_in_request();
    size_t real = h->real_in_request(), real_peak = h->real_peak_in_request();
    if (totals) {
        totals->usage += usage;
        totals->peak += peak;
        totals->real_usage += real;
        totals->real_peak += real_peak;
    }
    if (!into) {
        Request_summary s{r->id, r->name, static_cast<int>(os::process_id()), r->tid, usage, peak, real,
                          real_peak, h->limit, os::monotonic_ns() - r->begin_ns, o.log_format == Log_format::json, {},
                          o.suppressions.text};
        // The scan leaves the request's lost blocks out. Untraced, every
        // other live block of its heap is a candidate (unless the list
        // missed one): the heap is not read at all. Traced, the C runtime's
        // blocks are roots.
        leak_scan::Own_heap own_heap{h, !r->traced && listed_all, 0};
        if (rescan) s.scan = leak_scan::classify(own.items, own.count, &own_heap);
        r->carried_candidates += own_heap.found_again;
        if (o.leaks != Leaks_mode::none) {
            symbolize::prepare(options().symbolizer.text);
            Tool_scope tool;  // symbolizing allocates: zmm's memory, not the program's
            leaked = static_cast<long>(write_leak_report(k_report_file, s, own.items, own.count, o.stats));
        }
        if (rescan) {
            // What this request found lost is reported once; what a scan
            // that ran found lost leaves the next scans (k_block_lost).
            const uint32_t flags = k_block_reported | (s.scan.ran ? k_block_lost : 0);
            for (size_t i = 0; i < own.count; ++i) {
                const Leak& l = own.items[i];
                if (!is_listed_leak(l.kind)) continue;
                if (Block_info* b = r->table.find(l.address)) {
                    if ((flags & k_block_lost) && (b->flags & k_block_carried) && !(b->flags & k_block_lost) &&
                        r->carried_candidates)
                        --r->carried_candidates;
                    b->flags |= flags;
                }
            }
        }
        if (leaked) g_leaky_requests.fetch_add(1, std::memory_order_relaxed);
        own.release();
    }
    Busy_section tail;  // the heap changes again
    // A traced request's live blocks are in its table already: carried
    // from now on, so that their frees and in-place reallocs in a later
    // request leave that request's usage and peak (Heap::forget and
    // Heap::realloc read the flag; the table forgets them at their free,
    // which a traced heap's frees all ask, so no page is marked).
    if (r->traced && !o.reclaim) r->table.for_each_mutable([](Block_info& b) { b.flags |= k_block_carried; });
    size_t peak_chunks = (h->real_peak_in_request() + k_chunk_size - 1) / k_chunk_size;
    if (options().reclaim) {
        h->release_blocks();
        r->table.clear();
    } else if (!r->traced && r->table.size() > k_carried_merge) {
        // Each end walks the heap's live blocks, a table lookup apiece for
        // the carried ones: past this many, they go to the thread's own heap
        // (valid, no longer classified) and the request heap starts empty.
        // Chunks left there: a few per k_carried_merge carried blocks, not
        // one per leaky request.
        merge_into_thread_heap(*h, *p);
        p->collect_runs_if_grown();
    } else {
        h->collect_runs_if_grown();
    }
    // ZendMM's chunk cache: keep about the average number of chunks recent
    // requests needed (avg = (avg + peak) / 2; cached while cached + 0.9 < avg).
    r->avg_chunks = (r->avg_chunks + static_cast<double>(peak_chunks)) / 2;
    double keep = r->avg_chunks - 0.9;
    h->trim_cache(keep > 0 ? static_cast<size_t>(keep) + 1 : 1);
    // The table stays attached while it holds carried blocks: their frees,
    // from any context, must forget them.
    if (options().reclaim) h->blocks = nullptr;
    h->request = nullptr;
    return leaked;
}

// ============================================================================
// API
// ============================================================================

int request_begin(const char* name) {
    if (bypassed() || t_state.request) return -1;
    os::Errno_keeper keep_errno;  // (loading libunwind)
    if (options().backtrace > 0) backtrace::prepare(options().fast_unwind);  // outside the allocator: may load libunwind
    Busy_section busy;  // the heaps change
    Request* r = begin_on_thread(name, false);
    if (!r) return -1;
    int id = static_cast<int>(r->id & 0x7fffffff);
    return id ? id : 1;
}

long request_end() {
    if (!t_state.request || t_state.request->process_wide) return -1;
    return end_on_thread(nullptr, nullptr);
}

namespace {
// The current request's figure (net of what earlier requests left in its
// heap), or the process's when none is open.
size_t usage_figure(bool real, bool peak) {
    if (bypassed()) return 0;
    if (Request* r = t_state.request) {
        Heap* h = r->heap;
        if (real) return peak ? h->real_peak_in_request() : h->real_in_request();
        return peak ? h->peak_in_request() : h->size_in_request();
    }
    Heap_stats s;
    heap_pool::total_stats(s);
    return real ? (peak ? s.real_peak : s.real_size) : (peak ? s.peak : s.size);
}
}  // namespace

size_t memory_usage(bool real) { return usage_figure(real, false); }
size_t memory_peak_usage(bool real) { return usage_figure(real, true); }

int set_memory_limit(size_t bytes) {
    if (bypassed()) return -1;
    if (Request* r = t_state.request) {
        Busy_section busy;
        Heap* h = r->heap;
        if (h->real_in_request() > bytes) {
            h->trim_cache(0);  // ZendMM drops cached chunks first
            if (h->real_in_request() > bytes) return -1;
        }
        h->limit = bytes;
    }
    t_state.limit = bytes;
    t_state.limit_set = true;
    return 0;
}

void set_limit_handler(void (*handler)(size_t, size_t, void*), void* arg) {
    t_state.limit_handler = handler;
    t_state.limit_arg = arg;
}

// ============================================================================
// The allocator's side
// ============================================================================

Heap* request_heap_for_thread() {
    if (t_state.depth > 0) return nullptr;  // zmm's own work: the thread's heap
    if (Request* r = t_state.request) {
        if (!r->process_wide || process_request::still_in(r)) return r->heap;
        process_request::leave();  // the process-wide request ended meanwhile
    }
    return process_request::join();
}

namespace {
// A traced allocation's stack, as the memo's tag has it: k_tagged | depot
// id << 1 | runtime (allocated by the dynamic loader for itself).
constexpr uint64_t k_tagged = uint64_t{1} << 63;

// The stack of a traced allocation the memo had no tag for: unwound from
// `entry`, stored in the depot, and the memo's new entry tagged with it.
// Out of line: its frames array is no part of the common case's frame.
__attribute__((noinline)) uint64_t unwind_and_tag(Request* r, unsigned max, const void* entry) {
    Depth_guard guard;
    uintptr_t pcs[stack_depot::k_max_frames];
    uint64_t tag;
    unsigned n = backtrace::capture(pcs, max, &r->stacks, &tag, reinterpret_cast<uintptr_t>(entry));
    if (tag) return tag;  // (the memo's, found by the capture: another max, say)
    const uint32_t stack = stack_depot::put(pcs, n);
    // The dynamic loader allocates for itself (thread TLS vectors, dlopen
    // bookkeeping): never the program's leak.
    const bool runtime = n && stack_depot::is_loader_pc(pcs[0]);
    tag = k_tagged | uint64_t{stack} << 1 | runtime;
    if (stack) fast_unwind::remember(r->stacks, tag);
    return tag;
}
}  // namespace

void trace_allocation(Heap* heap, void* block, size_t size, const void* entry) {
    if (!block) return;
    Request* r = static_cast<Request*>(heap->request);
    if (!r || !r->traced) return;
    Block_info info{reinterpret_cast<uintptr_t>(block), size, 0, 0};
    r->table.prefetch(info.address);  // (its slot comes in while the stack is found)
    if (t_state.depth > 0) {
        info.flags = k_block_runtime;  // allocated while zmm itself works
    } else {
        const unsigned max =
            options().backtrace < stack_depot::k_max_frames ? options().backtrace : stack_depot::k_max_frames;
        // Most allocations come from a place the memo knows (a loop's, a
        // constructor's): its tag at once.
        uint64_t tag = backtrace::memo_tag(&r->stacks, max, reinterpret_cast<uintptr_t>(entry));
        if (!tag) tag = unwind_and_tag(r, max, entry);
        info.stack = static_cast<uint32_t>(tag >> 1);
        if (tag & 1) info.flags = k_block_runtime;
    }
    r->table.insert(info);
}

void trace_reallocation(Heap* heap, const void* old_block, void* block, size_t size, const void* entry) {
    Request* r = static_cast<Request*>(heap->request);
    if (block && block == old_block && r && r->traced) {
        // An earlier request's block, grown or shrunk in place: still that
        // request's (Heap::realloc kept it out of this one's usage), with
        // the stack that allocated it and its report flags; its new size.
        if (Block_info* carried = r->table.find(reinterpret_cast<uintptr_t>(block));
            carried && (carried->flags & k_block_carried)) {
            carried->size = size;
            return;
        }
    }
    trace_allocation(heap, block, size, entry);
}

namespace {
// The M of ZendMM's "tried to allocate M bytes": the page run the
// allocation needs (a small block's: its bin's run), or the huge block's
// size in pages.
size_t zendmm_figure(size_t bytes) {
    if (bytes == 0) return 0;
    if (bytes <= k_max_small) return size_t{k_bin_pages[size_to_bin(bytes)]} * k_page_size;
    if (bytes > SIZE_MAX - k_page_size) return bytes;
    return (bytes + k_page_size - 1) & ~(k_page_size - 1);
}
}  // namespace

bool heap_limit_exceeded(Heap& heap, size_t requested_bytes) {
    Request* r = static_cast<Request*>(heap.request);
    if (!r) return false;
    const size_t requested = zendmm_figure(requested_bytes);
    size_t limit = heap.limit;
    if (auto handler = t_state.limit_handler) {
        // It allocates from the heap (no page of it changed yet) and may
        // leave by longjmp, as PHP's bailout does.
        {
            Program_code_section program;
            handler(limit, requested, t_state.limit_arg);
        }
        if (heap.limit != limit) return true;  // the handler raised it
    }
    if (options().limit_action == Limit_action::enomem) return false;
    // Fatal, as ZendMM: allocations past the limit are allowed while the error
    // is reported (heap->overflow), then the process exits with 255.
    heap.limit = SIZE_MAX;
    Depth_guard guard;
    uintptr_t pcs[stack_depot::k_max_frames];
    unsigned n = backtrace::capture(pcs, 32);
    const uint32_t stack = stack_depot::put(pcs, n);
    symbolize::prepare(options().symbolizer.text);
    Tool_scope tool;
    // On stderr; in the log too when it is a file, as a JSON object in a
    // JSON log (one object per line: a text line there broke its readers).
    const uint64_t pid = static_cast<uint64_t>(os::process_id()), tid = static_cast<uint64_t>(r->tid);
    Text message;  // ZendMM's
    message.str("Allowed memory size of ").dec(limit).str(" bytes exhausted (tried to allocate ").dec(requested)
        .str(" bytes)");
    auto text = [&](Text& t) {
        t.str(message.c_str()).chr('\n');
        t.str("zmm: in request ").dec(r->id).str(" '");
        printable(t, r->name);
        t.str("' (pid ").dec(pid).str(", tid ").dec(tid)
            .str("), the allocation came from:\n");
        write_frames(t, stack);
    };
    Text err;
    err.set_fd(2);
    text(err);
    err.flush(2);
    if (int fd = report_open(); fd != 2) {
        Text t;
        t.set_fd(fd);
        if (options().log_format == Log_format::json) {
            t.str("{\"request\":").dec(r->id).str(",\"name\":");
            json_string(t, r->name);
            t.str(",\"pid\":").dec(pid).str(",\"tid\":").dec(tid).str(",\"fatal\":\"memory_limit\",\"limit\":")
                .dec(limit).str(",\"tried_to_allocate\":").dec(requested).str(",\"message\":");
            json_string(t, message.c_str());
            t.chr(',');
            json_frames(t, stack);
            t.str("}\n");
        } else {
            text(t);
        }
        t.flush(fd);
        report_close(fd);
    }
    fflush(nullptr);
    _exit(255);
}

// ============================================================================
// Threads, fork, start and exit
// ============================================================================

void thread_leaves_requests() {
    leak_scan::Program_frame frame;
    Request* r = t_state.request;
    if (r && r->process_wide)
        process_request::leave();
    else if (r)
        end_on_thread(nullptr, nullptr);  // an API request left open: reported now
    process_request::unregister_thread();
    // The request heap goes into the thread's own heap: the blocks it carries
    // stay valid and leave its table (reported or counted already), its
    // chunks in use go there, and it stays retired there, empty chunks and
    // all, for the next thread that adopts the heap (reusable_request_heap).
    Heap* h = t_state.request_heap;
    Heap* p = t_state.persistent;
    if (h && p && t_state.spare) merge_into_thread_heap(*h, *p);
    // The request record goes too, once no heap holds its table: each
    // thread that ever ran a request left one mapped (the internal-mapping
    // list full after about 4,000 threads, and the leak scan off).
    if (Request* spare = t_state.spare; spare && (!h || !h->blocks)) {
        spare->table.release();
        t_state.spare = nullptr;
        spare->~Request();
        os::unmap(spare, sizeof(Request));
    }
}

void start_requests() {
    if (bypassed()) return;
    const Options& o = options();
    if (o.backtrace > 0 && o.request != Request_mode::api) backtrace::prepare(o.fast_unwind);
    if (o.leaks == Leaks_mode::lost) leak_scan::start();
    process_request::start();
}

void finish_requests() {
    if (bypassed()) return;
    process_request::finish();
    const Options& o = options();
    if (o.leak_exitcode.value >= 0 && g_leaky_requests.load(std::memory_order_relaxed) > 0) {
        fflush(nullptr);
        _exit(o.leak_exitcode.value);
    }
}

}  // namespace zmm
