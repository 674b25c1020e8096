/*
 * file-write.c — the simple, write-through data path: writing file ranges copy-on-write into new
 * data extents (read-modify-write of the edge sectors, never in place), data checksums in the csum
 * tree, replacing the file extent items a range overlaps (trim, split with an extra data ref, or
 * delete and drop the ref), inline extents for small files and symlinks, truncation both ways,
 * explicit hole extents on filesystems without NO_HOLES, and writes to every copy of a logical
 * range. The delalloc/page-cache path (write/) replaces the data part later; the extent item
 * helpers stay.
 */
#include "inode-write.h"

#include <inttypes.h>
#include <stdlib.h>

#include "../alloc/alloc.h"
#include "../codec/compress.h"
#include "../codec/csum.h"
#include "../ctree/disk-io.h"
#include "../device/bdev.h"
#include "../util/messages.h"
#include "../volumes/volumes.h"

/* btrfs compresses at most 128 KiB of file data into one extent. */
#define UBT_MAX_COMPRESSED (128 * 1024ULL)
#include "inode-internal.h"

int ubt_write_logical(struct ubt_fs_info *fs_info, u64 logical, const void *buf, size_t len)
{
	int copies = ubt_chunk_map_num_copies(fs_info->chunk_map, logical);
	int ret;

	if (copies < 0)
		return copies;
	for (int mirror = 0; mirror < copies; mirror++) {
		size_t pos = 0;

		while (pos < len) {
			u64 devid, physical, maplen;

			ret = ubt_chunk_map_lookup(fs_info->chunk_map, logical + pos, mirror, &devid, &physical, &maplen);
			if (ret < 0)
				return ret;
			if (devid != fs_info->devid) {
				ubt_err("logical %" PRIu64 ": copy %d is on device %" PRIu64
					", not this one (multi-device writes are not supported)",
					logical + pos, mirror, devid);
				return -EOPNOTSUPP;
			}
			maplen = ubt_min(maplen, (u64)(len - pos));
			ret = ubt_bdev_write(fs_info->bdev, (const u8 *)buf + pos, (size_t)maplen, physical);
			if (ret < 0)
				return ret;
			pos += (size_t)maplen;
		}
	}
	return 0;
}

/* Checksums per csum item: what fits in a leaf with room for one more item, as btrfs limits it. */
static u32 max_csums_per_item(const struct ubt_fs_info *fs_info)
{
	u32 leaf_data = fs_info->nodesize - (u32)sizeof(struct btrfs_header);

	return (leaf_data - 2 * (u32)sizeof(struct btrfs_item)) / (u32)fs_info->csum_size - 1;
}

int ubt_csum_insert(struct ubt_trans_handle *h, u64 bytenr, const void *data, u64 len)
{
	struct ubt_fs_info *fs_info = h->fs_info;
	const u32 ss = fs_info->sectorsize, cs = (u32)fs_info->csum_size;
	const u64 nsec = len / ss;
	u8 *csums;
	int ret = 0;

	csums = malloc(nsec * cs);
	if (!csums)
		return -ENOMEM;
	for (u64 i = 0; i < nsec; i++) {
		u8 out[UBT_CSUM_MAX];

		ret = ubt_csum(fs_info->csum_type, (const u8 *)data + i * ss, ss, out);
		if (ret < 0)
			goto out;
		memcpy(csums + i * cs, out, cs);
	}
	ret = ubt_csum_insert_sums(h, bytenr, csums, nsec);
out:
	free(csums);
	return ret;
}

