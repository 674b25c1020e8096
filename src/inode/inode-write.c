/*
 * inode-write.c — inode items and back references on the write side: size limits from the leaf
 * geometry, generic item insert/extend/cut helpers, objectid allocation, INODE_ITEM creation and
 * update, INODE_REF/INODE_EXTREF add and remove, and deleting every item of an inode.
 */
#include "inode-write.h"

#include <inttypes.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <time.h>

#include "../alloc/alloc.h"
#include "../codec/csum.h"
#include "../ctree/disk-io.h"
#include "../util/messages.h"
#include "inode-internal.h"

u32 ubt_max_item_size(const struct ubt_fs_info *fs_info)
{
	return fs_info->nodesize - (u32)sizeof(struct btrfs_header) - (u32)sizeof(struct btrfs_item);
}

u32 ubt_max_inline_size(const struct ubt_fs_info *fs_info)
{
	u32 item = ubt_max_item_size(fs_info) - (u32)BTRFS_FILE_EXTENT_INLINE_DATA_START;

	return ubt_min(item, fs_info->sectorsize - 1);
}

u32 ubt_max_xattr_size(const struct ubt_fs_info *fs_info)
{
	return ubt_max_item_size(fs_info) - (u32)sizeof(struct btrfs_dir_item);
}

int ubt_item_insert_or_extend(struct ubt_trans_handle *h, struct ubt_root *root, const struct ubt_key *key,
			      const void *data, u32 size, u32 max_size)
{
	struct ubt_path path;
	struct extent_buffer *leaf;
	u32 old;
	int ret;

	ubt_path_init(&path);
	/* Refuse an overflow before the write search splits leaves for nothing. */
	ret = ubt_search_slot(root, key, &path);
	if (ret < 0)
		goto out;
	if (ret == 0 && ubt_item_size(ubt_path_leaf(&path), ubt_path_slot(&path)) + size > max_size) {
		ret = -EOVERFLOW;
		goto out;
	}
	ret = ubt_search_slot_write(h, root, key, &path, (int)(size + sizeof(struct btrfs_item)));
	if (ret < 0)
		goto out;
	if (ret > 0) {
		ret = ubt_insert_empty_items(h, root, &path, key, &size, 1);
		if (ret < 0)
			goto out;
		leaf = ubt_path_leaf(&path);
		memcpy(ubt_item_ptr(leaf, ubt_path_slot(&path)), data, size);
		ubt_mark_buffer_dirty(h, leaf);
		goto out;
	}
	leaf = ubt_path_leaf(&path);
	old = ubt_item_size(leaf, ubt_path_slot(&path));
	if (old + size > max_size) {
		ret = -EOVERFLOW;
		goto out;
	}
	ubt_extend_item(h, &path, size);
	memcpy((u8 *)ubt_item_ptr(leaf, ubt_path_slot(&path)) + old, data, size);
	ubt_mark_buffer_dirty(h, leaf);
out:
	ubt_path_release(&path);
	return ret;
}

int ubt_item_cut(struct ubt_trans_handle *h, struct ubt_root *root, const struct ubt_key *key, u32 off, u32 len)
{
	struct ubt_path path;
	struct extent_buffer *leaf;
	u32 size;
	u8 *ptr;
	int slot;
	int ret;

	ubt_path_init(&path);
	ret = ubt_search_slot_write(h, root, key, &path, -1);
	if (ret > 0)
		ret = -ENOENT;
	if (ret < 0)
		goto out;
	leaf = ubt_path_leaf(&path);
	slot = ubt_path_slot(&path);
	size = ubt_item_size(leaf, slot);
	if (off > size || len > size - off) {
		ret = -EUCLEAN;
		goto out;
	}
	if (len == size) {
		ret = ubt_del_items(h, root, &path, slot, 1);
		goto out;
	}
	ptr = ubt_item_ptr(leaf, slot);
	memmove(ptr + off, ptr + off + len, size - off - len);
	ubt_truncate_item(h, &path, size - len, true);
	ubt_mark_buffer_dirty(h, leaf);
out:
	ubt_path_release(&path);
	return ret;
}

