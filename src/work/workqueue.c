/*
 * workqueue.c — worker pools: a FIFO of pending works, up to max_threads pthreads started on demand
 * and retired after idle_ms without work, btrfs-style ordered completion, flush and drain.
 *
 * Lock order: wq->lock is taken by queue/flush/destroy callers and by workers; it is never held
 * while a work's func, ordered_func or ordered_free runs, nor while a hook point is reached, so
 * those may queue work on any pool (including their own) and take any lock. wq->lock nests
 * inside nothing of the library; the hook registry lock is never taken under it.
 *
 * A work's states (flags, under wq->lock):
 *   idle --ubt_queue_work--> PENDING (in wq queue; ordered ones also ORDERED, in the ordered list)
 *   PENDING --worker pops it--> running (worker->current == work; PENDING cleared)
 *     if another worker is running the same work, the popping worker hands the work over to
 *     that worker's 'handed' list instead: it runs there after the current run (guarantee 1)
 *   running --func returns--> plain: idle (not touched again) | ordered: FUNC_DONE
 *   FUNC_DONE at the head of the ordered list --ordered processor--> ordered_func runs;
 *     ORDERED|FUNC_DONE cleared; ordered_free runs (work not touched after it)
 * Exactly one thread at a time is the ordered processor (wq->ordered_busy); whichever worker
 * finishes a func while nobody is processing becomes it, and runs every ordered work whose
 * func is done from the head of the list.
 *
 * Flush: every queueing takes a sequence number; a flush waits until the smallest sequence still
 * outstanding (queue, handed lists, running funcs, ordered list, the ordered work being
 * completed) is above the last number given out before the call.
 *
 * Worker slots: FREE → LIVE (pthread_create) → EXITED (thread retired, to be joined) → joined and
 * reused by the next start, or joined at destroy.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "util/compat.h"
#include "util/hooks.h"
#include "util/messages.h"
#include "work/workqueue.h"

#define W_PENDING 0x1u
#define W_ORDERED 0x2u
#define W_FUNC_DONE 0x4u

enum { SLOT_FREE, SLOT_LIVE, SLOT_EXITED };

struct worker {
	struct ubt_workqueue *wq;
	pthread_t tid;
	int state;
	struct ubt_work *current; /* compared, never dereferenced after func returned */
	u64 current_seq;	  /* 0: idle */
	struct ubt_work *handed_head, *handed_tail;
};

struct ubt_workqueue {
	char name[32];
	char hook_before[64];
	char hook_after[64];
	unsigned max_threads;
	unsigned flags;
	unsigned idle_ms;

	pthread_mutex_t lock;
	pthread_cond_t work_cond; /* idle workers wait here */
	pthread_cond_t done_cond; /* flushers, destroy: something finished or a thread exited */

	struct ubt_work *head, *tail;		  /* pending FIFO */
	struct ubt_work *ordered_head, *ordered_tail; /* ordered works in queue order */
	u64 seq;				  /* last sequence number given out */
	u64 ordered_running_seq;		  /* ordered work being completed, 0: none */
	bool ordered_busy;
	bool dying;

	struct worker *workers; /* max_threads slots */
	unsigned nr_threads;	/* LIVE slots */
	unsigned nr_idle;	/* threads waiting on work_cond */
	unsigned nr_woken;	/* signals sent to idle threads not yet consumed */
	unsigned max_seen;
};

void ubt_init_work(struct ubt_work *work, ubt_work_func_t func, ubt_work_func_t ordered_func,
		   ubt_work_func_t ordered_free)
{
	memset(work, 0, sizeof(*work));
	work->func = func;
	work->ordered_func = ordered_func;
	work->ordered_free = ordered_free;
}

static void deadline_in(struct timespec *ts, unsigned ms)
{
	clock_gettime(CLOCK_MONOTONIC, ts);
	ts->tv_sec += ms / 1000;
	ts->tv_nsec += (long)(ms % 1000) * 1000000L;
	if (ts->tv_nsec >= 1000000000L) {
		ts->tv_sec++;
		ts->tv_nsec -= 1000000000L;
	}
}

static struct worker *running_elsewhere(struct ubt_workqueue *wq, struct ubt_work *work)
{
	for (unsigned i = 0; i < wq->max_threads; i++)
		if (wq->workers[i].state == SLOT_LIVE && wq->workers[i].current == work)
			return &wq->workers[i];
	return NULL;
}

/* Run ordered completions while the head of the ordered list has its func done. Lock held. */
static void run_ordered(struct ubt_workqueue *wq)
{
	struct ubt_work *work;
	ubt_work_func_t free_fn;

	if (wq->ordered_busy)
		return;
	wq->ordered_busy = true;
	while ((work = wq->ordered_head) && (work->flags & W_FUNC_DONE)) {
		wq->ordered_head = work->ordered_next;
		if (!wq->ordered_head)
			wq->ordered_tail = NULL;
		work->ordered_next = NULL;
		wq->ordered_running_seq = work->seq;
		pthread_mutex_unlock(&wq->lock);
		work->ordered_func(work);
		pthread_mutex_lock(&wq->lock);
		free_fn = work->ordered_free;
		work->flags &= ~(W_ORDERED | W_FUNC_DONE);
		pthread_mutex_unlock(&wq->lock);
		if (free_fn)
			free_fn(work);
		pthread_mutex_lock(&wq->lock);
		wq->ordered_running_seq = 0;
		pthread_cond_broadcast(&wq->done_cond);
	}
	wq->ordered_busy = false;
}

