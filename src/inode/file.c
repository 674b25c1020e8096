/*
 * file.c — file data (read side): walking an inode's EXTENT_DATA items for a byte range (inline,
 * regular, prealloc, holes explicit or implied, compressed), reading the data through the chunk
 * map, verifying it against the csum tree with retries on the other copies, and symlink targets.
 *
 * One read call walks its extents with one path and owns a small scratch context (bounce sector,
 * checksum arrays, compressed and decompressed extent buffers), so nothing here is shared between
 * threads.
 */
#include "inode-internal.h"

#include <inttypes.h>
#include <stdlib.h>

#include "../codec/compress.h"
#include "../codec/csum.h"
#include "../ctree/disk-io.h"
#include "../util/messages.h"

/* btrfs limits for compressed extents: at most 128 KiB of data in, 128 KiB on disk. */
#define UBT_MAX_COMPRESSED_RAM (128u * 1024)
#define UBT_MAX_COMPRESSED_DISK (128u * 1024)
/* Largest run of sectors read and verified by one device request. */
#define UBT_READ_CHUNK (1024u * 1024)

struct read_ctx {
	struct ubt_root *root;
	struct ubt_fs_info *fs_info;
	u64 ino;
	bool datasum;      /* verify data checksums */
	u32 sectorsize;

	u8 *sector;        /* bounce buffer, one sector */
	u8 *csums;         /* csum_cap * csum_size bytes */
	bool *found;       /* csum_cap flags */
	u32 csum_cap;      /* in sectors */
	u8 *cbuf;          /* compressed extent as read from disk, UBT_MAX_COMPRESSED_DISK */
	u8 *ram;           /* decompressed extent, UBT_MAX_COMPRESSED_RAM */
	bool ram_valid;    /* ram holds the extent below */
	u64 ram_bytenr, ram_disk_bytes, ram_bytes;
	u8 ram_compression;
	bool warned_nocsum;
};

static void ctx_free(struct read_ctx *ctx)
{
	free(ctx->sector);
	free(ctx->csums);
	free(ctx->found);
	free(ctx->cbuf);
	free(ctx->ram);
}

static int ctx_csum_reserve(struct read_ctx *ctx, u32 nr)
{
	u8 *csums;
	bool *found;

	if (nr <= ctx->csum_cap)
		return 0;
	csums = realloc(ctx->csums, (size_t)nr * (size_t)ctx->fs_info->csum_size);
	if (!csums)
		return -ENOMEM;
	ctx->csums = csums;
	found = realloc(ctx->found, nr * sizeof(bool));
	if (!found)
		return -ENOMEM;
	ctx->found = found;
	ctx->csum_cap = nr;
	return 0;
}

static int ctx_sector(struct read_ctx *ctx)
{
	if (!ctx->sector)
		ctx->sector = malloc(ctx->sectorsize);
	return ctx->sector ? 0 : -ENOMEM;
}

