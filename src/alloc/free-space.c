/*
 * free-space.c — free space: building each block group's free set at open time (from the free
 * space tree, or from the extent tree's items), the first-fit search that hands out space, and
 * keeping the on-disk free space tree exact as extents are inserted and deleted: FREE_SPACE_INFO
 * (bg_start, 198, bg_len) {extent_count, flags}, FREE_SPACE_EXTENT (start, 199, len), and
 * FREE_SPACE_BITMAP (start, 200, len) items of one bit per sector (set = free), converting a group
 * between the two forms at the kernel's thresholds.
 */
#include <stdlib.h>

#include "../util/messages.h"
#include "alloc-internal.h"

#define FST_BITMAP_BYTES 256u
#define FST_BITMAP_BITS (FST_BITMAP_BYTES * 8u)
#define FST_FLAG_USING_BITMAPS 1u

struct fst_info {
	ule32 extent_count;
	ule32 flags;
} __attribute__((packed));

void ubt_fst_thresholds(struct ubt_fs_info *fs_info, struct ubt_block_group *bg)
{
	/* Bitmaps once the extent items would take more leaf space than the bitmaps would. */
	u64 range = (u64)fs_info->sectorsize * FST_BITMAP_BITS;
	u64 nbitmaps = (bg->length + range - 1) / range;
	u64 high = nbitmaps * (sizeof(struct btrfs_item) + FST_BITMAP_BYTES) / sizeof(struct btrfs_item);

	bg->fst_high = (u32)high;
	bg->fst_low = high > 100 ? (u32)(high - 100) : 0;
}

static u64 bitmap_range(struct ubt_fs_info *fs_info)
{
	return (u64)fs_info->sectorsize * FST_BITMAP_BITS;
}

static u32 bitmap_bytes(struct ubt_fs_info *fs_info, u64 len)
{
	return (u32)((len / fs_info->sectorsize + 7) / 8);
}

/* ---- loading ---- */

static int load_bitmap(struct ubt_fs_info *fs_info, struct ubt_block_group *bg, const struct ubt_key *k,
		       const u8 *bits, u32 size)
{
	u64 nbits = k->offset / fs_info->sectorsize;
	u64 run = 0, i;
	int ret;

	if (k->offset % fs_info->sectorsize || size != bitmap_bytes(fs_info, k->offset) ||
	    k->objectid + k->offset > bg->start + bg->length) {
		ubt_err("free space tree: bitmap item (%llu %u %llu) of size %u is malformed",
			(unsigned long long)k->objectid, k->type, (unsigned long long)k->offset, size);
		return -EUCLEAN;
	}
	for (i = 0; i <= nbits; i++) {
		bool set = i < nbits && (bits[i / 8] & (1u << (i % 8)));

		if (set) {
			run++;
			continue;
		}
		if (run) {
			u64 s = k->objectid + (i - run) * fs_info->sectorsize;

			ret = rs_add(&bg->fst, s, run * fs_info->sectorsize);
			if (ret)
				return ret == -EEXIST ? -EUCLEAN : ret;
			run = 0;
		}
	}
	return 0;
}

/* Remove the superblock stripes inside @bg from its allocatable free space. */
static int exclude_super(struct ubt_fs_info *fs_info, struct ubt_block_group *bg)
{
	struct ubt_rangeset sup;
	int ret;

	rs_init(&sup);
	ret = ubt_bg_super_ranges(fs_info, bg->start, bg->length, &sup);
	for (size_t j = 0; !ret && j < sup.nr; j++)
		ret = rs_remove_any(&bg->free, sup.r[j].start, sup.r[j].len);
	rs_free(&sup);
	return ret;
}

