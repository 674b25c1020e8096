/*
 * transaction.c — starting, ending, committing and aborting transactions.
 *
 * Commit (ubt_trans_commit), in order:
 *   1. loop until nothing changes: apply delayed refs (alloc hook); write the root items of roots
 *      whose node moved (COWs the root tree, which queues more refs); let the allocator write its
 *      block group items and free space changes;
 *   2. write every dirty tree block to its new location (all copies) and flush: the old tree is
 *      untouched, so a crash before step 3 leaves the previous commit intact;
 *   3. point the superblock at the new roots (generation = transid, backup root slot rotated),
 *      write it to every mirror, flush;
 *   4. space freed by this transaction becomes allocatable (alloc hook), transid is done.
 */
#include "transaction.h"

#include <stdlib.h>

#include "../codec/csum.h"
#include "../device/bdev.h"
#include "../ctree/eb-cache.h"
#include "../util/messages.h"

int ubt_trans_start(struct ubt_fs_info *fs_info, struct ubt_trans_handle *h)
{
	memset(h, 0, sizeof(*h));
	if (fs_info->rdonly)
		return -EROFS;
	pthread_rwlock_wrlock(&fs_info->tree_lock);
	if (fs_info->fs_error) {
		pthread_rwlock_unlock(&fs_info->tree_lock);
		return -EROFS;
	}
	if (!fs_info->running_transid)
		fs_info->running_transid = fs_info->generation + 1;
	h->fs_info = fs_info;
	h->transid = fs_info->running_transid;
	return 0;
}

void ubt_trans_abort(struct ubt_trans_handle *h, int err, const char *where)
{
	struct ubt_fs_info *fs_info = h->fs_info;

	if (!h->error)
		h->error = err;
	if (fs_info->fs_error)
		return;
	fs_info->fs_error = err;
	ubt_err("transaction %llu aborted in %s: %s; the filesystem is now read-only (everything up to the "
		"last commit is safe on disk)",
		(unsigned long long)h->transid, where, strerror(-err));
}

/* Drop every uncommitted block: the on-disk tree still is the last commit. */
static void discard_dirty(struct ubt_fs_info *fs_info)
{
	struct extent_buffer *eb, *next;

	for (eb = fs_info->dirty_list; eb; eb = next) {
		next = eb->dirty_next;
		eb->dirty = false;
		eb->dirty_next = NULL;
		ubt_eb_put(eb);
	}
	fs_info->dirty_list = NULL;
	fs_info->nr_dirty = 0;
}

static int update_root_item(struct ubt_trans_handle *h, struct ubt_root *root)
{
	struct ubt_fs_info *fs_info = h->fs_info;
	struct ubt_key key = { root->objectid, BTRFS_ROOT_ITEM_KEY, 0 }, found;
	struct ubt_path path;
	struct btrfs_root_item *ri;
	u32 size;
	int ret;

	/* Find the exact key (snapshots carry their creation transid as offset). */
	ubt_path_init(&path);
	ret = ubt_search_ge(&fs_info->tree_root, &key, &path);
	if (ret == 0) {
		ubt_item_key(path.nodes[0], path.slots[0], &found);
		if (found.objectid != root->objectid || found.type != BTRFS_ROOT_ITEM_KEY)
			ret = 1;
	}
	ubt_path_release(&path);
	if (ret)
		return ret > 0 ? -ENOENT : ret;
	ret = ubt_search_slot_write(h, &fs_info->tree_root, &found, &path, 0);
	if (ret) {
		ubt_path_release(&path);
		return ret > 0 ? -ENOENT : ret;
	}
	size = ubt_item_size(path.nodes[0], path.slots[0]);
	ri = ubt_item_ptr(path.nodes[0], path.slots[0]);
	root->root_item.bytenr = htole64(root->bytenr);
	root->root_item.generation = htole64(root->generation);
	root->root_item.level = root->level;
	if (size >= sizeof(struct btrfs_root_item))
		root->root_item.generation_v2 = root->root_item.generation;
	memcpy(ri, &root->root_item, ubt_min(size, (u32)sizeof(root->root_item)));
	ubt_mark_buffer_dirty(h, path.nodes[0]);
	ubt_path_release(&path);
	root->dirty = false;
	return 0;
}

