/*
 * cuda_outputs.h - which memory the matmuls enqueued last may still be writing when the next kernel
 * starts. Host code without CUDA, so the CUDA tests check it on machines without a GPU too.
 *
 * With programmatic dependent launch the pipe kernel copies its first weights before it waits for the
 * kernel before it (cuda_gemm_pipe.cu, pipe_early). Our kernels let the next one start only after their
 * own wait, so everything before that kernel is complete, and of what it writes only a matmul's output
 * y is the caller's memory: a matmul whose weights overlap it must wait first. The log answers that:
 *  - direct launches: the last output on each stream (for all contexts: two may share one); a stream
 *    not found (never seen, or pushed out by kStreams others since) is unknown, so "may overlap";
 *  - launches captured into a graph: the last kCaptured outputs of any capture, kept apart from the
 *    direct ones (a captured call runs later, at the graph's launch: it must neither hide the direct
 *    launch before it from the one after it, nor be compared with it). A captured kernel's programmatic
 *    predecessor is an earlier node of its graph, perhaps from another stream joined into the capture,
 *    so it is checked against all of them. A graph's first node waits for all that came before it.
 */
#ifndef BNB4_CUDA_OUTPUTS_H
#define BNB4_CUDA_OUTPUTS_H

#include <stddef.h>
#include <stdint.h>

#include <mutex>

struct bnb4_range {
    uintptr_t lo, hi; /* [lo, hi) */
    bool overlaps(const bnb4_range &o) const { return lo < o.hi && o.lo < hi; }
};

class bnb4_output_log {
  public:
    static constexpr int kStreams = 16, kCaptured = 256;

    void record(const void *stream, bool captured, bnb4_range y) {
        std::lock_guard<std::mutex> lock(mutex_);
        if (captured) {
            captured_[n_captured_++ % kCaptured] = y;
            return;
        }
        Last *slot = &last_[0];
        for (Last &e : last_) {
            if (e.used && e.stream == stream) {
                slot = &e;
                break;
            }
            if (e.used < slot->used)
                slot = &e; /* a free slot (0), else the least recently set */
        }
        *slot = Last{stream, y, ++clock_};
    }

    /* whether any of the n ranges (empty ones ignored) may overlap an output still being written */
    bool may_overlap(const void *stream, bool captured, const bnb4_range *ranges, size_t n) const {
        std::lock_guard<std::mutex> lock(mutex_);
        if (captured) {
            const size_t kept = n_captured_ < (size_t)kCaptured ? n_captured_ : (size_t)kCaptured;
            for (size_t i = 0; i < kept; i++)
                if (any_overlap(captured_[i], ranges, n))
                    return true;
            return false;
        }
        for (const Last &e : last_)
            if (e.used && e.stream == stream)
                return any_overlap(e.y, ranges, n);
        return true; /* unknown */
    }

  private:
    static bool any_overlap(const bnb4_range &y, const bnb4_range *ranges, size_t n) {
        for (size_t i = 0; i < n; i++)
            if (ranges[i].lo < ranges[i].hi && ranges[i].overlaps(y))
                return true;
        return false;
    }
    struct Last {
        const void *stream;
        bnb4_range y;
        uint64_t used; /* 0: free */
    };
    mutable std::mutex mutex_;
    Last last_[kStreams] = {};
    bnb4_range captured_[kCaptured] = {};
    size_t n_captured_ = 0; /* recorded so far; the ring keeps the last kCaptured */
    uint64_t clock_ = 0;
};

#endif
