/* eb-cache.h — internal interface of the bounded extent-buffer cache (extent_buffer.c). */
#ifndef UBT_CTREE_EB_CACHE_H
#define UBT_CTREE_EB_CACHE_H

#include "ctree.h"

struct ubt_eb_cache {
	pthread_mutex_t lock;
	struct extent_buffer **buckets;
	size_t nbuckets; /* power of two */
	size_t nr, max_nr;
	struct extent_buffer *lru_head, *lru_tail; /* head = most recently used */
	u64 hits, misses;
};

int ubt_eb_cache_init(struct ubt_eb_cache *c, size_t max_bytes, u32 nodesize);
void ubt_eb_cache_destroy(struct ubt_eb_cache *c);
/* Referenced block at @bytenr, or NULL. */
struct extent_buffer *ubt_eb_cache_lookup(struct ubt_eb_cache *c, u64 bytenr);
/* Insert a freshly read block (refs 1); returns the cached block with a reference for the caller. */
struct extent_buffer *ubt_eb_cache_insert(struct ubt_eb_cache *c, struct extent_buffer *eb);
struct extent_buffer *ubt_eb_alloc(u64 bytenr, u32 len);
/*
 * Insert a block just allocated at @eb->start (refs 1), replacing any stale cached block at that
 * address (space freed by an earlier transaction and reused). Returns @eb with a reference for
 * the caller.
 */
struct extent_buffer *ubt_eb_cache_insert_new(struct ubt_eb_cache *c, struct extent_buffer *eb);
/* Forget a cached block (e.g. its extent was freed); holders of references keep their copy. */
void ubt_eb_cache_drop(struct ubt_eb_cache *c, u64 bytenr);

#endif
