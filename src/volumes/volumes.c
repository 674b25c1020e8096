/*
 * volumes.c — the chunk map: parsing and validating chunk items, the sorted chunk array, and
 * logical→physical mapping per RAID profile.
 */
#include "volumes.h"

#include <stdlib.h>
#include <string.h>

#include "../util/messages.h"

int ubt_chunk_map_init(struct ubt_chunk_map *map)
{
	memset(map, 0, sizeof(*map));
	return -pthread_rwlock_init(&map->lock, NULL);
}

void ubt_chunk_map_free(struct ubt_chunk_map *map)
{
	for (size_t i = 0; i < map->nr; i++)
		free(map->chunks[i]);
	free(map->chunks);
	pthread_rwlock_destroy(&map->lock);
	memset(map, 0, sizeof(*map));
}

/* Index of the last chunk with logical <= @logical, or -1. Caller holds the lock. */
static ssize_t chunk_index(const struct ubt_chunk_map *map, u64 logical)
{
	ssize_t lo = 0, hi = (ssize_t)map->nr - 1, ans = -1;

	while (lo <= hi) {
		ssize_t mid = (lo + hi) / 2;
		if (map->chunks[mid]->logical <= logical) {
			ans = mid;
			lo = mid + 1;
		} else {
			hi = mid - 1;
		}
	}
	return ans;
}

static int profile_copies(u64 type, u16 num_stripes, u16 sub_stripes)
{
	u64 profile = type & BTRFS_BLOCK_GROUP_PROFILE_MASK;

	if (profile & (BTRFS_BLOCK_GROUP_DUP | BTRFS_BLOCK_GROUP_RAID1 | BTRFS_BLOCK_GROUP_RAID1C3 |
		       BTRFS_BLOCK_GROUP_RAID1C4))
		return num_stripes;
	if (profile & BTRFS_BLOCK_GROUP_RAID10)
		return sub_stripes;
	return 1;
}

int ubt_chunk_map_add(struct ubt_chunk_map *map, u64 logical, const struct btrfs_chunk *c, size_t item_size,
		      u32 sectorsize)
{
	struct ubt_chunk *chunk;
	u16 num_stripes, sub_stripes;
	u64 length, type, stripe_len, profile;
	ssize_t idx;
	int ret = 0;

	if (item_size < sizeof(struct btrfs_chunk)) {
		ubt_err("chunk at logical %llu: item too small (%zu bytes)", (unsigned long long)logical, item_size);
		return -EUCLEAN;
	}
	num_stripes = le16toh(c->num_stripes);
	sub_stripes = le16toh(c->sub_stripes);
	length = le64toh(c->length);
	type = le64toh(c->type);
	stripe_len = le64toh(c->stripe_len);
	profile = type & BTRFS_BLOCK_GROUP_PROFILE_MASK;
	if (num_stripes == 0 || btrfs_chunk_item_size(num_stripes) != item_size || length == 0 ||
	    !IS_ALIGNED(length, sectorsize) || !IS_ALIGNED(logical, sectorsize) || stripe_len == 0 ||
	    (stripe_len & (stripe_len - 1)) || !(type & BTRFS_BLOCK_GROUP_TYPE_MASK) ||
	    __builtin_popcountll(profile) > 1 || logical + length < logical ||
	    ((profile & BTRFS_BLOCK_GROUP_DUP) && num_stripes != 2) ||
	    ((profile & BTRFS_BLOCK_GROUP_RAID10) && (sub_stripes < 2 || num_stripes % sub_stripes)) ||
	    ((profile & BTRFS_BLOCK_GROUP_RAID1) && num_stripes < 2)) {
		ubt_err("chunk at logical %llu is malformed (stripes %u, length %llu, type 0x%llx)",
			(unsigned long long)logical, num_stripes, (unsigned long long)length,
			(unsigned long long)type);
		return -EUCLEAN;
	}
	chunk = malloc(sizeof(*chunk) + num_stripes * sizeof(chunk->stripes[0]));
	if (!chunk)
		return -ENOMEM;
	chunk->logical = logical;
	chunk->length = length;
	chunk->type = type;
	chunk->stripe_len = stripe_len;
	chunk->num_stripes = num_stripes;
	chunk->sub_stripes = sub_stripes;
	for (u16 i = 0; i < num_stripes; i++) {
		const struct btrfs_stripe *s = &c->stripe + i;
		chunk->stripes[i].devid = le64toh(s->devid);
		chunk->stripes[i].offset = le64toh(s->offset);
	}

	pthread_rwlock_wrlock(&map->lock);
	idx = chunk_index(map, logical);
	if (idx >= 0 && map->chunks[idx]->logical == logical) {
		/* Present already (sys_chunk_array and the chunk tree both list system chunks). */
		if (map->chunks[idx]->length != length) {
			ubt_err("chunk at logical %llu listed twice with different lengths", (unsigned long long)logical);
			ret = -EUCLEAN;
		}
		free(chunk);
		goto out;
	}
	if ((idx >= 0 && map->chunks[idx]->logical + map->chunks[idx]->length > logical) ||
	    ((size_t)(idx + 1) < map->nr && logical + length > map->chunks[idx + 1]->logical)) {
		ubt_err("chunk at logical %llu overlaps another chunk", (unsigned long long)logical);
		free(chunk);
		ret = -EUCLEAN;
		goto out;
	}
	if (map->nr == map->cap) {
		size_t cap = map->cap ? map->cap * 2 : 16;
		struct ubt_chunk **n = realloc(map->chunks, cap * sizeof(*n));
		if (!n) {
			free(chunk);
			ret = -ENOMEM;
			goto out;
		}
		map->chunks = n;
		map->cap = cap;
	}
	memmove(&map->chunks[idx + 2], &map->chunks[idx + 1], (map->nr - (size_t)(idx + 1)) * sizeof(*map->chunks));
	map->chunks[idx + 1] = chunk;
	map->nr++;
out:
	pthread_rwlock_unlock(&map->lock);
	return ret;
}

