/*
 * alloc.c — the allocator's entry points: opening (block groups, free space, the extent-ops hooks
 * ctree and transaction/ call), tree block and data extent allocation, the commit hooks (pinned
 * space released after the commit), reservations and statfs.
 */
#include <stdlib.h>

#include "../ctree/eb-cache.h"
#include "../device/bdev.h"
#include "../util/messages.h"
#include "alloc-internal.h"

/* Space kept back for the commit itself (extent, free space, csum and root tree updates). */
#define UBT_GLOBAL_RSV_MAX (512ULL << 20)

static int load_root(struct ubt_fs_info *fs_info, u64 objectid, struct ubt_root *root)
{
	struct ubt_key key = { objectid, BTRFS_ROOT_ITEM_KEY, 0 }, k;
	struct ubt_path path;
	u32 size;
	int ret;

	ubt_path_init(&path);
	ret = ubt_search_ge(&fs_info->tree_root, &key, &path);
	if (ret)
		goto out;
	ubt_item_key(ubt_path_leaf(&path), ubt_path_slot(&path), &k);
	if (k.objectid != objectid || k.type != BTRFS_ROOT_ITEM_KEY) {
		ret = 1;
		goto out;
	}
	size = ubt_item_size(ubt_path_leaf(&path), ubt_path_slot(&path));
	if (size < BTRFS_ROOT_ITEM_V1_SIZE) {
		ubt_err("root item of tree %llu is too small", (unsigned long long)objectid);
		ret = -EUCLEAN;
		goto out;
	}
	memset(root, 0, sizeof(*root));
	memcpy(&root->root_item, ubt_item_ptr(ubt_path_leaf(&path), ubt_path_slot(&path)),
	       ubt_min(size, (u32)sizeof(root->root_item)));
	root->fs_info = fs_info;
	root->objectid = objectid;
	root->has_root_item = true;
	root->track_dirty = true;
	root->bytenr = le64toh(root->root_item.bytenr);
	root->generation = le64toh(root->root_item.generation);
	root->level = root->root_item.level;
	if (!root->bytenr || root->level >= BTRFS_MAX_LEVEL) {
		ubt_err("root item of tree %llu is invalid", (unsigned long long)objectid);
		ret = -EUCLEAN;
	}
out:
	ubt_path_release(&path);
	return ret;
}

static int read_chunk_tree_uuid(struct ubt_fs_info *fs_info, u8 *uuid)
{
	struct extent_buffer *eb = ubt_read_tree_block(fs_info, fs_info->chunk_root.bytenr, 0, -1, NULL);

	if (IS_ERR(eb))
		return (int)PTR_ERR(eb);
	memcpy(uuid, ubt_eb_header(eb)->chunk_tree_uuid, BTRFS_UUID_SIZE);
	ubt_eb_put(eb);
	return 0;
}

int ubt_alloc_init(struct ubt_fs_info *fs_info)
{
	struct ubt_alloc_info *ai;
	bool fst = fs_info->compat_ro & BTRFS_FEATURE_COMPAT_RO_FREE_SPACE_TREE;
	bool fst_valid = fs_info->compat_ro & BTRFS_FEATURE_COMPAT_RO_FREE_SPACE_TREE_VALID;
	int ret;

	if (fs_info->alloc_info)
		return 0;
	if (fst && !fst_valid) {
		ubt_err("the free space tree is marked invalid; mount once with the kernel (or run btrfs check "
			"--clear-space-cache v2) before writing");
		return -EOPNOTSUPP;
	}
	if (!fs_info->dev_root.bytenr) {
		ubt_err("no device tree: cannot write");
		return -EUCLEAN;
	}
	ai = calloc(1, sizeof(*ai));
	if (!ai)
		return -ENOMEM;
	pthread_mutex_init(&ai->lock, NULL);
	fs_info->alloc_info = ai;
	ai->fst = fst;
	ai->skinny = fs_info->incompat & BTRFS_FEATURE_INCOMPAT_SKINNY_METADATA;
	ai->mixed = fs_info->incompat & BTRFS_FEATURE_INCOMPAT_MIXED_GROUPS;
	rs_init(&ai->dev_free);
	rs_init(&ai->reserved_data);

	if (fst && !fs_info->free_space_root.bytenr) {
		ret = load_root(fs_info, BTRFS_FREE_SPACE_TREE_OBJECTID, &fs_info->free_space_root);
		if (ret > 0) {
			ubt_err("free space tree feature is set but the tree is missing");
			ret = -EUCLEAN;
		}
		if (ret)
			goto fail;
	}
	if ((fs_info->compat_ro & BTRFS_FEATURE_COMPAT_RO_BLOCK_GROUP_TREE) && !fs_info->block_group_root.bytenr) {
		ret = load_root(fs_info, BTRFS_BLOCK_GROUP_TREE_OBJECTID, &fs_info->block_group_root);
		if (ret > 0) {
			ubt_err("block group tree feature is set but the tree is missing");
			ret = -EUCLEAN;
		}
		if (ret)
			goto fail;
	}
	ai->bg_root = (fs_info->compat_ro & BTRFS_FEATURE_COMPAT_RO_BLOCK_GROUP_TREE) ? &fs_info->block_group_root
										     : &fs_info->extent_root;
	ret = read_chunk_tree_uuid(fs_info, ai->chunk_tree_uuid);
	if (ret)
		goto fail;
	ret = ubt_bg_load(fs_info);
	if (ret)
		goto fail;
	ret = fst ? ubt_fst_load(fs_info) : ubt_free_space_from_extents(fs_info);
	if (ret)
		goto fail;
	fs_info->extent_ops = &ubt_alloc_extent_ops;
	return 0;
fail:
	ubt_alloc_exit(fs_info);
	return ret;
}

