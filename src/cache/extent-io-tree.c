/*
 * extent-io-tree.c — range states of a file's bytes (see extent-io-tree.h for the bits, the
 * invariants and the lock order). All operations run under tree->lock; lock waits sleep on
 * tree->wait, which every clearing of LOCKED broadcasts.
 *
 * Every mutating operation works in two passes: (1) walk the states overlapping [start, end],
 * splitting the two boundary states where the change applies to part of them, filling gaps
 * (set) or deleting states left without bits (clear), reporting changes to the callbacks;
 * (2) merge_range() over [start - 1, end + 1] restores maximal merging. Both passes touch
 * O(k) states after one O(log n) search.
 */
#include <errno.h>
#include <stdlib.h>

#include "cache/extent-io-tree.h"
#include "util/hooks.h"

void ubt_extent_io_tree_init(struct ubt_extent_io_tree *tree, const struct ubt_extent_io_ops *ops, void *private)
{
	pthread_mutex_init(&tree->lock, NULL);
	pthread_cond_init(&tree->wait, NULL);
	tree->states = UBT_RB_ROOT;
	tree->nr_states = 0;
	tree->ops = ops;
	tree->private = private;
	tree->cb_bits = UBT_EXTENT_DELALLOC;
}

void ubt_free_extent_state(struct ubt_extent_state *state)
{
	if (state && atomic_fetch_sub(&state->refs, 1) == 1)
		free(state);
}

void ubt_extent_io_tree_release(struct ubt_extent_io_tree *tree)
{
	struct ubt_rb_node *n;

	pthread_mutex_lock(&tree->lock);
	while ((n = ubt_rb_first(&tree->states))) {
		ubt_rb_erase(&tree->states, n);
		ubt_free_extent_state(ubt_rb_entry(n, struct ubt_extent_state, node));
	}
	tree->nr_states = 0;
	pthread_mutex_unlock(&tree->lock);
	pthread_cond_destroy(&tree->wait);
	pthread_mutex_destroy(&tree->lock);
}

/* ---- primitives, tree->lock held ---- */

static struct ubt_extent_state *to_state(struct ubt_rb_node *n)
{
	return ubt_rb_entry_safe(n, struct ubt_extent_state, node);
}

static struct ubt_extent_state *next_state(struct ubt_extent_state *s)
{
	return to_state(ubt_rb_next(&s->node));
}

static struct ubt_extent_state *alloc_state(u64 start, u64 end, unsigned bits)
{
	struct ubt_extent_state *s = malloc(sizeof(*s));

	if (!s)
		return NULL;
	ubt_rb_clear_node(&s->node);
	s->start = start;
	s->end = end;
	s->state = bits;
	atomic_init(&s->refs, 1);
	return s;
}

/* The first state whose end is >= @pos, or NULL. */
static struct ubt_extent_state *search(struct ubt_extent_io_tree *tree, u64 pos)
{
	struct ubt_rb_node *n = tree->states.node;
	struct ubt_extent_state *best = NULL;

	while (n) {
		struct ubt_extent_state *s = to_state(n);

		if (s->end >= pos) {
			best = s;
			if (s->start <= pos)
				break;
			n = n->left;
		} else {
			n = n->right;
		}
	}
	return best;
}

/* search(), starting from a still-valid cached state that contains @pos when there is one. */
static struct ubt_extent_state *search_cached(struct ubt_extent_io_tree *tree, u64 pos,
					      struct ubt_extent_state **cached)
{
	struct ubt_extent_state *c = cached ? *cached : NULL;

	if (c && ubt_rb_is_linked(&c->node) && c->start <= pos && c->end >= pos)
		return c;
	return search(tree, pos);
}

static void remove_state(struct ubt_extent_io_tree *tree, struct ubt_extent_state *s)
{
	ubt_rb_erase(&tree->states, &s->node);
	tree->nr_states--;
	ubt_free_extent_state(s);
}

/*
 * Split @s at @at (s->start < at <= s->end): a new state takes [s->start, at - 1], @s keeps
 * [at, s->end]. Returns the new lower state, or NULL on ENOMEM (nothing changed).
 */
static struct ubt_extent_state *split_state(struct ubt_extent_io_tree *tree, struct ubt_extent_state *s, u64 at)
{
	struct ubt_extent_state *lower = alloc_state(s->start, at - 1, s->state);

	if (!lower)
		return NULL;
	if ((s->state & tree->cb_bits) && tree->ops && tree->ops->split_cb)
		tree->ops->split_cb(tree->private, s, at);
	s->start = at;
	ubt_rb_insert_before(&tree->states, &lower->node, &s->node);
	tree->nr_states++;
	return lower;
}