int ubt_item_delete(struct ubt_trans_handle *h, struct ubt_root *root, const struct ubt_key *key)
{
	struct ubt_path path;
	int ret;

	ubt_path_init(&path);
	ret = ubt_search_slot_write(h, root, key, &path, -1);
	if (ret > 0)
		ret = -ENOENT;
	if (ret == 0)
		ret = ubt_del_items(h, root, &path, ubt_path_slot(&path), 1);
	ubt_path_release(&path);
	return ret;
}

void ubt_timespec_now(struct btrfs_timespec *t)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	put_le64(&t->sec, (u64)ts.tv_sec);
	put_le32(&t->nsec, (u32)ts.tv_nsec);
}

u8 ubt_mode_to_ftype(u32 mode)
{
	switch (mode & S_IFMT) {
	case S_IFREG:
		return BTRFS_FT_REG_FILE;
	case S_IFDIR:
		return BTRFS_FT_DIR;
	case S_IFCHR:
		return BTRFS_FT_CHRDEV;
	case S_IFBLK:
		return BTRFS_FT_BLKDEV;
	case S_IFIFO:
		return BTRFS_FT_FIFO;
	case S_IFSOCK:
		return BTRFS_FT_SOCK;
	case S_IFLNK:
		return BTRFS_FT_SYMLINK;
	default:
		return BTRFS_FT_UNKNOWN;
	}
}

int ubt_inode_next_objectid(struct ubt_root *root, u64 *objectid)
{
	/*
	 * As btrfs: count up from the highest number the tree held when the root was loaded. A
	 * number freed by a deletion is not handed out again while mounted — the caches (the page
	 * cache's, FUSE's) may still know it as the deleted inode.
	 */
	if (!root->highest_objectid) {
		int ret = ubt_root_load_highest_objectid(root);

		if (ret)
			return ret;
	}
	if (root->highest_objectid >= BTRFS_LAST_FREE_OBJECTID - 1)
		return -ENOSPC;
	*objectid = ++root->highest_objectid;
	return 0;
}

void ubt_inode_init(struct ubt_trans_handle *h, struct btrfs_inode_item *ii, u32 mode, u64 rdev, u32 uid, u32 gid)
{
	memset(ii, 0, sizeof(*ii));
	put_le64(&ii->generation, h->transid);
	put_le64(&ii->transid, h->transid);
	put_le32(&ii->nlink, 1);
	put_le32(&ii->uid, uid);
	put_le32(&ii->gid, gid);
	put_le32(&ii->mode, mode);
	put_le64(&ii->rdev, rdev);
	put_le64(&ii->sequence, 1);
	ubt_timespec_now(&ii->atime);
	ii->ctime = ii->mtime = ii->otime = ii->atime;
}

int ubt_inode_insert(struct ubt_trans_handle *h, struct ubt_root *root, u64 ino, const struct btrfs_inode_item *ii)
{
	struct ubt_key key = { .objectid = ino, .type = BTRFS_INODE_ITEM_KEY, .offset = 0 };

	return ubt_insert_item(h, root, &key, ii, sizeof(*ii));
}

void ubt_inode_touch(struct btrfs_inode_item *ii, bool mtime_too)
{
	ubt_timespec_now(&ii->ctime);
	if (mtime_too)
		ii->mtime = ii->ctime;
}

