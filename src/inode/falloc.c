/*
 * falloc.c — fallocate on the extent level and NOCOW overwrites, as btrfs does them:
 * PREALLOC file extents (a data extent allocated and referenced, no checksums, read as zeros)
 * over the holes of a range; hole punching (partial edge sectors zeroed by a rewrite, whole
 * sectors unmapped, explicit holes without no-holes); zero range (partial sectors with data
 * zeroed, the rest replaced by new prealloc extents); and the in-place write into an extent that
 * nothing else references (a regular extent of a NODATACOW inode, or any prealloc extent), which
 * turns the written part of a prealloc extent into a regular one (splitting it in up to three).
 */
#include "inode-write.h"

#include <inttypes.h>
#include <stdlib.h>

#include "../alloc/alloc.h"
#include "../util/messages.h"
#include "inode-internal.h"

/* fallocate(2) mode bits (FALLOC_FL_*; ubtrfs.h's UBT_FALLOC_* have the same values). */
#define FL_KEEP_SIZE 0x01
#define FL_PUNCH_HOLE 0x02
#define FL_ZERO_RANGE 0x10

static bool fext_is_hole(const struct ubt_fext *fe)
{
	return fe->type != BTRFS_FILE_EXTENT_INLINE && fe->disk_bytenr == 0;
}

/* Rewrite item @key: new key offset, type, extent offset and length; generation = now if @bump. */
static int fext_update(struct ubt_trans_handle *h, struct ubt_root *root, const struct ubt_key *key, u64 new_key_off,
		       u8 type, u64 offset, u64 num_bytes, bool bump)
{
	struct ubt_path path;
	struct extent_buffer *leaf;
	u8 *p;
	int ret;

	ubt_path_init(&path);
	ret = ubt_search_slot_write(h, root, key, &path, 0);
	if (ret > 0)
		ret = -EUCLEAN;
	if (ret < 0)
		goto out;
	leaf = ubt_path_leaf(&path);
	p = ubt_item_ptr(leaf, ubt_path_slot(&path));
	p[offsetof(struct btrfs_file_extent_item, type)] = type;
	put_le64(p + offsetof(struct btrfs_file_extent_item, offset), offset);
	put_le64(p + offsetof(struct btrfs_file_extent_item, num_bytes), num_bytes);
	if (bump)
		put_le64(p + offsetof(struct btrfs_file_extent_item, generation), h->transid);
	if (new_key_off != key->offset) {
		struct ubt_key nk = *key;

		nk.offset = new_key_off;
		ubt_set_item_key(h, &path, &nk);
	}
	ubt_mark_buffer_dirty(h, leaf);
out:
	ubt_path_release(&path);
	return ret;
}

/* A new item for part [@start, +@len) of the disk extent of @fe, with its own data ref. */
static int fext_insert_part(struct ubt_trans_handle *h, struct ubt_root *root, u64 ino, const struct ubt_fext *fe,
			    u8 type, u64 start, u64 len)
{
	struct ubt_key key = { .objectid = ino, .type = BTRFS_EXTENT_DATA_KEY, .offset = start };
	struct btrfs_file_extent_item fi;
	const u64 ref_off = fe->key.offset - fe->offset;
	int ret;

	ubt_fext_fill(h, &fi, type, BTRFS_COMPRESS_NONE, fe->ram_bytes, fe->disk_bytenr, fe->disk_num_bytes,
		      fe->offset + (start - fe->key.offset), len);
	ret = ubt_insert_item(h, root, &key, &fi, sizeof(fi));
	if (ret == 0)
		ret = ubt_add_data_ref(h, fe->disk_bytenr, fe->disk_num_bytes, root->objectid, ino, ref_off, 0);
	return ret;
}

/*
 * [@s, @e) of prealloc extent @fe was written: make it regular. The left neighbour absorbs it
 * when it is the regular part of the same extent right before it (sequential writes into a
 * preallocated range stay one item), else the item is split into prealloc / regular / prealloc.
 */
