/*
 * test_extent_io_tree.c — the red-black tree (util/rbtree) and the extent io tree
 * (cache/extent-io-tree): random operations checked against a per-block model, maximal merging and
 * tree invariants after every operation, callback accounting (delalloc bytes, released data
 * reservations, delalloc state count via merge/split), edge offsets near 2^64, and lock_extent
 * contention between threads made deterministic with the "extent_io.lock_wait" hook.
 */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "cache/extent-io-tree.h"
#include "util/hooks.h"
#include "util/rbtree.h"

static u64 rng_state = 0x243F6A8885A308D3ull;
static u64 rng(void)
{
	rng_state ^= rng_state << 13;
	rng_state ^= rng_state >> 7;
	rng_state ^= rng_state << 17;
	return rng_state;
}

/* ---- rbtree ---- */

struct item {
	struct ubt_rb_node node;
	unsigned key;
};

static void rb_insert_key(struct ubt_rb_root *root, struct item *it)
{
	struct ubt_rb_node **link = &root->node, *parent = NULL;

	while (*link) {
		parent = *link;
		link = it->key < ubt_rb_entry(parent, struct item, node)->key ? &parent->left : &parent->right;
	}
	ubt_rb_link(&it->node, parent, link);
	ubt_rb_insert_color(root, &it->node);
}

static void test_rbtree_random(void **st)
{
	enum { N = 2000 };
	struct item *items = calloc(N, sizeof(*items));
	bool *in = calloc(N, sizeof(*in));
	struct ubt_rb_root root = UBT_RB_ROOT;
	long count = 0;

	(void)st;
	for (unsigned i = 0; i < N; i++) {
		items[i].key = i;
		ubt_rb_clear_node(&items[i].node);
	}
	for (int op = 0; op < 20000; op++) {
		unsigned k = rng() % N;

		if (in[k]) {
			ubt_rb_erase(&root, &items[k].node);
			assert_false(ubt_rb_is_linked(&items[k].node));
			count--;
		} else if (rng() % 3 == 0 && count > 0) {
			/* insert next to an existing neighbour in key order */
			unsigned j = k;

			while (j < N && !in[j])
				j++;
			if (j < N)
				ubt_rb_insert_before(&root, &items[k].node, &items[j].node);
			else
				rb_insert_key(&root, &items[k]);
			count++;
		} else {
			rb_insert_key(&root, &items[k]);
			count++;
		}
		in[k] = !in[k];
		if (op % 97 == 0 || op > 19900) {
			unsigned prev = 0;
			long seen = 0;

			assert_int_equal(ubt_rb_check(&root), count);
			for (struct ubt_rb_node *n = ubt_rb_first(&root); n; n = ubt_rb_next(n)) {
				unsigned key = ubt_rb_entry(n, struct item, node)->key;

				assert_true(in[key]);
				if (seen)
					assert_true(key > prev);
				prev = key;
				seen++;
			}
			assert_int_equal(seen, count);
			seen = 0;
			for (struct ubt_rb_node *n = ubt_rb_last(&root); n; n = ubt_rb_prev(n))
				seen++;
			assert_int_equal(seen, count);
		}
	}
	free(items);
	free(in);
}

/* ---- the extent io tree against a model ---- */

#define NB 4096u  /* blocks in the model */
#define BS 4096ull /* bytes per block */
#define ALL_BITS UBT_EXTENT_STORED_BITS

struct acct {
	s64 delalloc_bytes;   /* set_bits_cb - clear_bits_cb, DELALLOC pieces */
	u64 released_data;    /* DELALLOC bytes cleared with CLEAR_DATA_RESV */
	long delalloc_states; /* +set -clear -merge +split */
	unsigned long calls;
};

static void cb_set(void *priv, u64 start, u64 end, unsigned bits)
{
	struct acct *a = priv;

	assert_true(bits & UBT_EXTENT_DELALLOC);
	a->delalloc_bytes += (s64)(end - start + 1);
	a->delalloc_states++;
	a->calls++;
}