int ubt_csum_insert_sums(struct ubt_trans_handle *h, u64 bytenr, const u8 *csums, u64 nsec)
{
	struct ubt_fs_info *fs_info = h->fs_info;
	struct ubt_root *csum_root = &fs_info->csum_root;
	const u32 ss = fs_info->sectorsize, cs = (u32)fs_info->csum_size;
	const u32 max_items = max_csums_per_item(fs_info);
	struct ubt_path path;
	u64 done = 0;
	int ret = 0;

	ubt_path_init(&path);
	while (done < nsec) {
		u64 cur = bytenr + done * ss, n;
		struct ubt_key key = { BTRFS_EXTENT_CSUM_OBJECTID, BTRFS_EXTENT_CSUM_KEY, cur };
		bool extend = false;
		u32 have = 0;

		/* Append to the item ending right at @cur when it has room, as btrfs merges. */
		ret = ubt_search_le(csum_root, &key, &path);
		if (ret < 0)
			goto out;
		if (ret == 0) {
			struct extent_buffer *leaf = ubt_path_leaf(&path);
			struct ubt_key k;

			ubt_item_key(leaf, ubt_path_slot(&path), &k);
			have = ubt_item_size(leaf, ubt_path_slot(&path)) / cs;
			if (k.objectid == BTRFS_EXTENT_CSUM_OBJECTID && k.type == BTRFS_EXTENT_CSUM_KEY &&
			    k.offset + (u64)have * ss == cur && have < max_items) {
				extend = true;
				key = k;
			}
		}
		ubt_path_release(&path);
		if (extend) {
			struct extent_buffer *leaf;
			u32 extra;

			n = ubt_min(nsec - done, (u64)(max_items - have));
			extra = (u32)n * cs;
			ret = ubt_search_slot_write(h, csum_root, &key, &path, (int)(extra + sizeof(struct btrfs_item)));
			if (ret > 0)
				ret = -EUCLEAN;
			if (ret < 0)
				goto out;
			leaf = ubt_path_leaf(&path);
			have = ubt_item_size(leaf, ubt_path_slot(&path));
			ubt_extend_item(h, &path, extra);
			memcpy((u8 *)ubt_item_ptr(leaf, ubt_path_slot(&path)) + have, csums + done * cs, extra);
			ubt_mark_buffer_dirty(h, leaf);
			ubt_path_release(&path);
		} else {
			n = ubt_min(nsec - done, (u64)max_items);
			ret = ubt_insert_item(h, csum_root, &key, csums + done * cs, (u32)n * cs);
			if (ret < 0)
				goto out;
		}
		done += n;
	}
	ret = 0;
out:
	ubt_path_release(&path);
	return ret;
}

int ubt_fext_parse(struct ubt_root *root, u64 ino, const struct extent_buffer *leaf, int slot, struct ubt_fext *fe)
{
	const u8 *p = ubt_item_ptr(leaf, slot);
	u32 size = ubt_item_size(leaf, slot);

	ubt_item_key(leaf, slot, &fe->key);
	if (size < BTRFS_FILE_EXTENT_INLINE_DATA_START)
		goto bad;
	fe->type = p[offsetof(struct btrfs_file_extent_item, type)];
	fe->compression = p[offsetof(struct btrfs_file_extent_item, compression)];
	fe->ram_bytes = get_le64(p + offsetof(struct btrfs_file_extent_item, ram_bytes));
	if (fe->type == BTRFS_FILE_EXTENT_INLINE) {
		fe->inline_len = size - (u32)BTRFS_FILE_EXTENT_INLINE_DATA_START;
		if (fe->ram_bytes == 0 || fe->ram_bytes > UINT32_MAX ||
		    (fe->compression == BTRFS_COMPRESS_NONE && fe->ram_bytes != fe->inline_len))
			goto bad;
		fe->disk_bytenr = fe->disk_num_bytes = fe->offset = 0;
		fe->num_bytes = fe->ram_bytes;
		fe->end = fe->key.offset + fe->ram_bytes;
		return 0;
	}
	if ((fe->type != BTRFS_FILE_EXTENT_REG && fe->type != BTRFS_FILE_EXTENT_PREALLOC) ||
	    size < sizeof(struct btrfs_file_extent_item))
		goto bad;
	fe->disk_bytenr = get_le64(p + offsetof(struct btrfs_file_extent_item, disk_bytenr));
	fe->disk_num_bytes = get_le64(p + offsetof(struct btrfs_file_extent_item, disk_num_bytes));
	fe->offset = get_le64(p + offsetof(struct btrfs_file_extent_item, offset));
	fe->num_bytes = get_le64(p + offsetof(struct btrfs_file_extent_item, num_bytes));
	if (fe->num_bytes == 0 || fe->key.offset > UINT64_MAX - fe->num_bytes || fe->offset > UINT64_MAX - fe->num_bytes)
		goto bad;
	fe->end = fe->key.offset + fe->num_bytes;
	return 0;
bad:
	ubt_inode_corrupt(root, ino, &fe->key, "malformed file extent item (%u bytes)", size);
	return -EUCLEAN;
}

