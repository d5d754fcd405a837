/*
 * cpu_threads.c - the process-wide thread pool behind every multi-threaded CPU op.
 *
 * One pool of (cores - 1) workers, started on first use, shared by all contexts: the calling thread
 * always works too, so an op never runs more threads than cores. Work is a count of independent units
 * handed out through an atomic counter (dynamic balancing; a VM's cores are not always equal). If
 * another op holds the pool (several application threads calling at once), the op runs on its own
 * thread instead of queueing or oversubscribing; results are the same bits either way because the
 * kernels never let the split change the arithmetic.
 *
 * Workers spin briefly after a job (back-to-back gemv calls are the common case) and then sleep on a
 * condition variable. A fork()ed child (Python's multiprocessing) has none of the parent's workers: a
 * pthread_atfork handler resets the pool there and the next op starts fresh workers.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>

#include "cpu_internal.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define CPU_RELAX() _mm_pause()
#elif defined(__aarch64__)
#define CPU_RELAX() __asm__ volatile("yield")
#else
#define CPU_RELAX() ((void)0)
#endif

enum { SPIN_ITERATIONS = 20000 }; /* a few tens of microseconds */

/* A job's units are claimed through `ticket` = (generation << 32) | next unit, with compare-and-swap,
 * so a worker that wakes late (the machine is busy with other processes) can never claim a unit of a
 * later job with the previous job's function. The caller waits for `done` == units, not for every
 * worker to check in: a worker that never got a core costs nothing. */
static struct {
    pthread_mutex_t lock;
    pthread_cond_t wake, finished;
    pthread_mutex_t busy; /* held by the op that owns the pool */
    int nworkers;
    atomic_uint generation;
    /* the current job (written under lock before generation is bumped) */
    bnb4_task_fn fn;
    void *arg;
    size_t units;
    int participants;
    _Atomic uint64_t ticket;
    atomic_size_t done;
} pool = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, PTHREAD_COND_INITIALIZER,
          PTHREAD_MUTEX_INITIALIZER, 0, 0, NULL, NULL, 0, 0, 0, 0};
static pthread_once_t pool_once = PTHREAD_ONCE_INIT;
static pthread_mutex_t restart_lock = PTHREAD_MUTEX_INITIALIZER;
static volatile int pool_needs_restart; /* set in a fork()ed child */

/* Runs units of job `gen` until none is left; signals the caller if it completed the last one. */
static void run_units(unsigned gen, bnb4_task_fn fn, void *arg, size_t units, int thread_index) {
    uint64_t t = atomic_load_explicit(&pool.ticket, memory_order_acquire);
    for (;;) {
        if ((unsigned)(t >> 32) != gen || (t & 0xffffffffu) >= units)
            return;
        if (!atomic_compare_exchange_weak_explicit(&pool.ticket, &t, t + 1, memory_order_acq_rel, memory_order_acquire))
            continue; /* t was reloaded */
        fn(arg, (size_t)(t & 0xffffffffu), thread_index);
        if (atomic_fetch_add_explicit(&pool.done, 1, memory_order_acq_rel) + 1 == units && thread_index != 0) {
            pthread_mutex_lock(&pool.lock);
            pthread_cond_signal(&pool.finished);
            pthread_mutex_unlock(&pool.lock);
        }
        t = atomic_load_explicit(&pool.ticket, memory_order_acquire);
    }
}

static void *worker_main(void *p) {
    const int index = (int)(intptr_t)p; /* 1 .. nworkers; 0 is the caller */
    unsigned seen = 0;
    for (;;) {
        for (int i = 0; i < SPIN_ITERATIONS && atomic_load_explicit(&pool.generation, memory_order_acquire) == seen; i++)
            CPU_RELAX();
        pthread_mutex_lock(&pool.lock);
        while (atomic_load_explicit(&pool.generation, memory_order_relaxed) == seen)
            pthread_cond_wait(&pool.wake, &pool.lock);
        seen = atomic_load_explicit(&pool.generation, memory_order_relaxed);
        const bnb4_task_fn fn = pool.fn;
        void *const arg = pool.arg;
        const size_t units = pool.units;
        const int participate = index < pool.participants;
        pthread_mutex_unlock(&pool.lock);
        if (participate)
            run_units(seen, fn, arg, units, index);
    }
    return NULL;
}

