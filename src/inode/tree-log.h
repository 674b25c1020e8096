/*
 * tree-log.h — log tree replay: at a read-write mount, apply what the kernel fsync'd after the
 * last commit (the superblock's log_root) to the subvolume trees, then commit with the log gone.
 */
#ifndef UBT_INODE_TREE_LOG_H
#define UBT_INODE_TREE_LOG_H

#include "../ctree/disk-io.h"

/*
 * Replay the log trees of @fs_info (super.log_root != 0) into their subvolumes and commit with
 * log_root cleared; inodes left without links are then deleted (orphan cleanup). Call after
 * ubt_alloc_init and before any other change. 0 when there is no log; <0 (-EUCLEAN for a corrupt
 * log, with a message) and nothing committed on failure.
 */
int ubt_replay_log(struct ubt_fs_info *fs_info);

#endif