/* Restore maximal merging among the states that touch [lo, hi]. */
static void merge_range(struct ubt_extent_io_tree *tree, u64 lo, u64 hi)
{
	struct ubt_extent_state *s = search(tree, lo), *n;

	while (s && s->start <= hi) {
		n = next_state(s);
		if (n && s->end + 1 == n->start && s->state == n->state) {
			if ((s->state & tree->cb_bits) && tree->ops && tree->ops->merge_cb)
				tree->ops->merge_cb(tree->private, s, n);
			s->end = n->end;
			remove_state(tree, n);
			continue;
		}
		s = n;
	}
}

static void set_cb(struct ubt_extent_io_tree *tree, u64 start, u64 end, unsigned newbits)
{
	if ((newbits & tree->cb_bits) && tree->ops && tree->ops->set_bits_cb)
		tree->ops->set_bits_cb(tree->private, start, end, newbits);
}

static void cache_state(struct ubt_extent_io_tree *tree, u64 pos, struct ubt_extent_state **cached)
{
	struct ubt_extent_state *s;

	if (!cached || *cached)
		return;
	s = search(tree, pos);
	if (s && s->start <= pos && (s->state & UBT_EXTENT_LOCKED)) {
		atomic_fetch_add(&s->refs, 1);
		*cached = s;
	}
}

static int __set_extent_bit(struct ubt_extent_io_tree *tree, u64 start, u64 end, unsigned bits,
			    struct ubt_extent_state **cached)
{
	struct ubt_extent_state *s, *n, *lower;
	u64 cur = start, gap_end;
	unsigned newbits;
	int ret = 0;

	bits &= UBT_EXTENT_STORED_BITS;
	if (start > end || !bits)
		return start > end ? -EINVAL : 0;
	s = search_cached(tree, start, cached);
	for (;;) {
		if (!s || s->start > cur) {
			/* a gap: [cur, gap_end] has no state */
			gap_end = (!s || s->start > end) ? end : s->start - 1;
			n = alloc_state(cur, gap_end, bits);
			if (!n) {
				ret = -ENOMEM;
				break;
			}
			if (s)
				ubt_rb_insert_before(&tree->states, &n->node, &s->node);
			else if ((lower = to_state(ubt_rb_last(&tree->states))))
				ubt_rb_insert_after(&tree->states, &n->node, &lower->node);
			else {
				ubt_rb_link(&n->node, NULL, &tree->states.node);
				ubt_rb_insert_color(&tree->states, &n->node);
			}
			tree->nr_states++;
			set_cb(tree, cur, gap_end, bits);
			if (gap_end >= end)
				break;
			cur = gap_end + 1;
			continue;
		}
		/* s overlaps cur */
		if ((s->state & bits) != bits) {
			if (s->start < cur && !split_state(tree, s, cur)) {
				ret = -ENOMEM;
				break;
			}
			if (s->end > end) {
				lower = split_state(tree, s, end + 1);
				if (!lower) {
					ret = -ENOMEM;
					break;
				}
				s = lower;
			}
			newbits = bits & ~s->state;
			s->state |= bits;
			set_cb(tree, s->start, s->end, newbits);
		}
		if (s->end >= end)
			break;
		cur = s->end + 1;
		s = next_state(s);
	}
	merge_range(tree, start ? start - 1 : 0, end == UINT64_MAX ? end : end + 1);
	if (!ret && (bits & UBT_EXTENT_LOCKED))
		cache_state(tree, start, cached);
	return ret;
}

static int __clear_extent_bit(struct ubt_extent_io_tree *tree, u64 start, u64 end, unsigned bits,
			      struct ubt_extent_state **cached)
{
	unsigned stored = bits & UBT_EXTENT_STORED_BITS, cleared;
	struct ubt_extent_state *s, *n, *lower;
	bool wake = false;
	int ret = 0;

	if (start > end)
		return -EINVAL;
	s = search_cached(tree, start, cached);
	while (stored && s && s->start <= end) {
		if (!(s->state & stored)) {
			s = next_state(s);
			continue;
		}
		if (s->start < start && !split_state(tree, s, start)) {
			ret = -ENOMEM;
			break;
		}
		if (s->end > end) {
			lower = split_state(tree, s, end + 1);
			if (!lower) {
				ret = -ENOMEM;
				break;
			}
			s = lower;
		}
		cleared = s->state & stored;
		if ((cleared & tree->cb_bits) && tree->ops && tree->ops->clear_bits_cb)
			tree->ops->clear_bits_cb(tree->private, s->start, s->end,
						 cleared | (bits & UBT_EXTENT_CONTROL_BITS));
		if (cleared & UBT_EXTENT_LOCKED)
			wake = true;
		s->state &= ~stored;
		n = next_state(s);
		if (!s->state)
			remove_state(tree, s);
		s = n;
	}
	merge_range(tree, start ? start - 1 : 0, end == UINT64_MAX ? end : end + 1);
	if (cached && *cached && (stored & UBT_EXTENT_LOCKED)) {
		ubt_free_extent_state(*cached);
		*cached = NULL;
	}
	if (wake)
		pthread_cond_broadcast(&tree->wait);
	return ret;
}