int ubt_inode_update(struct ubt_trans_handle *h, struct ubt_root *root, u64 ino, struct btrfs_inode_item *ii)
{
	struct ubt_key key = { .objectid = ino, .type = BTRFS_INODE_ITEM_KEY, .offset = 0 };
	struct ubt_path path;
	struct extent_buffer *leaf;
	int ret;

	put_le64(&ii->transid, h->transid);
	put_le64(&ii->sequence, get_le64(&ii->sequence) + 1);
	ubt_path_init(&path);
	ret = ubt_search_slot_write(h, root, &key, &path, 0);
	if (ret > 0) {
		ubt_inode_corrupt(root, ino, &key, "inode item vanished during an update");
		ret = -EUCLEAN;
	}
	if (ret < 0)
		goto out;
	leaf = ubt_path_leaf(&path);
	if (ubt_item_size(leaf, ubt_path_slot(&path)) < sizeof(*ii)) {
		ubt_inode_corrupt(root, ino, &key, "inode item of %u bytes", ubt_item_size(leaf, ubt_path_slot(&path)));
		ret = -EUCLEAN;
		goto out;
	}
	memcpy(ubt_item_ptr(leaf, ubt_path_slot(&path)), ii, sizeof(*ii));
	ubt_mark_buffer_dirty(h, leaf);
out:
	ubt_path_release(&path);
	return ret;
}

/*
 * Find (@parent, @name) in the ref item @key (INODE_REF: packed btrfs_inode_ref; INODE_EXTREF:
 * packed btrfs_inode_extref). Returns 0 with the entry's byte range and index, 1 if absent, <0.
 */
static int find_ref(struct ubt_root *root, u64 ino, const struct ubt_key *key, u64 parent, const char *name,
		    size_t len, u32 *off, u32 *entry_len, u64 *index)
{
	const bool ext = key->type == BTRFS_INODE_EXTREF_KEY;
	const u32 hdr = ext ? sizeof(struct btrfs_inode_extref) : sizeof(struct btrfs_inode_ref);
	struct ubt_path path;
	struct extent_buffer *leaf;
	const u8 *ptr;
	u32 size, cur = 0;
	int ret;

	ubt_path_init(&path);
	ret = ubt_search_slot(root, key, &path);
	if (ret != 0)
		goto out;
	leaf = ubt_path_leaf(&path);
	ptr = ubt_item_ptr(leaf, ubt_path_slot(&path));
	size = ubt_item_size(leaf, ubt_path_slot(&path));
	ret = 1;
	while (cur < size) {
		const u8 *e = ptr + cur;
		u16 nlen;
		u64 p = parent;

		if (size - cur < hdr) {
			ubt_inode_corrupt(root, ino, key, "ref entry header at %u overruns item of %u bytes", cur, size);
			ret = -EUCLEAN;
			goto out;
		}
		if (ext) {
			nlen = get_le16(e + offsetof(struct btrfs_inode_extref, name_len));
			p = get_le64(e + offsetof(struct btrfs_inode_extref, parent_objectid));
		} else {
			nlen = get_le16(e + offsetof(struct btrfs_inode_ref, name_len));
		}
		if (size - cur - hdr < nlen) {
			ubt_inode_corrupt(root, ino, key, "ref entry at %u overruns item of %u bytes", cur, size);
			ret = -EUCLEAN;
			goto out;
		}
		if (p == parent && nlen == len && memcmp(e + hdr, name, len) == 0) {
			*off = cur;
			*entry_len = hdr + nlen;
			*index = get_le64(e + (ext ? offsetof(struct btrfs_inode_extref, index)
						   : offsetof(struct btrfs_inode_ref, index)));
			ret = 0;
			goto out;
		}
		cur += hdr + nlen;
	}
out:
	ubt_path_release(&path);
	return ret;
}