static void start_workers(void) {
    const int want = bnb4_cpu_info_get()->num_cores - 1;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    for (int i = 0; i < want; i++) {
        pthread_t t;
        if (pthread_create(&t, &attr, worker_main, (void *)(intptr_t)(i + 1)) != 0)
            break; /* fewer workers is still correct */
        pool.nworkers++;
    }
    pthread_attr_destroy(&attr);
}

/* In the child of fork() only the forking thread exists, and the pool's locks may have been held by
 * threads that are gone: start over. */
static void pool_after_fork_child(void) {
    pthread_mutex_init(&pool.lock, NULL);
    pthread_cond_init(&pool.wake, NULL);
    pthread_cond_init(&pool.finished, NULL);
    pthread_mutex_init(&pool.busy, NULL);
    pthread_mutex_init(&restart_lock, NULL);
    pool.nworkers = 0;
    atomic_store(&pool.generation, 0);
    pool_needs_restart = 1;
}

static void start_pool(void) {
    pthread_atfork(NULL, NULL, pool_after_fork_child);
    start_workers();
}

int bnb4_parallel_max_threads(int threads) {
    const int cores = bnb4_cpu_info_get()->num_cores;
    if (threads <= 0 || threads > cores)
        threads = cores;
    return threads;
}

void bnb4_parallel_for(int threads, size_t units, bnb4_task_fn fn, void *arg) {
    threads = bnb4_parallel_max_threads(threads);
    if (threads > 1 && units > 1) {
        pthread_once(&pool_once, start_pool);
        if (pool_needs_restart) {
            pthread_mutex_lock(&restart_lock);
            if (pool_needs_restart) {
                start_workers();
                pool_needs_restart = 0;
            }
            pthread_mutex_unlock(&restart_lock);
        }
    }
    if (threads <= 1 || units <= 1 || units > 0xffffffffu || pool.nworkers == 0 ||
        pthread_mutex_trylock(&pool.busy) != 0) {
        for (size_t u = 0; u < units; u++)
            fn(arg, u, 0);
        return;
    }
    int participants = threads < pool.nworkers + 1 ? threads : pool.nworkers + 1;
    if ((size_t)participants > units)
        participants = (int)units;
    pthread_mutex_lock(&pool.lock);
    const unsigned gen = atomic_load_explicit(&pool.generation, memory_order_relaxed) + 1;
    pool.fn = fn;
    pool.arg = arg;
    pool.units = units;
    pool.participants = participants;
    atomic_store_explicit(&pool.done, 0, memory_order_relaxed);
    atomic_store_explicit(&pool.ticket, (uint64_t)gen << 32, memory_order_release);
    atomic_store_explicit(&pool.generation, gen, memory_order_release);
    pthread_cond_broadcast(&pool.wake);
    pthread_mutex_unlock(&pool.lock);

    run_units(gen, fn, arg, units, 0);

    for (int i = 0; i < SPIN_ITERATIONS && atomic_load_explicit(&pool.done, memory_order_acquire) < units; i++)
        CPU_RELAX();
    if (atomic_load_explicit(&pool.done, memory_order_acquire) < units) {
        pthread_mutex_lock(&pool.lock);
        while (atomic_load_explicit(&pool.done, memory_order_acquire) < units)
            pthread_cond_wait(&pool.finished, &pool.lock);
        pthread_mutex_unlock(&pool.lock);
    }
    pthread_mutex_unlock(&pool.busy);
}