int ubt_fst_load(struct ubt_fs_info *fs_info)
{
	struct ubt_alloc_info *ai = ainfo(fs_info);
	struct ubt_key key = { 0, 0, 0 }, k;
	struct ubt_path path;
	u32 *counts;
	bool *seen;
	int ret;

	counts = calloc(ai->nr_bgs + 1, sizeof(*counts));
	seen = calloc(ai->nr_bgs + 1, sizeof(*seen));
	if (!counts || !seen) {
		ret = -ENOMEM;
		goto out;
	}
	ubt_path_init(&path);
	ret = ubt_search_ge(&fs_info->free_space_root, &key, &path);
	while (ret == 0) {
		struct extent_buffer *leaf = ubt_path_leaf(&path);
		int slot = ubt_path_slot(&path);
		struct ubt_block_group *bg;
		size_t idx;

		ubt_item_key(leaf, slot, &k);
		bg = ubt_bg_lookup(ai, k.objectid);
		if (!bg) {
			/* mkfs.btrfs leaves items of its temporary block groups behind: not ours to touch. */
			ubt_debug("free space tree: item (%llu %u %llu) is outside every block group, ignored",
				  (unsigned long long)k.objectid, k.type, (unsigned long long)k.offset);
			ret = ubt_next_item(&fs_info->free_space_root, &path);
			continue;
		}
		idx = 0;
		while (ai->bgs[idx] != bg)
			idx++;
		if (k.type == BTRFS_FREE_SPACE_INFO_KEY) {
			const struct fst_info *fi = ubt_item_ptr(leaf, slot);

			if (k.objectid != bg->start || k.offset != bg->length ||
			    ubt_item_size(leaf, slot) < sizeof(*fi)) {
				ubt_err("free space tree: info item (%llu %u %llu) does not match its block group",
					(unsigned long long)k.objectid, k.type, (unsigned long long)k.offset);
				ret = -EUCLEAN;
				break;
			}
			bg->fst_bitmaps = le32toh(fi->flags) & FST_FLAG_USING_BITMAPS;
			counts[idx] = le32toh(fi->extent_count);
			seen[idx] = true;
		} else if (k.type == BTRFS_FREE_SPACE_EXTENT_KEY) {
			if (!k.offset || k.objectid + k.offset > bg->start + bg->length ||
			    rs_add(&bg->fst, k.objectid, k.offset)) {
				ubt_err("free space tree: extent (%llu %llu) is invalid or overlaps another",
					(unsigned long long)k.objectid, (unsigned long long)k.offset);
				ret = -EUCLEAN;
				break;
			}
		} else if (k.type == BTRFS_FREE_SPACE_BITMAP_KEY) {
			ret = load_bitmap(fs_info, bg, &k, ubt_item_ptr(leaf, slot), ubt_item_size(leaf, slot));
			if (ret)
				break;
		}
		ret = ubt_next_item(&fs_info->free_space_root, &path);
	}
	ubt_path_release(&path);
	if (ret < 0)
		goto out;
	ret = 0;
	for (size_t i = 0; i < ai->nr_bgs; i++) {
		struct ubt_block_group *bg = ai->bgs[i];

		if (!seen[i]) {
			ubt_err("free space tree: block group %llu has no free space info",
				(unsigned long long)bg->start);
			ret = -EUCLEAN;
			goto out;
		}
		if (counts[i] != bg->fst.nr)
			ubt_warn("free space tree: block group %llu records %u free extents, found %zu",
				 (unsigned long long)bg->start, counts[i], bg->fst.nr);
		rs_free(&bg->free);
		ret = rs_copy(&bg->free, &bg->fst);
		if (ret)
			goto out;
		/*
		 * btrfs's free space tree lists superblock stripes inside a block group as free (only
		 * the in-memory free space leaves them out): never hand them out.
		 */
		ret = exclude_super(fs_info, bg);
		if (ret)
			goto out;
	}
out:
	free(counts);
	free(seen);
	return ret;
}