int ubt_lookup_data_csums(struct ubt_fs_info *fs_info, u64 bytenr, u32 nr, u8 *csums, bool *found)
{
	struct ubt_root *csum_root = &fs_info->csum_root;
	struct ubt_path path;
	struct ubt_key key = { .objectid = BTRFS_EXTENT_CSUM_OBJECTID, .type = BTRFS_EXTENT_CSUM_KEY, .offset = bytenr };
	struct extent_buffer *leaf;
	const u32 ss = fs_info->sectorsize;
	const u32 cs = (u32)fs_info->csum_size;
	const u64 end = bytenr + (u64)nr * ss;
	u64 item_end, first, last;
	u32 size;
	int slot;
	int ret;

	memset(found, 0, nr * sizeof(bool));
	if (nr == 0 || csum_root->bytenr == 0)
		return 0;
	ubt_path_init(&path);
	ret = ubt_search_le(csum_root, &key, &path);
	if (ret > 0)
		ret = ubt_search_ge(csum_root, &key, &path);
	while (ret == 0) {
		leaf = ubt_path_leaf(&path);
		slot = ubt_path_slot(&path);
		ubt_item_key(leaf, slot, &key);
		if (key.objectid < BTRFS_EXTENT_CSUM_OBJECTID ||
		    (key.objectid == BTRFS_EXTENT_CSUM_OBJECTID && key.type < BTRFS_EXTENT_CSUM_KEY)) {
			ret = ubt_next_item(csum_root, &path);
			continue;
		}
		if (key.objectid != BTRFS_EXTENT_CSUM_OBJECTID || key.type != BTRFS_EXTENT_CSUM_KEY ||
		    key.offset >= end)
			break;
		size = ubt_item_size(leaf, slot);
		if (size % cs != 0 || !IS_ALIGNED(key.offset, (u64)ss) ||
		    (u64)(size / cs) * ss > UINT64_MAX - key.offset) {
			ubt_err("corrupt item: root %" PRIu64 " key (%" PRIu64 " %u %" PRIu64
				"): csum item of %u bytes (csum size %u, sector size %u)",
				csum_root->objectid, key.objectid, key.type, key.offset, size, cs, ss);
			ret = -EUCLEAN;
			goto out;
		}
		item_end = key.offset + (u64)(size / cs) * ss;
		if (item_end > bytenr) {
			first = ubt_max(key.offset, bytenr);
			last = ubt_min(item_end, end);
			memcpy(csums + (first - bytenr) / ss * cs,
			       (const u8 *)ubt_item_ptr(leaf, slot) + (first - key.offset) / ss * cs,
			       (last - first) / ss * cs);
			memset(found + (first - bytenr) / ss, 1, (last - first) / ss * sizeof(bool));
		}
		ret = ubt_next_item(csum_root, &path);
	}
	if (ret > 0)
		ret = 0;
out:
	ubt_path_release(&path);
	return ret;
}

static void report_bad_sector(struct read_ctx *ctx, u64 logical, u64 file_pos, int copies, int err)
{
	ubt_err("data read failed (%s) on all %d copies: root %" PRIu64 " ino %" PRIu64 " file offset %" PRIu64
		" logical %" PRIu64,
		err == -EIO ? "checksum mismatch or I/O error" : "error", copies, ctx->root->objectid, ctx->ino,
		file_pos, logical);
}

/*
 * Re-read one sector at @logical into @dst from the copies starting at @first_mirror until one
 * matches @csum (NULL: any copy that reads). 0, or -EIO with a log line.
 */
static int repair_sector(struct read_ctx *ctx, u64 logical, u8 *dst, const u8 *csum, int first_mirror,
			 u64 file_pos)
{
	int copies = ubt_num_copies(ctx->fs_info, logical);
	int ret = -EIO;

	for (int mirror = first_mirror; mirror < copies; mirror++) {
		ret = ubt_read_logical(ctx->fs_info, logical, dst, ctx->sectorsize, mirror);
		if (ret == -EIO)
			continue;
		if (ret < 0)
			return ret;
		if (!csum || ubt_verify_csum(ctx->fs_info, dst, ctx->sectorsize, csum) == 0)
			return 0;
		ret = -EIO;
	}
	report_bad_sector(ctx, logical, file_pos, copies, ret);
	return -EIO;
}

/*
 * Read @len bytes (whole sectors) at sector-aligned @logical into @buf and verify them when
 * @csummed. Sectors that fail to read or verify are retried on the other copies one by one.
 * @file_pos is the file offset of @logical, for messages.
 */
