/*
 * block-group.c — block groups: loading BLOCK_GROUP_ITEMs (extent tree or block group tree) for
 * every chunk, the superblock stripes each group excludes, writing changed `used` values back at
 * commit, and chunk allocation: a new chunk is placed in unallocated device space and usable at
 * once in memory; its CHUNK_ITEM, DEV_EXTENTs, DEV_ITEM update, BLOCK_GROUP_ITEM and free space
 * tree items are inserted by ubt_create_pending_bgs during the commit's delayed-ref runs. And
 * the reverse: a group left empty is removed at commit (ubt_remove_unused_bgs), so that space
 * freed by deleting data can hold metadata again, as btrfs's cleaner does it.
 */
#include <stdlib.h>

#include "../device/bdev.h"
#include "../util/messages.h"
#include "../volumes/volumes.h"
#include "alloc-internal.h"

#define SZ_1M (1024ULL * 1024)
#define SZ_16M (16 * SZ_1M)
#define SZ_32M (32 * SZ_1M)
#define SZ_256M (256 * SZ_1M)
#define SZ_1G (1024 * SZ_1M)

struct ubt_block_group *ubt_bg_lookup(struct ubt_alloc_info *ai, u64 bytenr)
{
	size_t lo = 0, hi = ai->nr_bgs;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		struct ubt_block_group *bg = ai->bgs[mid];

		if (bytenr < bg->start)
			hi = mid;
		else if (bytenr >= bg->start + bg->length)
			lo = mid + 1;
		else
			return bg;
	}
	return NULL;
}

static int bg_insert(struct ubt_alloc_info *ai, struct ubt_block_group *bg)
{
	size_t i = 0;

	if (ai->nr_bgs == ai->cap_bgs) {
		size_t cap = ai->cap_bgs ? ai->cap_bgs * 2 : 16;
		struct ubt_block_group **n = realloc(ai->bgs, cap * sizeof(*n));

		if (!n)
			return -ENOMEM;
		ai->bgs = n;
		ai->cap_bgs = cap;
	}
	while (i < ai->nr_bgs && ai->bgs[i]->start < bg->start)
		i++;
	memmove(&ai->bgs[i + 1], &ai->bgs[i], (ai->nr_bgs - i) * sizeof(*ai->bgs));
	ai->bgs[i] = bg;
	ai->nr_bgs++;
	return 0;
}

static void bg_destroy(struct ubt_block_group *bg)
{
	rs_free(&bg->free);
	rs_free(&bg->pinned);
	rs_free(&bg->fst);
	free(bg->chunk_item);
	free(bg);
}

void ubt_bg_free_all(struct ubt_alloc_info *ai)
{
	for (size_t i = 0; i < ai->nr_bgs; i++)
		bg_destroy(ai->bgs[i]);
	for (size_t i = 0; i < ai->nr_dead_bgs; i++)
		bg_destroy(ai->dead_bgs[i]);
	free(ai->bgs);
	free(ai->dead_bgs);
	ai->bgs = NULL;
	ai->dead_bgs = NULL;
	ai->nr_bgs = ai->cap_bgs = ai->nr_dead_bgs = 0;
	rs_free(&ai->dev_freed);
}

static int add_excluded(struct ubt_rangeset *out, u64 start, u64 len, u64 lo, u64 hi)
{
	u64 a = ubt_max(start, lo), b = ubt_min(start + len, hi);
	int ret;

	if (a >= b)
		return 0;
	ret = rs_remove_any(out, a, b - a);
	return ret ? ret : rs_add(out, a, b - a);
}

