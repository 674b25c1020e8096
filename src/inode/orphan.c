/*
 * orphan.c — inodes that outlive their last name: ORPHAN_ITEM (ORPHAN_OBJECTID, ORPHAN_ITEM, ino)
 * items in the subvolume tree, their cleanup at a read-write mount, and the in-memory registry of
 * inodes the API still holds (open files, FUSE lookups) that decides between deleting an unlinked
 * inode at once and keeping it as an orphan until its last release.
 *
 * Registry: a hash table of (root, ino) -> count, orphaned, under one mutex (a leaf lock: nothing
 * else is taken while it is held). Deleting an orphan at its last release runs a transaction of
 * its own, so ubt_inode_release must not be called with tree_lock held.
 */
#include "inode-write.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdlib.h>

#include "../alloc/alloc.h"
#include "../ctree/disk-io.h"
#include "../util/messages.h"

int ubt_orphan_add(struct ubt_trans_handle *h, struct ubt_root *root, u64 ino)
{
	static const u8 empty;
	struct ubt_key key = { .objectid = BTRFS_ORPHAN_OBJECTID, .type = BTRFS_ORPHAN_ITEM_KEY, .offset = ino };
	int ret = ubt_insert_item(h, root, &key, &empty, 0);

	return ret == -EEXIST ? 0 : ret;
}

int ubt_orphan_del(struct ubt_trans_handle *h, struct ubt_root *root, u64 ino)
{
	struct ubt_key key = { .objectid = BTRFS_ORPHAN_OBJECTID, .type = BTRFS_ORPHAN_ITEM_KEY, .offset = ino };
	int ret = ubt_item_delete(h, root, &key);

	return ret == -ENOENT ? 0 : ret;
}

/* Delete orphan @ino in a transaction of its own: the inode if it has no links left, then the item. */
static int orphan_delete_now(struct ubt_root *root, u64 ino)
{
	struct ubt_fs_info *fs_info = root->fs_info;
	struct ubt_trans_handle h;
	struct btrfs_inode_item ii;
	const u64 items = 16;
	int ret;

	ret = ubt_reserve_space_freeing(fs_info, items, 0);
	if (ret == -ENOSPC) {
		/* what earlier deletions freed is pinned until a commit */
		ret = ubt_commit_if_dirty(fs_info);
		if (ret == 0)
			ret = ubt_reserve_space_freeing(fs_info, items, 0);
	}
	if (ret < 0)
		return ret;
	ret = ubt_trans_start(fs_info, &h);
	if (ret < 0) {
		ubt_release_space(fs_info, items, 0);
		return ret;
	}
	ret = ubt_inode_read(root, ino, &ii);
	if (ret == -ENOENT) {
		ret = 0;
	} else if (ret == 0 && get_le32(&ii.nlink) == 0) {
		ret = ubt_inode_evict(&h, root, ino);
	}
	if (ret == 0)
		ret = ubt_orphan_del(&h, root, ino);
	if (ret < 0)
		ubt_trans_abort(&h, ret, "orphan cleanup");
	{
		int ret2 = ubt_trans_end(&h);
		if (!ret)
			ret = ret2;
	}
	ubt_release_space(fs_info, items, 0);
	return ret;
}

int ubt_orphan_cleanup(struct ubt_root *root)
{
	struct ubt_key key = { .objectid = BTRFS_ORPHAN_OBJECTID, .type = BTRFS_ORPHAN_ITEM_KEY, .offset = 0 };
	struct ubt_path path;
	u64 *inos = NULL;
	size_t nr = 0, cap = 0;
	int ret;

	ubt_path_init(&path);
	ubt_tree_read_lock(root->fs_info);
	ret = ubt_search_ge(root, &key, &path);
	while (ret == 0) {
		ubt_item_key(ubt_path_leaf(&path), ubt_path_slot(&path), &key);
		if (key.objectid != BTRFS_ORPHAN_OBJECTID || key.type != BTRFS_ORPHAN_ITEM_KEY)
			break;
		if (nr == cap) {
			size_t ncap = cap ? cap * 2 : 16;
			u64 *n = realloc(inos, ncap * sizeof(*n));
			if (!n) {
				ret = -ENOMEM;
				break;
			}
			inos = n;
			cap = ncap;
		}
		inos[nr++] = key.offset;
		ret = ubt_next_item(root, &path);
	}
	ubt_path_release(&path);
	ubt_tree_read_unlock(root->fs_info);
	if (ret > 0)
		ret = 0;
	for (size_t i = 0; i < nr && ret == 0; i++) {
		ret = orphan_delete_now(root, inos[i]);
		if (ret < 0)
			ubt_err("root %" PRIu64 ": cleaning up orphan inode %" PRIu64 " failed: %d", root->objectid,
				inos[i], ret);
	}
	if (nr && ret == 0)
		ubt_info("root %" PRIu64 ": removed %zu orphan inode(s)", root->objectid, nr);
	free(inos);
	return ret;
}

