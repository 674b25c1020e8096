/*
 * direct.c — direct IO (btrfs's iomap direct path, in userspace). Sector-aligned writes bypass the
 * page cache: the range's cached data is written back and its pages dropped, space is reserved up
 * front, each allocated disk extent gets an ordered extent without pages that the writer fills
 * from its own buffer (checksums taken from the bytes written), and it completes through the
 * buffered path's finish (file extent, data reference and checksums in one transaction, old
 * extents dropped, on-disk i_size only over finished ranges). Direct reads write back the range's
 * dirty pages and read from disk, checksums verified. Unaligned requests go buffered, as btrfs.
 *
 * Seed 003 (invariant 4): a source that runs short part-way is submitted as far as it goes (whole
 * sectors) and retried with the rest into the *same* ordered extent, so every submitted byte ends
 * in a completed ordered extent and the written prefix never reads back as a hole; a zero-length
 * remainder cancels the rest (its disk space freed, no file extent for it, the returned count is
 * what reached the disk). An I/O error fails the whole ordered extent: no file extent, the old data
 * stays, the error goes to the writer and to the next fsync. The writer finishes its ordered
 * extent itself on every path, so nothing waits for it forever (invariant 5).
 *
 * Hook points (point_arg: struct ubt_direct_step): "direct.copy" before bytes are taken from the
 * source (a hook may lower ->avail, the bytes the source yields now, or fail as a fault would),
 * "direct.submit" before bytes are written (FAIL injects an I/O error).
 */
#include <inttypes.h>
#include <stdlib.h>

#include "../alloc/alloc.h"
#include "../codec/csum.h"
#include "../transaction/transaction.h"
#include "../util/hooks.h"
#include "../util/messages.h"
#include "write-internal.h"

#define PS ((u64)UBT_PAGE_SIZE)

/* Metadata items the finish of @bytes needs (writeback.c's estimate: extents, csums, inode). */
static u64 items_for(u64 bytes)
{
	return 3 + bytes / (1 << 20);
}

/* ---- writes ---- */

/* A new ordered extent for file range [pos, pos + *n) on a freshly allocated extent (*n may shrink). */
static int direct_oe_create(struct ubt_inode_state *st, u64 pos, u64 *n, struct ubt_ordered_extent **out)
{
	struct ubt_fs_info *fs_info = st->wi->fs_info;
	struct ubt_ordered_extent *oe;
	u64 bytenr = 0;
	int ret;

	/* Free space may be in pieces: take a smaller extent when a large one is not there. */
	for (;;) {
		ret = ubt_write_alloc_data(fs_info, *n, &bytenr);
		if (ret != -ENOSPC || *n == PS)
			break;
		*n = ubt_max(PS, ALIGN_DOWN(*n / 2, PS));
	}
	if (ret)
		return ret;
	oe = calloc(1, sizeof(*oe));
	if (!oe)
		goto nomem;
	oe->st = st;
	oe->file_offset = pos;
	oe->num_bytes = oe->ram_bytes = oe->disk_num_bytes = *n;
	oe->disk_bytenr = bytenr;
	oe->datasum = !(st->inode_flags & BTRFS_INODE_NODATASUM);
	if (oe->datasum) {
		oe->csums = malloc((size_t)(*n / fs_info->sectorsize * fs_info->csum_size));
		if (!oe->csums)
			goto nomem;
	}
	*out = oe;
	return 0;
nomem:
	if (oe)
		free(oe);
	ubt_write_free_data(fs_info, bytenr, *n);
	return -ENOMEM;
}

/*
 * Fill @oe from @src: ask the source for what it yields now ("direct.copy"), checksum and write
 * the whole sectors of it, and retry with the rest (the source faulted in) until the extent is
 * full or a retry yields nothing more either (no progress: the zero-length remainder). *@written:
 * the bytes that reached the disk. Returns 0, the source's fault when nothing was written, or the
 * I/O error.
 */
static int direct_fill(struct ubt_ordered_extent *oe, const u8 *src, u64 *written)
{
	struct ubt_fs_info *fs_info = oe->st->wi->fs_info;
	const u64 ss = fs_info->sectorsize;
	bool stalled = false;
	u64 done = 0;
	int ret = 0;

	for (unsigned attempt = 0; done < oe->num_bytes; attempt++) {
		struct ubt_direct_step step = {
			.file_offset = oe->file_offset + done,
			.len = oe->num_bytes - done,
			.avail = oe->num_bytes - done,
			.attempt = attempt,
		};
		int fault = ubt_hook_point("direct.copy", &step);
		u64 sub = fault ? 0 : ALIGN_DOWN(ubt_min(step.avail, step.len), ss);

		if (!sub) {
			if (!stalled) {
				stalled = true; /* fault the source in and retry once without progress */
				continue;
			}
			/* Nothing (whole) more from the source: the rest is cancelled. */
			if (!done)
				ret = fault ? fault : -EFAULT;
			break;
		}
		stalled = false;
		for (u64 i = 0; oe->datasum && i < sub / ss; i++) {
			u8 c[UBT_CSUM_MAX];

			ubt_csum(fs_info->csum_type, src + done + i * ss, ss, c);
			memcpy(oe->csums + (done / ss + i) * fs_info->csum_size, c, fs_info->csum_size);
		}
		step.len = sub;
		ret = ubt_hook_point("direct.submit", &step);
		if (!ret)
			ret = ubt_write_logical(fs_info, oe->disk_bytenr + done, src + done, (size_t)sub);
		if (ret) {
			oe->error = ret;
			break;
		}
		done += sub;
	}
	*written = oe->error ? 0 : done;
	return ret;
}