/* Superblock copies map into a chunk at 64 KiB granularity, as btrfs excludes them. */
static int chunk_super_ranges(const struct ubt_chunk *c, u64 lo, u64 hi, struct ubt_rangeset *out)
{
	u64 profile = c->type & BTRFS_BLOCK_GROUP_PROFILE_MASK;
	u64 dev_len = c->length;
	int ret = 0;

	if (profile & BTRFS_BLOCK_GROUP_RAID0)
		dev_len = c->length / c->num_stripes;
	else if (profile & BTRFS_BLOCK_GROUP_RAID10)
		dev_len = c->length / (c->num_stripes / c->sub_stripes);
	if (c->logical < BTRFS_SUPER_INFO_OFFSET)
		ret = add_excluded(out, c->logical, BTRFS_SUPER_INFO_OFFSET - c->logical, lo, hi);
	for (int m = 0; !ret && m < BTRFS_SUPER_MIRROR_MAX; m++) {
		u64 phys = btrfs_sb_offset(m);

		for (u16 i = 0; !ret && i < c->num_stripes; i++) {
			u64 nr, logical;

			if (phys < c->stripes[i].offset || phys >= c->stripes[i].offset + dev_len)
				continue;
			nr = (phys - c->stripes[i].offset) / BTRFS_STRIPE_LEN;
			if (profile & BTRFS_BLOCK_GROUP_RAID0)
				logical = c->logical + (nr * c->num_stripes + i) * BTRFS_STRIPE_LEN;
			else if (profile & BTRFS_BLOCK_GROUP_RAID10)
				logical = c->logical + (nr * (c->num_stripes / c->sub_stripes) + i / c->sub_stripes) *
							       BTRFS_STRIPE_LEN;
			else
				logical = c->logical + nr * BTRFS_STRIPE_LEN;
			ret = add_excluded(out, logical, BTRFS_STRIPE_LEN, ubt_max(lo, c->logical),
					   ubt_min(hi, c->logical + c->length));
		}
	}
	return ret;
}

int ubt_bg_super_ranges(struct ubt_fs_info *fs_info, u64 start, u64 len, struct ubt_rangeset *out)
{
	struct ubt_chunk_map *map = fs_info->chunk_map;
	int ret = 0;

	pthread_rwlock_rdlock(&map->lock);
	for (size_t i = 0; !ret && i < map->nr; i++) {
		const struct ubt_chunk *c = map->chunks[i];

		if (c->logical + c->length <= start || c->logical >= start + len)
			continue;
		ret = chunk_super_ranges(c, start, start + len, out);
	}
	pthread_rwlock_unlock(&map->lock);
	return ret;
}

static struct ubt_block_group *bg_new(struct ubt_fs_info *fs_info, u64 start, u64 length, u64 flags)
{
	struct ubt_block_group *bg = calloc(1, sizeof(*bg));

	if (!bg)
		return NULL;
	bg->start = start;
	bg->length = length;
	bg->flags = flags;
	rs_init(&bg->free);
	rs_init(&bg->pinned);
	rs_init(&bg->fst);
	ubt_fst_thresholds(fs_info, bg);
	return bg;
}

/* Device space not covered by DEV_EXTENTs of our device (the first MiB is never used). */
static int load_dev_free(struct ubt_fs_info *fs_info)
{
	struct ubt_alloc_info *ai = ainfo(fs_info);
	struct ubt_key key = { fs_info->devid, BTRFS_DEV_EXTENT_KEY, 0 }, k;
	struct ubt_path path;
	int ret;

	ai->dev_total = le64toh(fs_info->super.dev_item.total_bytes);
	if (ai->dev_total > fs_info->bdev->size)
		ai->dev_total = fs_info->bdev->size;
	if (ai->dev_total > SZ_1M) {
		ret = rs_add(&ai->dev_free, SZ_1M, ai->dev_total - SZ_1M);
		if (ret)
			return ret;
	}
	if (!fs_info->dev_root.bytenr)
		return 0;
	ubt_path_init(&path);
	ret = ubt_search_ge(&fs_info->dev_root, &key, &path);
	while (ret == 0) {
		struct extent_buffer *leaf = ubt_path_leaf(&path);
		int slot = ubt_path_slot(&path);
		const struct btrfs_dev_extent *de;

		ubt_item_key(leaf, slot, &k);
		if (k.objectid != fs_info->devid || k.type != BTRFS_DEV_EXTENT_KEY)
			break;
		if (ubt_item_size(leaf, slot) < sizeof(*de)) {
			ubt_err("dev extent (%llu %llu) is too small", (unsigned long long)k.objectid,
				(unsigned long long)k.offset);
			ret = -EUCLEAN;
			break;
		}
		de = ubt_item_ptr(leaf, slot);
		ret = rs_remove_any(&ai->dev_free, k.offset, le64toh(de->length));
		if (ret)
			break;
		ret = ubt_next_item(&fs_info->dev_root, &path);
	}
	ubt_path_release(&path);
	return ret < 0 ? ret : 0;
}

