/*
 * test_hooks.c — the named test hooks (src/util/hooks.c): fast path, FAIL with skip/count, CALL
 * arguments, PAUSE with deterministic waiting and release, re-arming, disarm_all as teardown, and
 * an exact failure budget under concurrent arrivals.
 */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdatomic.h>
#include <stdint.h>

#include <cmocka.h>

#include "util/hooks.h"

static void test_unarmed(void **st)
{
	(void)st;
	assert_int_equal(ubt_hook_point("t.none", NULL), 0);
	assert_int_equal(ubt_hook_hits("t.none"), 0);
	assert_int_equal(ubt_hook_arm("t.bad", &(struct ubt_hook_spec){ .action = 0 }), -EINVAL);
}

static void test_fail_skip_count(void **st)
{
	struct ubt_hook_spec spec = { .action = UBT_HOOK_FAIL, .error = -EIO, .skip = 2, .count = 3 };
	int expect[] = { 0, 0, -EIO, -EIO, -EIO, 0, 0 };

	(void)st;
	assert_int_equal(ubt_hook_arm("t.fail", &spec), 0);
	for (unsigned i = 0; i < sizeof(expect) / sizeof(expect[0]); i++)
		assert_int_equal(ubt_hook_point("t.fail", NULL), expect[i]);
	/* disarmed itself after 3 actions: later arrivals are not counted */
	assert_int_equal(ubt_hook_hits("t.fail"), 5);
	/* re-arming resets the counter; disarm stops it */
	spec.skip = 0;
	spec.count = 0;
	assert_int_equal(ubt_hook_arm("t.fail", &spec), 0);
	assert_int_equal(ubt_hook_point("t.fail", NULL), -EIO);
	assert_int_equal(ubt_hook_point("t.other", NULL), 0);
	assert_int_equal(ubt_hook_hits("t.fail"), 1);
	ubt_hook_disarm("t.fail");
	assert_int_equal(ubt_hook_point("t.fail", NULL), 0);
}

static int call_fn(void *arg, void *point_arg)
{
	int *calls = arg;

	(*calls)++;
	return point_arg == (void *)&call_fn ? -ENOSPC : 7;
}

static void test_call(void **st)
{
	int calls = 0;
	struct ubt_hook_spec spec = { .action = UBT_HOOK_CALL, .fn = call_fn, .arg = &calls };

	(void)st;
	assert_int_equal(ubt_hook_arm("t.call", &spec), 0);
	assert_int_equal(ubt_hook_point("t.call", (void *)&call_fn), -ENOSPC);
	assert_int_equal(ubt_hook_point("t.call", NULL), 7);
	assert_int_equal(calls, 2);
	ubt_hook_disarm("t.call");
}

static atomic_int passed;

static void *pauser(void *arg)
{
	int ret = ubt_hook_point("t.pause", arg);

	atomic_fetch_add(&passed, 1);
	return (void *)(intptr_t)ret;
}

static void test_pause_release(void **st)
{
	struct ubt_hook_spec spec = { .action = UBT_HOOK_PAUSE };
	pthread_t t[3];

	(void)st;
	atomic_store(&passed, 0);
	assert_int_equal(ubt_hook_arm("t.pause", &spec), 0);
	/* nobody there yet: times out */
	assert_int_equal(ubt_hook_wait_paused("t.pause", 1, 20), -ETIMEDOUT);
	for (int i = 0; i < 3; i++)
		assert_int_equal(pthread_create(&t[i], NULL, pauser, NULL), 0);
	assert_int_equal(ubt_hook_wait_paused("t.pause", 3, 10000), 0);
	assert_int_equal(atomic_load(&passed), 0);
	assert_int_equal(ubt_hook_hits("t.pause"), 3);
	ubt_hook_disarm("t.pause"); /* paused threads stay paused until released */
	assert_int_equal(atomic_load(&passed), 0);
	ubt_hook_release("t.pause");
	for (int i = 0; i < 3; i++) {
		void *rv;

		pthread_join(t[i], &rv);
		assert_int_equal((intptr_t)rv, 0);
	}
	assert_int_equal(atomic_load(&passed), 3);
	/* disarmed: passes straight through */
	assert_int_equal(ubt_hook_point("t.pause", NULL), 0);
}

static void test_pause_count_and_disarm_all(void **st)
{
	struct ubt_hook_spec spec = { .action = UBT_HOOK_PAUSE, .skip = 1, .count = 1 };
	pthread_t t;

	(void)st;
	atomic_store(&passed, 0);
	assert_int_equal(ubt_hook_arm("t.pause", &spec), 0);
	assert_int_equal(ubt_hook_point("t.pause", NULL), 0); /* skipped */
	assert_int_equal(pthread_create(&t, NULL, pauser, NULL), 0);
	assert_int_equal(ubt_hook_wait_paused("t.pause", 1, 10000), 0);
	/* count reached: the hook disarmed itself, a third arrival passes */
	assert_int_equal(ubt_hook_point("t.pause", NULL), 0);
	assert_int_equal(atomic_load(&passed), 0);
	ubt_hook_disarm_all(); /* teardown releases */
	pthread_join(t, NULL);
	assert_int_equal(atomic_load(&passed), 1);
}

static atomic_int failures;

static void *hammer(void *arg)
{
	(void)arg;
	for (int i = 0; i < 1000; i++)
		if (ubt_hook_point("t.budget", NULL) == -EAGAIN)
			atomic_fetch_add(&failures, 1);
	return NULL;
}

static void test_concurrent_budget(void **st)
{
	struct ubt_hook_spec spec = { .action = UBT_HOOK_FAIL, .error = -EAGAIN, .skip = 50, .count = 100 };
	pthread_t t[4];

	(void)st;
	atomic_store(&failures, 0);
	assert_int_equal(ubt_hook_arm("t.budget", &spec), 0);
	for (int i = 0; i < 4; i++)
		pthread_create(&t[i], NULL, hammer, NULL);
	for (int i = 0; i < 4; i++)
		pthread_join(t[i], NULL);
	assert_int_equal(atomic_load(&failures), 100);
	assert_int_equal(ubt_hook_hits("t.budget"), 150);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_unarmed),
		cmocka_unit_test(test_fail_skip_count),
		cmocka_unit_test(test_call),
		cmocka_unit_test(test_pause_release),
		cmocka_unit_test(test_pause_count_and_disarm_all),
		cmocka_unit_test(test_concurrent_budget),
	};

#ifndef UBT_TEST_HOOKS
	return 0; /* hooks compiled out: nothing to test */
#endif
	return cmocka_run_group_tests(tests, NULL, NULL);
}