int ubt_chunk_map_remove(struct ubt_chunk_map *map, u64 logical)
{
	ssize_t idx;
	int ret = -ENOENT;

	pthread_rwlock_wrlock(&map->lock);
	idx = chunk_index(map, logical);
	if (idx >= 0 && map->chunks[idx]->logical == logical) {
		free(map->chunks[idx]);
		memmove(&map->chunks[idx], &map->chunks[idx + 1], (map->nr - (size_t)idx - 1) * sizeof(*map->chunks));
		map->nr--;
		ret = 0;
	}
	pthread_rwlock_unlock(&map->lock);
	return ret;
}

int ubt_chunk_map_stripes(struct ubt_chunk_map *map, u64 logical, struct ubt_chunk_stripe *out, int max, u64 *length)
{
	ssize_t idx;
	int ret = -ENOENT;

	pthread_rwlock_rdlock(&map->lock);
	idx = chunk_index(map, logical);
	if (idx >= 0 && map->chunks[idx]->logical == logical) {
		const struct ubt_chunk *c = map->chunks[idx];

		ret = c->num_stripes;
		for (int i = 0; i < ret && i < max; i++)
			out[i] = c->stripes[i];
		*length = c->length;
	}
	pthread_rwlock_unlock(&map->lock);
	return ret;
}

int ubt_chunk_map_read_sys_array(struct ubt_chunk_map *map, const struct btrfs_super_block *sb, u32 sectorsize)
{
	u32 size = le32toh(sb->sys_chunk_array_size);
	const u8 *p = sb->sys_chunk_array;
	u32 pos = 0;
	int ret;

	if (size > BTRFS_SYSTEM_CHUNK_ARRAY_SIZE) {
		ubt_err("superblock sys_chunk_array_size %u is larger than %u", size, BTRFS_SYSTEM_CHUNK_ARRAY_SIZE);
		return -EUCLEAN;
	}
	while (pos < size) {
		const struct btrfs_disk_key *key;
		const struct btrfs_chunk *chunk;
		size_t item_size;
		u16 num_stripes;

		if (size - pos < sizeof(*key) + sizeof(struct btrfs_chunk))
			goto bad;
		key = (const void *)(p + pos);
		pos += sizeof(*key);
		if (key->type != BTRFS_CHUNK_ITEM_KEY)
			goto bad;
		chunk = (const void *)(p + pos);
		num_stripes = le16toh(chunk->num_stripes);
		if (num_stripes == 0)
			goto bad;
		item_size = btrfs_chunk_item_size(num_stripes);
		if (item_size > size - pos)
			goto bad;
		ret = ubt_chunk_map_add(map, le64toh(key->offset), chunk, item_size, sectorsize);
		if (ret)
			return ret;
		pos += (u32)item_size;
	}
	return 0;
bad:
	ubt_err("superblock sys_chunk_array is malformed at byte %u", pos);
	return -EUCLEAN;
}