int ubt_fext_find(struct ubt_root *root, u64 ino, u64 start, u64 end, struct ubt_fext *fe)
{
	struct ubt_key key = { .objectid = ino, .type = BTRFS_EXTENT_DATA_KEY, .offset = start };
	struct ubt_path path;
	int ret;

	ubt_path_init(&path);
	ret = ubt_search_le(root, &key, &path);
	if (ret == 0) {
		struct ubt_key k;

		ubt_item_key(ubt_path_leaf(&path), ubt_path_slot(&path), &k);
		if (k.objectid != ino || k.type != BTRFS_EXTENT_DATA_KEY)
			ret = 1;
	}
	if (ret > 0)
		ret = ubt_search_ge(root, &key, &path);
	while (ret == 0) {
		struct ubt_key k;

		ubt_item_key(ubt_path_leaf(&path), ubt_path_slot(&path), &k);
		if (k.objectid != ino || k.type != BTRFS_EXTENT_DATA_KEY || k.offset >= end) {
			ret = 1;
			break;
		}
		ret = ubt_fext_parse(root, ino, ubt_path_leaf(&path), ubt_path_slot(&path), fe);
		if (ret < 0)
			break;
		if (fe->end > start)
			break;
		ret = ubt_next_item(root, &path);
	}
	ubt_path_release(&path);
	return ret;
}

/* Change the regular extent item at @key: new key offset, extent offset and length. */
static int fext_modify(struct ubt_trans_handle *h, struct ubt_root *root, const struct ubt_key *key, u64 new_key_off,
		       u64 new_offset, u64 new_num_bytes)
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
	put_le64(p + offsetof(struct btrfs_file_extent_item, offset), new_offset);
	put_le64(p + offsetof(struct btrfs_file_extent_item, num_bytes), new_num_bytes);
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

void ubt_fext_fill(struct ubt_trans_handle *h, struct btrfs_file_extent_item *fi, u8 type, u8 compression,
		      u64 ram_bytes, u64 disk_bytenr, u64 disk_num_bytes, u64 offset, u64 num_bytes)
{
	memset(fi, 0, sizeof(*fi));
	put_le64(&fi->generation, h->transid);
	put_le64(&fi->ram_bytes, ram_bytes);
	fi->compression = compression;
	fi->type = type;
	put_le64(&fi->disk_bytenr, disk_bytenr);
	put_le64(&fi->disk_num_bytes, disk_num_bytes);
	put_le64(&fi->offset, offset);
	put_le64(&fi->num_bytes, num_bytes);
}

static int insert_inline(struct ubt_trans_handle *h, struct ubt_root *root, u64 ino, const void *data, u32 len)
{
	struct ubt_key key = { .objectid = ino, .type = BTRFS_EXTENT_DATA_KEY, .offset = 0 };
	const u32 hdr = (u32)BTRFS_FILE_EXTENT_INLINE_DATA_START;
	struct btrfs_file_extent_item fi;
	u8 *buf;
	int ret;

	buf = malloc(hdr + len);
	if (!buf)
		return -ENOMEM;
	ubt_fext_fill(h, &fi, BTRFS_FILE_EXTENT_INLINE, BTRFS_COMPRESS_NONE, len, 0, 0, 0, 0);
	memcpy(buf, &fi, hdr);
	memcpy(buf + hdr, data, len);
	ret = ubt_insert_item(h, root, &key, buf, hdr + len);
	free(buf);
	return ret;
}

