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
 * condition variable.
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

static struct {
    pthread_mutex_t lock;
    pthread_cond_t wake, done;
    pthread_mutex_t busy; /* held by the op that owns the pool */
    int nworkers;
    atomic_uint generation;
    /* the current job (written under lock before generation is bumped) */
    bnb4_task_fn fn;
    void *arg;
    size_t units;
    int participants;
    atomic_size_t next;
    atomic_int remaining; /* workers still inside the job */
} pool = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, PTHREAD_COND_INITIALIZER,
          PTHREAD_MUTEX_INITIALIZER, 0, 0, NULL, NULL, 0, 0, 0, 0};
static pthread_once_t pool_once = PTHREAD_ONCE_INIT;

static void run_units(bnb4_task_fn fn, void *arg, size_t units, int thread_index) {
    for (;;) {
        const size_t u = atomic_fetch_add_explicit(&pool.next, 1, memory_order_relaxed);
        if (u >= units)
            break;
        fn(arg, u, thread_index);
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
        if (!participate)
            continue;
        run_units(fn, arg, units, index);
        if (atomic_fetch_sub_explicit(&pool.remaining, 1, memory_order_acq_rel) == 1) {
            pthread_mutex_lock(&pool.lock);
            pthread_cond_signal(&pool.done);
            pthread_mutex_unlock(&pool.lock);
        }
    }
    return NULL;
}

static void start_pool(void) {
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

int bnb4_parallel_max_threads(int threads) {
    const int cores = bnb4_cpu_info_get()->num_cores;
    if (threads <= 0 || threads > cores)
        threads = cores;
    return threads;
}

void bnb4_parallel_for(int threads, size_t units, bnb4_task_fn fn, void *arg) {
    threads = bnb4_parallel_max_threads(threads);
    if (threads > 1 && units > 1)
        pthread_once(&pool_once, start_pool);
    if (threads <= 1 || units <= 1 || pool.nworkers == 0 || pthread_mutex_trylock(&pool.busy) != 0) {
        for (size_t u = 0; u < units; u++)
            fn(arg, u, 0);
        return;
    }
    int participants = threads < pool.nworkers + 1 ? threads : pool.nworkers + 1;
    if ((size_t)participants > units)
        participants = (int)units;
    pthread_mutex_lock(&pool.lock);
    pool.fn = fn;
    pool.arg = arg;
    pool.units = units;
    pool.participants = participants;
    atomic_store_explicit(&pool.next, 0, memory_order_relaxed);
    atomic_store_explicit(&pool.remaining, participants - 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&pool.generation, 1, memory_order_release);
    pthread_cond_broadcast(&pool.wake);
    pthread_mutex_unlock(&pool.lock);

    run_units(fn, arg, units, 0);

    for (int i = 0; i < SPIN_ITERATIONS && atomic_load_explicit(&pool.remaining, memory_order_acquire) > 0; i++)
        CPU_RELAX();
    if (atomic_load_explicit(&pool.remaining, memory_order_acquire) > 0) {
        pthread_mutex_lock(&pool.lock);
        while (atomic_load_explicit(&pool.remaining, memory_order_acquire) > 0)
            pthread_cond_wait(&pool.done, &pool.lock);
        pthread_mutex_unlock(&pool.lock);
    }
    pthread_mutex_unlock(&pool.busy);
}