static int read_verified(struct read_ctx *ctx, u64 logical, u8 *buf, size_t len, bool csummed, u64 file_pos)
{
	const u32 ss = ctx->sectorsize;
	const u32 cs = (u32)ctx->fs_info->csum_size;
	u32 nr = (u32)(len / ss);
	bool io_failed = false;
	bool missing = false;
	int ret;

	ret = ubt_read_logical(ctx->fs_info, logical, buf, len, 0);
	if (ret == -EIO) {
		io_failed = true;
	} else if (ret < 0) {
		ubt_err("data read failed (%d): root %" PRIu64 " ino %" PRIu64 " file offset %" PRIu64
			" logical %" PRIu64 " len %zu",
			ret, ctx->root->objectid, ctx->ino, file_pos, logical, len);
		return ret;
	}
	if (csummed) {
		ret = ctx_csum_reserve(ctx, nr);
		if (ret < 0)
			return ret;
		ret = ubt_lookup_data_csums(ctx->fs_info, logical, nr, ctx->csums, ctx->found);
		if (ret < 0)
			return ret;
	} else if (!io_failed) {
		return 0;
	}
	for (u32 i = 0; i < nr; i++) {
		const u8 *csum = csummed && ctx->found[i] ? ctx->csums + (size_t)i * cs : NULL;
		u8 *dst = buf + (size_t)i * ss;

		if (csummed && !ctx->found[i])
			missing = true;
		if (!io_failed && (!csum || ubt_verify_csum(ctx->fs_info, dst, ss, csum) == 0))
			continue;
		ret = repair_sector(ctx, logical + (u64)i * ss, dst, csum, io_failed ? 0 : 1, file_pos + (u64)i * ss);
		if (ret < 0)
			return ret;
	}
	if (missing && !ctx->warned_nocsum) {
		ctx->warned_nocsum = true;
		ubt_debug("root %" PRIu64 " ino %" PRIu64 ": no data checksum for some sectors at logical %" PRIu64
			  " (file offset %" PRIu64 "), accepted",
			  ctx->root->objectid, ctx->ino, logical, file_pos);
	}
	return 0;
}

/*
 * Copy @n bytes of uncompressed data at logical @logical (any alignment) into @dst, reading
 * only the sectors that hold them: whole sectors straight into @dst, partial ones via the bounce.
 */
static int read_plain(struct read_ctx *ctx, u64 logical, u8 *dst, size_t n, u64 file_pos)
{
	const u32 ss = ctx->sectorsize;
	size_t chunk, in;
	u64 sector;
	int ret;

	while (n > 0) {
		if (IS_ALIGNED(logical, (u64)ss) && n >= ss) {
			chunk = ubt_min(ALIGN_DOWN(n, (size_t)ss), (size_t)UBT_READ_CHUNK);
			ret = read_verified(ctx, logical, dst, chunk, ctx->datasum, file_pos);
			if (ret < 0)
				return ret;
		} else {
			sector = ALIGN_DOWN(logical, (u64)ss);
			in = (size_t)(logical - sector);
			chunk = ubt_min((size_t)ss - in, n);
			ret = ctx_sector(ctx);
			if (ret < 0)
				return ret;
			ret = read_verified(ctx, sector, ctx->sector, ss, ctx->datasum, file_pos - in);
			if (ret < 0)
				return ret;
			memcpy(dst, ctx->sector + in, chunk);
		}
		logical += chunk;
		dst += chunk;
		n -= chunk;
		file_pos += chunk;
	}
	return 0;
}

/* The fields of one EXTENT_DATA item, validated. */
struct file_extent {
	struct ubt_key key;
	u8 type;
	u8 compression;
	u64 ram_bytes;
	u64 end;              /* file offset just past what the item maps */
	/* inline */
	const u8 *inline_data;
	u32 inline_len;
	/* regular / prealloc */
	u64 disk_bytenr, disk_num_bytes, offset, num_bytes;
};

/* Parse and check the EXTENT_DATA item at @slot. 0, -EUCLEAN or -EOPNOTSUPP (logged). */
static int parse_file_extent(struct read_ctx *ctx, const struct extent_buffer *leaf, int slot,
			     struct file_extent *fe)
{
	const struct btrfs_file_extent_item *fi = ubt_item_ptr(leaf, slot);
	const u32 size = ubt_item_size(leaf, slot);
	const u32 ss = ctx->sectorsize;

