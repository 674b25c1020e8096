/*
 * hooks.c — the registry behind hooks.h: armed hooks by name, each with its action, skip/count
 * budget, hit counter and the threads paused at it.
 *
 * Locking: one mutex (hook_lock) guards the registry; it is a leaf lock except that a PAUSE waits
 * on hook_cond while holding nothing else of ours. UBT_HOOK_CALL runs its fn with hook_lock
 * dropped, so the fn may arm/disarm hooks or take any library lock. Library code reaching a point
 * may hold its own locks (the test then decides what may run meanwhile).
 *
 * Fast path: nr_armed counts armed hooks; while it is zero ubt_hook_point() returns 0 without
 * taking the lock.
 *
 * Semantics:
 *  - a hit is counted for every arrival while the hook is armed (ubt_hook_hits); the first @skip
 *    hits pass untouched, the next @count (0 = unlimited) act, then the hook disarms itself;
 *  - ubt_hook_release() releases the threads paused at that moment (later arrivals pause again
 *    while the hook stays armed); ubt_hook_disarm() stops new hits but leaves paused threads
 *    paused until released; ubt_hook_disarm_all() disarms and releases everything (teardown);
 *  - re-arming a name resets its hit counter.
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "util/hooks.h"

#ifdef UBT_TEST_HOOKS

struct hook {
	struct hook *next;
	char *name;
	struct ubt_hook_spec spec;
	bool armed;
	unsigned hits;	 /* arrivals since armed */
	unsigned acted;	 /* arrivals that took the action */
	unsigned paused; /* threads currently paused here */
	unsigned long release_gen;
};

static pthread_mutex_t hook_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t hook_cond; /* CLOCK_MONOTONIC; arrivals and releases, broadcast */
static pthread_once_t hook_once = PTHREAD_ONCE_INIT;
static struct hook *hook_list;
static atomic_uint nr_armed;

static void hook_init(void)
{
	pthread_condattr_t attr;

	pthread_condattr_init(&attr);
	pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
	pthread_cond_init(&hook_cond, &attr);
	pthread_condattr_destroy(&attr);
}

static struct hook *hook_find(const char *name)
{
	for (struct hook *h = hook_list; h; h = h->next)
		if (!strcmp(h->name, name))
			return h;
	return NULL;
}

/* Find or add the registry entry of @name; NULL on ENOMEM. Called with hook_lock held. */
static struct hook *hook_get(const char *name)
{
	struct hook *h = hook_find(name);

	if (h)
		return h;
	h = calloc(1, sizeof(*h));
	if (!h)
		return NULL;
	h->name = strdup(name);
	if (!h->name) {
		free(h);
		return NULL;
	}
	h->next = hook_list;
	hook_list = h;
	return h;
}

static void hook_set_disarmed(struct hook *h)
{
	if (h->armed) {
		h->armed = false;
		atomic_fetch_sub(&nr_armed, 1);
	}
}

int ubt_hook_point(const char *name, void *point_arg)
{
	struct hook *h;
	unsigned long gen;
	int (*fn)(void *, void *);
	void *arg;
	int ret = 0;

	if (atomic_load_explicit(&nr_armed, memory_order_acquire) == 0)
		return 0;
	pthread_once(&hook_once, hook_init);
	pthread_mutex_lock(&hook_lock);
	h = hook_find(name);
	if (!h || !h->armed)
		goto out;
	h->hits++;
	if (h->hits <= h->spec.skip)
		goto out;
	h->acted++;
	if (h->spec.count && h->acted >= h->spec.count)
		hook_set_disarmed(h);
	switch (h->spec.action) {
	case UBT_HOOK_PAUSE:
		h->paused++;
		gen = h->release_gen;
		pthread_cond_broadcast(&hook_cond);
		while (h->release_gen == gen)
			pthread_cond_wait(&hook_cond, &hook_lock);
		h->paused--;
		break;
	case UBT_HOOK_FAIL:
		ret = h->spec.error;
		break;
	case UBT_HOOK_CALL:
		fn = h->spec.fn;
		arg = h->spec.arg;
		pthread_mutex_unlock(&hook_lock);
		return fn ? fn(arg, point_arg) : 0;
	}
out:
	pthread_mutex_unlock(&hook_lock);
	return ret;
}