void ubt_alloc_exit(struct ubt_fs_info *fs_info)
{
	struct ubt_alloc_info *ai = ainfo(fs_info);

	if (!ai)
		return;
	if (fs_info->extent_ops == &ubt_alloc_extent_ops)
		fs_info->extent_ops = NULL;
	ubt_drop_all_heads(ai);
	ubt_bg_free_all(ai);
	rs_free(&ai->dev_free);
	rs_free(&ai->reserved_data);
	pthread_mutex_destroy(&ai->lock);
	free(ai);
	fs_info->alloc_info = NULL;
}

/* Find space of @type, allocating a chunk when none is left. Caller holds ai->lock. */
static int find_or_grow(struct ubt_fs_info *fs_info, u64 type, u64 len, u64 hint, bool meta, u64 *out)
{
	int ret = ubt_find_free(fs_info, type, len, hint, meta, out);

	if (ret != -ENOSPC)
		return ret;
	ret = ubt_alloc_chunk(fs_info, type);
	if (ret)
		return ret;
	return ubt_find_free(fs_info, type, len, hint, meta, out);
}

/* ---- extent ops hooks ---- */

static struct extent_buffer *alloc_tree_block(struct ubt_trans_handle *h, struct ubt_root *root, u64 parent,
					      int level, const struct ubt_key *first_key, u64 hint)
{
	struct ubt_fs_info *fs_info = h->fs_info;
	struct ubt_alloc_info *ai = ainfo(fs_info);
	u64 type = root->objectid == BTRFS_CHUNK_TREE_OBJECTID ? BTRFS_BLOCK_GROUP_SYSTEM : BTRFS_BLOCK_GROUP_METADATA;
	struct extent_buffer *eb;
	struct btrfs_header *hd;
	struct ubt_dhead *dh;
	u64 bytenr;
	int ret;

	if (ai->broken)
		return ERR_PTR(-EROFS);
	pthread_mutex_lock(&ai->lock);
	ret = find_or_grow(fs_info, type, fs_info->nodesize, hint, true, &bytenr);
	pthread_mutex_unlock(&ai->lock);
	if (ret) {
		if (ret == -ENOSPC)
			ubt_err("no space left for a %s tree block", type == BTRFS_BLOCK_GROUP_SYSTEM ? "system" : "metadata");
		return ERR_PTR(ret);
	}
	eb = ubt_eb_alloc(bytenr, fs_info->nodesize);
	if (!eb) {
		ret = -ENOMEM;
		goto fail;
	}
	memset(eb->data, 0, eb->len);
	hd = (struct btrfs_header *)eb->data;
	memcpy(hd->fsid, fs_info->metadata_uuid, BTRFS_FSID_SIZE);
	hd->bytenr = htole64(bytenr);
	hd->flags = htole64(BTRFS_MIXED_BACKREF_REV << BTRFS_BACKREF_REV_SHIFT);
	memcpy(hd->chunk_tree_uuid, ai->chunk_tree_uuid, BTRFS_UUID_SIZE);
	hd->generation = htole64(h->transid);
	hd->owner = htole64(root->objectid);
	hd->level = (u8)level;

	ret = ubt_queue_ref(fs_info, bytenr, fs_info->nodesize, false, level,
			    parent ? BTRFS_SHARED_BLOCK_REF_KEY : BTRFS_TREE_BLOCK_REF_KEY, parent ? parent : root->objectid,
			    0, 0, 1);
	if (ret) {
		ubt_eb_put(eb);
		goto fail;
	}
	dh = ubt_find_head(ai, bytenr);
	dh->must_insert = true;
	dh->level = level;
	if (first_key)
		dh->first_key = *first_key;
	if (parent)
		dh->set_flags |= BTRFS_BLOCK_FLAG_FULL_BACKREF;

	eb = ubt_eb_cache_insert_new(fs_info->eb_cache, eb);
	ubt_mark_buffer_dirty(h, eb);
	return eb;
fail:
	pthread_mutex_lock(&ai->lock);
	{
		struct ubt_block_group *bg = ubt_bg_lookup(ai, bytenr);

		if (bg)
			rs_add(&bg->free, bytenr, fs_info->nodesize);
	}
	pthread_mutex_unlock(&ai->lock);
	return ERR_PTR(ret);
}

