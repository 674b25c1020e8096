/*
 * test_work.c — worker pools (src/work): ordered completion under random delays and with a paused
 * head work, flush semantics, drain at destroy (including works queued by works), no concurrent
 * double run of a requeued work, pausing a worker through the hook points, thread bounds and
 * retirement.
 */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "util/compat.h"
#include "util/hooks.h"
#include "work/workqueue.h"

static u64 rng_state = 0xD1B54A32D192ED03ull;
static pthread_mutex_t rng_lock = PTHREAD_MUTEX_INITIALIZER;
static unsigned rnd(unsigned n)
{
	u64 v;

	pthread_mutex_lock(&rng_lock);
	rng_state ^= rng_state << 13;
	rng_state ^= rng_state >> 7;
	rng_state ^= rng_state << 17;
	v = rng_state;
	pthread_mutex_unlock(&rng_lock);
	return (unsigned)(v % n);
}

/* Poll @cond for up to 10 s (tests wait for progress they know must come). */
#define WAIT_FOR(cond)                                                      \
	do {                                                                \
		for (int _i = 0; !(cond) && _i < 10000; _i++)               \
			usleep(1000);                                       \
		assert_true(cond);                                          \
	} while (0)

/* ---- ordered works ---- */

#define NORD 300

struct ord {
	struct ubt_work work;
	int idx;
	atomic_bool func_done;
	atomic_bool freed;
};

static struct {
	struct ord items[NORD];
	int order[NORD + 1];
	atomic_int nr_ordered;
	atomic_int in_ordered; /* ordered_func calls running now */
	atomic_int nr_funcs;
	atomic_int running, max_running;
	atomic_int errors;
	bool delays;
} O;

static void ord_func(struct ubt_work *w)
{
	struct ord *o = (struct ord *)w;
	int r = atomic_fetch_add(&O.running, 1) + 1, m = atomic_load(&O.max_running);

	while (r > m && !atomic_compare_exchange_weak(&O.max_running, &m, r))
		;
	if (O.delays)
		usleep(rnd(2000));
	atomic_fetch_sub(&O.running, 1);
	atomic_store(&o->func_done, true);
	atomic_fetch_add(&O.nr_funcs, 1);
}

static void ord_ordered(struct ubt_work *w)
{
	struct ord *o = (struct ord *)w;
	int n;

	if (atomic_fetch_add(&O.in_ordered, 1) != 0)
		atomic_fetch_add(&O.errors, 1);
	if (!atomic_load(&o->func_done))
		atomic_fetch_add(&O.errors, 1);
	if (O.delays && rnd(4) == 0)
		usleep(rnd(500));
	n = atomic_load(&O.nr_ordered);
	O.order[n] = o->idx;
	atomic_store(&O.nr_ordered, n + 1);
	atomic_fetch_sub(&O.in_ordered, 1);
}

static void ord_free(struct ubt_work *w)
{
	struct ord *o = (struct ord *)w;

	atomic_store(&o->freed, true);
}

static void reset_ord(bool delays)
{
	memset(&O, 0, sizeof(O));
	O.delays = delays;
	for (int i = 0; i < NORD; i++) {
		ubt_init_work(&O.items[i].work, ord_func, ord_ordered, ord_free);
		O.items[i].idx = i;
	}
}

static void test_ordered_random_delays(void **st)
{
	struct ubt_workqueue *wq = ubt_wq_create("t_ord", 6, 0);

	(void)st;
	assert_false(IS_ERR(wq));
	reset_ord(true);
	for (int i = 0; i < NORD; i++) {
		assert_true(ubt_queue_work(wq, &O.items[i].work));
		if (rnd(8) == 0)
			usleep(rnd(300));
	}
	ubt_wq_flush(wq);
	assert_int_equal(atomic_load(&O.nr_ordered), NORD);
	for (int i = 0; i < NORD; i++) {
		assert_int_equal(O.order[i], i);
		assert_true(atomic_load(&O.items[i].freed));
	}
	assert_int_equal(atomic_load(&O.errors), 0);
	assert_true(ubt_wq_max_seen_threads(wq) <= 6);
	print_message("funcs ran up to %d at once on up to %u threads\n", atomic_load(&O.max_running),
		      ubt_wq_max_seen_threads(wq));
	/* an ordered work may be queued again once freed */
	O.items[0].func_done = false;
	assert_true(ubt_queue_work(wq, &O.items[0].work));
	ubt_wq_flush(wq);
	assert_int_equal(atomic_load(&O.nr_ordered), NORD + 1);
	ubt_wq_destroy(wq);
}