static int mark_written(struct ubt_trans_handle *h, struct ubt_root *root, u64 ino, const struct ubt_fext *fe, u64 s,
			u64 e)
{
	const u64 es = fe->key.offset, ee = fe->end, ref_off = es - fe->offset;
	struct ubt_fext prev;
	int ret;

	if (s == es && es > 0 && ubt_fext_find(root, ino, es - 1, es, &prev) == 0 &&
	    prev.type == BTRFS_FILE_EXTENT_REG && prev.compression == BTRFS_COMPRESS_NONE &&
	    prev.disk_bytenr == fe->disk_bytenr && prev.end == es && prev.key.offset - prev.offset == ref_off) {
		ret = fext_update(h, root, &prev.key, prev.key.offset, BTRFS_FILE_EXTENT_REG, prev.offset,
				  prev.num_bytes + (e - s), true);
		if (ret < 0)
			return ret;
		if (e == ee) {
			ret = ubt_item_delete(h, root, &fe->key);
			if (ret == 0)
				ret = ubt_drop_data_ref(h, fe->disk_bytenr, fe->disk_num_bytes, root->objectid, ino,
							ref_off, 0);
			return ret;
		}
		return fext_update(h, root, &fe->key, e, BTRFS_FILE_EXTENT_PREALLOC, fe->offset + (e - es), ee - e,
				   false);
	}
	if (s > es) {
		ret = fext_update(h, root, &fe->key, es, BTRFS_FILE_EXTENT_PREALLOC, fe->offset, s - es, false);
		if (ret == 0)
			ret = fext_insert_part(h, root, ino, fe, BTRFS_FILE_EXTENT_REG, s, e - s);
	} else {
		ret = fext_update(h, root, &fe->key, es, BTRFS_FILE_EXTENT_REG, fe->offset, e - es, true);
	}
	if (ret == 0 && e < ee)
		ret = fext_insert_part(h, root, ino, fe, BTRFS_FILE_EXTENT_PREALLOC, e, ee - e);
	return ret;
}

int ubt_file_write_nocow(struct ubt_trans_handle *h, struct ubt_root *root, u64 ino, struct btrfs_inode_item *ii,
			 bool datasum, const u8 *data, u64 pos, u64 end, u64 *done, u64 *cow)
{
	struct ubt_fs_info *fs_info = root->fs_info;
	const u64 flags = get_le64(&ii->flags);
	struct ubt_fext fe;
	u64 n, gen, disk;
	bool excl;
	int ret;

	*done = 0;
	*cow = end - pos;
	ret = ubt_fext_find(root, ino, pos, end, &fe);
	if (ret)
		return ret < 0 ? ret : 0;
	if (fe.key.offset > pos) {
		*cow = fe.key.offset - pos;
		return 0;
	}
	n = ubt_min(fe.end, end) - pos;
	*cow = n;
	if (fe.type == BTRFS_FILE_EXTENT_INLINE || fe.disk_bytenr == 0 || fe.compression != BTRFS_COMPRESS_NONE)
		return 0;
	/* A regular extent only with NODATACOW, and never one that may carry checksums. */
	if (fe.type == BTRFS_FILE_EXTENT_REG && (!(flags & BTRFS_INODE_NODATACOW) || datasum))
		return 0;
	if (!IS_ALIGNED(fe.key.offset | fe.offset | n, (u64)fs_info->sectorsize))
		return 0;
	ret = ubt_data_extent_exclusive(h, fe.disk_bytenr, fe.disk_num_bytes, root->objectid, ino,
					fe.key.offset - fe.offset, &excl, &gen);
	if (ret < 0)
		return ret;
	/* Shared, or possibly shared through a snapshot's copy of the leaf: copy-on-write. */
	if (!excl || gen <= get_le64(&root->root_item.last_snapshot))
		return 0;
	disk = fe.disk_bytenr + fe.offset + (pos - fe.key.offset);
	ret = ubt_write_logical(fs_info, disk, data, (size_t)n);
	if (ret < 0) {
		ubt_err("root %" PRIu64 " ino %" PRIu64 ": in-place write of %" PRIu64 " bytes at logical %" PRIu64
			" failed: %d",
			root->objectid, ino, n, disk, ret);
		return ret;
	}
	if (datasum) {
		ret = ubt_csum_insert(h, disk, data, n);
		if (ret < 0)
			return ret;
	}
	if (fe.type == BTRFS_FILE_EXTENT_PREALLOC) {
		ret = mark_written(h, root, ino, &fe, pos, pos + n);
		if (ret < 0)
			return ret;
	}
	*done = n;
	return 0;
}