static int free_tree_block(struct ubt_trans_handle *h, struct ubt_root *root, struct extent_buffer *eb, u64 parent,
			   bool last_ref)
{
	(void)last_ref;
	return ubt_queue_ref(h->fs_info, eb->start, h->fs_info->nodesize, false, ubt_eb_level(eb),
			     parent ? BTRFS_SHARED_BLOCK_REF_KEY : BTRFS_TREE_BLOCK_REF_KEY,
			     parent ? parent : root->objectid, 0, 0, -1);
}

static bool root_is_shareable(const struct ubt_root *root)
{
	return root->objectid == BTRFS_FS_TREE_OBJECTID || root->objectid == BTRFS_DATA_RELOC_TREE_OBJECTID ||
	       root->objectid == BTRFS_TREE_RELOC_OBJECTID ||
	       (root->objectid >= BTRFS_FIRST_FREE_OBJECTID && root->objectid <= BTRFS_LAST_FREE_OBJECTID);
}

static int mod_refs(struct ubt_trans_handle *h, struct ubt_root *root, struct extent_buffer *eb, bool full, s64 mod)
{
	struct ubt_fs_info *fs_info = h->fs_info;
	u32 nr = ubt_eb_nritems(eb);
	int level = ubt_eb_level(eb);
	int ret = 0;

	if (level > 0) {
		for (u32 i = 0; i < nr && !ret; i++) {
			u64 ptr = le64toh(ubt_eb_key_ptr(eb, (int)i)->blockptr);

			ret = ubt_queue_ref(fs_info, ptr, fs_info->nodesize, false, level - 1,
					    full ? BTRFS_SHARED_BLOCK_REF_KEY : BTRFS_TREE_BLOCK_REF_KEY,
					    full ? eb->start : root->objectid, 0, 0, mod);
		}
		return ret;
	}
	if (!root_is_shareable(root))
		return 0;
	for (u32 i = 0; i < nr && !ret; i++) {
		struct ubt_key k;
		const struct btrfs_file_extent_item *fe;
		u32 size;

		ubt_item_key(eb, (int)i, &k);
		if (k.type != BTRFS_EXTENT_DATA_KEY)
			continue;
		size = ubt_item_size(eb, (int)i);
		fe = ubt_item_ptr(eb, (int)i);
		if (size < BTRFS_FILE_EXTENT_INLINE_DATA_START) {
			ubt_err("leaf %llu slot %u: file extent item too small", (unsigned long long)eb->start, i);
			return -EUCLEAN;
		}
		if (fe->type == BTRFS_FILE_EXTENT_INLINE)
			continue;
		if (size < sizeof(*fe)) {
			ubt_err("leaf %llu slot %u: file extent item too small", (unsigned long long)eb->start, i);
			return -EUCLEAN;
		}
		if (!fe->disk_bytenr)
			continue;
		ret = ubt_queue_ref(fs_info, le64toh(fe->disk_bytenr), le64toh(fe->disk_num_bytes), true, 0,
				    full ? BTRFS_SHARED_DATA_REF_KEY : BTRFS_EXTENT_DATA_REF_KEY,
				    full ? eb->start : root->objectid, full ? 0 : k.objectid,
				    full ? 0 : k.offset - le64toh(fe->offset), mod);
	}
	return ret;
}