	ubt_item_key(leaf, slot, &fe->key);
	if (size < BTRFS_FILE_EXTENT_INLINE_DATA_START) {
		ubt_inode_corrupt(ctx->root, ctx->ino, &fe->key, "file extent item of %u bytes", size);
		return -EUCLEAN;
	}
	fe->type = fi->type;
	fe->compression = fi->compression;
	fe->ram_bytes = get_le64(&fi->ram_bytes);
	if (fi->encryption != 0 || get_le16(&fi->other_encoding) != 0) {
		ubt_inode_corrupt(ctx->root, ctx->ino, &fe->key, "unsupported encryption %u / encoding %u",
				  fi->encryption, get_le16(&fi->other_encoding));
		return -EOPNOTSUPP;
	}
	if (fe->compression > BTRFS_COMPRESS_ZSTD) {
		ubt_inode_corrupt(ctx->root, ctx->ino, &fe->key, "unknown compression type %u", fe->compression);
		return -EUCLEAN;
	}
	switch (fe->type) {
	case BTRFS_FILE_EXTENT_INLINE:
		fe->inline_data = (const u8 *)fi + BTRFS_FILE_EXTENT_INLINE_DATA_START;
		fe->inline_len = size - (u32)BTRFS_FILE_EXTENT_INLINE_DATA_START;
		if (fe->ram_bytes > UBT_MAX_COMPRESSED_RAM ||
		    (fe->compression == BTRFS_COMPRESS_NONE && fe->ram_bytes != fe->inline_len) ||
		    fe->key.offset > UINT64_MAX - fe->ram_bytes) {
			ubt_inode_corrupt(ctx->root, ctx->ino, &fe->key,
					  "inline extent with ram_bytes %" PRIu64 " and %u bytes of data", fe->ram_bytes,
					  fe->inline_len);
			return -EUCLEAN;
		}
		fe->end = fe->key.offset + fe->ram_bytes;
		return 0;
	case BTRFS_FILE_EXTENT_REG:
	case BTRFS_FILE_EXTENT_PREALLOC:
		break;
	default:
		ubt_inode_corrupt(ctx->root, ctx->ino, &fe->key, "unknown file extent type %u", fe->type);
		return -EUCLEAN;
	}
	if (size < sizeof(*fi)) {
		ubt_inode_corrupt(ctx->root, ctx->ino, &fe->key, "file extent item of %u bytes", size);
		return -EUCLEAN;
	}
	fe->disk_bytenr = get_le64(&fi->disk_bytenr);
	fe->disk_num_bytes = get_le64(&fi->disk_num_bytes);
	fe->offset = get_le64(&fi->offset);
	fe->num_bytes = get_le64(&fi->num_bytes);
	if (fe->num_bytes == 0 || fe->key.offset > UINT64_MAX - fe->num_bytes ||
	    fe->offset > UINT64_MAX - fe->num_bytes) {
		ubt_inode_corrupt(ctx->root, ctx->ino, &fe->key, "file extent of %" PRIu64 " bytes at offset %" PRIu64,
				  fe->num_bytes, fe->offset);
		return -EUCLEAN;
	}
	fe->end = fe->key.offset + fe->num_bytes;
	if (fe->disk_bytenr == 0)
		return 0; /* hole */
	if (!IS_ALIGNED(fe->disk_bytenr, (u64)ss) || !IS_ALIGNED(fe->disk_num_bytes, (u64)ss) ||
	    fe->disk_num_bytes == 0 || fe->disk_bytenr > UINT64_MAX - fe->disk_num_bytes) {
		ubt_inode_corrupt(ctx->root, ctx->ino, &fe->key,
				  "disk extent %" PRIu64 "+%" PRIu64 " not aligned to sector size %u", fe->disk_bytenr,
				  fe->disk_num_bytes, ss);
		return -EUCLEAN;
	}
	if (fe->compression == BTRFS_COMPRESS_NONE || fe->type == BTRFS_FILE_EXTENT_PREALLOC) {
		if (fe->offset + fe->num_bytes > fe->disk_num_bytes) {
			ubt_inode_corrupt(ctx->root, ctx->ino, &fe->key,
					  "file extent [%" PRIu64 ", +%" PRIu64 ") past disk extent of %" PRIu64
					  " bytes",
					  fe->offset, fe->num_bytes, fe->disk_num_bytes);
			return -EUCLEAN;
		}
	} else if (fe->ram_bytes > UBT_MAX_COMPRESSED_RAM || fe->disk_num_bytes > UBT_MAX_COMPRESSED_DISK ||
		   fe->offset + fe->num_bytes > fe->ram_bytes) {
		ubt_inode_corrupt(ctx->root, ctx->ino, &fe->key,
				  "compressed extent: ram %" PRIu64 " disk %" PRIu64 " range [%" PRIu64 ", +%" PRIu64 ")",
				  fe->ram_bytes, fe->disk_num_bytes, fe->offset, fe->num_bytes);
		return -EUCLEAN;
	}
	return 0;
}