/*
 * Complete @oe, published on @st, after its I/O: cancel the part the source did not fill, insert
 * what was written through the buffered path's finish, or give the whole disk extent back on an
 * error; then unpublish and free it. Called with the io lock held. Returns 0 or the error.
 */
static int direct_finish(struct ubt_ordered_extent *oe, u64 written, int ret)
{
	struct ubt_inode_state *st = oe->st;
	struct ubt_fs_info *fs_info = st->wi->fs_info;
	struct ubt_ordered_extent **pp;
	u64 old_size;

	if (!oe->error && written < oe->num_bytes) {
		/* The cancelled tail: its disk space goes back, no file extent will cover it. */
		ubt_write_free_data(fs_info, oe->disk_bytenr + written, oe->num_bytes - written);
		oe->num_bytes = oe->ram_bytes = oe->disk_num_bytes = written;
		if (!written)
			oe->disk_bytenr = 0;
	}
	pthread_mutex_lock(&st->lock);
	old_size = st->i_size;
	if (!oe->error && written)
		st->i_size = ubt_max(st->i_size, oe->file_offset + written);
	pthread_mutex_unlock(&st->lock);
	if (!oe->error && written) {
		ret = ubt_hook_point("write.finish.before", oe);
		if (!ret)
			ret = ubt_ordered_finish(oe);
	}
	if (oe->error || (written && ret)) {
		ubt_err("root %" PRIu64 " ino %" PRIu64 ": direct write of [%" PRIu64 ", +%" PRIu64 ") failed: %s; "
			"the file keeps its previous data there",
			st->root->objectid, st->ino, oe->file_offset, oe->num_bytes, strerror(-ret));
		ubt_ordered_fail(oe);
	}
	pthread_mutex_lock(&st->lock);
	if (ret && written && !oe->error)
		st->i_size = old_size; /* nothing of it reached the tree */
	for (pp = &st->ordered; *pp && *pp != oe; pp = &(*pp)->next)
		;
	if (*pp)
		*pp = oe->next;
	st->nr_ordered--;
	/* As a failed buffered extent: the next fsync reports it too. */
	if (ret && (oe->error || written) && !st->error)
		st->error = ret;
	if (!st->nr_ordered && !st->delalloc_bytes && st->disk_i_size == st->i_size)
		st->times_dirty = false;
	pthread_cond_broadcast(&st->cond);
	pthread_mutex_unlock(&st->lock);
	if (oe->meta_items)
		ubt_release_space(fs_info, oe->meta_items, 0);
	free(oe->csums);
	free(oe);
	return ret;
}