/* Write root items of every moved root; returns 1 if any was written. */
static int update_dirty_roots(struct ubt_trans_handle *h)
{
	struct ubt_fs_info *fs_info = h->fs_info;
	struct ubt_root *core[] = { &fs_info->extent_root, &fs_info->csum_root, &fs_info->dev_root,
				    &fs_info->free_space_root, &fs_info->block_group_root, &fs_info->uuid_root };
	int changed = 0, ret;

	for (size_t i = 0; i < ARRAY_SIZE(core); i++) {
		if (!core[i]->dirty || !core[i]->bytenr)
			continue;
		ret = update_root_item(h, core[i]);
		if (ret)
			return ret;
		changed = 1;
	}
	pthread_mutex_lock(&fs_info->roots_lock);
	for (struct ubt_root *r = fs_info->fs_roots; r; r = r->next) {
		if (!r->dirty)
			continue;
		pthread_mutex_unlock(&fs_info->roots_lock);
		ret = update_root_item(h, r);
		if (ret)
			return ret;
		changed = 1;
		pthread_mutex_lock(&fs_info->roots_lock);
	}
	pthread_mutex_unlock(&fs_info->roots_lock);
	return changed;
}

static void fill_backup_root(struct ubt_fs_info *fs_info)
{
	struct btrfs_super_block *sb = &fs_info->super;
	/* btrfs rotates the four backup slots; the next slot after the newest one is overwritten. */
	int newest = -1;
	u64 best = 0;
	struct btrfs_root_backup *b;

	for (int i = 0; i < BTRFS_NUM_BACKUP_ROOTS; i++) {
		u64 g = le64toh(sb->super_roots[i].tree_root_gen);
		if (g >= best && g) {
			best = g;
			newest = i;
		}
	}
	b = &sb->super_roots[(newest + 1) % BTRFS_NUM_BACKUP_ROOTS];
	memset(b, 0, sizeof(*b));
	b->tree_root = htole64(fs_info->tree_root.bytenr);
	b->tree_root_gen = htole64(fs_info->tree_root.generation);
	b->tree_root_level = fs_info->tree_root.level;
	b->chunk_root = htole64(fs_info->chunk_root.bytenr);
	b->chunk_root_gen = htole64(fs_info->chunk_root.generation);
	b->chunk_root_level = fs_info->chunk_root.level;
	b->extent_root = htole64(fs_info->extent_root.bytenr);
	b->extent_root_gen = htole64(fs_info->extent_root.generation);
	b->extent_root_level = fs_info->extent_root.level;
	b->dev_root = htole64(fs_info->dev_root.bytenr);
	b->dev_root_gen = htole64(fs_info->dev_root.generation);
	b->dev_root_level = fs_info->dev_root.level;
	b->csum_root = htole64(fs_info->csum_root.bytenr);
	b->csum_root_gen = htole64(fs_info->csum_root.generation);
	b->csum_root_level = fs_info->csum_root.level;
	for (struct ubt_root *r = fs_info->fs_roots; r; r = r->next) {
		if (r->objectid == BTRFS_FS_TREE_OBJECTID) {
			b->fs_root = htole64(r->bytenr);
			b->fs_root_gen = htole64(r->generation);
			b->fs_root_level = r->level;
		}
	}
	if (!b->fs_root) {
		/* Not loaded this session: the previous backup's value is still right. */
		if (newest >= 0) {
			b->fs_root = sb->super_roots[newest].fs_root;
			b->fs_root_gen = sb->super_roots[newest].fs_root_gen;
			b->fs_root_level = sb->super_roots[newest].fs_root_level;
		}
	}
	b->total_bytes = sb->total_bytes;
	b->bytes_used = sb->bytes_used;
	b->num_devices = sb->num_devices;
}

static int write_supers(struct ubt_fs_info *fs_info)
{
	struct btrfs_super_block *sb;
	u8 csum[UBT_CSUM_MAX];
	int ret = 0, written = 0;

	sb = malloc(sizeof(*sb));
	if (!sb)
		return -ENOMEM;
	for (int i = 0; i < BTRFS_SUPER_MIRROR_MAX; i++) {
		u64 off = btrfs_sb_offset(i);

		if (off + BTRFS_SUPER_INFO_SIZE > fs_info->bdev->size)
			break;
		memcpy(sb, &fs_info->super, sizeof(*sb));
		sb->bytenr = htole64(off);
		ubt_csum(fs_info->csum_type, (u8 *)sb + BTRFS_CSUM_SIZE, BTRFS_SUPER_INFO_SIZE - BTRFS_CSUM_SIZE, csum);
		memcpy(sb->csum, csum, BTRFS_CSUM_SIZE);
		ret = ubt_bdev_write(fs_info->bdev, sb, sizeof(*sb), off);
		if (ret) {
			ubt_err("writing superblock copy %d failed: %s", i, strerror(-ret));
			if (i == 0)
				break;
			ret = 0;
			continue;
		}
		written++;
	}
	free(sb);
	return written ? 0 : (ret ? ret : -EIO);
}