static void cb_clear(void *priv, u64 start, u64 end, unsigned bits)
{
	struct acct *a = priv;

	assert_true(bits & UBT_EXTENT_DELALLOC);
	a->delalloc_bytes -= (s64)(end - start + 1);
	if (bits & UBT_EXTENT_CLEAR_DATA_RESV)
		a->released_data += end - start + 1;
	a->delalloc_states--;
	a->calls++;
}

static void cb_merge(void *priv, const struct ubt_extent_state *x, const struct ubt_extent_state *y)
{
	struct acct *a = priv;

	assert_true(x->end + 1 == y->start);
	assert_true(x->state == y->state && (x->state & UBT_EXTENT_DELALLOC));
	a->delalloc_states--;
}

static void cb_split(void *priv, const struct ubt_extent_state *orig, u64 at)
{
	struct acct *a = priv;

	assert_true(orig->start < at && at <= orig->end);
	assert_true(orig->state & UBT_EXTENT_DELALLOC);
	a->delalloc_states++;
}

static const struct ubt_extent_io_ops acct_ops = {
	.set_bits_cb = cb_set,
	.clear_bits_cb = cb_clear,
	.merge_cb = cb_merge,
	.split_cb = cb_split,
};

struct collect {
	u8 *model;
	long states;
	long delalloc_states;
};

static void collect_fn(void *arg, u64 start, u64 end, unsigned bits)
{
	struct collect *c = arg;

	assert_int_equal(start % BS, 0);
	assert_int_equal((end + 1) % BS, 0);
	assert_true(end / BS < NB);
	for (u64 b = start / BS; b <= end / BS; b++) {
		assert_int_equal(c->model[b], 0);
		c->model[b] = (u8)bits;
	}
	c->states++;
	if (bits & UBT_EXTENT_DELALLOC)
		c->delalloc_states++;
}

/* Full comparison of the tree with the model, and of the callbacks' accounts. */
static void check_against_model(struct ubt_extent_io_tree *tree, const u8 *model, const struct acct *a)
{
	u8 seen[NB];
	struct collect c = { .model = seen };
	u64 delalloc = 0;

	memset(seen, 0, sizeof(seen));
	assert_int_equal(ubt_extent_io_tree_check(tree), 0);
	ubt_extent_io_tree_for_each(tree, collect_fn, &c);
	assert_memory_equal(seen, model, NB);
	for (unsigned b = 0; b < NB; b++)
		if (model[b] & UBT_EXTENT_DELALLOC)
			delalloc += BS;
	assert_int_equal(a->delalloc_bytes, (s64)delalloc);
	assert_int_equal(a->delalloc_states, c.delalloc_states);
	assert_int_equal((long)tree->nr_states, c.states);
}

static unsigned random_bits(void)
{
	unsigned bits = (unsigned)rng() & ALL_BITS;

	/* favour few bits so that ranges merge and split often */
	if (rng() % 2)
		bits &= (unsigned)rng();
	if (rng() % 3 == 0)
		bits |= UBT_EXTENT_DELALLOC;
	return bits ? bits : UBT_EXTENT_DELALLOC;
}

static void random_range(unsigned *a, unsigned *b)
{
	unsigned len = rng() % 4 == 0 ? (unsigned)(rng() % NB) : (unsigned)(rng() % 64);

	*a = (unsigned)(rng() % NB);
	*b = *a + len >= NB ? NB - 1 : *a + len;
}