static const struct ubt_chunk *find_chunk(struct ubt_chunk_map *map, u64 logical)
{
	ssize_t idx = chunk_index(map, logical);

	if (idx < 0)
		return NULL;
	if (logical >= map->chunks[idx]->logical + map->chunks[idx]->length)
		return NULL;
	return map->chunks[idx];
}

int ubt_chunk_map_num_copies(struct ubt_chunk_map *map, u64 logical)
{
	const struct ubt_chunk *c;
	int ret;

	pthread_rwlock_rdlock(&map->lock);
	c = find_chunk(map, logical);
	ret = c ? profile_copies(c->type, c->num_stripes, c->sub_stripes) : -EUCLEAN;
	pthread_rwlock_unlock(&map->lock);
	return ret;
}

int ubt_chunk_map_lookup(struct ubt_chunk_map *map, u64 logical, int mirror, u64 *devid, u64 *physical, u64 *len)
{
	const struct ubt_chunk *c;
	u64 off, profile, stripe_nr, stripe_off;
	int idx, ret = 0;

	pthread_rwlock_rdlock(&map->lock);
	c = find_chunk(map, logical);
	if (!c) {
		ret = -EUCLEAN;
		goto out;
	}
	if (mirror < 0 || mirror >= profile_copies(c->type, c->num_stripes, c->sub_stripes)) {
		ret = -EINVAL;
		goto out;
	}
	off = logical - c->logical;
	profile = c->type & BTRFS_BLOCK_GROUP_PROFILE_MASK;
	if (profile & (BTRFS_BLOCK_GROUP_RAID5 | BTRFS_BLOCK_GROUP_RAID6)) {
		ret = -EOPNOTSUPP;
		goto out;
	}
	if (profile & (BTRFS_BLOCK_GROUP_RAID0 | BTRFS_BLOCK_GROUP_RAID10)) {
		u64 factor = c->num_stripes;

		stripe_nr = off / c->stripe_len;
		stripe_off = off % c->stripe_len;
		if (profile & BTRFS_BLOCK_GROUP_RAID10) {
			factor = c->num_stripes / c->sub_stripes;
			idx = (int)((stripe_nr % factor) * c->sub_stripes) + mirror;
		} else {
			idx = (int)(stripe_nr % factor);
		}
		stripe_nr /= factor;
		*physical = c->stripes[idx].offset + stripe_nr * c->stripe_len + stripe_off;
		*len = c->stripe_len - stripe_off;
	} else {
		idx = mirror;
		*physical = c->stripes[idx].offset + off;
		*len = c->length - off;
	}
	*devid = c->stripes[idx].devid;
out:
	pthread_rwlock_unlock(&map->lock);
	return ret;
}

void ubt_chunk_map_totals(struct ubt_chunk_map *map, u64 *data, u64 *metadata, u64 *system)
{
	*data = *metadata = *system = 0;
	pthread_rwlock_rdlock(&map->lock);
	for (size_t i = 0; i < map->nr; i++) {
		const struct ubt_chunk *c = map->chunks[i];
		if (c->type & BTRFS_BLOCK_GROUP_DATA)
			*data += c->length;
		else if (c->type & BTRFS_BLOCK_GROUP_METADATA)
			*metadata += c->length;
		else
			*system += c->length;
	}
	pthread_rwlock_unlock(&map->lock);
}