int ubt_file_count_holes(struct ubt_root *root, u64 ino, u64 start, u64 end, u64 *bytes, u64 *gaps)
{
	struct ubt_fext fe;
	int ret;

	*bytes = *gaps = 0;
	while (start < end) {
		u64 stop;

		ret = ubt_fext_find(root, ino, start, end, &fe);
		if (ret < 0)
			return ret;
		if (ret > 0)
			stop = end;
		else if (fe.key.offset > start)
			stop = fe.key.offset;
		else if (fext_is_hole(&fe))
			stop = ubt_min(fe.end, end);
		else {
			/* An inline extent ends unaligned; the next sector starts the rest. */
			start = ALIGN_UP(fe.end, (u64)root->fs_info->sectorsize);
			continue;
		}
		*bytes += stop - start;
		(*gaps)++;
		start = stop;
	}
	return 0;
}

/* New PREALLOC extents over [@s, @e) (sector aligned), replacing whatever lies there. */
static int prealloc_replace(struct ubt_trans_handle *h, struct ubt_root *root, u64 ino, u64 *nbytes, u64 s, u64 e)
{
	const u64 ss = root->fs_info->sectorsize;
	int ret;

	ret = ubt_file_drop_extents(h, root, ino, s, e, nbytes);
	if (ret < 0)
		return ret;
	while (s < e) {
		struct ubt_key key = { .objectid = ino, .type = BTRFS_EXTENT_DATA_KEY, .offset = s };
		struct btrfs_file_extent_item fi;
		u64 n = ubt_min(e - s, UBT_MAX_EXTENT_SIZE), bytenr;

		/* Exactly @n contiguous bytes, or halves of it when free space is fragmented. */
		while ((ret = ubt_alloc_data_extent(h, n, 0, &bytenr)) == -ENOSPC && n > ss)
			n = ubt_max(ALIGN_DOWN(n / 2, ss), ss);
		if (ret < 0)
			return ret;
		ubt_fext_fill(h, &fi, BTRFS_FILE_EXTENT_PREALLOC, BTRFS_COMPRESS_NONE, n, bytenr, n, 0, n);
		ret = ubt_insert_item(h, root, &key, &fi, sizeof(fi));
		if (ret < 0) {
			ubt_free_reserved_data_extent(h, bytenr, n);
			return ret;
		}
		ret = ubt_add_data_ref(h, bytenr, n, root->objectid, ino, s, 0);
		if (ret < 0)
			return ret;
		*nbytes += n;
		s += n;
	}
	return 0;
}

/* PREALLOC extents over the holes of [@start, @end) (sector aligned). *@any: something was added. */
static int prealloc_holes(struct ubt_trans_handle *h, struct ubt_root *root, u64 ino, u64 *nbytes, u64 start, u64 end,
			  bool *any)
{
	struct ubt_fext fe;
	int ret;

	while (start < end) {
		u64 stop;

		ret = ubt_fext_find(root, ino, start, end, &fe);
		if (ret < 0)
			return ret;
		if (ret > 0)
			stop = end;
		else if (fe.key.offset > start)
			stop = fe.key.offset;
		else if (fext_is_hole(&fe))
			stop = ubt_min(fe.end, end);
		else {
			/* An inline extent ends unaligned; the next sector starts the rest. */
			start = ALIGN_UP(fe.end, (u64)root->fs_info->sectorsize);
			continue;
		}
		ret = prealloc_replace(h, root, ino, nbytes, start, stop);
		if (ret < 0)
			return ret;
		*any = true;
		start = stop;
	}
	return 0;
}