ssize_t ubt_write_direct(struct ubt_fs_info *fs_info, struct ubt_root *root, u64 ino,
			 const struct btrfs_inode_item *ii, const void *buf, size_t len, u64 off, bool append)
{
	const u64 ss = fs_info->sectorsize;
	struct ubt_inode_state *st;
	u64 items, items_left, data_left, i_size, done = 0;
	bool retried = false;
	int ret = 0;

	if (!len)
		return 0;
	if (!append && (!IS_ALIGNED(off, ss) || !IS_ALIGNED((u64)len, ss)))
		return ubt_write_buffered(fs_info, root, ino, ii, buf, len, off, 0);
	st = ubt_inode_state_get(fs_info, root, ino);
	if (!st)
		return -ENOMEM;
	/* Cached data of the range goes to disk first, fixups included (not under the io lock). */
	if (!append)
		ubt_settle_range(st, off, off + len - 1, false);
	pthread_mutex_lock(&st->io_mutex);
	pthread_mutex_lock(&st->lock);
	i_size = st->i_size;
	pthread_mutex_unlock(&st->lock);
	if (append)
		off = i_size;
	/* Unaligned, or past an EOF in mid-sector (whose tail must read as zeros): buffered, as btrfs. */
	if (!IS_ALIGNED(off, ss) || !IS_ALIGNED((u64)len, ss) || (off > i_size && !IS_ALIGNED(i_size, ss))) {
		pthread_mutex_unlock(&st->io_mutex);
		ubt_inode_state_put(st);
		return ubt_write_buffered(fs_info, root, ino, ii, buf, len, off, append ? UBT_WB_APPEND : 0);
	}
	/* Reserve first: ENOSPC goes to the writer before anything changes (invariant 7). */
	items = items_left = items_for(len);
	data_left = len;
	for (;;) {
		ret = ubt_reserve_space(fs_info, items, len);
		if (ret != -ENOSPC || retried)
			break;
		retried = true;
		ubt_write_flush_all(fs_info);
		ubt_commit_if_dirty(fs_info);
	}
	if (ret)
		goto out_unlock;
	/* Under the io lock nothing new is cached: write back what is, wait, drop the range's pages. */
	ubt_writeback_range(st, off, off + len - 1);
	ubt_wait_ordered_range(st, off, off + len - 1);
	ubt_drop_cached_range(st, off, off + len - 1);
	pthread_mutex_lock(&st->lock);
	ubt_timespec_now(&st->mtime);
	st->ctime = st->mtime;
	st->times_dirty = true;
	pthread_mutex_unlock(&st->lock);

	while (done < len) {
		u64 n = ubt_min((u64)len - done, UBT_MAX_EXTENT_SIZE), written = 0;
		struct ubt_ordered_extent *oe = NULL;
		bool full;

		ret = direct_oe_create(st, off + done, &n, &oe);
		if (ret)
			break;
		/* The allocation holds the data space now; the finish keeps its share of the metadata. */
		ubt_release_space(fs_info, 0, n);
		data_left -= n;
		oe->meta_items = ubt_min(items_left, items_for(n));
		items_left -= oe->meta_items;
		/* Published: flushes, fsync and truncate wait for it; the on-disk size stays below it. */
		pthread_mutex_lock(&st->lock);
		oe->next = st->ordered;
		st->ordered = oe;
		st->nr_ordered++;
		pthread_mutex_unlock(&st->lock);
		ret = direct_fill(oe, (const u8 *)buf + done, &written);
		full = written == oe->num_bytes;
		ret = direct_finish(oe, written, ret);
		if (ret || !written)
			break;
		done += written;
		if (!full)
			break; /* the source ran short: a short write */
	}
	ubt_release_space(fs_info, items_left, data_left);
	/* Pages cached meanwhile (clean ones) would hide what was written: drop them. */
	ubt_invalidate_mapping_pages(st->mapping, off / PS, (off + len - 1) / PS);
out_unlock:
	pthread_mutex_unlock(&st->io_mutex);
	ubt_inode_state_put(st);
	if (done)
		return (ssize_t)done;
	return ret ? ret : -EFAULT;
}

/* ---- reads ---- */

/* Read [off, off + len) from disk as the file is there, its size @size; short at EOF. */
static ssize_t disk_read(struct ubt_root *root, u64 ino, const struct btrfs_inode_item *ii, u64 size, u8 *buf,
			 u64 len, u64 off)
{
	struct btrfs_inode_item tmp = *ii;

	if (off >= size)
		return 0;
	len = ubt_min(len, size - off);
	tmp.size = htole64(size);
	return ubt_file_read(root, ino, &tmp, buf, (size_t)len, off);
}

ssize_t ubt_read_direct(struct ubt_fs_info *fs_info, struct ubt_root *root, u64 ino, void *buf, size_t len, u64 off)
{
	const u64 ss = fs_info->sectorsize;
	struct ubt_inode_state *st;
	struct btrfs_inode_item ii;
	bool clean = true;
	ssize_t ret;
	u64 size;

	if (!len)
		return 0;
	st = ubt_inode_state_find(fs_info, root, ino);
	/* Dirty cached data of the range reaches the disk first (filemap_write_and_wait_range). */
	if (st)
		clean = ubt_settle_range(st, off, off + len - 1, false);
	ubt_tree_read_lock(fs_info);
	ret = ubt_inode_read(root, ino, &ii);
	if (ret)
		goto out;
	if (!IS_ALIGNED(off, ss) || !IS_ALIGNED((u64)len, ss) || !clean) {
		/* Unaligned, or dirty pages writeback could not take: read through the cache. */
		ret = ubt_write_read(fs_info, root, ino, &ii, buf, len, off);
		goto out;
	}
	size = le64toh(ii.size);
	if (st) {
		pthread_mutex_lock(&st->lock);
		size = st->i_size; /* cached writes elsewhere in the file may have grown it */
		pthread_mutex_unlock(&st->lock);
	}
	ret = disk_read(root, ino, &ii, size, buf, len, off);
	if (ret == -EIO && len > ss) {
		/* Like a disk: what precedes the first bad sector; EIO only for that sector itself. */
		u64 done = 0;

		while (done < len) {
			ssize_t n = disk_read(root, ino, &ii, size, (u8 *)buf + done, ss, off + done);

			if (n <= 0)
				break;
			done += (u64)n;
			if ((u64)n < ss)
				break;
		}
		ret = done ? (ssize_t)done : -EIO;
	}
out:
	ubt_tree_read_unlock(fs_info);
	ubt_inode_state_put(st);
	return ret;
}