static void test_model_random(void **st)
{
	struct ubt_extent_io_tree tree;
	struct acct acct = { 0 };
	u8 *model = calloc(NB, 1);
	u64 model_released = 0;
	unsigned long nops[10] = { 0 };

	(void)st;
	ubt_extent_io_tree_init(&tree, &acct_ops, &acct);
	for (int op = 0; op < 30000; op++) {
		unsigned a, b, bits, kind = (unsigned)(rng() % 10);
		u64 s, e;

		random_range(&a, &b);
		s = a * BS;
		e = (b + 1) * BS - 1;
		bits = random_bits();
		nops[kind]++;
		switch (kind) {
		case 0:
		case 1:
		case 2: /* set */
			assert_int_equal(ubt_set_extent_bit(&tree, s, e, bits, NULL), 0);
			for (unsigned i = a; i <= b; i++)
				model[i] |= (u8)bits;
			break;
		case 3:
		case 4: { /* clear, sometimes releasing the data reservation */
			unsigned ctl = rng() % 2 ? UBT_EXTENT_CLEAR_DATA_RESV : 0;

			if (rng() % 8 == 0)
				bits = ALL_BITS;
			assert_int_equal(ubt_clear_extent_bit(&tree, s, e, bits | ctl, NULL), 0);
			for (unsigned i = a; i <= b; i++) {
				if (ctl && (model[i] & bits & UBT_EXTENT_DELALLOC))
					model_released += BS;
				model[i] &= (u8)~bits;
			}
			break;
		}
		case 5: { /* test_range_bit, both modes */
			bool all = true, any = false;

			for (unsigned i = a; i <= b; i++) {
				all = all && (model[i] & bits) == bits;
				any = any || (model[i] & bits);
			}
			assert_int_equal(ubt_test_range_bit(&tree, s, e, bits, UBT_TEST_ALL), all);
			assert_int_equal(ubt_test_range_bit(&tree, s, e, bits, UBT_TEST_ANY), any);
			/* unaligned probes inside the same blocks see the same answer */
			assert_int_equal(ubt_test_range_bit(&tree, s + 1, e - 1, bits, UBT_TEST_ALL), all);
			break;
		}
		case 6: { /* find_first_extent_bit: the maximal run of identical bits holding the first hit */
			u64 fs = 0, fe = 0;
			unsigned p = a, lo, hi;
			int ret = ubt_find_first_extent_bit(&tree, s + rng() % BS, bits, &fs, &fe);

			while (p < NB && !(model[p] & bits))
				p++;
			if (p == NB) {
				assert_int_equal(ret, -ENOENT);
				break;
			}
			assert_int_equal(ret, 0);
			lo = hi = p;
			while (lo > 0 && model[lo - 1] == model[p])
				lo--;
			while (hi + 1 < NB && model[hi + 1] == model[p])
				hi++;
			assert_int_equal(fs, lo * BS);
			assert_int_equal(fe, (hi + 1) * BS - 1);
			break;
		}
		case 7: { /* count_range_bits with a byte limit */
			u64 max = rng() % 2 ? UINT64_MAX : (rng() % 64 + 1) * BS - rng() % BS;
			u64 cs = s, total = 0, first = UINT64_MAX, got;

			for (unsigned i = a; i <= b; i++) {
				if (model[i] & bits) {
					if (first == UINT64_MAX)
						first = i * BS;
					total += BS;
				}
			}
			got = ubt_count_range_bits(&tree, &cs, e, max, bits);
			assert_int_equal(got, total < max ? total : max);
			assert_int_equal(cs, first == UINT64_MAX ? s : first);
			break;
		}
		case 8: { /* find_delalloc_range in a window, with a limit */
			u64 max = rng() % 3 == 0 ? 0 : (rng() % 128 + 1) * BS;
			u64 ws = s, we = e;
			unsigned p = a, q;
			bool found = ubt_find_delalloc_range(&tree, &ws, &we, max);

			while (p <= b && !(model[p] & UBT_EXTENT_DELALLOC))
				p++;
			if (p > b) {
				assert_false(found);
				assert_int_equal(ws, s);
				assert_int_equal(we, e);
				break;
			}
			assert_true(found);
			q = p;
			while (q < b && (model[q + 1] & UBT_EXTENT_DELALLOC))
				q++;
			if (max && (u64)(q - p + 1) * BS > max)
				q = p + (unsigned)(max / BS) - 1;
			assert_int_equal(ws, p * BS);
			assert_int_equal(we, (q + 1) * BS - 1);
			break;
		}
		case 9: { /* try_lock / unlock with a cached state */
			struct ubt_extent_state *cached = NULL;
			bool locked = false;
			int ret;

			for (unsigned i = a; i <= b; i++)
				locked = locked || (model[i] & UBT_EXTENT_LOCKED);
			ret = ubt_try_lock_extent(&tree, s, e, &cached);
			if (locked) {
				assert_int_equal(ret, -EAGAIN);
				assert_null(cached);
				/* unlock what is there, from another "owner" */
				assert_int_equal(ubt_unlock_extent(&tree, s, e, NULL), 0);
				for (unsigned i = a; i <= b; i++)
					model[i] &= (u8)~UBT_EXTENT_LOCKED;
				break;
			}
			assert_int_equal(ret, 0);
			assert_non_null(cached);
			assert_true(cached->start <= s && cached->end >= s);
			for (unsigned i = a; i <= b; i++)
				model[i] |= UBT_EXTENT_LOCKED;
			if (rng() % 2) {
				/* keep it locked for a while: drop the cached reference only */
				ubt_free_extent_state(cached);
			} else {
				check_against_model(&tree, model, &acct);
				assert_int_equal(ubt_unlock_extent(&tree, s, e, &cached), 0);
				assert_null(cached);
				for (unsigned i = a; i <= b; i++)
					model[i] &= (u8)~UBT_EXTENT_LOCKED;
			}
			break;
		}
		}
		if (op % 7 == 0 || op > 29900)
			check_against_model(&tree, model, &acct);
		assert_int_equal(acct.released_data, model_released);
	}
	check_against_model(&tree, model, &acct);
	/* clearing everything frees every state and balances the accounts */
	assert_int_equal(ubt_clear_extent_bit(&tree, 0, UINT64_MAX, ALL_BITS, NULL), 0);
	assert_int_equal(tree.nr_states, 0);
	assert_true(ubt_rb_empty(&tree.states));
	assert_int_equal(acct.delalloc_bytes, 0);
	assert_int_equal(acct.delalloc_states, 0);
	print_message("ops: %lu set, %lu clear, %lu test, %lu find, %lu count, %lu delalloc, %lu lock; %lu callbacks\n",
		      nops[0] + nops[1] + nops[2], nops[3] + nops[4], nops[5], nops[6], nops[7], nops[8], nops[9],
		      acct.calls);
	ubt_extent_io_tree_release(&tree);
	free(model);
}