/* What backs the sector at @pos: 0 hole, 1 prealloc, 2 data (regular or inline). */
static int sector_kind(struct ubt_root *root, u64 ino, u64 pos)
{
	struct ubt_fext fe;
	int ret = ubt_fext_find(root, ino, pos, pos + 1, &fe);

	if (ret < 0)
		return ret;
	if (ret > 0 || fe.key.offset > pos || fext_is_hole(&fe))
		return 0;
	return fe.type == BTRFS_FILE_EXTENT_PREALLOC ? 1 : 2;
}

/* Zero bytes [@a, @b) (inside one sector) when that sector holds data, up to the file size. */
static int zero_partial(struct ubt_trans_handle *h, struct ubt_root *root, u64 ino, struct btrfs_inode_item *ii,
			u64 a, u64 b, const struct ubt_write_opts *opts)
{
	const u64 isize = get_le64(&ii->size);
	void *zeros;
	int ret;

	b = ubt_min(b, isize);
	if (a >= b)
		return 0;
	ret = sector_kind(root, ino, a);
	if (ret != 2)
		return ret < 0 ? ret : 0;
	zeros = calloc(1, b - a);
	if (!zeros)
		return -ENOMEM;
	ret = ubt_file_write(h, root, ino, ii, zeros, b - a, a, opts);
	free(zeros);
	return ret;
}

static int punch_hole(struct ubt_trans_handle *h, struct ubt_root *root, u64 ino, struct btrfs_inode_item *ii, u64 off,
		      u64 len, const struct ubt_write_opts *opts)
{
	const u64 ss = root->fs_info->sectorsize;
	const u64 isize_up = ALIGN_UP(get_le64(&ii->size), ss);
	u64 end, first, last, nbytes;
	int ret;

	/* Only inside the file (rounded up to its last sector), as btrfs. */
	if (off >= isize_up)
		return 0;
	end = ubt_min(off + len, isize_up);
	first = ALIGN_UP(off, ss);
	last = ALIGN_DOWN(end, ss);
	if (!IS_ALIGNED(off, ss)) {
		ret = zero_partial(h, root, ino, ii, off, ubt_min(end, first), opts);
		if (ret < 0)
			return ret;
	}
	if (!IS_ALIGNED(end, ss) && last >= first) {
		ret = zero_partial(h, root, ino, ii, last, end, opts);
		if (ret < 0)
			return ret;
	}
	if (first >= last)
		return 0;
	nbytes = get_le64(&ii->nbytes);
	ret = ubt_file_drop_extents(h, root, ino, first, last, &nbytes);
	put_le64(&ii->nbytes, nbytes);
	if (ret == 0 && !(root->fs_info->incompat & BTRFS_FEATURE_INCOMPAT_NO_HOLES))
		ret = ubt_file_insert_holes(h, root, ino, first, last - first);
	return ret;
}

