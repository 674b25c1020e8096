/*
 * compress.h — btrfs's compressed extent framings: zlib (a zlib stream), lzo (btrfs's own segment
 * framing around LZO1X, one segment per sector), zstd (zstd frames).
 */
#ifndef UBT_CODEC_COMPRESS_H
#define UBT_CODEC_COMPRESS_H

#include <sys/types.h>

#include "../util/compat.h"

/*
 * Decompress one whole compressed extent (or compressed inline extent) @src of @src_len bytes into
 * @dst, which holds @dst_len bytes (the extent's ram_bytes). Output shorter than @dst_len is padded
 * with zeros, as btrfs does. @type is BTRFS_COMPRESS_ZLIB/LZO/ZSTD; @sectorsize is the filesystem's
 * (lzo segments never straddle a sector boundary).
 * Returns 0, -EOPNOTSUPP for an unknown type, -EUCLEAN for corrupt input (never reads past @src_len
 * or writes past @dst_len), -ENOMEM, -EINVAL for bad arguments (lzo: @sectorsize not a power of two
 * in 512..64K). Bytes after the end of the stream (sector padding) are ignored. Like the kernel, a
 * stream that yields more than @dst_len bytes is cut at @dst_len, and the zlib adler32 is not checked.
 * Thread-safe (per-thread workspaces).
 */
int ubt_decompress(int type, const void *src, size_t src_len, void *dst, size_t dst_len, u32 sectorsize);

/*
 * Compress @len bytes (at most 128 KiB, btrfs's compressed extent limit) into @dst (capacity
 * @dst_cap) in btrfs's framing for @type, at @level (0 = the algorithm's btrfs default).
 * Returns the compressed size, or -E2BIG when the result would not be smaller than @len rounded
 * up to @sectorsize or would not fit in @dst_cap (store it uncompressed), -EOPNOTSUPP, -ENOMEM,
 * -EINVAL (@len 0 or over 128 KiB, @sectorsize not a power of two in 512..64K). zlib levels 1..9
 * (default 3), zstd -15..15 (default 3, window 128 KiB so the kernel can read it), lzo has none.
 * Thread-safe (per-thread workspaces).
 */
ssize_t ubt_compress(int type, int level, const void *src, size_t len, void *dst, size_t dst_cap, u32 sectorsize);

#endif