static void test_merge_split_basics(void **st)
{
	struct ubt_extent_io_tree tree;
	struct acct acct = { 0 };
	u64 s, e;

	(void)st;
	ubt_extent_io_tree_init(&tree, &acct_ops, &acct);
	/* adjacent sets merge into one state */
	assert_int_equal(ubt_set_extent_bit(&tree, 0, 4095, UBT_EXTENT_DELALLOC, NULL), 0);
	assert_int_equal(ubt_set_extent_bit(&tree, 8192, 12287, UBT_EXTENT_DELALLOC, NULL), 0);
	assert_int_equal(tree.nr_states, 2);
	assert_int_equal(ubt_set_extent_bit(&tree, 4096, 8191, UBT_EXTENT_DELALLOC, NULL), 0);
	assert_int_equal(tree.nr_states, 1);
	assert_int_equal(acct.delalloc_states, 1);
	/* clearing the middle splits */
	assert_int_equal(ubt_clear_extent_bit(&tree, 4096, 8191, UBT_EXTENT_DELALLOC, NULL), 0);
	assert_int_equal(tree.nr_states, 2);
	assert_int_equal(acct.delalloc_states, 2);
	assert_int_equal(acct.delalloc_bytes, 8192);
	/* an extra bit in the middle of a state makes three */
	assert_int_equal(ubt_set_extent_bit(&tree, 0, 4095, UBT_EXTENT_DELALLOC_NEW, NULL), 0);
	assert_int_equal(ubt_set_extent_bit(&tree, 100, 199, UBT_EXTENT_UPTODATE, NULL), 0);
	assert_int_equal(tree.nr_states, 4);
	assert_int_equal(ubt_extent_io_tree_check(&tree), 0);
	assert_int_equal(ubt_find_first_extent_bit(&tree, 150, UBT_EXTENT_UPTODATE, &s, &e), 0);
	assert_int_equal(s, 100);
	assert_int_equal(e, 199);
	assert_int_equal(ubt_find_first_extent_bit(&tree, 200, UBT_EXTENT_UPTODATE, &s, &e), -ENOENT);
	/* the very top of the address space: no overflow */
	assert_int_equal(ubt_set_extent_bit(&tree, UINT64_MAX - 4095, UINT64_MAX, UBT_EXTENT_DELALLOC, NULL), 0);
	assert_int_equal(ubt_set_extent_bit(&tree, UINT64_MAX - 8191, UINT64_MAX - 4096, UBT_EXTENT_DELALLOC, NULL), 0);
	assert_int_equal(ubt_extent_io_tree_check(&tree), 0);
	s = UINT64_MAX - 10000;
	e = UINT64_MAX;
	assert_true(ubt_find_delalloc_range(&tree, &s, &e, 0));
	assert_int_equal(s, UINT64_MAX - 8191);
	assert_int_equal(e, UINT64_MAX);
	assert_true(ubt_test_range_bit(&tree, UINT64_MAX - 8191, UINT64_MAX, UBT_EXTENT_DELALLOC, UBT_TEST_ALL));
	assert_int_equal(ubt_clear_extent_bit(&tree, 0, UINT64_MAX, ALL_BITS | UBT_EXTENT_DO_ACCOUNTING, NULL), 0);
	assert_int_equal(tree.nr_states, 0);
	assert_int_equal(acct.delalloc_bytes, 0);
	assert_int_equal(acct.released_data, 8192 + 8192);
	assert_int_equal(ubt_set_extent_bit(&tree, 10, 5, UBT_EXTENT_DIRTY, NULL), -EINVAL);
	ubt_extent_io_tree_release(&tree);
}

