/* csum.h — the checksums btrfs uses (crc32c, xxhash64, sha256, blake2b-256) and its name hashes. */
#ifndef UBT_CODEC_CSUM_H
#define UBT_CODEC_CSUM_H

#include "../util/compat.h"

#define UBT_CSUM_MAX 32

/* Size in bytes of a checksum of @type (BTRFS_CSUM_TYPE_*), or -EINVAL for an unknown type. */
int ubt_csum_size(u16 type);
/* "crc32c", "xxhash64", "sha256", "blake2b", or NULL for an unknown type. */
const char *ubt_csum_name(u16 type);
/* Parse a user name ("crc32c", "xxhash", "xxhash64", "sha256", "blake2", "blake2b") -> type, or -EINVAL. */
int ubt_csum_type_from_name(const char *name);
/*
 * Checksum @len bytes of @data with algorithm @type into @out (UBT_CSUM_MAX bytes; the bytes past
 * the algorithm's size are zeroed, as btrfs stores them). Returns 0 or -EINVAL for an unknown type.
 * Thread-safe.
 */
int ubt_csum(u16 type, const void *data, size_t len, u8 out[UBT_CSUM_MAX]);

/* Raw CRC-32C (Castagnoli) update: no pre/post inversion. SSE4.2 when the CPU has it. */
u32 ubt_crc32c(u32 seed, const void *data, size_t len);
/* The same update computed with the portable table code only (tests compare it with ubt_crc32c). */
u32 ubt_crc32c_sw(u32 seed, const void *data, size_t len);

/* btrfs's directory/xattr name hash: raw crc32c seeded with ~1. */
static inline u64 ubt_name_hash(const char *name, size_t len)
{
	return ubt_crc32c((u32)~1, name, len);
}

/* btrfs's INODE_EXTREF key offset: raw crc32c of the name seeded with the parent objectid. */
static inline u64 ubt_extref_hash(u64 parent_objectid, const char *name, size_t len)
{
	return ubt_crc32c((u32)parent_objectid, name, len);
}

#endif
