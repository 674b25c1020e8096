/*
 * workqueue.h — worker pools (btrfs's workqueues in userspace): writeback, compression, endio and
 * fixup queue work items here. Real pthreads, bounded per pool, created on demand, retired when idle.
 *
 * Guarantees:
 *  1. A work item is never run by two threads at once: queueing an item whose func is running
 *     makes it run again after that run ends (never concurrently). Queueing an item that is still
 *     pending (queued, not started) does nothing and returns false.
 *  2. Ordered works (ordered_func set): func runs in parallel with other works; ordered_func runs
 *     strictly in the order the works were queued, each only after its own func returned and after
 *     the previous ordered work's ordered_func returned; then ordered_free (may free the work).
 *     ordered_func calls are serialised: never two at once in one pool.
 *  3. ubt_wq_flush() returns when everything queued before the call has finished (func, and for
 *     ordered works ordered_func and ordered_free). Works queued during the flush may or may not
 *     be waited for.
 *  4. ubt_wq_destroy() drains: it runs everything queued, including work queued meanwhile by the
 *     pool's own works, then joins every thread.
 *
 * Ownership: the caller owns the struct ubt_work (usually embedded in its own object) and keeps it
 * alive while it is pending. A plain work's func may free it (the pool does not touch it after
 * func returns, unless it was queued again meanwhile). An ordered work stays alive until its
 * ordered_free, and may be queued again only once ordered_free has been called. A work belongs to
 * one pool at a time.
 *
 * Hook points (hooks.h): "work.<pool name>.before_run" and "work.<pool name>.after_run", reached by
 * the worker thread just before and just after func, point_arg = the work (after_run: a plain work
 * may already be freed; compare the pointer, never dereference it). Their return value is ignored.
 */
#ifndef UBT_WORK_WORKQUEUE_H
#define UBT_WORK_WORKQUEUE_H

#include <stdbool.h>
#include <stdint.h>

struct ubt_work;
struct ubt_workqueue;
typedef void (*ubt_work_func_t)(struct ubt_work *work);

struct ubt_work {
	ubt_work_func_t func;
	ubt_work_func_t ordered_func; /* NULL: a plain work */
	ubt_work_func_t ordered_free;
	/* private to work/, protected by the pool's lock */
	struct ubt_work *next;	       /* pending queue / a worker's handed-over list */
	struct ubt_work *ordered_next; /* the pool's ordered list */
	uint64_t seq;		       /* queue sequence number of the pending instance */
	unsigned flags;
};

/* Pool flags. */
#define UBT_WQ_KEEP_ONE 0x1u /* never retire the last idle thread (latency-critical pools, e.g. endio) */

/* Default idle time after which a thread retires (ubt_wq_set_idle_ms changes it per pool). */
#define UBT_WQ_IDLE_MS 2000u

void ubt_init_work(struct ubt_work *work, ubt_work_func_t func, ubt_work_func_t ordered_func,
		   ubt_work_func_t ordered_free);

/* A pool of at most @max_threads (>= 1) threads, none started yet. ERR_PTR(-errno) on failure. */
struct ubt_workqueue *ubt_wq_create(const char *name, unsigned max_threads, unsigned flags);
/* Drain (guarantee 4), join the threads, free the pool. NULL or ERR_PTR is ignored. */
void ubt_wq_destroy(struct ubt_workqueue *wq);
/* Queue @work; false when it was already pending (nothing done). Never fails: when no thread can
 * be started the work waits for one (flush and destroy keep trying to start one). */
bool ubt_queue_work(struct ubt_workqueue *wq, struct ubt_work *work);
/* Wait for everything queued before the call (guarantee 3). Must not be called from a work of @wq. */
void ubt_wq_flush(struct ubt_workqueue *wq);

void ubt_wq_set_idle_ms(struct ubt_workqueue *wq, unsigned idle_ms);
const char *ubt_wq_name(const struct ubt_workqueue *wq);
/* Introspection (tests, stats): threads alive now, and the most ever alive at once. */
unsigned ubt_wq_nr_threads(struct ubt_workqueue *wq);
unsigned ubt_wq_max_seen_threads(struct ubt_workqueue *wq);

#endif