int ubt_bg_load(struct ubt_fs_info *fs_info)
{
	struct ubt_alloc_info *ai = ainfo(fs_info);
	struct ubt_chunk_map *map = fs_info->chunk_map;
	struct ubt_path path;
	int ret = 0;

	ubt_path_init(&path);
	for (size_t i = 0;; i++) {
		u64 logical, length, ctype;
		struct ubt_key key;
		struct ubt_block_group *bg;
		const struct btrfs_block_group_item *bi;

		pthread_rwlock_rdlock(&map->lock);
		if (i >= map->nr) {
			pthread_rwlock_unlock(&map->lock);
			break;
		}
		logical = map->chunks[i]->logical;
		length = map->chunks[i]->length;
		ctype = map->chunks[i]->type;
		pthread_rwlock_unlock(&map->lock);

		key = (struct ubt_key){ logical, BTRFS_BLOCK_GROUP_ITEM_KEY, length };
		ret = ubt_search_slot(ai->bg_root, &key, &path);
		if (ret > 0) {
			ubt_err("chunk at %llu (length %llu) has no block group item", (unsigned long long)logical,
				(unsigned long long)length);
			ret = -EUCLEAN;
		}
		if (ret)
			break;
		if (ubt_item_size(path.nodes[0], path.slots[0]) < sizeof(*bi)) {
			ubt_err("block group item %llu is too small", (unsigned long long)logical);
			ret = -EUCLEAN;
			break;
		}
		bi = ubt_item_ptr(path.nodes[0], path.slots[0]);
		if ((le64toh(bi->flags) & BTRFS_BLOCK_GROUP_TYPE_MASK) != (ctype & BTRFS_BLOCK_GROUP_TYPE_MASK) ||
		    le64toh(bi->used) > length) {
			ubt_err("block group %llu: flags 0x%llx / used %llu do not match its chunk (0x%llx)",
				(unsigned long long)logical, (unsigned long long)le64toh(bi->flags),
				(unsigned long long)le64toh(bi->used), (unsigned long long)ctype);
			ret = -EUCLEAN;
			break;
		}
		bg = bg_new(fs_info, logical, length, le64toh(bi->flags));
		if (!bg) {
			ret = -ENOMEM;
			break;
		}
		bg->used = bg->disk_used = le64toh(bi->used);
		ubt_path_release(&path);
		ret = bg_insert(ai, bg);
		if (ret) {
			bg_destroy(bg);
			break;
		}
	}
	ubt_path_release(&path);
	if (ret)
		return ret;
	for (size_t i = 0; i < ai->nr_bgs; i++) {
		struct ubt_rangeset sup;
		struct ubt_block_group *bg = ai->bgs[i];

		rs_init(&sup);
		ret = ubt_bg_super_ranges(fs_info, bg->start, bg->length, &sup);
		bg->super_bytes = sup.total;
		rs_free(&sup);
		if (ret)
			return ret;
	}
	return load_dev_free(fs_info);
}

void ubt_space_of(struct ubt_alloc_info *ai, u64 type, u64 *total, u64 *free_bytes, u64 *pinned)
{
	*total = *free_bytes = *pinned = 0;
	for (size_t i = 0; i < ai->nr_bgs; i++) {
		struct ubt_block_group *bg = ai->bgs[i];
		bool match = (type & BTRFS_BLOCK_GROUP_SYSTEM) ? (bg->flags & BTRFS_BLOCK_GROUP_SYSTEM)
							       : ((bg->flags & type) && !(bg->flags & BTRFS_BLOCK_GROUP_SYSTEM));

		if (!match || bg->removing)
			continue;
		*total += bg->length;
		*free_bytes += bg->free.total;
		*pinned += bg->pinned.total;
	}
}

