/*
 * hooks.h — named test hooks: points in the write path and the worker pools where a test can force
 * an interleaving (pause a thread here until released), inject a failure (return this error), or
 * run an action (evict the page cache now). Compiled in with UBT_TEST_HOOKS (the default for test
 * builds); without it every hook point is an inline no-op returning 0.
 *
 * A hook point names itself with a dotted string ("writeback.fixup.before_run"); tests arm hooks
 * by name. Points are documented where they are placed, and listed in docs/DESIGN.md.
 */
#ifndef UBT_UTIL_HOOKS_H
#define UBT_UTIL_HOOKS_H

#include <stdbool.h>
#include <stdint.h>

/* What an armed hook does when a thread reaches its point. */
enum ubt_hook_action {
	UBT_HOOK_PAUSE = 1, /* block the thread until ubt_hook_release() (the test is told it arrived) */
	UBT_HOOK_FAIL,      /* make the point return @error (a negative errno) */
	UBT_HOOK_CALL,      /* call @fn(@arg, point_arg) and return its result */
};

struct ubt_hook_spec {
	enum ubt_hook_action action;
	int error;                                   /* UBT_HOOK_FAIL */
	int (*fn)(void *arg, void *point_arg);       /* UBT_HOOK_CALL */
	void *arg;
	unsigned skip;  /* let this many hits pass untouched first */
	unsigned count; /* act on this many hits, then disarm (0 = until disarmed) */
};

#ifdef UBT_TEST_HOOKS
/* Reached by library code: returns 0, or the injected error. @point_arg is hook-specific. */
int ubt_hook_point(const char *name, void *point_arg);
#else
static inline int ubt_hook_point(const char *name, void *point_arg)
{
	(void)name;
	(void)point_arg;
	return 0;
}
#endif

/* ---- the test side (always declared; a no-op build returns -ENOSYS) ---- */
int ubt_hook_arm(const char *name, const struct ubt_hook_spec *spec);
void ubt_hook_disarm(const char *name);
void ubt_hook_disarm_all(void);
/* Wait (up to @timeout_ms) until @n threads are paused at @name; 0 or -ETIMEDOUT. */
int ubt_hook_wait_paused(const char *name, unsigned n, unsigned timeout_ms);
/* Release the threads paused at @name (all of them). */
void ubt_hook_release(const char *name);
/* Number of times @name was reached since it was armed. */
unsigned ubt_hook_hits(const char *name);

#endif