#ifdef UBT_TEST_HOOKS
/* The head work is paused before its func: later funcs finish, no ordered_func may run. */
static void test_ordered_head_paused(void **st)
{
	struct ubt_workqueue *wq = ubt_wq_create("t_ordp", 4, 0);
	struct ubt_hook_spec pause = { .action = UBT_HOOK_PAUSE, .count = 1 };

	(void)st;
	reset_ord(false);
	assert_int_equal(ubt_hook_arm("work.t_ordp.before_run", &pause), 0);
	assert_true(ubt_queue_work(wq, &O.items[0].work));
	assert_int_equal(ubt_hook_wait_paused("work.t_ordp.before_run", 1, 10000), 0);
	for (int i = 1; i < 20; i++)
		assert_true(ubt_queue_work(wq, &O.items[i].work));
	assert_false(ubt_queue_work(wq, &O.items[5].work)); /* outstanding ordered work: refused */
	WAIT_FOR(atomic_load(&O.nr_funcs) == 19);
	assert_int_equal(atomic_load(&O.nr_ordered), 0);
	assert_false(atomic_load(&O.items[0].func_done));
	ubt_hook_release("work.t_ordp.before_run");
	ubt_wq_flush(wq);
	assert_int_equal(atomic_load(&O.nr_ordered), 20);
	for (int i = 0; i < 20; i++)
		assert_int_equal(O.order[i], i);
	assert_int_equal(atomic_load(&O.errors), 0);
	ubt_wq_destroy(wq);
}
#endif

/* ---- flush ---- */

struct gated {
	struct ubt_work work;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	bool open;
	atomic_bool started, done;
	atomic_int runs;
};

static void gated_func(struct ubt_work *w)
{
	struct gated *g = (struct gated *)w;

	atomic_store(&g->started, true);
	pthread_mutex_lock(&g->lock);
	while (!g->open)
		pthread_cond_wait(&g->cond, &g->lock);
	pthread_mutex_unlock(&g->lock);
	atomic_fetch_add(&g->runs, 1);
	atomic_store(&g->done, true);
}

static void gated_init(struct gated *g)
{
	memset(g, 0, sizeof(*g));
	ubt_init_work(&g->work, gated_func, NULL, NULL);
	pthread_mutex_init(&g->lock, NULL);
	pthread_cond_init(&g->cond, NULL);
}

static void gate_open(struct gated *g)
{
	pthread_mutex_lock(&g->lock);
	g->open = true;
	pthread_cond_broadcast(&g->cond);
	pthread_mutex_unlock(&g->lock);
}

struct flusher {
	struct ubt_workqueue *wq;
	atomic_bool returned;
};

static void *flusher_main(void *arg)
{
	struct flusher *f = arg;

	ubt_wq_flush(f->wq);
	atomic_store(&f->returned, true);
	return NULL;
}

static atomic_int plain_runs;
static void plain_func(struct ubt_work *w)
{
	usleep(rnd(500));
	atomic_fetch_add(&plain_runs, 1);
	free(w);
}

static void test_flush(void **st)
{
	struct ubt_workqueue *wq = ubt_wq_create("t_flush", 3, 0);
	struct gated g;
	struct flusher f = { .wq = wq };
	pthread_t t;

	(void)st;
	/* flush of an empty pool returns */
	ubt_wq_flush(wq);
	/* everything queued before returns done (works free themselves) */
	atomic_store(&plain_runs, 0);
	for (int i = 0; i < 200; i++) {
		struct ubt_work *w = malloc(sizeof(*w));

		ubt_init_work(w, plain_func, NULL, NULL);
		ubt_queue_work(wq, w);
	}
	ubt_wq_flush(wq);
	assert_int_equal(atomic_load(&plain_runs), 200);

	/* a flush waits for a running work */
	gated_init(&g);
	assert_true(ubt_queue_work(wq, &g.work));
	WAIT_FOR(atomic_load(&g.started));
	pthread_create(&t, NULL, flusher_main, &f);
	usleep(20000); /* no proof, but an early return would show here */
	assert_false(atomic_load(&f.returned));
	gate_open(&g);
	pthread_join(t, NULL);
	assert_true(atomic_load(&f.returned));
	assert_true(atomic_load(&g.done));
	ubt_wq_destroy(wq);
}