/* ---- chunk allocation ---- */

static u64 profile_for(struct ubt_alloc_info *ai, u64 type)
{
	for (size_t i = 0; i < ai->nr_bgs; i++)
		if ((ai->bgs[i]->flags & BTRFS_BLOCK_GROUP_TYPE_MASK) == type)
			return ai->bgs[i]->flags & BTRFS_BLOCK_GROUP_PROFILE_MASK;
	return (type & BTRFS_BLOCK_GROUP_DATA) ? 0 : BTRFS_BLOCK_GROUP_DUP;
}

int ubt_alloc_chunk(struct ubt_fs_info *fs_info, u64 type)
{
	struct ubt_alloc_info *ai = ainfo(fs_info);
	struct ubt_chunk_map *map = fs_info->chunk_map;
	struct btrfs_chunk *ci = NULL;
	struct ubt_block_group *bg = NULL;
	struct ubt_rangeset sup;
	struct btrfs_disk_key dk;
	u64 profile, want, stripe, hole_start = 0, hole_len = 0, logical = 0;
	u32 asize = le32toh(fs_info->super.sys_chunk_array_size);
	int copies, ret;
	size_t isize;

	if (ai->mixed && !(type & BTRFS_BLOCK_GROUP_SYSTEM))
		type = BTRFS_BLOCK_GROUP_DATA | BTRFS_BLOCK_GROUP_METADATA;
	profile = profile_for(ai, type);
	if (profile & ~BTRFS_BLOCK_GROUP_DUP) {
		ubt_err("cannot allocate a chunk with profile 0x%llx (only single and dup are supported)",
			(unsigned long long)profile);
		return -ENOSPC;
	}
	copies = profile ? 2 : 1;
	if (type & BTRFS_BLOCK_GROUP_SYSTEM)
		want = SZ_32M;
	else if (type & BTRFS_BLOCK_GROUP_METADATA)
		want = ai->dev_total > 50 * SZ_1G ? SZ_1G : SZ_256M;
	else
		want = SZ_1G;
	/* No chunk over a tenth of the device (rounded up to 16 MiB), as btrfs sizes them. */
	want = ubt_min(want, ALIGN_UP(ai->dev_total / 10, SZ_16M));

	/* First hole that takes the whole chunk, else the largest one. */
	for (size_t i = 0; i < ai->dev_free.nr; i++) {
		const struct ubt_range *r = &ai->dev_free.r[i];

		if (r->len >= want * copies) {
			hole_start = r->start;
			hole_len = r->len;
			break;
		}
		if (r->len > hole_len) {
			hole_start = r->start;
			hole_len = r->len;
		}
	}
	stripe = ubt_min(want, ALIGN_DOWN(hole_len / copies, BTRFS_STRIPE_LEN));
	if (stripe < SZ_1M)
		return -ENOSPC;

	pthread_rwlock_rdlock(&map->lock);
	for (size_t i = 0; i < map->nr; i++)
		logical = ubt_max(logical, map->chunks[i]->logical + map->chunks[i]->length);
	pthread_rwlock_unlock(&map->lock);
	/* Never below a chunk removed while mounted: cached blocks may still carry its addresses. */
	logical = ALIGN_UP(ubt_max(ubt_max(logical, SZ_1M), ai->next_logical), BTRFS_STRIPE_LEN);

	isize = btrfs_chunk_item_size(copies);
	dk = (struct btrfs_disk_key){ htole64(BTRFS_FIRST_CHUNK_TREE_OBJECTID), BTRFS_CHUNK_ITEM_KEY, htole64(logical) };
	if ((type & BTRFS_BLOCK_GROUP_SYSTEM) && asize + sizeof(dk) + isize > BTRFS_SYSTEM_CHUNK_ARRAY_SIZE) {
		ubt_err("no room in the superblock's system chunk array for another system chunk");
		return -ENOSPC;
	}
	ci = calloc(1, isize);
	if (!ci)
		return -ENOMEM;
	ci->length = htole64(stripe);
	ci->owner = htole64(BTRFS_EXTENT_TREE_OBJECTID);
	ci->stripe_len = htole64(BTRFS_STRIPE_LEN);
	ci->type = htole64(type | profile);
	ci->io_align = htole32(BTRFS_STRIPE_LEN);
	ci->io_width = htole32(BTRFS_STRIPE_LEN);
	ci->sector_size = htole32(fs_info->sectorsize);
	ci->num_stripes = htole16((u16)copies);
	ci->sub_stripes = htole16(1);
	for (int i = 0; i < copies; i++) {
		struct btrfs_stripe *s = (struct btrfs_stripe *)((u8 *)ci + offsetof(struct btrfs_chunk, stripe) + (size_t)i * sizeof(*s));

		s->devid = htole64(fs_info->devid);
		s->offset = htole64(hole_start + (u64)i * stripe);
		memcpy(s->dev_uuid, fs_info->super.dev_item.uuid, BTRFS_UUID_SIZE);
	}

	bg = bg_new(fs_info, logical, stripe, type | profile);
	if (!bg) {
		free(ci);
		return -ENOMEM;
	}
	bg->pending = true;
	bg->chunk_item = ci;
	bg->chunk_item_size = (u32)isize;
	ret = ubt_chunk_map_add(map, logical, ci, isize, fs_info->sectorsize);
	if (ret)
		goto fail;
	rs_init(&sup);
	ret = rs_add(&bg->free, logical, stripe);
	if (!ret)
		ret = ubt_bg_super_ranges(fs_info, logical, stripe, &sup);
	for (size_t i = 0; !ret && i < sup.nr; i++)
		ret = rs_remove_any(&bg->free, sup.r[i].start, sup.r[i].len);
	bg->super_bytes = sup.total;
	rs_free(&sup);
	if (!ret)
		ret = rs_copy(&bg->fst, &bg->free);
	if (!ret)
		ret = bg_insert(ai, bg);
	if (ret)
		goto fail; /* a chunk already mapped stays mapped but unused; the transaction aborts */
	rs_remove(&ai->dev_free, hole_start, stripe * (u64)copies);
	ai->next_logical = logical + stripe;
	if (type & BTRFS_BLOCK_GROUP_SYSTEM) {
		memcpy(fs_info->super.sys_chunk_array + asize, &dk, sizeof(dk));
		memcpy(fs_info->super.sys_chunk_array + asize + sizeof(dk), ci, isize);
		fs_info->super.sys_chunk_array_size = htole32(asize + (u32)(sizeof(dk) + isize));
	}
	ai->have_pending_bgs = true;
	ubt_info("allocated a %s chunk of %llu MiB at %llu",
		 (type & BTRFS_BLOCK_GROUP_SYSTEM)     ? "system"
		 : (type & BTRFS_BLOCK_GROUP_METADATA) ? "metadata"
						       : "data",
		 (unsigned long long)(stripe >> 20), (unsigned long long)logical);
	return 0;
fail:
	bg_destroy(bg);
	return ret;
}

