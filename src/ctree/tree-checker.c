/*
 * tree-checker.c — validates each tree block as it is read: checksum over the block, header
 * bytenr and fsid, level, nritems within the block, leaf item data packed back to back inside the
 * block, node pointers aligned, keys strictly ascending. Never trusts a value before checking it.
 */
#include "tree-checker.h"

#include "../codec/csum.h"
#include "../util/messages.h"
#include "disk-io.h"

#define CHECK_FAIL(code, fmt, ...)                                                                  \
	do {                                                                                        \
		if (!quiet)                                                                         \
			ubt_err("tree block %llu: " fmt, (unsigned long long)bytenr, ##__VA_ARGS__);   \
		return code;                                                                        \
	} while (0)

int ubt_check_tree_block(struct ubt_fs_info *fs_info, const u8 *data, u64 bytenr, bool quiet)
{
	const struct btrfs_header *h = (const void *)data;
	u32 nodesize = fs_info->nodesize;
	u32 data_size = nodesize - (u32)sizeof(struct btrfs_header);
	u8 csum[UBT_CSUM_MAX];
	struct ubt_key prev = { 0 }, cur;
	u32 nritems;
	u8 level;

	if (ubt_csum(fs_info->csum_type, data + BTRFS_CSUM_SIZE, nodesize - BTRFS_CSUM_SIZE, csum))
		CHECK_FAIL(-EUCLEAN, "unknown checksum type");
	if (memcmp(csum, h->csum, (size_t)fs_info->csum_size))
		CHECK_FAIL(-EIO, "checksum mismatch");
	if (le64toh(h->bytenr) != bytenr)
		CHECK_FAIL(-EUCLEAN, "header says bytenr %llu", (unsigned long long)le64toh(h->bytenr));
	if (memcmp(h->fsid, fs_info->metadata_uuid, BTRFS_FSID_SIZE))
		CHECK_FAIL(-EUCLEAN, "fsid does not match the filesystem");
	level = h->level;
	nritems = le32toh(h->nritems);
	if (level >= BTRFS_MAX_LEVEL)
		CHECK_FAIL(-EUCLEAN, "level %u out of range", level);
	if (level == 0) {
		u32 expected_end = data_size;

		if ((u64)nritems * sizeof(struct btrfs_item) > data_size)
			CHECK_FAIL(-EUCLEAN, "leaf has too many items (%u)", nritems);
		for (u32 i = 0; i < nritems; i++) {
			const struct btrfs_item *item = (const struct btrfs_item *)(data + sizeof(*h)) + i;
			u32 off = le32toh(item->offset), size = le32toh(item->size);

			ubt_disk_key_to_cpu(&cur, &item->key);
			if (i > 0 && ubt_key_cmp(&prev, &cur) >= 0)
				CHECK_FAIL(-EUCLEAN, "leaf keys out of order at slot %u", i);
			prev = cur;
			if ((u64)off + size != expected_end)
				CHECK_FAIL(-EUCLEAN, "leaf item %u data [%u, +%u) not packed (expected end %u)", i, off,
					   size, expected_end);
			if (off < (i + 1) * (u32)sizeof(struct btrfs_item) ||
			    off < nritems * (u32)sizeof(struct btrfs_item))
				CHECK_FAIL(-EUCLEAN, "leaf item %u data overlaps the item headers", i);
			expected_end = off;
		}
	} else {
		if (nritems == 0)
			CHECK_FAIL(-EUCLEAN, "empty node at level %u", level);
		if ((u64)nritems * sizeof(struct btrfs_key_ptr) > data_size)
			CHECK_FAIL(-EUCLEAN, "node has too many pointers (%u)", nritems);
		for (u32 i = 0; i < nritems; i++) {
			const struct btrfs_key_ptr *kp = (const struct btrfs_key_ptr *)(data + sizeof(*h)) + i;
			u64 ptr = le64toh(kp->blockptr);

			ubt_disk_key_to_cpu(&cur, &kp->key);
			if (i > 0 && ubt_key_cmp(&prev, &cur) >= 0)
				CHECK_FAIL(-EUCLEAN, "node keys out of order at slot %u", i);
			prev = cur;
			if (ptr == 0 || !IS_ALIGNED(ptr, fs_info->sectorsize))
				CHECK_FAIL(-EUCLEAN, "node slot %u points to invalid block %llu", i,
					   (unsigned long long)ptr);
		}
	}
	return 0;
}
