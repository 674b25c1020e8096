/*
 * fs.h — the mounted filesystem behind the public API (struct ubt_fs): the open trees, the mounted
 * subvolume, and the mapping between API inode numbers and (subvolume, objectid) pairs.
 *
 * Inode numbers: ino = (subvolume index << 48) | objectid, where the index is assigned per mount in
 * the order subvolumes are first met (index 0 is the mounted subvolume); the mounted subvolume's
 * root directory is UBT_ROOT_INO (1) instead. objectids never reach 2^48 in practice; one that does
 * gives -EOVERFLOW. st_ino uses the same encoding without the root special case.
 */
#ifndef UBT_FS_FS_H
#define UBT_FS_FS_H

#include <ubtrfs.h>

#include "../ctree/disk-io.h"

#define UBT_INO_SUBVOL_SHIFT 48
#define UBT_INO_OBJECTID_MASK ((1ULL << UBT_INO_SUBVOL_SHIFT) - 1)
#define UBT_MAX_SUBVOLS (1u << 16)

struct ubt_fs {
	struct ubt_fs_info *fs_info;
	bool rdonly;
	pthread_mutex_t lock;     /* protects subvols */
	struct ubt_root **subvols; /* index -> root; [0] is the mounted subvolume */
	u32 nr_subvols, cap_subvols;

	/* Read-write mounts. */
	bool alloc_ready;
	pthread_t commit_thread;
	bool commit_thread_running;
	pthread_mutex_t commit_lock; /* protects stopping; pairs with commit_cond */
	pthread_cond_t commit_cond;
	bool stopping;
	unsigned commit_interval; /* seconds */
	void *write_state;        /* the write side's private state (api-write.c) */
	int compress_type;        /* BTRFS_COMPRESS_* for new data (mount option compress=) */
	int compress_level;       /* 0 = the algorithm's default */
	bool compress_force;
	bool nodatacow, nodatasum; /* mount options: new files get NODATACOW|NODATASUM / NODATASUM */
};

/*
 * Hooks into the write side (api-write.c): called at the end of a read-write mount (orphan
 * cleanup, per-mount state) and at the start of unmount, before the final commit.
 */
int ubt_fs_rw_start(ubt_fs *fs);
void ubt_fs_rw_stop(ubt_fs *fs);

struct ubt_file {
	ubt_fs *fs;
	struct ubt_root *root;
	u64 objectid;
	int flags;
	struct btrfs_inode_item inode;
};

#endif