static int update_dev_item(struct ubt_trans_handle *h, u64 added)
{
	struct ubt_fs_info *fs_info = h->fs_info;
	struct ubt_key key = { BTRFS_DEV_ITEMS_OBJECTID, BTRFS_DEV_ITEM_KEY, fs_info->devid };
	struct ubt_path path;
	struct btrfs_dev_item *di;
	int ret;

	ubt_path_init(&path);
	ret = ubt_search_slot_write(h, &fs_info->chunk_root, &key, &path, 0);
	if (ret > 0 || (!ret && ubt_item_size(path.nodes[0], path.slots[0]) < sizeof(*di))) {
		ubt_err("device item %llu is missing from the chunk tree", (unsigned long long)fs_info->devid);
		ret = -EUCLEAN;
	}
	if (!ret) {
		di = ubt_item_ptr(path.nodes[0], path.slots[0]);
		di->bytes_used = htole64(le64toh(di->bytes_used) + added);
		fs_info->super.dev_item.bytes_used = di->bytes_used;
		ubt_mark_buffer_dirty(h, path.nodes[0]);
	}
	ubt_path_release(&path);
	return ret;
}

static int insert_pending(struct ubt_trans_handle *h, struct ubt_block_group *bg)
{
	struct ubt_fs_info *fs_info = h->fs_info;
	struct ubt_alloc_info *ai = ainfo(fs_info);
	const struct btrfs_chunk *ci = bg->chunk_item;
	u16 nstripes = le16toh(ci->num_stripes);
	struct btrfs_block_group_item bi;
	struct ubt_key key;
	int ret;

	key = (struct ubt_key){ BTRFS_FIRST_CHUNK_TREE_OBJECTID, BTRFS_CHUNK_ITEM_KEY, bg->start };
	ret = ubt_insert_item(h, &fs_info->chunk_root, &key, ci, bg->chunk_item_size);
	for (u16 i = 0; !ret && i < nstripes; i++) {
		const struct btrfs_stripe *s = (struct btrfs_stripe *)((u8 *)ci + offsetof(struct btrfs_chunk, stripe) + (size_t)i * sizeof(*s));
		struct btrfs_dev_extent de = { 0 };

		de.chunk_tree = htole64(BTRFS_CHUNK_TREE_OBJECTID);
		de.chunk_objectid = htole64(BTRFS_FIRST_CHUNK_TREE_OBJECTID);
		de.chunk_offset = htole64(bg->start);
		de.length = ci->length;
		memcpy(de.chunk_tree_uuid, ai->chunk_tree_uuid, BTRFS_UUID_SIZE);
		key = (struct ubt_key){ le64toh(s->devid), BTRFS_DEV_EXTENT_KEY, le64toh(s->offset) };
		ret = ubt_insert_item(h, &fs_info->dev_root, &key, &de, sizeof(de));
	}
	if (!ret)
		ret = update_dev_item(h, bg->length * nstripes);
	if (ret)
		return ret;
	bi.used = htole64(bg->used);
	bi.chunk_objectid = htole64(BTRFS_FIRST_CHUNK_TREE_OBJECTID);
	bi.flags = htole64(bg->flags);
	key = (struct ubt_key){ bg->start, BTRFS_BLOCK_GROUP_ITEM_KEY, bg->length };
	ret = ubt_insert_item(h, ai->bg_root, &key, &bi, sizeof(bi));
	if (ret)
		return ret;
	bg->disk_used = bg->used;
	return ubt_fst_add_bg(h, bg);
}

