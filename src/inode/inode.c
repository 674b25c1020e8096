/*
 * inode.c — inode items and back references: reading an INODE_ITEM, finding an inode's parent
 * through INODE_REF / INODE_EXTREF, and the corruption report shared by src/inode/.
 */
#include "inode-internal.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>

#include "../util/messages.h"

void ubt_inode_corrupt(const struct ubt_root *root, u64 ino, const struct ubt_key *key, const char *fmt, ...)
{
	char msg[256];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (key)
		ubt_err("corrupt item: root %" PRIu64 " ino %" PRIu64 " key (%" PRIu64 " %u %" PRIu64 "): %s",
			root->objectid, ino, key->objectid, key->type, key->offset, msg);
	else
		ubt_err("corrupt item: root %" PRIu64 " ino %" PRIu64 ": %s", root->objectid, ino, msg);
}

int ubt_inode_read(struct ubt_root *root, u64 ino, struct btrfs_inode_item *out)
{
	struct ubt_path path;
	struct ubt_key key = { .objectid = ino, .type = BTRFS_INODE_ITEM_KEY, .offset = 0 };
	struct extent_buffer *leaf;
	int slot;
	int ret;

	ubt_path_init(&path);
	ret = ubt_search_slot(root, &key, &path);
	if (ret > 0)
		ret = -ENOENT;
	if (ret < 0)
		goto out;
	leaf = ubt_path_leaf(&path);
	slot = ubt_path_slot(&path);
	if (ubt_item_size(leaf, slot) < sizeof(*out)) {
		ubt_inode_corrupt(root, ino, &key, "inode item of %u bytes, expected %zu", ubt_item_size(leaf, slot),
				  sizeof(*out));
		ret = -EUCLEAN;
		goto out;
	}
	memcpy(out, ubt_item_ptr(leaf, slot), sizeof(*out));
	ret = 0;
out:
	ubt_path_release(&path);
	return ret;
}

int ubt_inode_parent(struct ubt_root *root, u64 ino, u64 *parent)
{
	struct ubt_path path;
	struct ubt_key key = { .objectid = ino, .type = BTRFS_INODE_REF_KEY, .offset = 0 };
	struct extent_buffer *leaf;
	const u8 *ptr;
	u32 size;
	int slot;
	int ret;

	ubt_path_init(&path);
	ret = ubt_search_ge(root, &key, &path);
	if (ret > 0)
		ret = -ENOENT;
	if (ret < 0)
		goto out;
	leaf = ubt_path_leaf(&path);
	slot = ubt_path_slot(&path);
	ubt_item_key(leaf, slot, &key);
	if (key.objectid != ino) {
		ret = -ENOENT;
		goto out;
	}
	if (key.type == BTRFS_INODE_REF_KEY) {
		/* The key offset is the parent; still reject an item too small for one ref. */
		if (ubt_item_size(leaf, slot) < sizeof(struct btrfs_inode_ref)) {
			ubt_inode_corrupt(root, ino, &key, "inode ref of %u bytes", ubt_item_size(leaf, slot));
			ret = -EUCLEAN;
			goto out;
		}
		*parent = key.offset;
		ret = 0;
	} else if (key.type == BTRFS_INODE_EXTREF_KEY) {
		size = ubt_item_size(leaf, slot);
		ptr = ubt_item_ptr(leaf, slot);
		if (size < sizeof(struct btrfs_inode_extref) ||
		    size - sizeof(struct btrfs_inode_extref) <
			    get_le16(ptr + offsetof(struct btrfs_inode_extref, name_len))) {
			ubt_inode_corrupt(root, ino, &key, "inode extref of %u bytes overrun by its name", size);
			ret = -EUCLEAN;
			goto out;
		}
		*parent = get_le64(ptr + offsetof(struct btrfs_inode_extref, parent_objectid));
		ret = 0;
	} else {
		ret = -ENOENT;
	}
out:
	ubt_path_release(&path);
	return ret;
}