/* ---- lock_extent between threads ---- */

#ifdef UBT_TEST_HOOKS /* the contention tests pause at extent_io.lock_wait */

struct locker {
	struct ubt_extent_io_tree *tree;
	u64 start, end;
	atomic_bool done;
	int ret;
	pthread_t thread;
};

static void *locker_main(void *arg)
{
	struct locker *l = arg;

	l->ret = ubt_lock_extent(l->tree, l->start, l->end, NULL);
	atomic_store(&l->done, true);
	return NULL;
}

static void start_locker(struct locker *l, struct ubt_extent_io_tree *tree, u64 start, u64 end)
{
	l->tree = tree;
	l->start = start;
	l->end = end;
	atomic_store(&l->done, false);
	assert_int_equal(pthread_create(&l->thread, NULL, locker_main, l), 0);
}

static void test_lock_contention(void **st)
{
	struct ubt_extent_io_tree tree;
	struct ubt_hook_spec pause = { .action = UBT_HOOK_PAUSE };
	struct locker l[3];
	struct ubt_extent_state *cached = NULL;

	(void)st;
	ubt_extent_io_tree_init(&tree, NULL, NULL);
	assert_int_equal(ubt_lock_extent(&tree, 0, 16383, &cached), 0);
	assert_non_null(cached);

	/* three waiters overlapping the held range in different ways */
	assert_int_equal(ubt_hook_arm("extent_io.lock_wait", &pause), 0);
	start_locker(&l[0], &tree, 4096, 8191);	 /* inside */
	start_locker(&l[1], &tree, 12288, 20479); /* straddles the end */
	start_locker(&l[2], &tree, 8192, 12287);	 /* inside, disjoint from l[0] and l[1] */
	assert_int_equal(ubt_hook_wait_paused("extent_io.lock_wait", 3, 10000), 0);
	ubt_hook_disarm("extent_io.lock_wait");
	ubt_hook_release("extent_io.lock_wait");
	for (int i = 0; i < 3; i++)
		assert_false(atomic_load(&l[i].done));
	assert_int_equal(ubt_try_lock_extent(&tree, 16383, 16383, NULL), -EAGAIN);
	assert_int_equal(ubt_try_lock_extent(&tree, 16384, 16384 + 4095, NULL), 0); /* just past it */
	assert_int_equal(ubt_unlock_extent(&tree, 16384, 16384 + 4095, NULL), 0);
	for (int i = 0; i < 3; i++)
		assert_false(atomic_load(&l[i].done));

	/* unlock from this thread; the three take their (disjoint) ranges */
	assert_int_equal(ubt_unlock_extent(&tree, 0, 16383, &cached), 0);
	assert_null(cached);
	for (int i = 0; i < 3; i++) {
		pthread_join(l[i].thread, NULL);
		assert_int_equal(l[i].ret, 0);
	}
	assert_true(ubt_test_range_bit(&tree, 4096, 20479, UBT_EXTENT_LOCKED, UBT_TEST_ALL));
	assert_false(ubt_test_range_bit(&tree, 0, 4095, UBT_EXTENT_LOCKED, UBT_TEST_ANY));
	assert_int_equal(tree.nr_states, 1); /* merged: locks are not owned */

	/* a waiter for a range that is unlocked piecewise gets it only when all is free */
	start_locker(&l[0], &tree, 0, 24575);
	assert_int_equal(ubt_unlock_extent(&tree, 4096, 12287, NULL), 0);
	assert_int_equal(ubt_unlock_extent(&tree, 16384, 20479, NULL), 0);
	usleep(20000); /* no proof, but a waiter that woke too early would show here */
	assert_false(atomic_load(&l[0].done));
	assert_int_equal(ubt_unlock_extent(&tree, 12288, 16383, NULL), 0);
	pthread_join(l[0].thread, NULL);
	assert_true(ubt_test_range_bit(&tree, 0, 24575, UBT_EXTENT_LOCKED, UBT_TEST_ALL));
	assert_int_equal(ubt_unlock_extent(&tree, 0, 24575, NULL), 0);
	assert_int_equal(tree.nr_states, 0);
	ubt_extent_io_tree_release(&tree);
}