int ubt_create_pending_bgs(struct ubt_trans_handle *h)
{
	struct ubt_alloc_info *ai = ainfo(h->fs_info);
	int did = 0, ret;

	while (ai->have_pending_bgs) {
		struct ubt_block_group *bg = NULL;

		/* Oldest first: a group created while inserting another's items comes later. */
		for (size_t i = 0; i < ai->nr_bgs && !bg; i++)
			if (ai->bgs[i]->pending)
				bg = ai->bgs[i];
		if (!bg) {
			ai->have_pending_bgs = false;
			break;
		}
		bg->pending = false;
		ret = insert_pending(h, bg);
		free(bg->chunk_item);
		bg->chunk_item = NULL;
		if (ret)
			return ret;
		did = 1;
	}
	return did;
}

int ubt_write_bg_items(struct ubt_trans_handle *h)
{
	struct ubt_fs_info *fs_info = h->fs_info;
	struct ubt_alloc_info *ai = ainfo(fs_info);
	u64 total_used = 0;
	int changed = 0, ret;

	for (size_t i = 0; i < ai->nr_bgs; i++) {
		struct ubt_block_group *bg = ai->bgs[i];
		struct ubt_key key = { bg->start, BTRFS_BLOCK_GROUP_ITEM_KEY, bg->length };
		struct btrfs_block_group_item *bi;
		struct ubt_path path;

		if (bg->pending || bg->used == bg->disk_used)
			continue;
		ubt_path_init(&path);
		ret = ubt_search_slot_write(h, ai->bg_root, &key, &path, 0);
		if (ret > 0 || (!ret && ubt_item_size(path.nodes[0], path.slots[0]) < sizeof(*bi))) {
			ubt_err("block group item %llu is missing", (unsigned long long)bg->start);
			ret = -EUCLEAN;
		}
		if (ret) {
			ubt_path_release(&path);
			return ret;
		}
		bi = ubt_item_ptr(path.nodes[0], path.slots[0]);
		bi->used = htole64(bg->used);
		ubt_mark_buffer_dirty(h, path.nodes[0]);
		ubt_path_release(&path);
		bg->disk_used = bg->used;
		changed = 1;
	}
	for (size_t i = 0; i < ai->nr_bgs; i++)
		total_used += ai->bgs[i]->used;
	fs_info->super.bytes_used = htole64(total_used);
	return changed;
}

