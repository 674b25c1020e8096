/*
 * extent_buffer.c — the bounded extent-buffer cache: tree blocks by bytenr in a hash table with an
 * LRU list. The cache holds one reference on every cached block; blocks referenced only by the
 * cache are evicted from the LRU tail when the cache is over its byte limit, so memory stays
 * bounded whatever the image size. Reading a missing block verifies it (tree-checker.c) before it
 * becomes visible, trying each mirror in turn.
 */
#include <stdlib.h>

#include "../util/messages.h"
#include "disk-io.h"
#include "eb-cache.h"
#include "tree-checker.h"

int ubt_eb_cache_init(struct ubt_eb_cache *c, size_t max_bytes, u32 nodesize)
{
	memset(c, 0, sizeof(*c));
	c->nbuckets = 4096;
	c->buckets = calloc(c->nbuckets, sizeof(*c->buckets));
	if (!c->buckets)
		return -ENOMEM;
	c->max_nr = max_bytes / nodesize;
	if (c->max_nr < 64)
		c->max_nr = 64;
	pthread_mutex_init(&c->lock, NULL);
	return 0;
}

static void eb_free(struct extent_buffer *eb)
{
	free(eb->data);
	free(eb);
}

void ubt_eb_cache_destroy(struct ubt_eb_cache *c)
{
	struct extent_buffer *eb, *next;

	if (!c->buckets)
		return;
	for (eb = c->lru_head; eb; eb = next) {
		next = eb->lru_next;
		eb_free(eb);
	}
	free(c->buckets);
	pthread_mutex_destroy(&c->lock);
	memset(c, 0, sizeof(*c));
}

static size_t bucket_of(const struct ubt_eb_cache *c, u64 bytenr)
{
	return (size_t)((bytenr >> 12) * 0x9E3779B97F4A7C15ULL >> 40) & (c->nbuckets - 1);
}

static void lru_unlink(struct ubt_eb_cache *c, struct extent_buffer *eb)
{
	if (eb->lru_prev)
		eb->lru_prev->lru_next = eb->lru_next;
	else
		c->lru_head = eb->lru_next;
	if (eb->lru_next)
		eb->lru_next->lru_prev = eb->lru_prev;
	else
		c->lru_tail = eb->lru_prev;
	eb->lru_prev = eb->lru_next = NULL;
}

static void lru_push_head(struct ubt_eb_cache *c, struct extent_buffer *eb)
{
	eb->lru_prev = NULL;
	eb->lru_next = c->lru_head;
	if (c->lru_head)
		c->lru_head->lru_prev = eb;
	c->lru_head = eb;
	if (!c->lru_tail)
		c->lru_tail = eb;
}

static void hash_unlink(struct ubt_eb_cache *c, struct extent_buffer *eb)
{
	struct extent_buffer **pp = &c->buckets[bucket_of(c, eb->start)];

	while (*pp && *pp != eb)
		pp = &(*pp)->hash_next;
	if (*pp)
		*pp = eb->hash_next;
}

/* Evict unreferenced blocks from the LRU tail while over the limit. Caller holds the lock. */
static void cache_shrink(struct ubt_eb_cache *c)
{
	struct extent_buffer *eb = c->lru_tail, *prev;

	while (eb && c->nr > c->max_nr) {
		prev = eb->lru_prev;
		if (atomic_load(&eb->refs) == 1) {
			lru_unlink(c, eb);
			hash_unlink(c, eb);
			c->nr--;
			eb_free(eb);
		}
		eb = prev;
	}
}

struct extent_buffer *ubt_eb_cache_lookup(struct ubt_eb_cache *c, u64 bytenr)
{
	struct extent_buffer *eb;

	pthread_mutex_lock(&c->lock);
	for (eb = c->buckets[bucket_of(c, bytenr)]; eb; eb = eb->hash_next) {
		if (eb->start == bytenr) {
			atomic_fetch_add(&eb->refs, 1);
			lru_unlink(c, eb);
			lru_push_head(c, eb);
			c->hits++;
			break;
		}
	}
	pthread_mutex_unlock(&c->lock);
	return eb;
}

struct extent_buffer *ubt_eb_cache_insert(struct ubt_eb_cache *c, struct extent_buffer *neb)
{
	struct extent_buffer *eb;

	pthread_mutex_lock(&c->lock);
	for (eb = c->buckets[bucket_of(c, neb->start)]; eb; eb = eb->hash_next) {
		if (eb->start == neb->start) {
			/* Another reader got there first: use its copy. */
			atomic_fetch_add(&eb->refs, 1);
			pthread_mutex_unlock(&c->lock);
			eb_free(neb);
			return eb;
		}
	}
	atomic_store(&neb->refs, 2); /* the cache's and the caller's */
	neb->hash_next = c->buckets[bucket_of(c, neb->start)];
	c->buckets[bucket_of(c, neb->start)] = neb;
	lru_push_head(c, neb);
	c->nr++;
	c->misses++;
	cache_shrink(c);
	pthread_mutex_unlock(&c->lock);
	return neb;
}

struct extent_buffer *ubt_eb_alloc(u64 bytenr, u32 len)
{
	struct extent_buffer *eb = calloc(1, sizeof(*eb));

	if (!eb)
		return NULL;
	eb->data = malloc(len);
	if (!eb->data) {
		free(eb);
		return NULL;
	}
	eb->start = bytenr;
	eb->len = len;
	atomic_init(&eb->refs, 1);
	return eb;
}

void ubt_eb_get(struct extent_buffer *eb)
{
	atomic_fetch_add(&eb->refs, 1);
}

void ubt_eb_put(struct extent_buffer *eb)
{
	/* The cache always holds a reference on cached blocks; uncached ones are freed at zero. */
	if (eb && atomic_fetch_sub(&eb->refs, 1) == 1)
		eb_free(eb);
}

/* Unhash and unlink @bytenr's block if cached, dropping the cache's reference. Lock held. */
static void cache_remove_locked(struct ubt_eb_cache *c, u64 bytenr)
{
	struct extent_buffer *eb;

	for (eb = c->buckets[bucket_of(c, bytenr)]; eb; eb = eb->hash_next)
		if (eb->start == bytenr)
			break;
	if (!eb)
		return;
	hash_unlink(c, eb);
	lru_unlink(c, eb);
	c->nr--;
	ubt_eb_put(eb);
}

struct extent_buffer *ubt_eb_cache_insert_new(struct ubt_eb_cache *c, struct extent_buffer *neb)
{
	pthread_mutex_lock(&c->lock);
	cache_remove_locked(c, neb->start);
	atomic_store(&neb->refs, 2);
	neb->hash_next = c->buckets[bucket_of(c, neb->start)];
	c->buckets[bucket_of(c, neb->start)] = neb;
	lru_push_head(c, neb);
	c->nr++;
	cache_shrink(c);
	pthread_mutex_unlock(&c->lock);
	return neb;
}

void ubt_eb_cache_drop(struct ubt_eb_cache *c, u64 bytenr)
{
	pthread_mutex_lock(&c->lock);
	cache_remove_locked(c, bytenr);
	pthread_mutex_unlock(&c->lock);
}