#endif

/* Many threads lock overlapping random ranges; a per-block owner array proves exclusion. */
static struct {
	struct ubt_extent_io_tree tree;
	atomic_int owner[64];
	atomic_int violations;
} excl;

static void *excl_main(void *arg)
{
	int id = (int)(intptr_t)arg;
	u64 seed = 0x9E3779B97F4A7C15ull * (u64)(id + 1);

	for (int i = 0; i < 2000; i++) {
		unsigned a, b;

		seed ^= seed << 13;
		seed ^= seed >> 7;
		seed ^= seed << 17;
		a = (unsigned)(seed % 64);
		b = a + (unsigned)((seed >> 8) % 8);
		if (b > 63)
			b = 63;
		assert_int_equal(ubt_lock_extent(&excl.tree, a * BS, (b + 1) * BS - 1, NULL), 0);
		for (unsigned k = a; k <= b; k++) {
			int expect = 0;

			if (!atomic_compare_exchange_strong(&excl.owner[k], &expect, id + 1))
				atomic_fetch_add(&excl.violations, 1);
		}
		for (unsigned k = a; k <= b; k++)
			atomic_store(&excl.owner[k], 0);
		assert_int_equal(ubt_unlock_extent(&excl.tree, a * BS, (b + 1) * BS - 1, NULL), 0);
	}
	return NULL;
}