/* Decompress @src into ctx->ram (ram_bytes long). -EUCLEAN is logged against the extent's key. */
static int decompress_to_ram(struct read_ctx *ctx, const struct file_extent *fe, const u8 *src, size_t src_len)
{
	int ret;

	if (!ctx->ram) {
		ctx->ram = malloc(UBT_MAX_COMPRESSED_RAM);
		if (!ctx->ram)
			return -ENOMEM;
	}
	ctx->ram_valid = false;
	ret = ubt_decompress(fe->compression, src, src_len, ctx->ram, fe->ram_bytes, ctx->sectorsize);
	if (ret == -EUCLEAN || ret == -EOPNOTSUPP)
		ubt_inode_corrupt(ctx->root, ctx->ino, &fe->key, "cannot decompress %s extent (type %u): %d",
				  fe->type == BTRFS_FILE_EXTENT_INLINE ? "inline" : "regular", fe->compression, ret);
	return ret;
}

/* Copy @n bytes at @ext_off of the uncompressed content of compressed extent @fe into @dst. */
static int read_compressed(struct read_ctx *ctx, const struct file_extent *fe, u64 ext_off, u8 *dst, size_t n)
{
	int ret;

	if (!(ctx->ram_valid && ctx->ram_bytenr == fe->disk_bytenr && ctx->ram_disk_bytes == fe->disk_num_bytes &&
	      ctx->ram_bytes == fe->ram_bytes && ctx->ram_compression == fe->compression)) {
		if (!ctx->cbuf) {
			ctx->cbuf = malloc(UBT_MAX_COMPRESSED_DISK);
			if (!ctx->cbuf)
				return -ENOMEM;
		}
		ret = read_verified(ctx, fe->disk_bytenr, ctx->cbuf, fe->disk_num_bytes, ctx->datasum,
				    fe->key.offset - ubt_min(fe->offset, fe->key.offset));
		if (ret < 0)
			return ret;
		ret = decompress_to_ram(ctx, fe, ctx->cbuf, fe->disk_num_bytes);
		if (ret < 0)
			return ret;
		ctx->ram_valid = true;
		ctx->ram_bytenr = fe->disk_bytenr;
		ctx->ram_disk_bytes = fe->disk_num_bytes;
		ctx->ram_bytes = fe->ram_bytes;
		ctx->ram_compression = fe->compression;
	}
	memcpy(dst, ctx->ram + ext_off, n);
	return 0;
}

/* Fill @dst with @n bytes at file offset @pos, which extent @fe covers. */
static int read_extent(struct read_ctx *ctx, const struct file_extent *fe, u64 pos, u8 *dst, size_t n)
{
	u64 in = pos - fe->key.offset; /* offset within what the item maps */
	int ret;

	if (fe->type == BTRFS_FILE_EXTENT_INLINE) {
		if (fe->compression == BTRFS_COMPRESS_NONE) {
			memcpy(dst, fe->inline_data + in, n);
			return 0;
		}
		ret = decompress_to_ram(ctx, fe, fe->inline_data, fe->inline_len);
		if (ret < 0)
			return ret;
		memcpy(dst, ctx->ram + in, n);
		return 0;
	}
	if (fe->type == BTRFS_FILE_EXTENT_PREALLOC || fe->disk_bytenr == 0) {
		memset(dst, 0, n);
		return 0;
	}
	if (fe->compression != BTRFS_COMPRESS_NONE)
		return read_compressed(ctx, fe, fe->offset + in, dst, n);
	return read_plain(ctx, fe->disk_bytenr + fe->offset + in, dst, n, pos);
}