int ubt_hook_arm(const char *name, const struct ubt_hook_spec *spec)
{
	struct hook *h;

	if (!name || !spec || spec->action < UBT_HOOK_PAUSE || spec->action > UBT_HOOK_CALL)
		return -EINVAL;
	pthread_once(&hook_once, hook_init);
	pthread_mutex_lock(&hook_lock);
	h = hook_get(name);
	if (!h) {
		pthread_mutex_unlock(&hook_lock);
		return -ENOMEM;
	}
	h->spec = *spec;
	h->hits = 0;
	h->acted = 0;
	if (!h->armed) {
		h->armed = true;
		atomic_fetch_add_explicit(&nr_armed, 1, memory_order_release);
	}
	pthread_mutex_unlock(&hook_lock);
	return 0;
}

void ubt_hook_disarm(const char *name)
{
	struct hook *h;

	pthread_once(&hook_once, hook_init);
	pthread_mutex_lock(&hook_lock);
	h = hook_find(name);
	if (h)
		hook_set_disarmed(h);
	pthread_mutex_unlock(&hook_lock);
}

void ubt_hook_disarm_all(void)
{
	pthread_once(&hook_once, hook_init);
	pthread_mutex_lock(&hook_lock);
	for (struct hook *h = hook_list; h; h = h->next) {
		hook_set_disarmed(h);
		h->release_gen++;
	}
	pthread_cond_broadcast(&hook_cond);
	pthread_mutex_unlock(&hook_lock);
}

int ubt_hook_wait_paused(const char *name, unsigned n, unsigned timeout_ms)
{
	struct timespec deadline;
	struct hook *h;
	int ret = 0;

	pthread_once(&hook_once, hook_init);
	clock_gettime(CLOCK_MONOTONIC, &deadline);
	deadline.tv_sec += timeout_ms / 1000;
	deadline.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
	if (deadline.tv_nsec >= 1000000000L) {
		deadline.tv_sec++;
		deadline.tv_nsec -= 1000000000L;
	}
	pthread_mutex_lock(&hook_lock);
	h = hook_get(name);
	if (!h) {
		ret = -ENOMEM;
		goto out;
	}
	while (h->paused < n) {
		if (pthread_cond_timedwait(&hook_cond, &hook_lock, &deadline) == ETIMEDOUT) {
			ret = h->paused < n ? -ETIMEDOUT : 0;
			break;
		}
	}
out:
	pthread_mutex_unlock(&hook_lock);
	return ret;
}

void ubt_hook_release(const char *name)
{
	struct hook *h;

	pthread_once(&hook_once, hook_init);
	pthread_mutex_lock(&hook_lock);
	h = hook_find(name);
	if (h) {
		h->release_gen++;
		pthread_cond_broadcast(&hook_cond);
	}
	pthread_mutex_unlock(&hook_lock);
}

unsigned ubt_hook_hits(const char *name)
{
	struct hook *h;
	unsigned hits = 0;

	pthread_once(&hook_once, hook_init);
	pthread_mutex_lock(&hook_lock);
	h = hook_find(name);
	if (h)
		hits = h->hits;
	pthread_mutex_unlock(&hook_lock);
	return hits;
}

#else /* !UBT_TEST_HOOKS: the test side exists but does nothing */

int ubt_hook_arm(const char *name, const struct ubt_hook_spec *spec)
{
	(void)name;
	(void)spec;
	return -ENOSYS;
}

void ubt_hook_disarm(const char *name)
{
	(void)name;
}

void ubt_hook_disarm_all(void)
{
}

int ubt_hook_wait_paused(const char *name, unsigned n, unsigned timeout_ms)
{
	(void)name;
	(void)n;
	(void)timeout_ms;
	return -ENOSYS;
}

void ubt_hook_release(const char *name)
{
	(void)name;
}

unsigned ubt_hook_hits(const char *name)
{
	(void)name;
	return 0;
}

#endif
