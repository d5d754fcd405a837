/*
 * cuda_outputs.h - which memory the matmuls enqueued last may still be writing when the next kernel
 * starts. Host code without CUDA, so the CUDA tests check it on machines without a GPU too.
 *
 * With programmatic dependent launch the pipe kernel copies its first weights before it waits for the
 * kernel before it (cuda_gemm_pipe.cuh, pipe_early), as the tile kernel's scale pre-pass loads the block
 * scales (cuda_gemm_tile.cu, TileScaleArgs::early). Our kernels let the next one start only after their
 * own wait, so everything before that kernel is complete, and of what it writes only a matmul's output
 * y is the caller's memory: a matmul whose weights overlap it must wait first. The log answers that:
 *  - each stream's last output, apart for direct launches and for each graph being captured on it
 *    (for all contexts: two may share a stream). A captured call runs later, at the graph's launch: it
 *    must neither hide the direct launch before it from the one after it, nor be compared with it.
 *    A direct launch on a stream not found (never seen, or pushed out by kStreams others since) is
 *    unknown, so "may overlap".
 *  - the last kCaptured outputs of captured calls, with their capture: a captured kernel's predecessor
 *    may also be a node of another stream joined into the capture, so a captured call is compared with
 *    those of its capture too (and with nothing else: a graph's first node waits for all before it).
 * Activations are another matter: the caller's own kernels write them (a norm, an activation function), and one
 * that lets the next kernel start early (griddepcontrol.launch_dependents, common in inference engines) may still
 * be writing them when ours starts - as may, in principle, any kernel whose blocks have all ended but whose writes
 * have not yet been made visible, which only griddepcontrol.wait guarantees. So a kernel may read them before its
 * wait only where its predecessor is known to be one of our matmuls: in a capture, where the node the call will
 * follow is the last node a matmul of ours left (recorded with its output: our_node); never on direct launches,
 * where a caller's kernel in between cannot be seen.
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

    /* capture: the id of the capture the call is recorded into (cudaStreamGetCaptureInfo), 0 if none */
    /* node: captured calls, the graph node the matmul's last kernel became (null if not known) */
    void record(const void *stream, unsigned long long capture, bnb4_range y, const void *node = nullptr) {
        std::lock_guard<std::mutex> lock(mutex_);
        if (capture)
            captured_[n_captured_++ % kCaptured] = Output{capture, y, node};
        Last *slot = &last_[0];
        for (Last &e : last_) {
            if (e.used && e.stream == stream && e.capture == capture) {
                slot = &e;
                break;
            }
            if (e.used < slot->used)
                slot = &e; /* a free slot (0), else the least recently set */
        }
        *slot = Last{stream, capture, y, ++clock_};
    }

    /* whether any of the n ranges (empty ones ignored) may overlap an output still being written */
    bool may_overlap(const void *stream, unsigned long long capture, const bnb4_range *ranges, size_t n) const {
        std::lock_guard<std::mutex> lock(mutex_);
        bool found = false;
        for (const Last &e : last_)
            if (e.used && e.stream == stream && e.capture == capture) {
                if (any_overlap(e.y, ranges, n))
                    return true;
                found = true;
            }
        if (!capture)
            return !found; /* a stream not found is unknown */
        const size_t kept = n_captured_ < (size_t)kCaptured ? n_captured_ : (size_t)kCaptured;
        for (size_t i = 0; i < kept; i++)
            if (captured_[i].capture == capture && any_overlap(captured_[i].y, ranges, n))
                return true;
        return false;
    }

    /* whether node (of capture) is the last node of a recorded matmul of ours, among the last kCaptured */
    bool our_node(unsigned long long capture, const void *node) const {
        std::lock_guard<std::mutex> lock(mutex_);
        const size_t kept = n_captured_ < (size_t)kCaptured ? n_captured_ : (size_t)kCaptured;
        for (size_t i = 0; node && capture && i < kept; i++)
            if (captured_[i].capture == capture && captured_[i].node == node)
                return true;
        return false;
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
        unsigned long long capture;
        bnb4_range y;
        uint64_t used; /* 0: free */
    };
    struct Output {
        unsigned long long capture;
        bnb4_range y;
        const void *node;
    };
    mutable std::mutex mutex_;
    Last last_[kStreams] = {};
    Output captured_[kCaptured] = {};
    size_t n_captured_ = 0; /* recorded so far; the ring keeps the last kCaptured */
    uint64_t clock_ = 0;
};

#endif