/* ---- removing empty block groups ---- */

/* Is a tree block of this transaction (dirty, to be written) inside @bg? */
static bool bg_has_dirty_blocks(struct ubt_fs_info *fs_info, const struct ubt_block_group *bg)
{
	for (struct extent_buffer *eb = fs_info->dirty_list; eb; eb = eb->dirty_next)
		if (eb->start >= bg->start && eb->start < bg->start + bg->length)
			return true;
	return false;
}

/* An empty group the filesystem can do without, or NULL; it is marked removing. ai->lock held. */
static struct ubt_block_group *pick_unused_bg(struct ubt_fs_info *fs_info, u64 meta_keep, u64 data_keep,
					      struct ubt_chunk_stripe *stripes, int *nr_stripes)
{
	struct ubt_alloc_info *ai = ainfo(fs_info);

	for (size_t i = 0; i < ai->nr_bgs; i++) {
		struct ubt_block_group *bg = ai->bgs[i];
		u64 type = bg->flags & (BTRFS_BLOCK_GROUP_DATA | BTRFS_BLOCK_GROUP_METADATA);
		u64 total, free_bytes, pinned, len;
		int n;

		if (bg->pending || bg->removing || (bg->flags & BTRFS_BLOCK_GROUP_SYSTEM) || bg->used ||
		    bg->free.total + bg->pinned.total != bg->length - bg->super_bytes)
			continue;
		if (bg->flags & BTRFS_BLOCK_GROUP_PROFILE_MASK & ~BTRFS_BLOCK_GROUP_DUP)
			continue; /* only what we allocate ourselves: single and dup on this device */
		/* Keep one group of each kind, and enough free space for what is reserved. */
		ubt_space_of(ai, type, &total, &free_bytes, &pinned);
		if (total <= bg->length ||
		    free_bytes - bg->free.total < ((type & BTRFS_BLOCK_GROUP_METADATA) ? meta_keep : data_keep))
			continue;
		n = ubt_chunk_map_stripes(fs_info->chunk_map, bg->start, stripes, 2, &len);
		if (n < 1 || n > 2 || len != bg->length)
			continue;
		for (int s = 0; s < n; s++)
			if (stripes[s].devid != fs_info->devid)
				n = 0;
		if (!n || bg_has_dirty_blocks(fs_info, bg))
			continue;
		bg->removing = true;
		*nr_stripes = n;
		return bg;
	}
	return NULL;
}