/* ---- drain at destroy ---- */

struct chain {
	struct ubt_work work;
	struct ubt_workqueue *wq;
	int left;
};

static atomic_int chain_runs;

static void chain_func(struct ubt_work *w)
{
	struct chain *c = (struct chain *)w;

	atomic_fetch_add(&chain_runs, 1);
	usleep(100);
	if (--c->left > 0)
		ubt_queue_work(c->wq, &c->work); /* requeue itself from its own func */
}

static void test_drain_on_destroy(void **st)
{
	struct ubt_workqueue *wq = ubt_wq_create("t_drain", 4, 0);
	struct chain c[4];

	(void)st;
	atomic_store(&chain_runs, 0);
	atomic_store(&plain_runs, 0);
	for (int i = 0; i < 4; i++) {
		ubt_init_work(&c[i].work, chain_func, NULL, NULL);
		c[i].wq = wq;
		c[i].left = 50;
		ubt_queue_work(wq, &c[i].work);
	}
	for (int i = 0; i < 100; i++) {
		struct ubt_work *w = malloc(sizeof(*w));

		ubt_init_work(w, plain_func, NULL, NULL);
		ubt_queue_work(wq, w);
	}
	ubt_wq_destroy(wq);
	assert_int_equal(atomic_load(&chain_runs), 200);
	assert_int_equal(atomic_load(&plain_runs), 100);
}

/* ---- no double run ---- */

static struct {
	struct ubt_work work;
	atomic_int running;
	atomic_int runs;
	atomic_int overlaps;
} D;

static void dbl_func(struct ubt_work *w)
{
	(void)w;
	if (atomic_fetch_add(&D.running, 1) != 0)
		atomic_fetch_add(&D.overlaps, 1);
	usleep(rnd(200));
	atomic_fetch_add(&D.runs, 1);
	atomic_fetch_sub(&D.running, 1);
}

static atomic_int queued_ok;

static void *requeuer(void *arg)
{
	struct ubt_workqueue *wq = arg;

	for (int i = 0; i < 2000; i++) {
		if (ubt_queue_work(wq, &D.work))
			atomic_fetch_add(&queued_ok, 1);
		if (rnd(4) == 0)
			usleep(rnd(100));
	}
	return NULL;
}

static void test_no_double_run(void **st)
{
	struct ubt_workqueue *wq = ubt_wq_create("t_dbl", 8, 0);
	pthread_t t[4];
	struct gated g;

	(void)st;
	memset(&D, 0, sizeof(D));
	atomic_store(&queued_ok, 0);
	ubt_init_work(&D.work, dbl_func, NULL, NULL);
	for (int i = 0; i < 4; i++)
		pthread_create(&t[i], NULL, requeuer, wq);
	for (int i = 0; i < 4; i++)
		pthread_join(t[i], NULL);
	ubt_wq_flush(wq);
	assert_int_equal(atomic_load(&D.overlaps), 0);
	/* every successful queueing is one run (a pending work is not queued twice) */
	assert_int_equal(atomic_load(&D.runs), atomic_load(&queued_ok));
	print_message("%d runs, none concurrent\n", atomic_load(&D.runs));

	/* deterministic: queued while running runs again after, on whichever thread */
	gated_init(&g);
	assert_true(ubt_queue_work(wq, &g.work));
	WAIT_FOR(atomic_load(&g.started));
	assert_true(ubt_queue_work(wq, &g.work));  /* running, not pending: queued */
	assert_false(ubt_queue_work(wq, &g.work)); /* now pending: no-op */
	usleep(20000);
	assert_int_equal(atomic_load(&g.runs), 0); /* the second run did not start beside the first */
	gate_open(&g);
	ubt_wq_flush(wq);
	assert_int_equal(atomic_load(&g.runs), 2);
	ubt_wq_destroy(wq);
}

/* ---- pausing a worker through the hook points ---- */

#ifdef UBT_TEST_HOOKS
static atomic_int simple_runs;
static void simple_func(struct ubt_work *w)
{
	(void)w;
	atomic_fetch_add(&simple_runs, 1);
}

static int after_check(void *arg, void *point_arg)
{
	struct ubt_work **expect = arg;

	if (point_arg != *expect)
		return -EINVAL;
	atomic_fetch_add(&simple_runs, 100);
	return 0;
}

