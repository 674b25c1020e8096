/*
 * volumes.h — the chunk map: btrfs's logical address space mapped onto device stripes
 * (SINGLE, DUP, RAID0, RAID1, RAID1C3/C4, RAID10), loaded from the superblock's sys_chunk_array
 * and the chunk tree.
 */
#ifndef UBT_VOLUMES_VOLUMES_H
#define UBT_VOLUMES_VOLUMES_H

#include <pthread.h>

#include "../format/ondisk.h"

struct ubt_chunk_stripe {
	u64 devid;
	u64 offset; /* physical byte offset on that device */
};

struct ubt_chunk {
	u64 logical;
	u64 length;
	u64 type;       /* BTRFS_BLOCK_GROUP_* */
	u64 stripe_len;
	u16 num_stripes;
	u16 sub_stripes;
	struct ubt_chunk_stripe stripes[];
};

struct ubt_chunk_map {
	pthread_rwlock_t lock;
	size_t nr, cap;
	struct ubt_chunk **chunks; /* sorted by logical, non-overlapping */
};

int ubt_chunk_map_init(struct ubt_chunk_map *map);
void ubt_chunk_map_free(struct ubt_chunk_map *map);

/*
 * Validate a chunk item (@item_size bytes at @chunk) and add it for @logical. A chunk already
 * present at the same address is accepted (the system chunks appear twice). -EUCLEAN for a
 * malformed chunk or an overlap, with a message.
 */
int ubt_chunk_map_add(struct ubt_chunk_map *map, u64 logical, const struct btrfs_chunk *chunk, size_t item_size,
		      u32 sectorsize);

/* Drop the chunk that starts at @logical (a removed block group); -ENOENT when there is none. */
int ubt_chunk_map_remove(struct ubt_chunk_map *map, u64 logical);

/*
 * Copy the stripes of the chunk starting at @logical (at most @max) and its length; returns the
 * number of stripes, or -ENOENT.
 */
int ubt_chunk_map_stripes(struct ubt_chunk_map *map, u64 logical, struct ubt_chunk_stripe *out, int max, u64 *length);

/* Parse the superblock's sys_chunk_array into @map. */
int ubt_chunk_map_read_sys_array(struct ubt_chunk_map *map, const struct btrfs_super_block *sb, u32 sectorsize);

/* Number of copies that hold @logical (>= 1), or -EUCLEAN if unmapped. */
int ubt_chunk_map_num_copies(struct ubt_chunk_map *map, u64 logical);

/*
 * Map @logical for reading copy @mirror (0-based, < num_copies). Returns 0 and the device id,
 * physical offset and the number of contiguous bytes (*len, never past a stripe or chunk end);
 * -EUCLEAN when unmapped; -EINVAL for a mirror out of range; -EOPNOTSUPP for RAID5/6.
 */
int ubt_chunk_map_lookup(struct ubt_chunk_map *map, u64 logical, int mirror, u64 *devid, u64 *physical, u64 *len);

/* Sum of chunk lengths by type (for statfs). */
void ubt_chunk_map_totals(struct ubt_chunk_map *map, u64 *data, u64 *metadata, u64 *system);

#endif