static int remove_bg(struct ubt_trans_handle *h, struct ubt_block_group *bg, const struct ubt_chunk_stripe *stripes,
		     int nr_stripes)
{
	struct ubt_fs_info *fs_info = h->fs_info;
	struct ubt_alloc_info *ai = ainfo(fs_info);
	struct ubt_key key = { bg->start, BTRFS_BLOCK_GROUP_ITEM_KEY, bg->length };
	struct ubt_block_group **dead;
	int ret;

	ret = ubt_alloc_del_item(h, ai->bg_root, &key, "removing a block group");
	if (!ret)
		ret = ubt_fst_remove_bg(h, bg);
	for (int i = 0; !ret && i < nr_stripes; i++) {
		key = (struct ubt_key){ stripes[i].devid, BTRFS_DEV_EXTENT_KEY, stripes[i].offset };
		ret = ubt_alloc_del_item(h, &fs_info->dev_root, &key, "removing a device extent");
	}
	if (!ret)
		ret = update_dev_item(h, (u64)0 - bg->length * (u64)nr_stripes);
	if (!ret) {
		key = (struct ubt_key){ BTRFS_FIRST_CHUNK_TREE_OBJECTID, BTRFS_CHUNK_ITEM_KEY, bg->start };
		ret = ubt_alloc_del_item(h, &fs_info->chunk_root, &key, "removing a chunk");
	}
	if (ret)
		return ret;

	pthread_mutex_lock(&ai->lock);
	dead = realloc(ai->dead_bgs, (ai->nr_dead_bgs + 1) * sizeof(*dead));
	if (dead) {
		ai->dead_bgs = dead;
		ai->dead_bgs[ai->nr_dead_bgs++] = bg;
	}
	for (size_t i = 0; i < ai->nr_bgs; i++) {
		if (ai->bgs[i] == bg) {
			memmove(&ai->bgs[i], &ai->bgs[i + 1], (ai->nr_bgs - i - 1) * sizeof(*ai->bgs));
			ai->nr_bgs--;
			break;
		}
	}
	/* The device space is reused only after the commit: the last one still maps this chunk. */
	for (int i = 0; !ret && i < nr_stripes; i++)
		ret = rs_add(&ai->dev_freed, stripes[i].offset, bg->length);
	pthread_mutex_unlock(&ai->lock);
	if (!dead)
		ret = -ENOMEM; /* the group stays out of the list, only its memory is lost */
	if (!ret)
		ret = ubt_chunk_map_remove(fs_info->chunk_map, bg->start);
	if (!ret)
		ubt_info("removed the empty %s block group at %llu (%llu MiB)",
			 (bg->flags & BTRFS_BLOCK_GROUP_DATA) ? "data" : "metadata", (unsigned long long)bg->start,
			 (unsigned long long)(bg->length >> 20));
	return ret;
}

int ubt_remove_unused_bgs(struct ubt_trans_handle *h, u64 meta_keep, u64 data_keep)
{
	struct ubt_fs_info *fs_info = h->fs_info;
	struct ubt_alloc_info *ai = ainfo(fs_info);
	int removed = 0;

	if (!ai->fst || ai->mixed || fs_info->memory_only)
		return 0; /* a v1 space cache would still name the group; mixed groups: not handled */
	for (;;) {
		struct ubt_chunk_stripe stripes[2];
		struct ubt_block_group *bg;
		int nr_stripes = 0, ret;

		pthread_mutex_lock(&ai->lock);
		bg = pick_unused_bg(fs_info, meta_keep, data_keep, stripes, &nr_stripes);
		pthread_mutex_unlock(&ai->lock);
		if (!bg)
			return removed;
		ret = remove_bg(h, bg, stripes, nr_stripes);
		if (ret)
			return ret;
		removed = 1;
	}
}

void ubt_bg_commit_done(struct ubt_alloc_info *ai)
{
	for (size_t i = 0; i < ai->dev_freed.nr; i++)
		if (rs_add(&ai->dev_free, ai->dev_freed.r[i].start, ai->dev_freed.r[i].len))
			ubt_err("device range %llu of a removed chunk is already free",
				(unsigned long long)ai->dev_freed.r[i].start);
	rs_free(&ai->dev_freed);
}