ssize_t ubt_file_read(struct ubt_root *root, u64 ino, const struct btrfs_inode_item *inode, void *buf,
		      size_t len, u64 off)
{
	struct read_ctx ctx = {
		.root = root,
		.fs_info = root->fs_info,
		.ino = ino,
		.datasum = !(get_le64(&inode->flags) & BTRFS_INODE_NODATASUM),
		.sectorsize = root->fs_info->sectorsize,
	};
	struct ubt_path path;
	struct ubt_key key = { .objectid = ino, .type = BTRFS_EXTENT_DATA_KEY, .offset = off };
	struct file_extent fe;
	struct extent_buffer *leaf;
	u64 isize = get_le64(&inode->size);
	u64 pos = off, end, stop;
	u8 *out = buf;
	int ret;

	if (off >= isize || len == 0)
		return 0;
	end = off + ubt_min((u64)len, isize - off);

	ubt_path_init(&path);
	ret = ubt_search_le(root, &key, &path);
	if (ret > 0)
		ret = ubt_search_ge(root, &key, &path);
	while (pos < end && ret == 0) {
		leaf = ubt_path_leaf(&path);
		ubt_item_key(leaf, ubt_path_slot(&path), &key);
		if (key.objectid < ino || (key.objectid == ino && key.type < BTRFS_EXTENT_DATA_KEY)) {
			ret = ubt_next_item(root, &path);
			continue;
		}
		if (key.objectid != ino || key.type != BTRFS_EXTENT_DATA_KEY)
			break;
		ret = parse_file_extent(&ctx, leaf, ubt_path_slot(&path), &fe);
		if (ret < 0)
			goto out;
		if (fe.end > pos) {
			if (fe.key.offset > pos) {
				/* Implied hole (no-holes) before this extent. */
				stop = ubt_min(fe.key.offset, end);
				memset(out + (pos - off), 0, stop - pos);
				pos = stop;
			}
			if (pos < end) {
				stop = ubt_min(fe.end, end);
				ret = read_extent(&ctx, &fe, pos, out + (pos - off), stop - pos);
				if (ret < 0)
					goto out;
				pos = stop;
			}
		}
		if (pos < end)
			ret = ubt_next_item(root, &path);
	}
	if (ret < 0)
		goto out;
	/* Past the last extent, up to i_size: zeros. */
	if (pos < end)
		memset(out + (pos - off), 0, end - pos);
	ret = 0;
out:
	ubt_path_release(&path);
	ctx_free(&ctx);
	return ret < 0 ? ret : (ssize_t)(end - off);
}

ssize_t ubt_symlink_read(struct ubt_root *root, u64 ino, char *buf, size_t size)
{
	struct read_ctx ctx = {
		.root = root,
		.fs_info = root->fs_info,
		.ino = ino,
		.sectorsize = root->fs_info->sectorsize,
	};
	struct ubt_path path;
	struct ubt_key key = { .objectid = ino, .type = BTRFS_EXTENT_DATA_KEY, .offset = 0 };
	struct btrfs_inode_item ii;
	struct file_extent fe;
	const u8 *src;
	size_t len;
	ssize_t ret;

	ubt_path_init(&path);
	/* The target is i_size bytes long: some writers (older mkfs --rootdir) store a NUL after it. */
	ret = ubt_inode_read(root, ino, &ii);
	if (ret < 0)
		goto out;
	ret = ubt_search_slot(root, &key, &path);
	if (ret > 0) {
		ubt_inode_corrupt(root, ino, &key, "symlink without an inline extent at offset 0");
		ret = -EUCLEAN;
	}
	if (ret < 0)
		goto out;
	ret = parse_file_extent(&ctx, ubt_path_leaf(&path), ubt_path_slot(&path), &fe);
	if (ret < 0)
		goto out;
	if (fe.type != BTRFS_FILE_EXTENT_INLINE || fe.ram_bytes == 0) {
		ubt_inode_corrupt(root, ino, &key, "symlink extent of type %u, %" PRIu64 " bytes", fe.type,
				  fe.ram_bytes);
		ret = -EUCLEAN;
		goto out;
	}
	if (fe.compression == BTRFS_COMPRESS_NONE) {
		src = fe.inline_data;
	} else {
		ret = decompress_to_ram(&ctx, &fe, fe.inline_data, fe.inline_len);
		if (ret < 0)
			goto out;
		src = ctx.ram;
	}
	len = (size_t)ubt_min(fe.ram_bytes, get_le64(&ii.size));
	if (size < len) {
		ret = -ERANGE;
		goto out;
	}
	memcpy(buf, src, len);
	if (size > len)
		buf[len] = '\0';
	ret = (ssize_t)len;
out:
	ubt_path_release(&path);
	ctx_free(&ctx);
	return ret;
}
