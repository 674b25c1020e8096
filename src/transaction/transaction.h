/*
 * transaction.h — btrfs transactions: one running transaction at a time, joined by every change;
 * commit writes every dirty tree block (new locations only), flushes, writes the superblocks (all
 * mirrors), flushes again. Generations: a transaction's id is the last committed generation + 1;
 * every block COWed in it carries that generation.
 *
 * States (fs_info->running_transid): IDLE (0) -> RUNNING [ubt_trans_start] -> COMMITTING
 * [ubt_trans_commit] -> IDLE. An error inside a transaction is sticky (ubt_trans_abort): nothing of
 * it reaches the disk, and the filesystem refuses further changes (fs_info->fs_error) — what was
 * committed before stays intact.
 */
#ifndef UBT_TRANSACTION_TRANSACTION_H
#define UBT_TRANSACTION_TRANSACTION_H

#include "../ctree/ctree-write.h"
#include "../ctree/disk-io.h"

/* Start (or join) the running transaction; takes fs_info->tree_lock for writing. -EROFS after an abort. */
int ubt_trans_start(struct ubt_fs_info *fs_info, struct ubt_trans_handle *h);
/* Leave the transaction (releases tree_lock). Commits when the dirty set is large. Returns h->error or 0. */
int ubt_trans_end(struct ubt_trans_handle *h);
/* Commit the running transaction and leave it. */
int ubt_trans_commit(struct ubt_trans_handle *h);
/* Record a fatal error at the failing site: the transaction is aborted and the fs turns read-only. */
void ubt_trans_abort(struct ubt_trans_handle *h, int err, const char *where);
/* Commit if anything is dirty (sync, unmount, the commit timer). Takes and releases tree_lock. */
int ubt_commit_if_dirty(struct ubt_fs_info *fs_info);

/* Readers' side of tree_lock. */
static inline void ubt_tree_read_lock(struct ubt_fs_info *fs_info) { pthread_rwlock_rdlock(&fs_info->tree_lock); }
static inline void ubt_tree_read_unlock(struct ubt_fs_info *fs_info) { pthread_rwlock_unlock(&fs_info->tree_lock); }

#endif