static int inc_ref(struct ubt_trans_handle *h, struct ubt_root *root, struct extent_buffer *eb, bool full_backref)
{
	return mod_refs(h, root, eb, full_backref, 1);
}

static int dec_ref(struct ubt_trans_handle *h, struct ubt_root *root, struct extent_buffer *eb, bool full_backref)
{
	return mod_refs(h, root, eb, full_backref, -1);
}

static int lookup_extent_info(struct ubt_trans_handle *h, u64 bytenr, int level, u64 *refs, u64 *flags)
{
	struct ubt_fs_info *fs_info = h->fs_info;
	struct ubt_dhead *dh = ubt_find_head(ainfo(fs_info), bytenr);
	struct ubt_path path;
	s64 delta = 0;
	int ret = 1;

	*refs = 0;
	*flags = 0;
	if (dh)
		for (struct ubt_dref *r = dh->refs; r; r = r->next)
			delta += r->mod;
	if (!dh || !dh->must_insert) {
		struct ubt_key keys[2] = { { bytenr, BTRFS_METADATA_ITEM_KEY, (u64)level },
					   { bytenr, BTRFS_EXTENT_ITEM_KEY, fs_info->nodesize } };

		for (int i = ainfo(fs_info)->skinny ? 0 : 1; i < 2 && ret > 0; i++) {
			ubt_path_init(&path);
			ret = ubt_search_slot(&fs_info->extent_root, &keys[i], &path);
			if (ret == 0) {
				const u8 *item = ubt_item_ptr(path.nodes[0], path.slots[0]);

				if (ubt_item_size(path.nodes[0], path.slots[0]) < sizeof(struct btrfs_extent_item)) {
					ret = -EUCLEAN;
				} else {
					*refs = get_le64(item);
					*flags = get_le64(item + 16);
				}
			}
			ubt_path_release(&path);
		}
		if (ret < 0)
			return ret;
		if (ret > 0) {
			ubt_err("tree block %llu has no extent item", (unsigned long long)bytenr);
			return -EUCLEAN;
		}
	} else {
		*flags = BTRFS_EXTENT_FLAG_TREE_BLOCK;
	}
	if (dh) {
		*flags |= dh->set_flags;
		if ((s64)*refs + delta < 0)
			return -EUCLEAN;
		*refs = (u64)((s64)*refs + delta);
	}
	return 0;
}

static int set_extent_flags(struct ubt_trans_handle *h, struct extent_buffer *eb, u64 flags)
{
	struct ubt_alloc_info *ai = ainfo(h->fs_info);
	struct ubt_dhead *dh;

	if (ai->broken)
		return -EROFS;
	dh = ubt_get_head(ai, eb->start, h->fs_info->nodesize, false, ubt_eb_level(eb));
	if (!dh)
		return -ENOMEM;
	if (dh->is_data)
		return -EUCLEAN;
	dh->set_flags |= flags;
	return 0;
}

static int run_delayed_refs(struct ubt_trans_handle *h)
{
	return ubt_run_delayed_refs(h);
}

static u64 global_rsv(struct ubt_fs_info *fs_info, u64 meta_total, u64 meta_used);
static void meta_space(struct ubt_alloc_info *ai, u64 *total, u64 *free_bytes, u64 *used);

static int commit_prepare(struct ubt_trans_handle *h)
{
	struct ubt_fs_info *fs_info = h->fs_info;
	struct ubt_alloc_info *ai = ainfo(fs_info);
	u64 total, free_bytes, used, meta_keep, data_keep;
	int removed, ret;

	/* Empty groups go, as long as what is reserved (and the global reserve, twice) still fits. */
	pthread_mutex_lock(&ai->lock);
	meta_space(ai, &total, &free_bytes, &used);
	meta_keep = ai->meta_reserved + 2 * global_rsv(fs_info, total, used);
	data_keep = ai->data_reserved;
	pthread_mutex_unlock(&ai->lock);
	removed = ubt_remove_unused_bgs(h, meta_keep, data_keep);
	if (removed < 0)
		return removed;
	ret = ubt_write_bg_items(h);
	return ret < 0 ? ret : (ret | removed);
}