/* No (valid) free space tree: free = group minus superblock stripes minus extent items. */
int ubt_free_space_from_extents(struct ubt_fs_info *fs_info)
{
	struct ubt_alloc_info *ai = ainfo(fs_info);
	struct ubt_key key = { 0, 0, 0 }, k;
	struct ubt_path path;
	int ret = 0;

	for (size_t i = 0; i < ai->nr_bgs; i++) {
		struct ubt_block_group *bg = ai->bgs[i];
		struct ubt_rangeset sup;

		rs_init(&sup);
		rs_free(&bg->free);
		ret = rs_add(&bg->free, bg->start, bg->length);
		if (!ret)
			ret = ubt_bg_super_ranges(fs_info, bg->start, bg->length, &sup);
		for (size_t j = 0; !ret && j < sup.nr; j++)
			ret = rs_remove_any(&bg->free, sup.r[j].start, sup.r[j].len);
		rs_free(&sup);
		if (ret)
			return ret;
	}
	ubt_path_init(&path);
	ret = ubt_search_ge(&fs_info->extent_root, &key, &path);
	while (ret == 0) {
		struct extent_buffer *leaf = ubt_path_leaf(&path);
		struct ubt_block_group *bg;
		u64 len = 0;

		ubt_item_key(leaf, ubt_path_slot(&path), &k);
		if (k.type == BTRFS_EXTENT_ITEM_KEY)
			len = k.offset;
		else if (k.type == BTRFS_METADATA_ITEM_KEY)
			len = fs_info->nodesize;
		if (len) {
			bg = ubt_bg_lookup(ai, k.objectid);
			if (!bg || k.objectid + len > bg->start + bg->length) {
				ubt_err("extent tree: extent %llu+%llu is outside every block group",
					(unsigned long long)k.objectid, (unsigned long long)len);
				ret = -EUCLEAN;
				break;
			}
			ret = rs_remove_any(&bg->free, k.objectid, len);
			if (ret)
				break;
		}
		ret = ubt_next_item(&fs_info->extent_root, &path);
	}
	ubt_path_release(&path);
	if (ret < 0)
		return ret;
	for (size_t i = 0; i < ai->nr_bgs; i++) {
		rs_free(&ai->bgs[i]->fst);
		ret = rs_copy(&ai->bgs[i]->fst, &ai->bgs[i]->free);
		if (ret)
			return ret;
	}
	return 0;
}

/* ---- allocation ---- */

static bool fit_in_range(const struct ubt_range *r, u64 from, u64 len, bool meta, u64 *out)
{
	u64 a = ubt_max(r->start, from);

	if (meta && a / BTRFS_STRIPE_LEN != (a + len - 1) / BTRFS_STRIPE_LEN)
		a = ALIGN_UP(a, BTRFS_STRIPE_LEN);
	if (a + len > r->start + r->len || a < r->start)
		return false;
	*out = a;
	return true;
}

static bool search_bg(struct ubt_block_group *bg, u64 from, u64 len, bool meta, u64 *out)
{
	if (bg->free.total < len)
		return false;
	for (size_t i = rs_find(&bg->free, from); i < bg->free.nr; i++)
		if (fit_in_range(&bg->free.r[i], from, len, meta, out))
			return true;
	return false;
}

static bool bg_matches(const struct ubt_block_group *bg, u64 type)
{
	if (type & BTRFS_BLOCK_GROUP_SYSTEM)
		return bg->flags & BTRFS_BLOCK_GROUP_SYSTEM;
	return (bg->flags & type) && !(bg->flags & BTRFS_BLOCK_GROUP_SYSTEM);
}

int ubt_find_free(struct ubt_fs_info *fs_info, u64 type, u64 len, u64 hint, bool meta, u64 *out)
{
	struct ubt_alloc_info *ai = ainfo(fs_info);
	size_t first = 0, n = ai->nr_bgs;
	u64 found;

	if (!n)
		return -ENOSPC;
	while (first < n && ai->bgs[first]->start + ai->bgs[first]->length <= hint)
		first++;
	if (first == n)
		first = 0;
	for (size_t k = 0; k <= n; k++) {
		struct ubt_block_group *bg = ai->bgs[(first + k) % n];
		u64 from = bg->start;

		if (!bg_matches(bg, type) || bg->removing)
			continue;
		if (k == 0 && hint > bg->start)
			from = ALIGN_DOWN(hint, fs_info->sectorsize);
		if (search_bg(bg, from, len, meta, &found)) {
			int ret = rs_remove(&bg->free, found, len);

			if (ret)
				return ret;
			*out = found;
			return 0;
		}
	}
	return -ENOSPC;
}