static int commit_locked(struct ubt_trans_handle *h)
{
	struct ubt_fs_info *fs_info = h->fs_info;
	const struct ubt_extent_ops *ops = fs_info->extent_ops;
	struct btrfs_super_block *sb = &fs_info->super;
	int ret, rounds = 0;

	if (h->error)
		goto abort;
	for (;;) {
		int changed = 0;

		if (++rounds > 100) {
			ubt_err("commit did not converge");
			h->error = -EUCLEAN;
			goto abort;
		}
		ret = ops->run_delayed_refs(h);
		if (ret < 0)
			goto fail;
		changed |= ret > 0;
		ret = update_dirty_roots(h);
		if (ret < 0)
			goto fail;
		changed |= ret > 0;
		ret = ops->commit_prepare(h);
		if (ret < 0)
			goto fail;
		changed |= ret > 0;
		if (fs_info->tree_root.generation != h->transid) {
			/* The superblock's generation is the root tree's: make sure it is COWed now. */
			ret = ubt_cow_root_node(h, &fs_info->tree_root);
			if (ret < 0)
				goto fail;
			changed = 1;
		}
		if (!changed)
			break;
	}
	if (h->error)
		goto abort;
	if (fs_info->memory_only) {
		/*
		 * Read-only log replay: the new trees live in the cache. Dirty blocks stay dirty (and so
		 * are never evicted), the transaction stays open for later changes to continue in place,
		 * and freed space stays pinned, so no block the committed tree uses is handed out again.
		 */
		return 0;
	}

	sb->root = htole64(fs_info->tree_root.bytenr);
	sb->root_level = fs_info->tree_root.level;
	sb->generation = htole64(h->transid);
	if (fs_info->chunk_root.dirty) {
		sb->chunk_root = htole64(fs_info->chunk_root.bytenr);
		sb->chunk_root_level = fs_info->chunk_root.level;
		sb->chunk_root_generation = htole64(fs_info->chunk_root.generation);
		fs_info->chunk_root.dirty = false;
	}
	fs_info->tree_root.dirty = false;
	fill_backup_root(fs_info);

	ret = ubt_write_dirty_blocks(fs_info);
	if (ret)
		goto fail;
	ret = ubt_bdev_flush(fs_info->bdev);
	if (ret)
		goto fail;
	ret = write_supers(fs_info);
	if (ret)
		goto fail;
	ret = ubt_bdev_flush(fs_info->bdev);
	if (ret)
		goto fail;
	fs_info->generation = h->transid;
	fs_info->running_transid = 0;
	ops->commit_done(fs_info, h->transid);
	return 0;
fail:
	h->error = ret;
abort:
	ubt_trans_abort(h, h->error, "commit");
	discard_dirty(fs_info);
	if (ops && ops->abort)
		ops->abort(fs_info);
	return h->error;
}

int ubt_trans_commit(struct ubt_trans_handle *h)
{
	struct ubt_fs_info *fs_info = h->fs_info;
	int ret = commit_locked(h);

	pthread_rwlock_unlock(&fs_info->tree_lock);
	return ret;
}

#define UBT_DIRTY_COMMIT_FRACTION 4 /* commit when dirty blocks pass 1/4 of the cache */

int ubt_trans_end(struct ubt_trans_handle *h)
{
	struct ubt_fs_info *fs_info = h->fs_info;
	int ret = h->error;

	if (ret) {
		ubt_trans_abort(h, ret, "a change");
		discard_dirty(fs_info);
		if (fs_info->extent_ops && fs_info->extent_ops->abort)
			fs_info->extent_ops->abort(fs_info);
	} else if (!fs_info->memory_only &&
		   (u64)fs_info->nr_dirty * UBT_DIRTY_COMMIT_FRACTION > fs_info->eb_cache->max_nr) {
		ret = commit_locked(h);
	}
	pthread_rwlock_unlock(&fs_info->tree_lock);
	return ret;
}

int ubt_commit_if_dirty(struct ubt_fs_info *fs_info)
{
	struct ubt_trans_handle h;
	int ret;

	ret = ubt_trans_start(fs_info, &h);
	if (ret)
		return ret == -EROFS && fs_info->rdonly ? 0 : ret;
	if (!fs_info->nr_dirty || fs_info->memory_only) {
		/* Every change COWs at least one block: nothing dirty means nothing to commit. */
		pthread_rwlock_unlock(&fs_info->tree_lock);
		return 0;
	}
	return ubt_trans_commit(&h);
}
