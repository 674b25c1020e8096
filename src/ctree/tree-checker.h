/*
 * tree-checker.h — validation of every tree block read from disk, before anything looks inside:
 * checksum, location, fsid, level, item and key-pointer layout, key order.
 */
#ifndef UBT_CTREE_TREE_CHECKER_H
#define UBT_CTREE_TREE_CHECKER_H

#include "ctree.h"

struct ubt_fs_info;

/*
 * Check the raw block @data (nodesize bytes) that should be the tree block at @bytenr.
 * Returns 0, -EIO (checksum mismatch: the block was not written as it reads now) or -EUCLEAN
 * (structurally wrong), logging a message that names the block. @quiet suppresses the log line
 * (used when another mirror will be tried).
 */
int ubt_check_tree_block(struct ubt_fs_info *fs_info, const u8 *data, u64 bytenr, bool quiet);

#endif