/* ---- on-disk free space tree edits ---- */

int ubt_alloc_del_item(struct ubt_trans_handle *h, struct ubt_root *root, const struct ubt_key *key,
		       const char *what)
{
	struct ubt_path path;
	int ret;

	ubt_path_init(&path);
	ret = ubt_search_slot_write(h, root, key, &path, -1);
	if (ret > 0) {
		ubt_err("%s: item (%llu %u %llu) to delete is missing", what, (unsigned long long)key->objectid,
			key->type, (unsigned long long)key->offset);
		ret = -EUCLEAN;
	}
	if (!ret)
		ret = ubt_del_items(h, root, &path, path.slots[0], 1);
	ubt_path_release(&path);
	return ret;
}

static int del_exact(struct ubt_trans_handle *h, struct ubt_root *root, const struct ubt_key *key)
{
	return ubt_alloc_del_item(h, root, key, "free space tree");
}

static int ins_extent(struct ubt_trans_handle *h, u64 start, u64 len)
{
	struct ubt_key key = { start, BTRFS_FREE_SPACE_EXTENT_KEY, len };

	return ubt_insert_item(h, &h->fs_info->free_space_root, &key, NULL, 0);
}

static int del_extent(struct ubt_trans_handle *h, u64 start, u64 len)
{
	struct ubt_key key = { start, BTRFS_FREE_SPACE_EXTENT_KEY, len };

	return del_exact(h, &h->fs_info->free_space_root, &key);
}

static void fill_bitmap(struct ubt_fs_info *fs_info, const struct ubt_rangeset *fst, u64 bstart, u64 blen, u8 *bits)
{
	u64 bend = bstart + blen;

	memset(bits, 0, bitmap_bytes(fs_info, blen));
	for (size_t i = rs_find(fst, bstart); i < fst->nr && fst->r[i].start < bend; i++) {
		u64 a = ubt_max(fst->r[i].start, bstart), b = ubt_min(fst->r[i].start + fst->r[i].len, bend);

		for (u64 bit = (a - bstart) / fs_info->sectorsize; bit < (b - bstart) / fs_info->sectorsize; bit++)
			bits[bit / 8] |= (u8)(1u << (bit % 8));
	}
}

static int write_bitmap(struct ubt_trans_handle *h, struct ubt_block_group *bg, u64 bstart, bool insert)
{
	struct ubt_fs_info *fs_info = h->fs_info;
	u64 blen = ubt_min(bitmap_range(fs_info), bg->start + bg->length - bstart);
	struct ubt_key key = { bstart, BTRFS_FREE_SPACE_BITMAP_KEY, blen };
	u32 size = bitmap_bytes(fs_info, blen);
	struct ubt_path path;
	u8 *bits;
	int ret;

	bits = malloc(size);
	if (!bits)
		return -ENOMEM;
	fill_bitmap(fs_info, &bg->fst, bstart, blen, bits);
	if (insert) {
		ret = ubt_insert_item(h, &fs_info->free_space_root, &key, bits, size);
		free(bits);
		return ret;
	}
	ubt_path_init(&path);
	ret = ubt_search_slot_write(h, &fs_info->free_space_root, &key, &path, 0);
	if (ret > 0 || (!ret && ubt_item_size(path.nodes[0], path.slots[0]) != size)) {
		ubt_err("free space tree: bitmap (%llu %llu) is missing or has the wrong size",
			(unsigned long long)bstart, (unsigned long long)blen);
		ret = -EUCLEAN;
	}
	if (!ret) {
		memcpy(ubt_item_ptr(path.nodes[0], path.slots[0]), bits, size);
		ubt_mark_buffer_dirty(h, path.nodes[0]);
	}
	ubt_path_release(&path);
	free(bits);
	return ret;
}