/* ---- the registry of held inodes ---- */

struct held_inode {
	struct held_inode *next;
	struct ubt_root *root;
	u64 ino;
	u64 count;
	bool orphan;
};

#define HELD_BUCKETS 1024
static struct held_inode *held_table[HELD_BUCKETS];
static pthread_mutex_t held_lock = PTHREAD_MUTEX_INITIALIZER;

static unsigned held_hash(const struct ubt_root *root, u64 ino)
{
	u64 x = ino * 0x9e3779b97f4a7c15ULL ^ (u64)(uintptr_t)root;

	return (unsigned)((x ^ (x >> 29)) % HELD_BUCKETS);
}

static struct held_inode **held_find(struct ubt_root *root, u64 ino)
{
	struct held_inode **pp = &held_table[held_hash(root, ino)];

	while (*pp && !((*pp)->root == root && (*pp)->ino == ino))
		pp = &(*pp)->next;
	return pp;
}

void ubt_inode_hold(struct ubt_root *root, u64 ino, u64 n)
{
	struct held_inode **pp, *e;

	pthread_mutex_lock(&held_lock);
	pp = held_find(root, ino);
	e = *pp;
	if (!e) {
		e = calloc(1, sizeof(*e));
		if (!e) {
			/* Without an entry the inode is deleted at unlink even while held: log it. */
			ubt_err("root %" PRIu64 " ino %" PRIu64 ": out of memory tracking an open inode",
				root->objectid, ino);
			goto out;
		}
		e->root = root;
		e->ino = ino;
		*pp = e;
	}
	e->count += n;
out:
	pthread_mutex_unlock(&held_lock);
}

int ubt_inode_release(struct ubt_root *root, u64 ino, u64 n)
{
	struct held_inode **pp, *e;
	bool orphan = false;

	pthread_mutex_lock(&held_lock);
	pp = held_find(root, ino);
	e = *pp;
	if (e) {
		e->count = e->count > n ? e->count - n : 0;
		if (e->count == 0) {
			orphan = e->orphan;
			*pp = e->next;
			free(e);
		}
	}
	pthread_mutex_unlock(&held_lock);
	if (!orphan || root->fs_info->rdonly)
		return 0;
	return orphan_delete_now(root, ino);
}

bool ubt_inode_is_held(struct ubt_root *root, u64 ino)
{
	bool held;

	pthread_mutex_lock(&held_lock);
	held = *held_find(root, ino) != NULL;
	pthread_mutex_unlock(&held_lock);
	return held;
}

void ubt_inode_set_orphan(struct ubt_root *root, u64 ino)
{
	struct held_inode *e;

	pthread_mutex_lock(&held_lock);
	e = *held_find(root, ino);
	if (e)
		e->orphan = true;
	pthread_mutex_unlock(&held_lock);
}

void ubt_inode_registry_drop(struct ubt_fs_info *fs_info)
{
	pthread_mutex_lock(&held_lock);
	for (unsigned b = 0; b < HELD_BUCKETS; b++) {
		struct held_inode **pp = &held_table[b];

		while (*pp) {
			struct held_inode *e = *pp;

			if (e->root->fs_info == fs_info) {
				*pp = e->next;
				free(e);
			} else {
				pp = &e->next;
			}
		}
	}
	pthread_mutex_unlock(&held_lock);
}