static void commit_done(struct ubt_fs_info *fs_info, u64 committed_transid)
{
	struct ubt_alloc_info *ai = ainfo(fs_info);

	(void)committed_transid;
	pthread_mutex_lock(&ai->lock);
	for (size_t i = 0; i < ai->nr_bgs; i++) {
		struct ubt_block_group *bg = ai->bgs[i];

		for (size_t j = 0; j < bg->pinned.nr; j++)
			if (rs_add(&bg->free, bg->pinned.r[j].start, bg->pinned.r[j].len))
				ubt_err("pinned extent %llu is already free", (unsigned long long)bg->pinned.r[j].start);
		rs_free(&bg->pinned);
	}
	ubt_bg_commit_done(ai);
	pthread_mutex_unlock(&ai->lock);
}

static void alloc_abort(struct ubt_fs_info *fs_info)
{
	struct ubt_alloc_info *ai = ainfo(fs_info);

	pthread_mutex_lock(&ai->lock);
	ai->broken = true;
	ubt_drop_all_heads(ai);
	pthread_mutex_unlock(&ai->lock);
}

const struct ubt_extent_ops ubt_alloc_extent_ops = {
	.alloc_tree_block = alloc_tree_block,
	.free_tree_block = free_tree_block,
	.inc_ref = inc_ref,
	.dec_ref = dec_ref,
	.lookup_extent_info = lookup_extent_info,
	.set_extent_flags = set_extent_flags,
	.run_delayed_refs = run_delayed_refs,
	.commit_prepare = commit_prepare,
	.commit_done = commit_done,
	.abort = alloc_abort,
};

/* ---- data extents ---- */

int ubt_alloc_data_extent(struct ubt_trans_handle *h, u64 num_bytes, u64 hint, u64 *bytenr)
{
	struct ubt_fs_info *fs_info = h->fs_info;
	struct ubt_alloc_info *ai = ainfo(fs_info);
	int ret;

	if (!num_bytes || !IS_ALIGNED(num_bytes, fs_info->sectorsize))
		return -EINVAL;
	if (ai->broken)
		return -EROFS;
	pthread_mutex_lock(&ai->lock);
	ret = find_or_grow(fs_info, BTRFS_BLOCK_GROUP_DATA, num_bytes, hint, false, bytenr);
	if (!ret) {
		ret = rs_add(&ai->reserved_data, *bytenr, num_bytes);
		if (ret) {
			struct ubt_block_group *bg = ubt_bg_lookup(ai, *bytenr);

			if (bg)
				rs_add(&bg->free, *bytenr, num_bytes);
		}
	}
	pthread_mutex_unlock(&ai->lock);
	return ret;
}

void ubt_free_reserved_data_extent(struct ubt_trans_handle *h, u64 bytenr, u64 num_bytes)
{
	struct ubt_alloc_info *ai = ainfo(h->fs_info);
	struct ubt_block_group *bg;

	pthread_mutex_lock(&ai->lock);
	if (!rs_remove(&ai->reserved_data, bytenr, num_bytes)) {
		bg = ubt_bg_lookup(ai, bytenr);
		if (bg)
			rs_add(&bg->free, bytenr, num_bytes);
	} else {
		ubt_warn("data extent %llu+%llu returned but was not reserved", (unsigned long long)bytenr,
			 (unsigned long long)num_bytes);
	}
	pthread_mutex_unlock(&ai->lock);
}

int ubt_add_data_ref(struct ubt_trans_handle *h, u64 bytenr, u64 num_bytes, u64 root, u64 ino, u64 offset,
		     u64 parent)
{
	return ubt_queue_ref(h->fs_info, bytenr, num_bytes, true, 0,
			     parent ? BTRFS_SHARED_DATA_REF_KEY : BTRFS_EXTENT_DATA_REF_KEY, parent ? parent : root,
			     parent ? 0 : ino, parent ? 0 : offset, 1);
}

int ubt_drop_data_ref(struct ubt_trans_handle *h, u64 bytenr, u64 num_bytes, u64 root, u64 ino, u64 offset,
		      u64 parent)
{
	return ubt_queue_ref(h->fs_info, bytenr, num_bytes, true, 0,
			     parent ? BTRFS_SHARED_DATA_REF_KEY : BTRFS_EXTENT_DATA_REF_KEY, parent ? parent : root,
			     parent ? 0 : ino, parent ? 0 : offset, -1);
}