static int rewrite_bitmaps(struct ubt_trans_handle *h, struct ubt_block_group *bg, u64 start, u64 len)
{
	u64 range = bitmap_range(h->fs_info);
	u64 b = bg->start + (start - bg->start) / range * range;
	int ret = 0;

	for (; !ret && b < start + len; b += range)
		ret = write_bitmap(h, bg, b, false);
	return ret;
}

static int write_info(struct ubt_trans_handle *h, struct ubt_block_group *bg)
{
	struct ubt_key key = { bg->start, BTRFS_FREE_SPACE_INFO_KEY, bg->length };
	struct ubt_path path;
	struct fst_info *fi;
	int ret;

	ubt_path_init(&path);
	ret = ubt_search_slot_write(h, &h->fs_info->free_space_root, &key, &path, 0);
	if (ret > 0 || (!ret && ubt_item_size(path.nodes[0], path.slots[0]) < sizeof(*fi))) {
		ubt_err("free space tree: info of block group %llu is missing", (unsigned long long)bg->start);
		ret = -EUCLEAN;
	}
	if (!ret) {
		fi = ubt_item_ptr(path.nodes[0], path.slots[0]);
		fi->extent_count = htole32((u32)bg->fst.nr);
		fi->flags = htole32(bg->fst_bitmaps ? FST_FLAG_USING_BITMAPS : 0);
		ubt_mark_buffer_dirty(h, path.nodes[0]);
	}
	ubt_path_release(&path);
	return ret;
}

/* Switch the group's representation (the in-memory fst is what both forms encode). */
static int convert(struct ubt_trans_handle *h, struct ubt_block_group *bg, bool to_bitmaps)
{
	u64 range = bitmap_range(h->fs_info);
	int ret = 0;

	if (to_bitmaps) {
		for (size_t i = 0; !ret && i < bg->fst.nr; i++)
			ret = del_extent(h, bg->fst.r[i].start, bg->fst.r[i].len);
		for (u64 b = bg->start; !ret && b < bg->start + bg->length; b += range)
			ret = write_bitmap(h, bg, b, true);
	} else {
		for (u64 b = bg->start; !ret && b < bg->start + bg->length; b += range) {
			struct ubt_key key = { b, BTRFS_FREE_SPACE_BITMAP_KEY,
					       ubt_min(range, bg->start + bg->length - b) };
			ret = del_exact(h, &h->fs_info->free_space_root, &key);
		}
		for (size_t i = 0; !ret && i < bg->fst.nr; i++)
			ret = ins_extent(h, bg->fst.r[i].start, bg->fst.r[i].len);
	}
	if (!ret)
		bg->fst_bitmaps = to_bitmaps;
	return ret;
}

static int finish_update(struct ubt_trans_handle *h, struct ubt_block_group *bg)
{
	int ret = 0;

	if (!bg->fst_bitmaps && bg->fst.nr > bg->fst_high)
		ret = convert(h, bg, true);
	else if (bg->fst_bitmaps && bg->fst.nr < bg->fst_low)
		ret = convert(h, bg, false);
	if (!ret)
		ret = write_info(h, bg);
	return ret;
}

int ubt_fst_remove(struct ubt_trans_handle *h, struct ubt_block_group *bg, u64 start, u64 len)
{
	struct ubt_range r;
	size_t i;
	int ret;

	if (!ainfo(h->fs_info)->fst)
		return rs_remove_any(&bg->fst, start, len);
	i = rs_find(&bg->fst, start);
	if (i >= bg->fst.nr || bg->fst.r[i].start > start || bg->fst.r[i].start + bg->fst.r[i].len < start + len) {
		ubt_err("free space tree: extent %llu+%llu being allocated is not free in block group %llu",
			(unsigned long long)start, (unsigned long long)len, (unsigned long long)bg->start);
		return -EUCLEAN;
	}
	r = bg->fst.r[i];
	ret = rs_remove(&bg->fst, start, len);
	if (ret)
		return ret;
	if (bg->fst_bitmaps) {
		ret = rewrite_bitmaps(h, bg, start, len);
	} else {
		ret = del_extent(h, r.start, r.len);
		if (!ret && start > r.start)
			ret = ins_extent(h, r.start, start - r.start);
		if (!ret && start + len < r.start + r.len)
			ret = ins_extent(h, start + len, r.start + r.len - start - len);
	}
	return ret ? ret : finish_update(h, bg);
}