/* Shorten the inline extent @fe (at file offset 0) to @new_len bytes. */
static int shrink_inline(struct ubt_trans_handle *h, struct ubt_root *root, u64 ino, const struct ubt_fext *fe,
			 u64 new_len)
{
	struct ubt_fs_info *fs_info = root->fs_info;
	struct ubt_path path;
	u8 *ram = NULL;
	int ret;

	ubt_path_init(&path);
	if (fe->compression != BTRFS_COMPRESS_NONE) {
		/* Decompress, keep the head uncompressed. */
		ret = ubt_search_slot(root, &fe->key, &path);
		if (ret > 0)
			ret = -EUCLEAN;
		if (ret < 0)
			goto out;
		ram = malloc(fe->ram_bytes);
		if (!ram) {
			ret = -ENOMEM;
			goto out;
		}
		ret = ubt_decompress(fe->compression,
				     (const u8 *)ubt_item_ptr(ubt_path_leaf(&path), ubt_path_slot(&path)) +
					     BTRFS_FILE_EXTENT_INLINE_DATA_START,
				     fe->inline_len, ram, fe->ram_bytes, fs_info->sectorsize);
		ubt_path_release(&path);
		if (ret < 0) {
			ubt_inode_corrupt(root, ino, &fe->key, "cannot decompress inline extent: %d", ret);
			goto out;
		}
		ret = ubt_item_delete(h, root, &fe->key);
		if (ret == 0)
			ret = insert_inline(h, root, ino, ram, (u32)new_len);
		goto out;
	}
	ret = ubt_search_slot_write(h, root, &fe->key, &path, 0);
	if (ret > 0)
		ret = -EUCLEAN;
	if (ret < 0)
		goto out;
	put_le64((u8 *)ubt_item_ptr(ubt_path_leaf(&path), ubt_path_slot(&path)) +
			 offsetof(struct btrfs_file_extent_item, ram_bytes),
		 new_len);
	ubt_truncate_item(h, &path, (u32)(BTRFS_FILE_EXTENT_INLINE_DATA_START + new_len), true);
	ubt_mark_buffer_dirty(h, ubt_path_leaf(&path));
out:
	ubt_path_release(&path);
	free(ram);
	return ret;
}

static void sub_nbytes(u64 *nbytes, u64 n)
{
	if (nbytes)
		*nbytes = *nbytes > n ? *nbytes - n : 0;
}

int ubt_file_drop_extents(struct ubt_trans_handle *h, struct ubt_root *root, u64 ino, u64 start, u64 end,
			  u64 *nbytes)
{
	struct ubt_fext fe;
	int ret;

	while ((ret = ubt_fext_find(root, ino, start, end, &fe)) == 0) {
		const u64 es = fe.key.offset, ee = fe.end;
		const bool real = fe.disk_bytenr != 0;
		const u64 ref_off = es - fe.offset;

		if (fe.type == BTRFS_FILE_EXTENT_INLINE) {
			if (start > es) {
				ret = shrink_inline(h, root, ino, &fe, start - es);
				sub_nbytes(nbytes, ee - start);
			} else if (ee <= end) {
				ret = ubt_item_delete(h, root, &fe.key);
				sub_nbytes(nbytes, fe.ram_bytes);
			} else {
				ubt_inode_corrupt(root, ino, &fe.key, "inline extent past a rewritten range [%" PRIu64
						  ", %" PRIu64 ")", start, end);
				ret = -EUCLEAN;
			}
		} else if (es < start && ee > end) {
			/* Split: the left part keeps the item, the right part gets a new item and ref. */
			struct btrfs_file_extent_item fi;
			struct ubt_key rk = fe.key;

			ret = fext_modify(h, root, &fe.key, es, fe.offset, start - es);
			if (ret < 0)
				break;
			ubt_fext_fill(h, &fi, fe.type, fe.compression, fe.ram_bytes, fe.disk_bytenr, fe.disk_num_bytes,
				  fe.offset + (end - es), ee - end);
			rk.offset = end;
			ret = ubt_insert_item(h, root, &rk, &fi, sizeof(fi));
			if (ret == 0 && real)
				ret = ubt_add_data_ref(h, fe.disk_bytenr, fe.disk_num_bytes, root->objectid, ino, ref_off, 0);
			if (real)
				sub_nbytes(nbytes, end - start);
		} else if (es < start) {
			ret = fext_modify(h, root, &fe.key, es, fe.offset, start - es);
			if (real)
				sub_nbytes(nbytes, ee - start);
		} else if (ee > end) {
			ret = fext_modify(h, root, &fe.key, end, fe.offset + (end - es), ee - end);
			if (real)
				sub_nbytes(nbytes, end - es);
		} else {
			ret = ubt_item_delete(h, root, &fe.key);
			if (ret == 0 && real)
				ret = ubt_drop_data_ref(h, fe.disk_bytenr, fe.disk_num_bytes, root->objectid, ino, ref_off,
							0);
			if (real)
				sub_nbytes(nbytes, fe.num_bytes);
		}
		if (ret < 0)
			break;
		if (ee >= end)
			return 0;
	}
	return ret > 0 ? 0 : ret;
}