/* ---- reservations and statfs ---- */

static u64 global_rsv(struct ubt_fs_info *fs_info, u64 meta_total, u64 meta_used)
{
	u64 rsv = ubt_max(meta_used / 4, (u64)fs_info->nodesize * 64);

	rsv = ubt_min(rsv, UBT_GLOBAL_RSV_MAX);
	return ubt_min(rsv, meta_total / 2);
}

static void meta_space(struct ubt_alloc_info *ai, u64 *total, u64 *free_bytes, u64 *used)
{
	u64 pinned;

	ubt_space_of(ai, BTRFS_BLOCK_GROUP_METADATA, total, free_bytes, &pinned);
	*used = *total - *free_bytes - pinned;
}

static int reserve_space(struct ubt_fs_info *fs_info, u64 meta_items, u64 data_bytes, bool freeing)
{
	struct ubt_alloc_info *ai = ainfo(fs_info);
	u64 meta = meta_items * fs_info->nodesize * BTRFS_MAX_LEVEL * 2;
	u64 total, free_bytes, used, pinned;
	int ret = 0;

	if (!ai)
		return -EROFS;
	pthread_mutex_lock(&ai->lock);
	for (;;) {
		u64 need;

		meta_space(ai, &total, &free_bytes, &used);
		need = ai->meta_reserved + meta + (ai->mixed ? ai->data_reserved + data_bytes : 0);
		if (free_bytes >= need + global_rsv(fs_info, total, used))
			break;
		ret = ubt_alloc_chunk(fs_info, BTRFS_BLOCK_GROUP_METADATA);
		if (ret == -ENOSPC && freeing && free_bytes >= need) {
			ret = 0; /* from the global reserve: this change gives space back */
			break;
		}
		if (ret)
			goto out;
	}
	while (!ai->mixed && data_bytes) {
		ubt_space_of(ai, BTRFS_BLOCK_GROUP_DATA, &total, &free_bytes, &pinned);
		if (free_bytes >= ai->data_reserved + data_bytes)
			break;
		ret = ubt_alloc_chunk(fs_info, BTRFS_BLOCK_GROUP_DATA);
		if (ret)
			goto out;
	}
	ai->meta_reserved += meta;
	ai->data_reserved += data_bytes;
out:
	pthread_mutex_unlock(&ai->lock);
	return ret;
}

int ubt_reserve_space(struct ubt_fs_info *fs_info, u64 meta_items, u64 data_bytes)
{
	return reserve_space(fs_info, meta_items, data_bytes, false);
}

int ubt_reserve_space_freeing(struct ubt_fs_info *fs_info, u64 meta_items, u64 data_bytes)
{
	return reserve_space(fs_info, meta_items, data_bytes, true);
}

void ubt_release_space(struct ubt_fs_info *fs_info, u64 meta_items, u64 data_bytes)
{
	struct ubt_alloc_info *ai = ainfo(fs_info);
	u64 meta = meta_items * fs_info->nodesize * BTRFS_MAX_LEVEL * 2;

	if (!ai)
		return;
	pthread_mutex_lock(&ai->lock);
	ai->meta_reserved -= ubt_min(ai->meta_reserved, meta);
	ai->data_reserved -= ubt_min(ai->data_reserved, data_bytes);
	pthread_mutex_unlock(&ai->lock);
}

void ubt_alloc_statfs(struct ubt_fs_info *fs_info, u64 *total, u64 *free_out, u64 *avail)
{
	struct ubt_alloc_info *ai = ainfo(fs_info);
	u64 dtotal, dfree, dpinned;

	*total = le64toh(fs_info->super.total_bytes);
	if (!ai) {
		*free_out = *avail = *total - ubt_min(*total, le64toh(fs_info->super.bytes_used));
		return;
	}
	pthread_mutex_lock(&ai->lock);
	ubt_space_of(ai, BTRFS_BLOCK_GROUP_DATA, &dtotal, &dfree, &dpinned);
	/* Like btrfs: free data space plus unallocated device space (data is SINGLE here). */
	*free_out = dfree + dpinned + ai->dev_free.total;
	*avail = dfree + dpinned + ai->dev_free.total - ubt_min(dfree + dpinned + ai->dev_free.total, ai->data_reserved);
	pthread_mutex_unlock(&ai->lock);
}

