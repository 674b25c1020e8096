/*
 * disk-io.h — the filesystem's in-memory anchor (struct ubt_fs_info): superblock selection and
 * validation, feature gate, opening the core trees, the extent-buffer cache, and reads of
 * logical addresses through the chunk map.
 */
#ifndef UBT_CTREE_DISK_IO_H
#define UBT_CTREE_DISK_IO_H

#include "ctree.h"

struct ubt_bdev;
struct ubt_chunk_map;
struct ubt_eb_cache;

/* Feature bits this build can read (and, where noted in DESIGN.md, write). */
#define UBT_SUPPORTED_INCOMPAT                                                                          \
	(BTRFS_FEATURE_INCOMPAT_MIXED_BACKREF | BTRFS_FEATURE_INCOMPAT_DEFAULT_SUBVOL |                  \
	 BTRFS_FEATURE_INCOMPAT_MIXED_GROUPS | BTRFS_FEATURE_INCOMPAT_COMPRESS_LZO |                     \
	 BTRFS_FEATURE_INCOMPAT_COMPRESS_ZSTD | BTRFS_FEATURE_INCOMPAT_BIG_METADATA |                    \
	 BTRFS_FEATURE_INCOMPAT_EXTENDED_IREF | BTRFS_FEATURE_INCOMPAT_SKINNY_METADATA |                 \
	 BTRFS_FEATURE_INCOMPAT_NO_HOLES | BTRFS_FEATURE_INCOMPAT_METADATA_UUID |                        \
	 BTRFS_FEATURE_INCOMPAT_RAID1C34 | BTRFS_FEATURE_INCOMPAT_SIMPLE_QUOTA)
#define UBT_SUPPORTED_COMPAT_RO                                                                         \
	(BTRFS_FEATURE_COMPAT_RO_FREE_SPACE_TREE | BTRFS_FEATURE_COMPAT_RO_FREE_SPACE_TREE_VALID |       \
	 BTRFS_FEATURE_COMPAT_RO_VERITY | BTRFS_FEATURE_COMPAT_RO_BLOCK_GROUP_TREE)

#define UBT_OPEN_RDONLY (1u << 0)
#define UBT_OPEN_NOLOGREPLAY (1u << 1)
#define UBT_OPEN_REPLAY_LOG (1u << 2) /* read-write: the caller replays a log tree (inode/tree-log.c) */
/*
 * Read-only with a log tree: open the trees writable in memory only (fs_info->memory_only), so
 * the caller can replay the log into the cached trees; nothing is ever written to the device
 * (it is opened read-only), commits keep their blocks in memory.
 */
#define UBT_OPEN_MEMORY_REPLAY (1u << 3)

struct ubt_fs_info {
	struct ubt_bdev *bdev;
	struct btrfs_super_block super; /* the newest valid copy */
	u64 super_bytenr;               /* where it was found */
	u32 sectorsize;
	u32 nodesize;
	u16 csum_type;
	int csum_size;
	u8 fsid[BTRFS_FSID_SIZE];          /* super.fsid */
	u8 metadata_uuid[BTRFS_FSID_SIZE]; /* what tree block headers carry */
	u64 generation;
	u64 incompat;
	u64 compat_ro;
	bool rdonly;
	u64 devid; /* of the opened device */

	struct ubt_chunk_map *chunk_map;
	struct ubt_eb_cache *eb_cache;

	struct ubt_root tree_root;
	struct ubt_root chunk_root;
	struct ubt_root extent_root; /* bytenr 0 if absent (extent-tree-v2 is refused) */
	struct ubt_root csum_root;
	struct ubt_root dev_root;

	pthread_mutex_t roots_lock; /* protects fs_roots */
	struct ubt_root *fs_roots;  /* loaded subvolume roots */

	/* Write side (ctree-write.h, transaction/, alloc/). */
	pthread_rwlock_t tree_lock;  /* readers: searches; writer: the transaction holder. Outermost lock. */
	const struct ubt_extent_ops *extent_ops; /* installed by alloc/ */
	void *alloc_info;            /* alloc/'s private state (block groups, free space, delayed refs) */
	void *write_info;            /* write/'s private state (page cache, inode states, workers) */
	struct ubt_root free_space_root; /* bytenr 0 if absent */
	struct ubt_root block_group_root; /* bytenr 0 if absent */
	struct ubt_root uuid_root;   /* bytenr 0 if absent */
	u64 running_transid;         /* 0 when no transaction is running */
	struct extent_buffer *dirty_list; /* blocks COWed/created in the running transaction */
	size_t nr_dirty;
	int fs_error;                /* sticky: after a failed commit the filesystem is read-only */
	bool memory_only;            /* changes live in the cache only (read-only log replay) */
};

/*
 * Read and verify the superblocks on @bdev, apply the feature gate, load the chunk tree and the
 * root tree and the core trees. @cache_bytes bounds the extent-buffer cache (0: default).
 * A log tree is accepted read-write only with UBT_OPEN_REPLAY_LOG (the caller replays it before
 * any change) and read-only only with UBT_OPEN_NOLOGREPLAY; otherwise the open is refused with a
 * message naming -o nologreplay. On success *@out owns @bdev.
 */
int ubt_open_ctree(struct ubt_bdev *bdev, unsigned flags, size_t cache_bytes, struct ubt_fs_info **out);
void ubt_close_ctree(struct ubt_fs_info *fs_info);

/*
 * Load the subvolume tree @objectid (BTRFS_FS_TREE_OBJECTID or >= 256); cached until close.
 * -ENOENT if there is no such subvolume.
 */
int ubt_read_fs_root(struct ubt_fs_info *fs_info, u64 objectid, struct ubt_root **out);

/*
 * Read @len bytes of logical address space at @logical (may cross chunk stripes) from mirror
 * @mirror (0 = first usable copy). -EIO on device error, -EUCLEAN when no chunk maps it.
 */
int ubt_read_logical(struct ubt_fs_info *fs_info, u64 logical, void *buf, size_t len, int mirror);
/* Number of copies of @logical (1 for SINGLE/RAID0, 2 for DUP/RAID1/RAID10, ...), at least 1. */
int ubt_num_copies(struct ubt_fs_info *fs_info, u64 logical);

/*
 * Get a verified tree block (cache or device). @expected_gen (0 = any), @expected_level (-1 =
 * any), @first_key (NULL = don't check) come from the parent pointer. Returns an extent buffer
 * with a reference, or ERR_PTR(-EIO/-EUCLEAN/-ENOMEM).
 */
struct extent_buffer *ubt_read_tree_block(struct ubt_fs_info *fs_info, u64 bytenr, u64 expected_gen,
					  int expected_level, const struct ubt_key *first_key);
void ubt_eb_get(struct extent_buffer *eb);
void ubt_eb_put(struct extent_buffer *eb);

/* Verify the checksum of @len bytes whose stored checksum is @csum. 0 or -EIO. */
int ubt_verify_csum(struct ubt_fs_info *fs_info, const void *data, size_t len, const u8 *csum);

#endif