static int insert_hole_item(struct ubt_trans_handle *h, struct ubt_root *root, u64 ino, u64 start, u64 len)
{
	struct ubt_key key = { .objectid = ino, .type = BTRFS_EXTENT_DATA_KEY, .offset = start };
	struct btrfs_file_extent_item fi;

	ubt_fext_fill(h, &fi, BTRFS_FILE_EXTENT_REG, BTRFS_COMPRESS_NONE, len, 0, 0, 0, len);
	return ubt_insert_item(h, root, &key, &fi, sizeof(fi));
}

int ubt_file_insert_holes(struct ubt_trans_handle *h, struct ubt_root *root, u64 ino, u64 start, u64 len)
{
	const u64 end = start + len;
	struct ubt_fext fe;
	int ret;

	/* Only over the gaps: extents may already lie there (e.g. preallocated past EOF). */
	while (start < end) {
		ret = ubt_fext_find(root, ino, start, end, &fe);
		if (ret < 0)
			return ret;
		if (ret > 0)
			return insert_hole_item(h, root, ino, start, end - start);
		if (fe.key.offset > start) {
			ret = insert_hole_item(h, root, ino, start, fe.key.offset - start);
			if (ret < 0)
				return ret;
		}
		start = fe.end;
	}
	return 0;
}

/* Does @ino start with an inline extent? */
static int has_inline(struct ubt_root *root, u64 ino, bool *inl)
{
	struct ubt_key key = { .objectid = ino, .type = BTRFS_EXTENT_DATA_KEY, .offset = 0 };
	struct ubt_path path;
	struct ubt_fext fe;
	int ret;

	*inl = false;
	ubt_path_init(&path);
	ret = ubt_search_slot(root, &key, &path);
	if (ret == 0) {
		ret = ubt_fext_parse(root, ino, ubt_path_leaf(&path), ubt_path_slot(&path), &fe);
		if (ret == 0)
			*inl = fe.type == BTRFS_FILE_EXTENT_INLINE;
	}
	ubt_path_release(&path);
	return ret < 0 ? ret : 0;
}

struct wctx {
	struct ubt_trans_handle *h;
	struct ubt_root *root;
	struct ubt_fs_info *fs_info;
	u64 ino;
	struct btrfs_inode_item *ii;
	u64 nbytes;
	u32 ss;
	bool datasum;
	int compress_type; /* 0: store as is */
	int compress_level;
	bool try_nocow; /* NODATACOW or PREALLOC inode: overwrite unshared extents in place (falloc.c) */
};

/*
 * Compress @n bytes (at most UBT_MAX_COMPRESSED) into @out (capacity @n): returns the on-disk
 * size (sector aligned, zero padded), or 0 when the data is to be stored as is — btrfs keeps a
 * compressed extent only when it saves at least one sector.
 */
static u64 try_compress(struct wctx *c, const u8 *data, u64 n, u8 *out)
{
	ssize_t csize;
	u64 disk;

	if (!c->compress_type)
		return 0;
	csize = ubt_compress(c->compress_type, c->compress_level, data, (size_t)n, out, (size_t)n, c->ss);
	if (csize <= 0)
		return 0;
	disk = ALIGN_UP((u64)csize, (u64)c->ss);
	if (disk >= n)
		return 0;
	memset(out + csize, 0, (size_t)(disk - (u64)csize));
	return disk;
}