/* ---- space used by a log tree (replay at mount) ---- */

/* Move [@bytenr, +@len) out of a group's allocatable set; it must be free there now. */
static int take_free(struct ubt_fs_info *fs_info, u64 bytenr, u64 len, struct ubt_block_group **bgp)
{
	struct ubt_alloc_info *ai = ainfo(fs_info);
	struct ubt_block_group *bg = ubt_bg_lookup(ai, bytenr);

	if (!bg || bytenr + len > bg->start + bg->length) {
		ubt_err("log tree: extent %llu+%llu is outside every block group", (unsigned long long)bytenr,
			(unsigned long long)len);
		return -EUCLEAN;
	}
	if (rs_remove(&bg->free, bytenr, len)) {
		ubt_err("log tree: extent %llu+%llu is not free space (already allocated, or referenced twice)",
			(unsigned long long)bytenr, (unsigned long long)len);
		return -EUCLEAN;
	}
	*bgp = bg;
	return 0;
}

int ubt_alloc_exclude_range(struct ubt_fs_info *fs_info, u64 bytenr, u64 len)
{
	struct ubt_alloc_info *ai = ainfo(fs_info);
	struct ubt_block_group *bg;
	int ret;

	if (!ai)
		return -EROFS;
	pthread_mutex_lock(&ai->lock);
	ret = take_free(fs_info, bytenr, len, &bg);
	pthread_mutex_unlock(&ai->lock);
	return ret;
}

int ubt_alloc_unexclude_range(struct ubt_fs_info *fs_info, u64 bytenr, u64 len)
{
	struct ubt_alloc_info *ai = ainfo(fs_info);
	struct ubt_block_group *bg;
	int ret = -EUCLEAN;

	if (!ai)
		return -EROFS;
	pthread_mutex_lock(&ai->lock);
	bg = ubt_bg_lookup(ai, bytenr);
	if (bg)
		ret = rs_add(&bg->pinned, bytenr, len);
	pthread_mutex_unlock(&ai->lock);
	if (ret)
		ubt_err("log tree: cannot release excluded range %llu+%llu", (unsigned long long)bytenr,
			(unsigned long long)len);
	return ret ? -EUCLEAN : 0;
}

int ubt_alloc_claim_data_extent(struct ubt_fs_info *fs_info, u64 bytenr, u64 len)
{
	struct ubt_alloc_info *ai = ainfo(fs_info);
	struct ubt_block_group *bg;
	int ret;

	if (!ai)
		return -EROFS;
	if (!len || !IS_ALIGNED(bytenr | len, fs_info->sectorsize)) {
		ubt_err("log tree: data extent %llu+%llu is not sector aligned", (unsigned long long)bytenr,
			(unsigned long long)len);
		return -EUCLEAN;
	}
	pthread_mutex_lock(&ai->lock);
	if (rs_contains(&ai->reserved_data, bytenr, len)) {
		ret = 0; /* already claimed (several file extent items share it) */
		goto out;
	}
	ret = take_free(fs_info, bytenr, len, &bg);
	if (ret)
		goto out;
	ret = rs_add(&ai->reserved_data, bytenr, len);
	if (ret) {
		rs_add(&bg->free, bytenr, len);
		ret = ret == -EEXIST ? -EUCLEAN : ret;
	}
out:
	pthread_mutex_unlock(&ai->lock);
	return ret;
}

int ubt_alloc_unclaim_data_extent(struct ubt_fs_info *fs_info, u64 bytenr, u64 len)
{
	struct ubt_alloc_info *ai = ainfo(fs_info);
	struct ubt_block_group *bg;
	int ret = 0;

	if (!ai)
		return -EROFS;
	pthread_mutex_lock(&ai->lock);
	if (rs_contains(&ai->reserved_data, bytenr, len)) {
		rs_remove(&ai->reserved_data, bytenr, len);
		bg = ubt_bg_lookup(ai, bytenr);
		ret = bg ? rs_add(&bg->pinned, bytenr, len) : -EUCLEAN;
	}
	pthread_mutex_unlock(&ai->lock);
	return ret ? -EUCLEAN : 0;
}