static bool __test_range_bit(struct ubt_extent_io_tree *tree, u64 start, u64 end, unsigned bits,
			     enum ubt_test_mode mode)
{
	struct ubt_extent_state *s = search(tree, start);
	u64 cur = start;

	if (mode == UBT_TEST_ANY) {
		for (; s && s->start <= end; s = next_state(s))
			if (s->state & bits)
				return true;
		return false;
	}
	for (; s; s = next_state(s)) {
		if (s->start > cur || (s->state & bits) != bits)
			return false;
		if (s->end >= end)
			return true;
		cur = s->end + 1;
	}
	return false;
}

/* The delalloc run in window [*start, *end] (see the header). */
static bool __find_delalloc(struct ubt_extent_io_tree *tree, u64 *start, u64 *end, u64 max_bytes)
{
	struct ubt_extent_state *s = search(tree, *start), *n;
	u64 rs, re;

	if (!max_bytes)
		max_bytes = UINT64_MAX;
	while (s && s->start <= *end && !(s->state & UBT_EXTENT_DELALLOC))
		s = next_state(s);
	if (!s || s->start > *end)
		return false;
	rs = ubt_max(s->start, *start);
	re = s->end;
	while (re < *end && re - rs < max_bytes && (n = next_state(s)) && n->start == re + 1 &&
	       (n->state & UBT_EXTENT_DELALLOC)) {
		s = n;
		re = s->end;
	}
	re = ubt_min(re, *end);
	if (max_bytes != UINT64_MAX && re - rs >= max_bytes)
		re = rs + max_bytes - 1;
	*start = rs;
	*end = re;
	return true;
}

/* ---- the API ---- */

int ubt_set_extent_bit(struct ubt_extent_io_tree *tree, u64 start, u64 end, unsigned bits,
		       struct ubt_extent_state **cached)
{
	int ret;

	pthread_mutex_lock(&tree->lock);
	ret = __set_extent_bit(tree, start, end, bits, cached);
	pthread_mutex_unlock(&tree->lock);
	return ret;
}

int ubt_clear_extent_bit(struct ubt_extent_io_tree *tree, u64 start, u64 end, unsigned bits,
			 struct ubt_extent_state **cached)
{
	int ret;

	pthread_mutex_lock(&tree->lock);
	ret = __clear_extent_bit(tree, start, end, bits, cached);
	pthread_mutex_unlock(&tree->lock);
	return ret;
}

bool ubt_test_range_bit(struct ubt_extent_io_tree *tree, u64 start, u64 end, unsigned bits,
			enum ubt_test_mode mode)
{
	bool ret;

	pthread_mutex_lock(&tree->lock);
	ret = __test_range_bit(tree, start, end, bits, mode);
	pthread_mutex_unlock(&tree->lock);
	return ret;
}

int ubt_find_first_extent_bit(struct ubt_extent_io_tree *tree, u64 start, unsigned bits, u64 *found_start,
			      u64 *found_end)
{
	struct ubt_extent_state *s;
	int ret = -ENOENT;

	pthread_mutex_lock(&tree->lock);
	for (s = search(tree, start); s; s = next_state(s)) {
		if (s->state & bits) {
			*found_start = s->start;
			*found_end = s->end;
			ret = 0;
			break;
		}
	}
	pthread_mutex_unlock(&tree->lock);
	return ret;
}

u64 ubt_count_range_bits(struct ubt_extent_io_tree *tree, u64 *start, u64 search_end, u64 max_bytes,
			 unsigned bits)
{
	struct ubt_extent_state *s;
	u64 total = 0, lo, hi;
	bool found = false;

	if (*start > search_end || !max_bytes)
		return 0;
	pthread_mutex_lock(&tree->lock);
	for (s = search(tree, *start); s && s->start <= search_end; s = next_state(s)) {
		if (!(s->state & bits))
			continue;
		lo = ubt_max(s->start, *start);
		hi = ubt_min(s->end, search_end);
		if (!found) {
			*start = lo;
			found = true;
		}
		if (hi - lo >= max_bytes - total) {
			total = max_bytes;
			break;
		}
		total += hi - lo + 1;
	}
	pthread_mutex_unlock(&tree->lock);
	return total;
}