/*
 * Put @n bytes (sector multiple) of @data at file offset @fpos into one new extent, compressed
 * when the mount asks for it and it pays (then @n is at most UBT_MAX_COMPRESSED).
 */
static int write_extent(struct wctx *c, u64 fpos, const u8 *data, u64 n)
{
	struct ubt_key key = { .objectid = c->ino, .type = BTRFS_EXTENT_DATA_KEY, .offset = fpos };
	struct btrfs_file_extent_item fi;
	const u8 *disk_data = data;
	u8 *cbuf = NULL;
	u64 bytenr, disk = n;
	int ctype = BTRFS_COMPRESS_NONE;
	int ret;

	if (c->compress_type && n <= UBT_MAX_COMPRESSED) {
		cbuf = malloc((size_t)n);
		if (!cbuf)
			return -ENOMEM;
		disk = try_compress(c, data, n, cbuf);
		if (disk) {
			disk_data = cbuf;
			ctype = c->compress_type;
		} else {
			disk = n;
		}
	}
	ret = ubt_file_drop_extents(c->h, c->root, c->ino, fpos, fpos + n, &c->nbytes);
	if (ret < 0)
		goto out;
	ret = ubt_alloc_data_extent(c->h, disk, 0, &bytenr);
	if (ret < 0)
		goto out;
	ret = ubt_write_logical(c->fs_info, bytenr, disk_data, (size_t)disk);
	if (ret < 0) {
		ubt_err("root %" PRIu64 " ino %" PRIu64 ": writing %" PRIu64 " bytes at logical %" PRIu64 " failed: %d",
			c->root->objectid, c->ino, disk, bytenr, ret);
		ubt_free_reserved_data_extent(c->h, bytenr, disk);
		goto out;
	}
	if (c->datasum) {
		/* Checksums cover the bytes on disk (compressed ones for a compressed extent). */
		ret = ubt_csum_insert(c->h, bytenr, disk_data, disk);
		if (ret < 0)
			goto out;
	}
	ubt_fext_fill(c->h, &fi, BTRFS_FILE_EXTENT_REG, ctype, n, bytenr, disk, 0, n);
	ret = ubt_insert_item(c->h, c->root, &key, &fi, sizeof(fi));
	if (ret < 0)
		goto out;
	ret = ubt_add_data_ref(c->h, bytenr, disk, c->root->objectid, c->ino, fpos, 0);
	if (ret < 0)
		goto out;
	c->nbytes += n;
out:
	free(cbuf);
	return ret;
}

/*
 * Rewrite file range [@a, @b) (sector aligned): the current content up to i_size (zeros past it),
 * with @len bytes of @buf at @off laid over it (none when @buf is NULL), into new extents.
 */
static int rewrite_range(struct wctx *c, u64 a, u64 b, const void *buf, size_t len, u64 off)
{
	u64 isize = get_le64(&c->ii->size);
	u8 *data;
	int ret = 0;

	data = calloc(1, b - a);
	if (!data)
		return -ENOMEM;
	if (a < isize) {
		ssize_t r = ubt_file_read(c->root, c->ino, c->ii, data, (size_t)(ubt_min(b, isize) - a), a);

		if (r < 0) {
			ret = (int)r;
			goto out;
		}
	}
	if (buf)
		memcpy(data + (off - a), buf, len);
	for (u64 pos = a; pos < b;) {
		u64 n = ubt_min(b - pos, c->compress_type ? UBT_MAX_COMPRESSED : UBT_MAX_EXTENT_SIZE);

		if (c->try_nocow) {
			u64 done, cow;

			ret = ubt_file_write_nocow(c->h, c->root, c->ino, c->ii, c->datasum, data + (pos - a), pos, b,
						   &done, &cow);
			if (ret < 0)
				goto out;
			if (done) {
				pos += done;
				continue;
			}
			/* An inline extent ends unaligned (at i_size): new extents take whole sectors. */
			n = ubt_min(n, ALIGN_UP(cow, (u64)c->ss));
		}
		ret = write_extent(c, pos, data + (pos - a), n);
		if (ret < 0)
			goto out;
		pos += n;
	}
out:
	free(data);
	return ret;
}