static void test_lock_exclusion(void **st)
{
	pthread_t t[4];

	(void)st;
	ubt_extent_io_tree_init(&excl.tree, NULL, NULL);
	for (int i = 0; i < 4; i++)
		pthread_create(&t[i], NULL, excl_main, (void *)(intptr_t)i);
	for (int i = 0; i < 4; i++)
		pthread_join(t[i], NULL);
	assert_int_equal(atomic_load(&excl.violations), 0);
	assert_int_equal(excl.tree.nr_states, 0);
	ubt_extent_io_tree_release(&excl.tree);
}

#ifdef UBT_TEST_HOOKS
/* find_lock_delalloc_range retries when the run shrank while it waited for the lock. */
struct finder {
	struct ubt_extent_io_tree *tree;
	u64 start, end;
	bool found;
};

static void *finder_main(void *arg)
{
	struct finder *f = arg;

	f->found = ubt_find_lock_delalloc_range(f->tree, &f->start, &f->end, 0, NULL);
	return NULL;
}

static void test_find_lock_delalloc(void **st)
{
	struct ubt_extent_io_tree tree;
	struct acct acct = { 0 };
	struct ubt_hook_spec pause = { .action = UBT_HOOK_PAUSE, .count = 1 };
	struct finder f = { .tree = &tree, .start = 0, .end = UINT64_MAX };
	pthread_t t;

	(void)st;
	ubt_extent_io_tree_init(&tree, &acct_ops, &acct);
	assert_int_equal(ubt_set_extent_bit(&tree, 0, (1u << 20) - 1, UBT_EXTENT_DELALLOC, NULL), 0);
	assert_int_equal(ubt_lock_extent(&tree, 65536, 131071, NULL), 0);
	assert_int_equal(ubt_hook_arm("extent_io.lock_wait", &pause), 0);
	pthread_create(&t, NULL, finder_main, &f);
	assert_int_equal(ubt_hook_wait_paused("extent_io.lock_wait", 1, 10000), 0);
	/* while it waits: the second half is written back by someone else */
	assert_int_equal(ubt_clear_extent_bit(&tree, 1u << 19, (1u << 20) - 1, UBT_EXTENT_DELALLOC, NULL), 0);
	assert_int_equal(ubt_unlock_extent(&tree, 65536, 131071, NULL), 0);
	ubt_hook_release("extent_io.lock_wait");
	pthread_join(t, NULL);
	assert_true(f.found);
	assert_int_equal(f.start, 0);
	assert_int_equal(f.end, (1u << 19) - 1);
	assert_true(ubt_test_range_bit(&tree, 0, (1u << 19) - 1, UBT_EXTENT_LOCKED | UBT_EXTENT_DELALLOC,
				       UBT_TEST_ALL));
	assert_false(ubt_test_range_bit(&tree, 1u << 19, UINT64_MAX, UBT_EXTENT_LOCKED, UBT_TEST_ANY));
	assert_int_equal(acct.delalloc_bytes, 1 << 19);
	/* nothing delalloc after 512K: not found, nothing locked */
	f.start = 1u << 19;
	f.end = UINT64_MAX;
	assert_false(ubt_find_lock_delalloc_range(&tree, &f.start, &f.end, 0, NULL));
	assert_int_equal(ubt_clear_extent_bit(&tree, 0, UINT64_MAX, ALL_BITS, NULL), 0);
	ubt_extent_io_tree_release(&tree);
}

#endif

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_rbtree_random),
		cmocka_unit_test(test_merge_split_basics),
		cmocka_unit_test(test_model_random),
		cmocka_unit_test(test_lock_exclusion),
#ifdef UBT_TEST_HOOKS
		cmocka_unit_test(test_lock_contention),
		cmocka_unit_test(test_find_lock_delalloc),
#endif
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