/* btrfs's zero range: partial sectors with data are zeroed, every other sector becomes prealloc. */
static int zero_range(struct ubt_trans_handle *h, struct ubt_root *root, u64 ino, struct btrfs_inode_item *ii, u64 off,
		      u64 len, const struct ubt_write_opts *opts, bool *any)
{
	const u64 ss = root->fs_info->sectorsize;
	u64 end = off + len, a, b, nbytes;
	struct ubt_fext fe;
	int ret, kind;

	/* A prealloc extent at the start already reads as zeros: skip what it covers. */
	ret = ubt_fext_find(root, ino, ALIGN_DOWN(off, ss), ALIGN_DOWN(off, ss) + 1, &fe);
	if (ret < 0)
		return ret;
	if (ret == 0 && fe.key.offset <= ALIGN_DOWN(off, ss) && fe.type == BTRFS_FILE_EXTENT_PREALLOC) {
		if (fe.end >= end)
			return 0;
		off = fe.end;
	}
	if (ALIGN_DOWN(off, ss) == ALIGN_DOWN(end - 1, ss)) {
		/* Inside one sector. */
		kind = sector_kind(root, ino, ALIGN_DOWN(off, ss));
		if (kind < 0)
			return kind;
		if (kind == 1)
			return 0;
		if (end - off < ss && kind == 2)
			return zero_partial(h, root, ino, ii, off, end, opts);
		a = ALIGN_DOWN(off, ss);
		b = a + ss;
	} else {
		a = ALIGN_UP(off, ss);
		b = ALIGN_DOWN(end, ss);
		if (!IS_ALIGNED(off, ss)) {
			kind = sector_kind(root, ino, ALIGN_DOWN(off, ss));
			if (kind < 0)
				return kind;
			if (kind == 0)
				a = ALIGN_DOWN(off, ss);
			else if (kind == 2 && (ret = zero_partial(h, root, ino, ii, off, a, opts)) < 0)
				return ret;
		}
		if (!IS_ALIGNED(end, ss)) {
			kind = sector_kind(root, ino, b);
			if (kind < 0)
				return kind;
			if (kind == 0)
				b = ALIGN_UP(end, ss);
			else if (kind == 2 && (ret = zero_partial(h, root, ino, ii, b, end, opts)) < 0)
				return ret;
		}
	}
	if (a >= b)
		return 0;
	nbytes = get_le64(&ii->nbytes);
	ret = prealloc_replace(h, root, ino, &nbytes, a, b);
	put_le64(&ii->nbytes, nbytes);
	*any = true;
	return ret;
}

int ubt_file_fallocate(struct ubt_trans_handle *h, struct ubt_root *root, u64 ino, struct btrfs_inode_item *ii,
		       int mode, u64 off, u64 len, const struct ubt_write_opts *opts)
{
	struct ubt_fs_info *fs_info = root->fs_info;
	const u64 ss = fs_info->sectorsize;
	const bool no_holes = fs_info->incompat & BTRFS_FEATURE_INCOMPAT_NO_HOLES;
	const bool keep = mode & FL_KEEP_SIZE;
	const u64 isize = get_le64(&ii->size), end = off + len;
	const u64 astart = ALIGN_DOWN(off, ss), aend = ALIGN_UP(end, ss);
	bool any = false;
	u64 nbytes;
	int ret;

	if (len == 0 || end < off)
		return -EINVAL;
	if (mode == (FL_PUNCH_HOLE | FL_KEEP_SIZE))
		return punch_hole(h, root, ino, ii, off, len, opts);
	if (mode & ~(FL_KEEP_SIZE | FL_ZERO_RANGE))
		return -EOPNOTSUPP;
	/*
	 * Reaching past the size: the old last sector's bytes after it are zeroed (and an inline
	 * extent becomes regular); growing, the gap up to the range gets hole extents (no-holes off).
	 */
	if (end > isize) {
		ret = ubt_file_prepare_extend(h, root, ino, ii, opts);
		if (ret < 0)
			return ret;
		if (!keep && !no_holes && astart > ALIGN_UP(isize, ss)) {
			ret = ubt_file_insert_holes(h, root, ino, ALIGN_UP(isize, ss), astart - ALIGN_UP(isize, ss));
			if (ret < 0)
				return ret;
		}
	}
	if (mode & FL_ZERO_RANGE) {
		ret = zero_range(h, root, ino, ii, off, len, opts, &any);
	} else {
		nbytes = get_le64(&ii->nbytes);
		ret = prealloc_holes(h, root, ino, &nbytes, astart, aend, &any);
		put_le64(&ii->nbytes, nbytes);
	}
	if (ret < 0)
		return ret;
	if (any)
		put_le64(&ii->flags, get_le64(&ii->flags) | BTRFS_INODE_PREALLOC);
	if (!keep && end > get_le64(&ii->size))
		put_le64(&ii->size, end);
	return 0;
}