static u32 max_inline_of(const struct ubt_fs_info *fs_info, const struct ubt_write_opts *opts)
{
	u32 lim = opts && opts->max_inline ? opts->max_inline : UBT_DEFAULT_MAX_INLINE;

	return ubt_min(lim, ubt_max_inline_size(fs_info));
}

static void wctx_init(struct wctx *c, struct ubt_trans_handle *h, struct ubt_root *root, u64 ino,
		      struct btrfs_inode_item *ii, const struct ubt_write_opts *opts)
{
	u64 flags = get_le64(&ii->flags);

	c->h = h;
	c->root = root;
	c->fs_info = root->fs_info;
	c->ino = ino;
	c->ii = ii;
	c->nbytes = get_le64(&ii->nbytes);
	c->ss = root->fs_info->sectorsize;
	c->datasum = !(flags & BTRFS_INODE_NODATASUM);
	c->try_nocow = flags & (BTRFS_INODE_NODATACOW | BTRFS_INODE_PREALLOC);
	/* As btrfs: no compression without checksums or with nodatacow; NOCOMPRESS unless forced. */
	c->compress_type = BTRFS_COMPRESS_NONE;
	c->compress_level = 0;
	if (opts && opts->compress_type && !(flags & (BTRFS_INODE_NODATASUM | BTRFS_INODE_NODATACOW)) &&
	    (opts->compress_force || !(flags & BTRFS_INODE_NOCOMPRESS))) {
		c->compress_type = opts->compress_type;
		c->compress_level = opts->compress_level;
	}
}

/* Is the sector at @pos backed by a real (non-hole) extent? */
static int sector_mapped(struct ubt_root *root, u64 ino, u64 pos, bool *mapped)
{
	struct ubt_fext fe;
	int ret = ubt_fext_find(root, ino, pos, pos + 1, &fe);

	*mapped = ret == 0 && fe.key.offset <= pos &&
		  (fe.type == BTRFS_FILE_EXTENT_INLINE || (fe.type == BTRFS_FILE_EXTENT_REG && fe.disk_bytenr));
	return ret < 0 ? ret : 0;
}

/*
 * Before the file grows past @isize: zero what lies beyond it in its last sector (a shorter
 * truncate may have left old bytes there), and turn an inline extent into a regular one.
 * Returns the file offset up to which extents now reach (for holes), via *@covered.
 */
static int prepare_grow(struct wctx *c, u64 isize, u64 first_new, u64 *covered)
{
	bool inl, mapped;
	int ret;

	*covered = ALIGN_UP(isize, (u64)c->ss);
	ret = has_inline(c->root, c->ino, &inl);
	if (ret < 0)
		return ret;
	if (inl) {
		if (first_new < c->ss)
			return 0; /* the caller rewrites sector 0 itself */
		*covered = c->ss;
		return rewrite_range(c, 0, c->ss, NULL, 0, 0);
	}
	if (IS_ALIGNED(isize, (u64)c->ss) || ALIGN_DOWN(isize, (u64)c->ss) == ALIGN_DOWN(first_new, (u64)c->ss))
		return 0;
	ret = sector_mapped(c->root, c->ino, ALIGN_DOWN(isize, (u64)c->ss), &mapped);
	if (ret < 0 || !mapped)
		return ret;
	return rewrite_range(c, ALIGN_DOWN(isize, (u64)c->ss), *covered, NULL, 0, 0);
}

int ubt_file_prepare_extend(struct ubt_trans_handle *h, struct ubt_root *root, u64 ino, struct btrfs_inode_item *ii,
			    const struct ubt_write_opts *opts)
{
	struct wctx c;
	u64 covered;
	int ret;

	wctx_init(&c, h, root, ino, ii, opts);
	ret = prepare_grow(&c, get_le64(&ii->size), (u64)-1 - c.ss, &covered);
	put_le64(&ii->nbytes, c.nbytes);
	return ret;
}

