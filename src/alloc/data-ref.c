/*
 * data-ref.c — who references a data extent: the question a NOCOW write (and a write into a
 * PREALLOC extent) asks before overwriting data in place. The answer combines the extent tree as
 * it stands with the references queued in the running transaction (delayed refs are applied only
 * at commit), and the extent's generation so the caller can compare it with its root's last
 * snapshot (a snapshot shares tree blocks, not references).
 */
#include "../util/messages.h"
#include "alloc-internal.h"
#include "alloc.h"

#define DATA_REF_LEN 28u /* root, objectid, offset (u64 each), count (u32) */

static bool ref_is(const u8 *p, u64 root, u64 ino, u64 offset)
{
	return get_le64(p) == root && get_le64(p + 8) == ino && get_le64(p + 16) == offset;
}

/*
 * Walk the committed-side refs of extent @bytenr: *@total (extent item refs), *@mine (counts of
 * EXTENT_DATA_REFs of (@root, @ino, @offset), inline or keyed), *@gen. 1 when there is no item.
 */
static int tree_refs(struct ubt_fs_info *fs_info, u64 bytenr, u64 num_bytes, u64 root, u64 ino, u64 offset,
		     u64 *total, u64 *mine, u64 *gen)
{
	struct ubt_key key = { bytenr, BTRFS_EXTENT_ITEM_KEY, num_bytes };
	struct ubt_path path;
	const u8 *p;
	u32 size, off;
	int ret;

	ubt_path_init(&path);
	ret = ubt_search_slot(&fs_info->extent_root, &key, &path);
	if (ret != 0)
		goto out;
	p = ubt_item_ptr(ubt_path_leaf(&path), ubt_path_slot(&path));
	size = ubt_item_size(ubt_path_leaf(&path), ubt_path_slot(&path));
	if (size < sizeof(struct btrfs_extent_item))
		goto bad;
	*total = get_le64(p);
	*gen = get_le64(p + 8);
	for (off = sizeof(struct btrfs_extent_item); off < size;) {
		u8 type = p[off];

		if (type == BTRFS_EXTENT_DATA_REF_KEY) {
			if (off + 1 + DATA_REF_LEN > size)
				goto bad;
			if (ref_is(p + off + 1, root, ino, offset))
				*mine += get_le32(p + off + 25);
			off += 1 + DATA_REF_LEN;
		} else if (type == BTRFS_SHARED_DATA_REF_KEY) {
			off += 13;
		} else {
			goto bad;
		}
	}
	/* Keyed refs follow the extent item. */
	while ((ret = ubt_next_item(&fs_info->extent_root, &path)) == 0) {
		struct extent_buffer *leaf = ubt_path_leaf(&path);
		struct ubt_key k;

		ubt_item_key(leaf, ubt_path_slot(&path), &k);
		if (k.objectid != bytenr || k.type > BTRFS_SHARED_DATA_REF_KEY)
			break;
		if (k.type == BTRFS_EXTENT_DATA_REF_KEY && ubt_item_size(leaf, ubt_path_slot(&path)) >= DATA_REF_LEN) {
			p = ubt_item_ptr(leaf, ubt_path_slot(&path));
			if (ref_is(p, root, ino, offset))
				*mine += get_le32(p + 24);
		}
	}
	ret = ret < 0 ? ret : 0;
	goto out;
bad:
	ubt_err("extent item %llu is malformed (%u bytes)", (unsigned long long)bytenr, size);
	ret = -EUCLEAN;
out:
	ubt_path_release(&path);
	return ret;
}

int ubt_data_extent_exclusive(struct ubt_trans_handle *h, u64 bytenr, u64 num_bytes, u64 root, u64 ino, u64 offset,
			      bool *excl, u64 *gen)
{
	struct ubt_fs_info *fs_info = h->fs_info;
	struct ubt_dhead *hd;
	u64 total = 0, mine = 0;
	s64 t, m;
	int ret;

	*excl = false;
	*gen = h->transid; /* an extent only queued so far is this transaction's */
	ret = tree_refs(fs_info, bytenr, num_bytes, root, ino, offset, &total, &mine, gen);
	if (ret < 0)
		return ret;
	t = (s64)total;
	m = (s64)mine;
	hd = ubt_find_head(ainfo(fs_info), bytenr);
	for (const struct ubt_dref *r = hd ? hd->refs : NULL; r; r = r->next) {
		t += r->mod;
		if (r->type == BTRFS_EXTENT_DATA_REF_KEY && r->root == root && r->owner == ino && r->offset == offset)
			m += r->mod;
	}
	*excl = t > 0 && t == m;
	return 0;
}