bool ubt_find_delalloc_range(struct ubt_extent_io_tree *tree, u64 *start, u64 *end, u64 max_bytes)
{
	bool found;

	pthread_mutex_lock(&tree->lock);
	found = __find_delalloc(tree, start, end, max_bytes);
	pthread_mutex_unlock(&tree->lock);
	return found;
}

/* Lock [start, end], waiting for other holders. With @try, -EAGAIN instead of waiting. */
static int lock_range(struct ubt_extent_io_tree *tree, u64 start, u64 end, bool try,
		      struct ubt_extent_state **cached)
{
	int ret;

	if (start > end)
		return -EINVAL;
	pthread_mutex_lock(&tree->lock);
	while (__test_range_bit(tree, start, end, UBT_EXTENT_LOCKED, UBT_TEST_ANY)) {
		if (try) {
			pthread_mutex_unlock(&tree->lock);
			return -EAGAIN;
		}
		/* Test point: a thread about to wait for a locked range (tree lock not held). */
		pthread_mutex_unlock(&tree->lock);
		ubt_hook_point("extent_io.lock_wait", tree);
		pthread_mutex_lock(&tree->lock);
		if (!__test_range_bit(tree, start, end, UBT_EXTENT_LOCKED, UBT_TEST_ANY))
			break;
		pthread_cond_wait(&tree->wait, &tree->lock);
	}
	ret = __set_extent_bit(tree, start, end, UBT_EXTENT_LOCKED, cached);
	pthread_mutex_unlock(&tree->lock);
	return ret;
}

int ubt_lock_extent(struct ubt_extent_io_tree *tree, u64 start, u64 end, struct ubt_extent_state **cached)
{
	return lock_range(tree, start, end, false, cached);
}

int ubt_try_lock_extent(struct ubt_extent_io_tree *tree, u64 start, u64 end, struct ubt_extent_state **cached)
{
	return lock_range(tree, start, end, true, cached);
}

int ubt_unlock_extent(struct ubt_extent_io_tree *tree, u64 start, u64 end, struct ubt_extent_state **cached)
{
	return ubt_clear_extent_bit(tree, start, end, UBT_EXTENT_LOCKED, cached);
}

bool ubt_find_lock_delalloc_range(struct ubt_extent_io_tree *tree, u64 *start, u64 *end, u64 max_bytes,
				  struct ubt_extent_state **cached)
{
	u64 rs, re;
	bool ok;

	for (;;) {
		rs = *start;
		re = *end;
		if (!ubt_find_delalloc_range(tree, &rs, &re, max_bytes))
			return false;
		if (lock_range(tree, rs, re, false, cached))
			return false;
		pthread_mutex_lock(&tree->lock);
		ok = __test_range_bit(tree, rs, re, UBT_EXTENT_DELALLOC, UBT_TEST_ALL);
		if (!ok)
			__clear_extent_bit(tree, rs, re, UBT_EXTENT_LOCKED, cached);
		pthread_mutex_unlock(&tree->lock);
		if (ok) {
			*start = rs;
			*end = re;
			return true;
		}
		/* it changed while we waited for the lock: look again */
	}
}

int ubt_extent_io_tree_check(struct ubt_extent_io_tree *tree)
{
	struct ubt_extent_state *s, *prev = NULL;
	unsigned long n = 0;
	int ret = 0;

	pthread_mutex_lock(&tree->lock);
	for (s = to_state(ubt_rb_first(&tree->states)); s; prev = s, s = next_state(s)) {
		n++;
		if (s->start > s->end || !s->state || (s->state & ~UBT_EXTENT_STORED_BITS))
			ret = -EUCLEAN;
		if (prev && (prev->end >= s->start || (prev->end + 1 == s->start && prev->state == s->state)))
			ret = -EUCLEAN;
	}
	if (n != tree->nr_states || ubt_rb_check(&tree->states) != (long)n)
		ret = -EUCLEAN;
	pthread_mutex_unlock(&tree->lock);
	return ret;
}

void ubt_extent_io_tree_for_each(struct ubt_extent_io_tree *tree,
				 void (*fn)(void *arg, u64 start, u64 end, unsigned bits), void *arg)
{
	pthread_mutex_lock(&tree->lock);
	for (struct ubt_extent_state *s = to_state(ubt_rb_first(&tree->states)); s; s = next_state(s))
		fn(arg, s->start, s->end, s->state);
	pthread_mutex_unlock(&tree->lock);
}