int ubt_file_write(struct ubt_trans_handle *h, struct ubt_root *root, u64 ino, struct btrfs_inode_item *ii,
		   const void *buf, size_t len, u64 off, const struct ubt_write_opts *opts)
{
	struct ubt_fs_info *fs_info = root->fs_info;
	const bool no_holes = fs_info->incompat & BTRFS_FEATURE_INCOMPAT_NO_HOLES;
	u64 isize = get_le64(&ii->size);
	u64 end = off + len, new_size = ubt_max(isize, end);
	struct wctx c;
	u64 a, b, covered;
	bool inl;
	int ret;

	if (len == 0)
		return 0;
	wctx_init(&c, h, root, ino, ii, opts);
	if (new_size <= max_inline_of(fs_info, opts)) {
		/* The whole file fits in one inline extent. */
		u8 *content = calloc(1, new_size);

		if (!content)
			return -ENOMEM;
		if (isize) {
			ssize_t r = ubt_file_read(root, ino, ii, content, isize, 0);

			if (r < 0) {
				free(content);
				return (int)r;
			}
		}
		memcpy(content + off, buf, len);
		ret = ubt_file_drop_extents(h, root, ino, 0, (u64)-1, &c.nbytes);
		if (ret == 0)
			ret = insert_inline(h, root, ino, content, (u32)new_size);
		free(content);
		if (ret < 0)
			return ret;
		c.nbytes += new_size;
		goto done;
	}
	a = ALIGN_DOWN(off, (u64)c.ss);
	b = ALIGN_UP(end, (u64)c.ss);
	if (off > isize) {
		ret = prepare_grow(&c, isize, off, &covered);
		if (ret < 0)
			return ret;
		if (!no_holes && a > covered) {
			ret = ubt_file_insert_holes(h, root, ino, covered, a - covered);
			if (ret < 0)
				return ret;
		}
	}
	ret = has_inline(root, ino, &inl);
	if (ret < 0)
		return ret;
	if (inl)
		a = 0; /* the inline extent becomes part of the new first extent */
	ret = rewrite_range(&c, a, b, buf, len, off);
	if (ret < 0)
		return ret;
done:
	put_le64(&ii->size, new_size);
	put_le64(&ii->nbytes, c.nbytes);
	return 0;
}

int ubt_file_truncate(struct ubt_trans_handle *h, struct ubt_root *root, u64 ino, struct btrfs_inode_item *ii,
		      u64 new_size, const struct ubt_write_opts *opts)
{
	struct ubt_fs_info *fs_info = root->fs_info;
	const bool no_holes = fs_info->incompat & BTRFS_FEATURE_INCOMPAT_NO_HOLES;
	u64 isize = get_le64(&ii->size);
	struct wctx c;
	u64 covered;
	bool inl;
	int ret;

	if (new_size == isize)
		return 0;
	wctx_init(&c, h, root, ino, ii, opts);
	ret = has_inline(root, ino, &inl);
	if (ret < 0)
		return ret;
	if (new_size < isize) {
		ret = ubt_file_drop_extents(h, root, ino, inl ? new_size : ALIGN_UP(new_size, (u64)c.ss), (u64)-1,
					    &c.nbytes);
		if (ret < 0)
			return ret;
	} else if (inl && new_size <= max_inline_of(fs_info, opts)) {
		/* Still small: the inline extent stays, the bytes after it read as zeros. */
	} else {
		ret = prepare_grow(&c, isize, (u64)-1 - c.ss, &covered);
		if (ret < 0)
			return ret;
		if (!no_holes && ALIGN_UP(new_size, (u64)c.ss) > covered) {
			ret = ubt_file_insert_holes(h, root, ino, covered, ALIGN_UP(new_size, (u64)c.ss) - covered);
			if (ret < 0)
				return ret;
		}
	}
	put_le64(&ii->size, new_size);
	put_le64(&ii->nbytes, c.nbytes);
	return 0;
}

int ubt_symlink_write(struct ubt_trans_handle *h, struct ubt_root *root, u64 ino, struct btrfs_inode_item *ii,
		      const char *target, size_t len)
{
	(void)ii;
	return insert_inline(h, root, ino, target, (u32)len);
}