static void *worker_main(void *arg)
{
	struct worker *me = arg;
	struct ubt_workqueue *wq = me->wq;
	struct ubt_work *work;
	struct worker *other;
	struct timespec deadline;
	bool ordered;
	int rc;

	pthread_mutex_lock(&wq->lock);
	for (;;) {
		if (me->handed_head) {
			work = me->handed_head;
			me->handed_head = work->next;
			if (!me->handed_head)
				me->handed_tail = NULL;
		} else if (wq->head) {
			work = wq->head;
			wq->head = work->next;
			if (!wq->head)
				wq->tail = NULL;
			other = running_elsewhere(wq, work);
			if (other) {
				work->next = NULL;
				if (other->handed_tail)
					other->handed_tail->next = work;
				else
					other->handed_head = work;
				other->handed_tail = work;
				continue;
			}
		} else {
			if (wq->dying)
				break;
			deadline_in(&deadline, wq->idle_ms);
			wq->nr_idle++;
			rc = pthread_cond_timedwait(&wq->work_cond, &wq->lock, &deadline);
			wq->nr_idle--;
			if (wq->nr_woken)
				wq->nr_woken--;
			if (rc == ETIMEDOUT && !wq->head && !me->handed_head &&
			    !((wq->flags & UBT_WQ_KEEP_ONE) && wq->nr_threads == 1))
				break;
			continue;
		}
		work->next = NULL;
		work->flags &= ~W_PENDING;
		ordered = work->ordered_func != NULL;
		me->current = work;
		me->current_seq = work->seq;
		pthread_mutex_unlock(&wq->lock);

		ubt_hook_point(wq->hook_before, work);
		work->func(work); /* a plain work may be freed from here on */
		ubt_hook_point(wq->hook_after, work);

		pthread_mutex_lock(&wq->lock);
		me->current = NULL;
		me->current_seq = 0;
		if (ordered) {
			work->flags |= W_FUNC_DONE;
			run_ordered(wq);
		}
		pthread_cond_broadcast(&wq->done_cond);
	}
	me->state = SLOT_EXITED;
	wq->nr_threads--;
	pthread_cond_broadcast(&wq->done_cond);
	pthread_mutex_unlock(&wq->lock);
	return NULL;
}

/* Start one more thread if the pool allows it. Lock held. */
static int start_worker(struct ubt_workqueue *wq)
{
	struct worker *slot = NULL;
	int rc;

	if (wq->nr_threads >= wq->max_threads)
		return -EAGAIN;
	for (unsigned i = 0; i < wq->max_threads && !slot; i++) {
		if (wq->workers[i].state == SLOT_EXITED) {
			/* it marked itself EXITED and dropped the lock for good: join is brief */
			pthread_join(wq->workers[i].tid, NULL);
			wq->workers[i].state = SLOT_FREE;
		}
		if (wq->workers[i].state == SLOT_FREE)
			slot = &wq->workers[i];
	}
	if (!slot)
		return -EAGAIN;
	memset(slot, 0, sizeof(*slot));
	slot->wq = wq;
	slot->state = SLOT_LIVE;
	rc = pthread_create(&slot->tid, NULL, worker_main, slot);
	if (rc) {
		slot->state = SLOT_FREE;
		return -rc;
	}
	wq->nr_threads++;
	if (wq->nr_threads > wq->max_seen)
		wq->max_seen = wq->nr_threads;
	return 0;
}

/* A work was queued: wake an idle thread or start one. Lock held. */
static void kick(struct ubt_workqueue *wq)
{
	int ret;

	if (wq->nr_idle > wq->nr_woken) {
		wq->nr_woken++;
		pthread_cond_signal(&wq->work_cond);
		return;
	}
	ret = start_worker(wq);
	if (ret && ret != -EAGAIN && wq->nr_threads == 0)
		ubt_warn("workqueue %s: cannot start a thread (%d), will retry", wq->name, ret);
}

struct ubt_workqueue *ubt_wq_create(const char *name, unsigned max_threads, unsigned flags)
{
	struct ubt_workqueue *wq;
	pthread_condattr_t attr;