int ubt_inode_add_ref(struct ubt_trans_handle *h, struct ubt_root *root, u64 ino, u64 parent, const char *name,
		      size_t len, u64 index)
{
	struct ubt_fs_info *fs_info = root->fs_info;
	u8 buf[sizeof(struct btrfs_inode_extref) + BTRFS_NAME_LEN];
	struct ubt_key key = { .objectid = ino, .type = BTRFS_INODE_REF_KEY, .offset = parent };
	u32 size;
	int ret;

	put_le64(buf + offsetof(struct btrfs_inode_ref, index), index);
	put_le16(buf + offsetof(struct btrfs_inode_ref, name_len), (u16)len);
	memcpy(buf + sizeof(struct btrfs_inode_ref), name, len);
	size = (u32)(sizeof(struct btrfs_inode_ref) + len);
	ret = ubt_item_insert_or_extend(h, root, &key, buf, size, ubt_max_item_size(fs_info));
	if (ret != -EOVERFLOW)
		return ret;
	/* The ref item for this parent is full: btrfs continues in INODE_EXTREF items. */
	if (!(fs_info->incompat & BTRFS_FEATURE_INCOMPAT_EXTENDED_IREF))
		return -EMLINK;
	key.type = BTRFS_INODE_EXTREF_KEY;
	key.offset = ubt_extref_hash(parent, name, len);
	put_le64(buf + offsetof(struct btrfs_inode_extref, parent_objectid), parent);
	put_le64(buf + offsetof(struct btrfs_inode_extref, index), index);
	put_le16(buf + offsetof(struct btrfs_inode_extref, name_len), (u16)len);
	memcpy(buf + sizeof(struct btrfs_inode_extref), name, len);
	size = (u32)(sizeof(struct btrfs_inode_extref) + len);
	ret = ubt_item_insert_or_extend(h, root, &key, buf, size, ubt_max_item_size(fs_info));
	return ret == -EOVERFLOW ? -EMLINK : ret;
}

int ubt_inode_del_ref(struct ubt_trans_handle *h, struct ubt_root *root, u64 ino, u64 parent, const char *name,
		      size_t len, u64 *index)
{
	struct ubt_key key = { .objectid = ino, .type = BTRFS_INODE_REF_KEY, .offset = parent };
	u32 off = 0, elen = 0;
	int ret;

	ret = find_ref(root, ino, &key, parent, name, len, &off, &elen, index);
	if (ret == 1) {
		key.type = BTRFS_INODE_EXTREF_KEY;
		key.offset = ubt_extref_hash(parent, name, len);
		ret = find_ref(root, ino, &key, parent, name, len, &off, &elen, index);
	}
	if (ret == 1) {
		ubt_err("root %" PRIu64 " ino %" PRIu64 ": no back reference for name '%.*s' in dir %" PRIu64,
			root->objectid, ino, (int)len, name, parent);
		return -EUCLEAN;
	}
	if (ret < 0)
		return ret;
	return ubt_item_cut(h, root, &key, off, elen);
}

int ubt_inode_evict(struct ubt_trans_handle *h, struct ubt_root *root, u64 ino)
{
	struct ubt_key key = { .objectid = ino, .type = 0, .offset = 0 };
	struct ubt_path path;
	struct extent_buffer *leaf;
	int slot, nr;
	u32 n;
	int ret;

	/* File extents first: they carry data references. */
	ret = ubt_file_drop_extents(h, root, ino, 0, (u64)-1, NULL);
	if (ret < 0)
		return ret;
	ubt_path_init(&path);
	for (;;) {
		key.objectid = ino;
		key.type = 0;
		key.offset = 0;
		ret = ubt_search_ge(root, &key, &path);
		if (ret > 0) {
			ret = 0;
			break;
		}
		if (ret < 0)
			break;
		ubt_item_key(ubt_path_leaf(&path), ubt_path_slot(&path), &key);
		ubt_path_release(&path);
		if (key.objectid != ino)
			break;
		ret = ubt_search_slot_write(h, root, &key, &path, -1);
		if (ret > 0)
			ret = -EUCLEAN;
		if (ret < 0)
			break;
		leaf = ubt_path_leaf(&path);
		slot = ubt_path_slot(&path);
		n = ubt_eb_nritems(leaf);
		for (nr = 0; slot + nr < (int)n; nr++) {
			struct ubt_key k;

			ubt_item_key(leaf, slot + nr, &k);
			if (k.objectid != ino)
				break;
		}
		ret = ubt_del_items(h, root, &path, slot, nr);
		ubt_path_release(&path);
		if (ret < 0)
			break;
	}
	ubt_path_release(&path);
	return ret;
}