static void test_pause_worker(void **st)
{
	struct ubt_workqueue *wq = ubt_wq_create("t_pause", 1, 0);
	struct ubt_work w1, w2, *expect = &w1;
	struct ubt_hook_spec pause = { .action = UBT_HOOK_PAUSE, .count = 1 };
	struct ubt_hook_spec after = { .action = UBT_HOOK_CALL, .fn = after_check, .arg = &expect, .count = 1 };
	struct flusher f = { .wq = wq };
	pthread_t t;

	(void)st;
	atomic_store(&simple_runs, 0);
	ubt_init_work(&w1, simple_func, NULL, NULL);
	ubt_init_work(&w2, simple_func, NULL, NULL);
	assert_int_equal(ubt_hook_arm("work.t_pause.before_run", &pause), 0);
	assert_int_equal(ubt_hook_arm("work.t_pause.after_run", &after), 0);
	assert_true(ubt_queue_work(wq, &w1));
	assert_true(ubt_queue_work(wq, &w2));
	assert_int_equal(ubt_hook_wait_paused("work.t_pause.before_run", 1, 10000), 0);
	/* the only thread is paused before w1's func: nothing ran, flush cannot finish */
	pthread_create(&t, NULL, flusher_main, &f);
	usleep(20000);
	assert_int_equal(atomic_load(&simple_runs), 0);
	assert_false(atomic_load(&f.returned));
	assert_false(ubt_queue_work(wq, &w2)); /* still pending */
	ubt_hook_release("work.t_pause.before_run");
	pthread_join(t, NULL);
	/* w1 ran and after_run saw w1 (+100), then w2 ran (hook used up) */
	assert_int_equal(atomic_load(&simple_runs), 102);
	assert_int_equal(ubt_hook_hits("work.t_pause.before_run"), 1);
	assert_int_equal(ubt_hook_hits("work.t_pause.after_run"), 1);
	ubt_wq_destroy(wq);
}
#endif

/* ---- thread bounds and retirement ---- */

static void sleepy_func(struct ubt_work *w)
{
	usleep(5000);
	free(w);
}

static void test_threads_retire(void **st)
{
	struct ubt_workqueue *wq = ubt_wq_create("t_idle", 4, 0);
	struct ubt_workqueue *keep = ubt_wq_create("t_keep", 2, UBT_WQ_KEEP_ONE);

	(void)st;
	assert_ptr_equal(ubt_wq_create("x", 0, 0), ERR_PTR(-EINVAL));
	ubt_wq_set_idle_ms(wq, 30);
	ubt_wq_set_idle_ms(keep, 30);
	assert_int_equal(ubt_wq_nr_threads(wq), 0);
	for (int i = 0; i < 40; i++) {
		struct ubt_work *w = malloc(sizeof(*w)), *w2 = malloc(sizeof(*w2));

		ubt_init_work(w, sleepy_func, NULL, NULL);
		ubt_init_work(w2, sleepy_func, NULL, NULL);
		ubt_queue_work(wq, w);
		ubt_queue_work(keep, w2);
	}
	ubt_wq_flush(wq);
	ubt_wq_flush(keep);
	assert_true(ubt_wq_max_seen_threads(wq) >= 1 && ubt_wq_max_seen_threads(wq) <= 4);
	assert_true(ubt_wq_max_seen_threads(keep) <= 2);
	WAIT_FOR(ubt_wq_nr_threads(wq) == 0);
	WAIT_FOR(ubt_wq_nr_threads(keep) == 1);
	usleep(100000);
	assert_int_equal(ubt_wq_nr_threads(keep), 1);
	/* a retired pool starts threads again */
	atomic_store(&plain_runs, 0);
	for (int i = 0; i < 10; i++) {
		struct ubt_work *w = malloc(sizeof(*w));

		ubt_init_work(w, plain_func, NULL, NULL);
		ubt_queue_work(wq, w);
	}
	ubt_wq_flush(wq);
	assert_int_equal(atomic_load(&plain_runs), 10);
	assert_string_equal(ubt_wq_name(wq), "t_idle");
	ubt_wq_destroy(wq);
	ubt_wq_destroy(keep);
	ubt_wq_destroy(NULL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_ordered_random_delays),
#ifdef UBT_TEST_HOOKS
		cmocka_unit_test(test_ordered_head_paused),
		cmocka_unit_test(test_pause_worker),
#endif
		cmocka_unit_test(test_flush),
		cmocka_unit_test(test_drain_on_destroy),
		cmocka_unit_test(test_no_double_run),
		cmocka_unit_test(test_threads_retire),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