	if (!name || max_threads == 0)
		return ERR_PTR(-EINVAL);
	wq = calloc(1, sizeof(*wq));
	if (!wq)
		return ERR_PTR(-ENOMEM);
	wq->workers = calloc(max_threads, sizeof(*wq->workers));
	if (!wq->workers) {
		free(wq);
		return ERR_PTR(-ENOMEM);
	}
	snprintf(wq->name, sizeof(wq->name), "%s", name);
	snprintf(wq->hook_before, sizeof(wq->hook_before), "work.%s.before_run", wq->name);
	snprintf(wq->hook_after, sizeof(wq->hook_after), "work.%s.after_run", wq->name);
	wq->max_threads = max_threads;
	wq->flags = flags;
	wq->idle_ms = UBT_WQ_IDLE_MS;
	pthread_mutex_init(&wq->lock, NULL);
	pthread_condattr_init(&attr);
	pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
	pthread_cond_init(&wq->work_cond, &attr);
	pthread_cond_init(&wq->done_cond, &attr);
	pthread_condattr_destroy(&attr);
	return wq;
}

bool ubt_queue_work(struct ubt_workqueue *wq, struct ubt_work *work)
{
	pthread_mutex_lock(&wq->lock);
	if (work->flags & (W_PENDING | W_ORDERED)) {
		pthread_mutex_unlock(&wq->lock);
		return false;
	}
	work->flags |= W_PENDING;
	work->seq = ++wq->seq;
	work->next = NULL;
	if (wq->tail)
		wq->tail->next = work;
	else
		wq->head = work;
	wq->tail = work;
	if (work->ordered_func) {
		work->flags = (work->flags | W_ORDERED) & ~W_FUNC_DONE;
		work->ordered_next = NULL;
		if (wq->ordered_tail)
			wq->ordered_tail->ordered_next = work;
		else
			wq->ordered_head = work;
		wq->ordered_tail = work;
	}
	kick(wq);
	pthread_mutex_unlock(&wq->lock);
	return true;
}

/* Smallest sequence number still outstanding, UINT64_MAX when none. Lock held. */
static u64 min_outstanding(struct ubt_workqueue *wq)
{
	u64 min = UINT64_MAX;

	if (wq->head)
		min = ubt_min(min, wq->head->seq);
	if (wq->ordered_head)
		min = ubt_min(min, wq->ordered_head->seq);
	if (wq->ordered_running_seq)
		min = ubt_min(min, wq->ordered_running_seq);
	for (unsigned i = 0; i < wq->max_threads; i++) {
		struct worker *w = &wq->workers[i];

		if (w->state != SLOT_LIVE)
			continue;
		if (w->current_seq)
			min = ubt_min(min, w->current_seq);
		if (w->handed_head)
			min = ubt_min(min, w->handed_head->seq);
	}
	return min;
}

/* Wait until nothing numbered <= @target is outstanding. Lock held. */
static void wait_for_seq(struct ubt_workqueue *wq, u64 target)
{
	struct timespec deadline;

	while (min_outstanding(wq) <= target) {
		if (wq->nr_threads == 0 && wq->head)
			start_worker(wq); /* a thread could not be started at queue time */
		deadline_in(&deadline, 100);
		pthread_cond_timedwait(&wq->done_cond, &wq->lock, &deadline);
	}
}

void ubt_wq_flush(struct ubt_workqueue *wq)
{
	pthread_mutex_lock(&wq->lock);
	wait_for_seq(wq, wq->seq);
	pthread_mutex_unlock(&wq->lock);
}

void ubt_wq_destroy(struct ubt_workqueue *wq)
{
	if (IS_ERR_OR_NULL(wq))
		return;
	pthread_mutex_lock(&wq->lock);
	/* Drain: works may queue more works while we wait, so repeat until nothing is left. */
	while (min_outstanding(wq) != UINT64_MAX)
		wait_for_seq(wq, wq->seq);
	wq->dying = true;
	pthread_cond_broadcast(&wq->work_cond);
	while (wq->nr_threads)
		pthread_cond_wait(&wq->done_cond, &wq->lock);
	pthread_mutex_unlock(&wq->lock);
	for (unsigned i = 0; i < wq->max_threads; i++)
		if (wq->workers[i].state == SLOT_EXITED)
			pthread_join(wq->workers[i].tid, NULL);
	pthread_cond_destroy(&wq->work_cond);
	pthread_cond_destroy(&wq->done_cond);
	pthread_mutex_destroy(&wq->lock);
	free(wq->workers);
	free(wq);
}

void ubt_wq_set_idle_ms(struct ubt_workqueue *wq, unsigned idle_ms)
{
	pthread_mutex_lock(&wq->lock);
	wq->idle_ms = idle_ms ? idle_ms : 1;
	pthread_cond_broadcast(&wq->work_cond); /* idle threads re-arm their timeout */
	pthread_mutex_unlock(&wq->lock);
}

const char *ubt_wq_name(const struct ubt_workqueue *wq)
{
	return wq->name;
}

unsigned ubt_wq_nr_threads(struct ubt_workqueue *wq)
{
	unsigned n;

	pthread_mutex_lock(&wq->lock);
	n = wq->nr_threads;
	pthread_mutex_unlock(&wq->lock);
	return n;
}

unsigned ubt_wq_max_seen_threads(struct ubt_workqueue *wq)
{
	unsigned n;

	pthread_mutex_lock(&wq->lock);
	n = wq->max_seen;
	pthread_mutex_unlock(&wq->lock);
	return n;
}
