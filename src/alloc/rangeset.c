/*
 * rangeset.c — sorted sets of disjoint byte ranges (a sorted array with binary search), the
 * allocator's representation of free, pinned and free-space-tree space in a block group.
 */
#include <stdlib.h>

#include "alloc-internal.h"

void rs_init(struct ubt_rangeset *s)
{
	memset(s, 0, sizeof(*s));
}

void rs_free(struct ubt_rangeset *s)
{
	free(s->r);
	memset(s, 0, sizeof(*s));
}

size_t rs_find(const struct ubt_rangeset *s, u64 pos)
{
	size_t lo = 0, hi = s->nr;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (s->r[mid].start + s->r[mid].len <= pos)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

static int rs_reserve(struct ubt_rangeset *s, size_t extra)
{
	struct ubt_range *n;
	size_t cap;

	if (s->nr + extra <= s->cap)
		return 0;
	cap = s->cap ? s->cap * 2 : 8;
	while (cap < s->nr + extra)
		cap *= 2;
	n = realloc(s->r, cap * sizeof(*n));
	if (!n)
		return -ENOMEM;
	s->r = n;
	s->cap = cap;
	return 0;
}

static void rs_delete_at(struct ubt_rangeset *s, size_t i)
{
	memmove(&s->r[i], &s->r[i + 1], (s->nr - i - 1) * sizeof(*s->r));
	s->nr--;
}

static int rs_insert_at(struct ubt_rangeset *s, size_t i, u64 start, u64 len)
{
	int ret = rs_reserve(s, 1);

	if (ret)
		return ret;
	memmove(&s->r[i + 1], &s->r[i], (s->nr - i) * sizeof(*s->r));
	s->r[i].start = start;
	s->r[i].len = len;
	s->nr++;
	return 0;
}

int rs_add(struct ubt_rangeset *s, u64 start, u64 len)
{
	size_t i;
	bool merge_left, merge_right;
	u64 end = start + len;
	int ret;

	if (!len)
		return 0;
	/* First range ending at or after start (so a left neighbour ending exactly at start is found). */
	i = start ? rs_find(s, start - 1) : 0;
	if (i < s->nr && s->r[i].start < end && s->r[i].start + s->r[i].len > start)
		return -EEXIST;
	merge_left = i < s->nr && s->r[i].start + s->r[i].len == start;
	if (merge_left) {
		if (i + 1 < s->nr && s->r[i + 1].start < end)
			return -EEXIST;
		merge_right = i + 1 < s->nr && s->r[i + 1].start == end;
		s->r[i].len += len;
		if (merge_right) {
			s->r[i].len += s->r[i + 1].len;
			rs_delete_at(s, i + 1);
		}
		s->total += len;
		return 0;
	}
	merge_right = i < s->nr && s->r[i].start == end;
	if (merge_right) {
		s->r[i].start = start;
		s->r[i].len += len;
		s->total += len;
		return 0;
	}
	ret = rs_insert_at(s, i, start, len);
	if (!ret)
		s->total += len;
	return ret;
}

int rs_remove(struct ubt_rangeset *s, u64 start, u64 len)
{
	size_t i;
	u64 end = start + len, rend;
	int ret;

	if (!len)
		return 0;
	i = rs_find(s, start);
	if (i >= s->nr || s->r[i].start > start || s->r[i].start + s->r[i].len < end)
		return -ENOENT;
	rend = s->r[i].start + s->r[i].len;
	if (s->r[i].start == start && rend == end) {
		rs_delete_at(s, i);
	} else if (s->r[i].start == start) {
		s->r[i].start = end;
		s->r[i].len = rend - end;
	} else if (rend == end) {
		s->r[i].len = start - s->r[i].start;
	} else {
		ret = rs_insert_at(s, i + 1, end, rend - end);
		if (ret)
			return ret;
		s->r[i].len = start - s->r[i].start;
	}
	s->total -= len;
	return 0;
}

int rs_remove_any(struct ubt_rangeset *s, u64 start, u64 len)
{
	u64 end = start + len;

	while (start < end) {
		size_t i = rs_find(s, start);
		u64 a, b;
		int ret;

		if (i >= s->nr || s->r[i].start >= end)
			break;
		a = ubt_max(start, s->r[i].start);
		b = ubt_min(end, s->r[i].start + s->r[i].len);
		ret = rs_remove(s, a, b - a);
		if (ret)
			return ret;
		start = b;
	}
	return 0;
}

bool rs_contains(const struct ubt_rangeset *s, u64 start, u64 len)
{
	size_t i = rs_find(s, start);

	return i < s->nr && s->r[i].start <= start && s->r[i].start + s->r[i].len >= start + len;
}

int rs_copy(struct ubt_rangeset *dst, const struct ubt_rangeset *src)
{
	rs_init(dst);
	if (!src->nr)
		return 0;
	dst->r = malloc(src->nr * sizeof(*dst->r));
	if (!dst->r)
		return -ENOMEM;
	memcpy(dst->r, src->r, src->nr * sizeof(*dst->r));
	dst->nr = dst->cap = src->nr;
	dst->total = src->total;
	return 0;
}