int ubt_fst_add(struct ubt_trans_handle *h, struct ubt_block_group *bg, u64 start, u64 len)
{
	size_t i;
	int ret;

	if (!ainfo(h->fs_info)->fst)
		return rs_add(&bg->fst, start, len);
	if (!bg->fst_bitmaps) {
		/* Delete the neighbours that merge with the freed range. */
		i = start ? rs_find(&bg->fst, start - 1) : 0;
		if (i < bg->fst.nr && bg->fst.r[i].start + bg->fst.r[i].len == start) {
			ret = del_extent(h, bg->fst.r[i].start, bg->fst.r[i].len);
			if (ret)
				return ret;
			i++;
		}
		if (i < bg->fst.nr && bg->fst.r[i].start == start + len) {
			ret = del_extent(h, bg->fst.r[i].start, bg->fst.r[i].len);
			if (ret)
				return ret;
		}
	}
	ret = rs_add(&bg->fst, start, len);
	if (ret) {
		ubt_err("free space tree: extent %llu+%llu being freed is already free",
			(unsigned long long)start, (unsigned long long)len);
		return ret == -EEXIST ? -EUCLEAN : ret;
	}
	if (bg->fst_bitmaps) {
		ret = rewrite_bitmaps(h, bg, start, len);
	} else {
		i = rs_find(&bg->fst, start);
		ret = ins_extent(h, bg->fst.r[i].start, bg->fst.r[i].len);
	}
	return ret ? ret : finish_update(h, bg);
}

int ubt_fst_add_bg(struct ubt_trans_handle *h, struct ubt_block_group *bg)
{
	struct ubt_key key = { bg->start, BTRFS_FREE_SPACE_INFO_KEY, bg->length };
	struct fst_info fi = { 0 };
	int ret;

	if (!ainfo(h->fs_info)->fst)
		return 0;
	ret = ubt_insert_item(h, &h->fs_info->free_space_root, &key, &fi, sizeof(fi));
	if (ret)
		return ret;
	bg->fst_bitmaps = false;
	for (size_t i = 0; !ret && i < bg->fst.nr; i++)
		ret = ins_extent(h, bg->fst.r[i].start, bg->fst.r[i].len);
	return ret ? ret : finish_update(h, bg);
}

int ubt_fst_remove_bg(struct ubt_trans_handle *h, struct ubt_block_group *bg)
{
	struct ubt_root *root = &h->fs_info->free_space_root;
	const u64 end = bg->start + bg->length;
	struct ubt_path path;
	int ret;

	if (!ainfo(h->fs_info)->fst)
		return 0;
	ubt_path_init(&path);
	/* FREE_SPACE_INFO, EXTENT and BITMAP items of the group all have objectids inside it. */
	for (;;) {
		struct ubt_key key = { bg->start, 0, 0 }, k;
		struct extent_buffer *leaf;
		int nr = 0;

		ret = ubt_search_ge(root, &key, &path);
		if (ret < 0)
			break;
		if (ret > 0) {
			ret = 0;
			break;
		}
		ubt_item_key(ubt_path_leaf(&path), ubt_path_slot(&path), &key);
		ubt_path_release(&path);
		if (key.objectid >= end)
			break;
		ret = ubt_search_slot_write(h, root, &key, &path, -1);
		if (ret > 0)
			ret = -EUCLEAN;
		if (ret < 0)
			break;
		leaf = ubt_path_leaf(&path);
		for (u32 slot = (u32)ubt_path_slot(&path); slot < ubt_eb_nritems(leaf); slot++, nr++) {
			ubt_item_key(leaf, (int)slot, &k);
			if (k.objectid >= end)
				break;
		}
		ret = ubt_del_items(h, root, &path, ubt_path_slot(&path), nr);
		ubt_path_release(&path);
		if (ret)
			break;
	}
	ubt_path_release(&path);
	return ret;
}
