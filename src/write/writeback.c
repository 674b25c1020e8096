/*
 * writeback.c — buffered writes, reads through the cache, and writeback: delalloc ranges become
 * ordered extents (pages to writeback, disk extent allocated, data copied, compressed and
 * checksummed), the io pool writes them, and the endio pool finishes each one in a transaction —
 * old extents dropped, the new file extent item, its data reference and checksums inserted, the
 * inode's on-disk size advanced only over finished ranges — before its pages leave writeback.
 *
 * Ordered extent states: CREATED [cow_range] -> SUBMITTED [io_fn] -> FINISHED or FAILED [finish_fn]
 * -> freed. A failed one inserts nothing (the old data stays), frees its disk extent, and records
 * the error on the file for the next flush/fsync; it still finishes, so no waiter hangs.
 *
 * Hook points: "write.io.before_submit" (point_arg: the ordered extent; FAIL injects an I/O error),
 * "write.finish.before" (point_arg: the ordered extent).
 */
#include <inttypes.h>
#include <stdlib.h>
#include <unistd.h>

#include "../alloc/alloc.h"
#include "../codec/compress.h"
#include "../codec/csum.h"
#include "../transaction/transaction.h"
#include "../util/hooks.h"
#include "../util/messages.h"
#include "write-internal.h"

#define PS ((u64)UBT_PAGE_SIZE)
#define UBT_MAX_COMPRESSED_CHUNK (128 * 1024ULL)
#define UBT_WRITEBACK_MAX (128ULL * 1024 * 1024)

/*
 * Metadata items a delalloc or ordered range needs when it is finished: its file extent items
 * (btrfs counts outstanding extents; contiguous delalloc is one), checksum items and the inode.
 * Assume one extent per MiB so that fragmented writes are covered too.
 */
static u64 items_for(u64 bytes)
{
	return 3 + bytes / (1 << 20);
}

/* ---- reads ---- */

/* Read [off, off + len) from the trees as the file is on disk, zeros past @size. */
static int disk_read(struct ubt_root *root, u64 ino, const struct btrfs_inode_item *ii, u64 size, u8 *buf, u64 len,
		     u64 off)
{
	struct btrfs_inode_item tmp = *ii;
	ssize_t n;

	memset(buf, 0, len);
	if (off >= size)
		return 0;
	tmp.size = htole64(size);
	n = ubt_file_read(root, ino, &tmp, buf, (size_t)ubt_min(len, size - off), off);
	return n < 0 ? (int)n : 0;
}

/*
 * Read pages [pstart, pstart + cover) from disk into the cache (they are absent: the disk has
 * their current data) and copy bytes [in, in + n) of them to @out. Only under the file's io lock,
 * taken without waiting: with it held no write, truncate or hole punch of this file is under way,
 * so no stale page can be cached. Returns 1 when done, 0 when it did not apply, <0 on error.
 */
static int read_into_cache(struct ubt_inode_state *st, struct ubt_root *root, u64 ino,
			   const struct btrfs_inode_item *ii, u64 size, u64 pstart, u64 cover, u64 in, u64 n, u8 *out)
{
	u8 *tmp;
	int ret;

	if (pthread_mutex_trylock(&st->io_mutex))
		return 0;
	tmp = malloc((size_t)cover);
	if (!tmp) {
		pthread_mutex_unlock(&st->io_mutex);
		return 0;
	}
	ret = disk_read(root, ino, ii, size, tmp, cover, pstart);
	if (!ret) {
		memcpy(out, tmp + in, (size_t)n);
		for (u64 i = 0; i < cover / PS; i++)
			if (ubt_page_cache_add_clean(st->mapping, pstart / PS + i, tmp + i * PS) == -ENOMEM)
				break;
		ret = 1;
	}
	pthread_mutex_unlock(&st->io_mutex);
	free(tmp);
	return ret;
}

ssize_t ubt_write_read(struct ubt_fs_info *fs_info, struct ubt_root *root, u64 ino,
		       const struct btrfs_inode_item *ii, void *buf, size_t len, u64 off)
{
	struct ubt_inode_state *st = ubt_inode_state_get(fs_info, root, ino);
	u8 *out = buf;
	u64 size, done = 0;
	int ret = 0;

	if (!st)
		return ubt_file_read(root, ino, ii, buf, len, off);
	pthread_mutex_lock(&st->lock);
	size = st->i_size;
	pthread_mutex_unlock(&st->lock);
	if (off >= size)
		goto out;
	len = (size_t)ubt_min((u64)len, size - off);
	while (done < len) {
		u64 pos = off + done, idx = pos / PS, in = pos % PS;
		u64 n = ubt_min(PS - in, (u64)len - done);
		struct ubt_page *page = ubt_find_get_page(st->mapping, idx);

		if (page && PageUptodate(page)) {
			memcpy(out + done, (u8 *)ubt_page_data(page) + in, n);
		} else {
			/* Not cached: a run of uncached pages, read from disk at once. */
			u64 run = n, pstart = pos - in, cover, ra;

			while (done + run < len && run < (1 << 20)) {
				struct ubt_page *p2 = ubt_find_get_page(st->mapping, (pos + run) / PS);
				bool cached = p2 && PageUptodate(p2);

				if (p2)
					ubt_put_page(p2);
				if (cached)
					break;
				run = ubt_min(run + PS, (u64)len - done);
			}
			n = run;
			/* Readahead: a sequential reader gets a growing window cached beyond its request. */
			ra = (u64)ubt_page_cache_readahead_hint(st->mapping, idx) * PS;
			cover = ubt_max(ALIGN_UP(in + n, PS), ra);
			cover = ubt_min(cover, ALIGN_UP(size, PS) - pstart);
			ret = page ? 0 : read_into_cache(st, root, ino, ii, size, pstart, cover, in, n, out + done);
			if (ret == 0)
				ret = disk_read(root, ino, ii, size, out + done, n, pos);
			else if (ret > 0)
				ret = 0;
		}
		if (page)
			ubt_put_page(page);
		if (ret)
			break;
		done += n;
	}
out:
	ubt_inode_state_put(st);
	if (ret && !done)
		return ret;
	return (ssize_t)done;
}

/* ---- buffered writes ---- */

/*
 * Make page @idx uptodate (reading what the write does not cover from disk, zeros past @i_size),
 * copy [from, to) of it from @src (none when @src is NULL), and dirty it.
 */
static int fill_page(struct ubt_fs_info *fs_info, struct ubt_inode_state *st, struct ubt_root *root, u64 ino,
		     const struct btrfs_inode_item *ii, u64 i_size, u64 idx, u64 from, u64 to, const u8 *src)
{
	struct ubt_page *page = ubt_find_or_create_page(st->mapping, idx);
	u64 pstart = idx * PS;
	int ret = 0;

	if (IS_ERR(page))
		return (int)PTR_ERR(page);
	/* Stable pages: data under writeback is not changed until its ordered extent finished. */
	ubt_wait_on_page_writeback(page);
	if (!PageUptodate(page)) {
		if (!src || from > 0 || to < PS) {
			ubt_tree_read_lock(fs_info);
			ret = disk_read(root, ino, ii, i_size, ubt_page_data(page), PS, pstart);
			ubt_tree_read_unlock(fs_info);
		} else {
			memset(ubt_page_data(page), 0, PS);
		}
	} else if (!src && i_size > pstart && i_size < pstart + PS) {
		/* The cached EOF page: whatever lies past EOF in it reads as zeros from now on. */
		memset((u8 *)ubt_page_data(page) + (i_size - pstart), 0, PS - (i_size - pstart));
	}
	if (!ret) {
		if (src)
			memcpy((u8 *)ubt_page_data(page) + from, src, to - from);
		SetPageUptodate(page);
		ubt_set_page_dirty(page);
	}
	ubt_unlock_page(page);
	ubt_put_page(page);
	return ret;
}

ssize_t ubt_write_buffered(struct ubt_fs_info *fs_info, struct ubt_root *root, u64 ino,
			   const struct btrfs_inode_item *ii, const void *buf, size_t len, u64 off, unsigned flags)
{
	struct ubt_write_info *wi = ubt_wi(fs_info);
	struct ubt_inode_state *st;
	u64 start, end, items, data, already, s, i_size, lo, marked;
	bool retried = false, eof_case, append = flags & UBT_WB_APPEND, unreserved = false;
	int ret = 0;

	if (!len)
		return 0;
	st = ubt_inode_state_get(fs_info, root, ino);
	if (!st)
		return -ENOMEM;
	pthread_mutex_lock(&st->io_mutex);
	if (append) {
		pthread_mutex_lock(&st->lock);
		off = st->i_size;
		pthread_mutex_unlock(&st->lock);
	}
	start = ALIGN_DOWN(off, PS);
	end = ALIGN_UP(off + len, PS) - 1;
	data = end - start + 1 + PS; /* + the old EOF page when the write starts past it */
	/* Metadata: enough for all of the file's delalloc after this write, beyond what it holds. */
	pthread_mutex_lock(&st->lock);
	items = items_for(st->delalloc_bytes + data);
	items = items > st->meta_items ? items - st->meta_items : 0;
	pthread_mutex_unlock(&st->lock);
	/* Reserve first: ENOSPC goes to the writer, never to writeback (invariant 7). */
	for (;;) {
		ret = ubt_reserve_space(fs_info, items, data);
		if (ret != -ENOSPC || retried)
			break;
		/* Space may come back once cached data is written and freed space unpinned. */
		retried = true;
		ubt_write_flush_all(fs_info);
		ubt_commit_if_dirty(fs_info);
	}
	if (ret == -ENOSPC && (flags & UBT_WB_ACCEPTED)) {
		/* Accepted already: dirty the pages without DELALLOC; the fixup worker reserves. */
		unreserved = true;
		items = data = 0;
		ret = 0;
	}
	if (ret)
		goto out_unlock;

	pthread_mutex_lock(&st->lock);
	i_size = st->i_size;
	pthread_mutex_unlock(&st->lock);
	/*
	 * Writing past EOF: the bytes between the old EOF and the end of its page may still hold old
	 * data on disk (after a truncate); they become zeros now, in the cache, before the size grows.
	 */
	eof_case = off > i_size && (i_size % PS) && ALIGN_DOWN(i_size, PS) < start;
	lo = eof_case ? ALIGN_DOWN(i_size, PS) : start;
	marked = end - start + 1 + (eof_case ? PS : 0);
	ubt_lock_extent(&st->io_tree, lo, end, NULL);
	s = lo;
	already = ubt_count_range_bits(&st->io_tree, &s, end, (u64)-1, UBT_EXTENT_DELALLOC);
	if (eof_case) {
		ret = fill_page(fs_info, st, root, ino, ii, i_size, lo / PS, 0, 0, NULL);
		if (!ret && !unreserved)
			ret = ubt_set_extent_bit(&st->io_tree, lo, lo + PS - 1, UBT_EXTENT_DELALLOC, NULL);
	}
	for (u64 idx = start / PS; !ret && idx <= end / PS; idx++) {
		u64 pstart = idx * PS;
		u64 from = ubt_max(off, pstart), to = ubt_min(off + len, pstart + PS);

		ret = fill_page(fs_info, st, root, ino, ii, i_size, idx, from - pstart, to - pstart,
				(const u8 *)buf + (from - off));
	}
	if (!ret && !unreserved)
		ret = ubt_set_extent_bit(&st->io_tree, start, end, UBT_EXTENT_DELALLOC, NULL);
	if (ret) {
		/*
		 * Out of memory half-way: pages already dirtied keep their delalloc (and reservation)
		 * only where the bit was set; the rest of the reservation goes back.
		 */
		ubt_release_space(fs_info, items, data);
		ubt_unlock_extent(&st->io_tree, lo, end, NULL);
		ubt_err("root %" PRIu64 " ino %" PRIu64 ": buffered write failed: %s", root->objectid, ino,
			strerror(-ret));
		goto out_unlock;
	}
	/* Bytes delalloc already (reserved by an earlier write) and the unused EOF page go back. */
	if (!unreserved && already + (data - marked))
		ubt_release_space(fs_info, 0, already + (data - marked));
	pthread_mutex_lock(&st->lock);
	st->i_size = ubt_max(st->i_size, off + len);
	if (!(flags & UBT_WB_ACCEPTED)) {
		/* Accepted data: the times are its writer's, who set them when it took the write. */
		ubt_timespec_now(&st->mtime);
		st->ctime = st->mtime;
		st->times_dirty = true;
	}
	st->meta_items += items;
	pthread_mutex_unlock(&st->lock);
	ubt_unlock_extent(&st->io_tree, lo, end, NULL);
out_unlock:
	pthread_mutex_unlock(&st->io_mutex);
	if (unreserved && !ret)
		ubt_write_kick_flusher(wi); /* the fixup worker should meet these pages soon */
	if (!ret)
		ubt_page_cache_throttle(wi->cache);
	ubt_inode_state_put(st);
	return ret ? ret : (ssize_t)len;
}

/* ---- ordered extents ---- */

static void oe_free(struct ubt_ordered_extent *oe)
{
	free(oe->data);
	free(oe->csums);
	free(oe->pages);
	free(oe);
}

/* Insert the finished extent into the file (one transaction). */
static int finish_ordered(struct ubt_ordered_extent *oe)
{
	struct ubt_inode_state *st = oe->st;
	struct ubt_fs_info *fs_info = st->wi->fs_info;
	struct ubt_root *root = st->root;
	struct btrfs_inode_item ii;
	struct ubt_trans_handle h;
	u64 nbytes, end = oe->file_offset + oe->num_bytes, new_disk;
	int ret;

	ret = ubt_trans_start(fs_info, &h);
	if (ret)
		return ret;
	ret = ubt_inode_read(root, st->ino, &ii);
	if (ret)
		goto out;
	nbytes = le64toh(ii.nbytes);
	if (oe->is_inline) {
		struct ubt_write_opts plain = { 0 };

		put_le64(&ii.size, 0);
		ret = ubt_file_write(&h, root, st->ino, &ii, oe->data, (size_t)oe->inline_len, 0, &plain);
		if (ret)
			goto out;
		nbytes = le64toh(ii.nbytes);
	} else {
		struct btrfs_file_extent_item fi = { 0 };
		struct ubt_key key = { st->ino, BTRFS_EXTENT_DATA_KEY, oe->file_offset };

		ret = ubt_file_drop_extents(&h, root, st->ino, oe->file_offset, end, &nbytes);
		if (ret)
			goto out;
		if (!(fs_info->incompat & BTRFS_FEATURE_INCOMPAT_NO_HOLES)) {
			/* Without no-holes, the range between the on-disk EOF and this extent needs hole items. */
			u64 from;

			pthread_mutex_lock(&st->lock);
			from = ALIGN_UP(st->disk_i_size, (u64)fs_info->sectorsize);
			pthread_mutex_unlock(&st->lock);
			if (from < oe->file_offset) {
				ret = ubt_file_insert_holes(&h, root, st->ino, from, oe->file_offset - from);
				if (ret)
					goto out;
			}
		}
		fi.generation = htole64(h.transid);
		fi.ram_bytes = htole64(oe->ram_bytes);
		fi.compression = (u8)oe->compress_type;
		fi.type = BTRFS_FILE_EXTENT_REG;
		fi.disk_bytenr = htole64(oe->disk_bytenr);
		fi.disk_num_bytes = htole64(oe->disk_num_bytes);
		fi.offset = 0;
		fi.num_bytes = htole64(oe->num_bytes);
		ret = ubt_insert_item(&h, root, &key, &fi, sizeof(fi));
		if (ret)
			goto out;
		ret = ubt_add_data_ref(&h, oe->disk_bytenr, oe->disk_num_bytes, root->objectid, st->ino,
				       oe->file_offset, 0);
		if (ret)
			goto out;
		if (oe->datasum) {
			ret = ubt_csum_insert_sums(&h, oe->disk_bytenr, oe->csums, oe->disk_num_bytes / fs_info->sectorsize);
			if (ret)
				goto out;
		}
		nbytes += oe->num_bytes;
	}
	put_le64(&ii.nbytes, nbytes);

	/* The on-disk size covers finished ranges only, never one still in flight below it. */
	pthread_mutex_lock(&st->lock);
	oe->finished = true; /* its range is in this transaction: it no longer holds the size back */
	st->done_end = ubt_max(st->done_end, end);
	new_disk = ubt_min(st->i_size, st->done_end);
	for (struct ubt_ordered_extent *o = st->ordered; o; o = o->next)
		if (!o->finished && o->file_offset < new_disk)
			new_disk = o->file_offset;
	new_disk = ubt_max(new_disk, st->disk_i_size);
	if (oe->is_inline)
		new_disk = ubt_max(new_disk, oe->inline_len);
	st->disk_i_size = new_disk;
	put_le64(&ii.size, new_disk);
	if (st->times_dirty) {
		ii.mtime = st->mtime;
		/* A link, rename or xattr change since the write has a later ctime: keep it. */
		if (le64toh(st->ctime.sec) > le64toh(ii.ctime.sec) ||
		    (st->ctime.sec == ii.ctime.sec && le32toh(st->ctime.nsec) > le32toh(ii.ctime.nsec)))
			ii.ctime = st->ctime;
	}
	if (st->flags_dirty) {
		ii.flags = htole64(le64toh(ii.flags) | (st->inode_flags & BTRFS_INODE_NOCOMPRESS));
		st->flags_dirty = false;
	}
	pthread_mutex_unlock(&st->lock);
	ret = ubt_inode_update(&h, root, st->ino, &ii);
out:
	if (ret)
		ubt_trans_abort(&h, ret, "finishing an ordered extent");
	return ubt_trans_end(&h) ?: ret;
}

/* A failed ordered extent gives its disk extent back; nothing of it reaches the tree. */
static void fail_ordered(struct ubt_ordered_extent *oe)
{
	struct ubt_fs_info *fs_info = oe->st->wi->fs_info;
	struct ubt_trans_handle h;

	if (oe->is_inline || !oe->disk_bytenr)
		return;
	if (ubt_trans_start(fs_info, &h))
		return;
	ubt_free_reserved_data_extent(&h, oe->disk_bytenr, oe->disk_num_bytes);
	ubt_trans_end(&h);
}

static void finish_fn(struct ubt_work *work)
{
	struct ubt_ordered_extent *oe = (struct ubt_ordered_extent *)((u8 *)work - offsetof(struct ubt_ordered_extent, finish_work));
	struct ubt_inode_state *st = oe->st;
	struct ubt_ordered_extent **pp;
	int ret = oe->error;

	if (!ret)
		ret = ubt_hook_point("write.finish.before", oe);
	if (!ret)
		ret = finish_ordered(oe);
	if (ret) {
		ubt_err("root %" PRIu64 " ino %" PRIu64 ": writing file range [%" PRIu64 ", +%" PRIu64 ") failed: %s; "
			"the file keeps its previous data there",
			st->root->objectid, st->ino, oe->file_offset, oe->num_bytes, strerror(-ret));
		fail_ordered(oe);
	}
	for (u32 i = 0; i < oe->nr_pages; i++) {
		ubt_end_page_writeback(oe->pages[i], ret);
		ubt_put_page(oe->pages[i]);
	}
	pthread_mutex_lock(&st->lock);
	for (pp = &st->ordered; *pp && *pp != oe; pp = &(*pp)->next)
		;
	if (*pp)
		*pp = oe->next;
	st->nr_ordered--;
	if (ret && !st->error)
		st->error = ret;
	if (!st->nr_ordered && !st->delalloc_bytes) {
		if (st->disk_i_size == st->i_size)
			st->times_dirty = false;
	}
	pthread_cond_broadcast(&st->cond);
	pthread_mutex_unlock(&st->lock);
	if (oe->meta_items)
		ubt_release_space(st->wi->fs_info, oe->meta_items, 0);
	oe_free(oe);
	ubt_inode_state_put(st);
}

static void io_fn(struct ubt_work *work)
{
	struct ubt_ordered_extent *oe = (struct ubt_ordered_extent *)((u8 *)work - offsetof(struct ubt_ordered_extent, io_work));
	struct ubt_write_info *wi = oe->st->wi;
	int ret = ubt_hook_point("write.io.before_submit", oe);

	if (!ret && !oe->is_inline)
		ret = ubt_write_logical(wi->fs_info, oe->disk_bytenr, oe->data, (size_t)oe->disk_num_bytes);
	oe->error = ret;
	ubt_init_work(&oe->finish_work, finish_fn, NULL, NULL);
	ubt_queue_work(wi->endio_wq, &oe->finish_work);
}

/* Compress @n bytes of @oe->data in place when it saves a sector (btrfs's rule). */
/* The compression for new data of @st: the mount's, or zlib for a file with chattr +c. */
static int compress_type_of(const struct ubt_inode_state *st, const struct ubt_write_opts *o)
{
	if (o->compress_type)
		return o->compress_type;
	return (st->inode_flags & BTRFS_INODE_COMPRESS) ? BTRFS_COMPRESS_ZLIB : BTRFS_COMPRESS_NONE;
}

static void maybe_compress(struct ubt_ordered_extent *oe, const struct ubt_write_opts *o, u32 ss)
{
	int type = compress_type_of(oe->st, o);
	u8 *out;
	ssize_t c;
	u64 disk;

	if (!type || oe->num_bytes > UBT_MAX_COMPRESSED_CHUNK || !oe->datasum ||
	    (oe->st->inode_flags & (BTRFS_INODE_NODATACOW | BTRFS_INODE_NODATASUM)) ||
	    (!o->compress_force && (oe->st->inode_flags & BTRFS_INODE_NOCOMPRESS)))
		return;
	out = malloc((size_t)oe->num_bytes);
	if (!out)
		return;
	c = ubt_compress(type, type == o->compress_type ? o->compress_level : 0, oe->data, (size_t)oe->num_bytes, out,
			 (size_t)oe->num_bytes, ss);
	disk = c > 0 ? ALIGN_UP((u64)c, (u64)ss) : 0;
	if (c <= 0 || disk >= oe->num_bytes) {
		free(out);
		return;
	}
	memset(out + c, 0, (size_t)(disk - (u64)c));
	free(oe->data);
	oe->data = out;
	oe->disk_num_bytes = disk;
	oe->compress_type = type;
}

/*
 * Publish the ordered extents of @list (file range [s, e]) before the delalloc bits go, so a
 * flush always sees one or the other; then clear DELALLOC (releasing its reservation), unlock the
 * range, and submit them to the io pool. Returns @ret.
 */
static int publish_ordered(struct ubt_inode_state *st, struct ubt_ordered_extent *list, u64 s, u64 e, int ret)
{
	struct ubt_write_info *wi = st->wi;
	struct ubt_fs_info *fs_info = wi->fs_info;
	struct ubt_ordered_extent *oe, **v = NULL, *last = NULL;
	size_t cnt = 0;

	for (oe = list; oe; oe = oe->next) {
		cnt++;
		last = oe;
	}
	if (cnt) {
		v = malloc(cnt * sizeof(*v));
		if (!v) {
			/* Cannot track them: submit one by one below from the local list instead. */
			ret = ret ? ret : -ENOMEM;
		}
	}
	cnt = 0;
	for (oe = list; oe; oe = oe->next) {
		if (v)
			v[cnt] = oe;
		cnt++;
	}
	pthread_mutex_lock(&wi->lock);
	st->refs += (int)cnt; /* each ordered extent holds the state until it finished */
	pthread_mutex_unlock(&wi->lock);
	pthread_mutex_lock(&st->lock);
	/* Each ordered extent carries the metadata reservation its finish needs. */
	for (oe = list; oe; oe = oe->next) {
		u64 take = ubt_min(st->meta_items, oe->meta_items);
		oe->meta_items = take;
		st->meta_items -= take;
	}
	if (last) {
		last->next = st->ordered;
		st->ordered = list;
	}
	st->nr_ordered += (unsigned)cnt;
	if (ret && !st->error)
		st->error = ret;
	pthread_mutex_unlock(&st->lock);
	if (ret)
		ubt_mapping_set_error(st->mapping, ret);
	ubt_clear_extent_bit(&st->io_tree, s, e, UBT_EXTENT_DELALLOC | UBT_EXTENT_LOCKED, NULL);
	/* No delalloc left: what was reserved for it beyond the ordered extents' share goes back. */
	pthread_mutex_lock(&st->lock);
	if (!st->delalloc_bytes && st->meta_items) {
		ubt_release_space(fs_info, st->meta_items, 0);
		st->meta_items = 0;
	}
	pthread_mutex_unlock(&st->lock);
	for (size_t i = 0; v && i < cnt; i++) {
		ubt_init_work(&v[i]->io_work, io_fn, NULL, NULL);
		ubt_queue_work(wi->io_wq, &v[i]->io_work);
	}
	if (!v && cnt) {
		/* Out of memory for the array: queue them from the list (each next read before queueing). */
		for (oe = list; cnt--; oe = last) {
			last = oe->next;
			ubt_init_work(&oe->io_work, io_fn, NULL, NULL);
			ubt_queue_work(wi->io_wq, &oe->io_work);
		}
	}
	free(v);
	return ret;
}

/* Allocate a data extent in a short transaction of its own (no change to abort on failure). */
static int alloc_data(struct ubt_fs_info *fs_info, u64 len, u64 *bytenr)
{
	struct ubt_trans_handle h;
	int ret = ubt_trans_start(fs_info, &h);

	if (ret)
		return ret;
	ret = ubt_alloc_data_extent(&h, len, 0, bytenr);
	h.error = 0;
	ubt_trans_end(&h);
	return ret;
}

static void free_data(struct ubt_fs_info *fs_info, u64 bytenr, u64 len)
{
	struct ubt_trans_handle h;

	if (ubt_trans_start(fs_info, &h))
		return;
	ubt_free_reserved_data_extent(&h, bytenr, len);
	ubt_trans_end(&h);
}

/*
 * Turn the locked delalloc range [s, e] into ordered extents and submit them. Unlocks the range.
 */
static int cow_range(struct ubt_inode_state *st, u64 s, u64 e)
{
	struct ubt_write_info *wi = st->wi;
	struct ubt_fs_info *fs_info = wi->fs_info;
	u32 ss = fs_info->sectorsize;
	u64 nr = (e - s + 1) / PS, i_size, chunk_max;
	struct ubt_page **pages;
	struct ubt_ordered_extent *list = NULL, **tail = &list, *oe;
	bool datasum = !(st->inode_flags & BTRFS_INODE_NODATASUM);
	int ret = 0;

	pages = calloc((size_t)nr, sizeof(*pages));
	if (!pages) {
		ubt_unlock_extent(&st->io_tree, s, e, NULL);
		return -ENOMEM;
	}
	for (u64 i = 0; i < nr; i++) {
		struct ubt_page *page = ubt_find_get_page(st->mapping, s / PS + i);

		if (!page) {
			/* delalloc without its page: the range was truncated under us; nothing to write. */
			ret = -EUCLEAN;
			ubt_err("root %" PRIu64 " ino %" PRIu64 ": delalloc page %" PRIu64 " missing", st->root->objectid,
				st->ino, s / PS + i);
			break;
		}
		ubt_lock_page(page);
		ubt_clear_page_dirty_for_io(page);
		ubt_set_page_writeback(page);
		ubt_unlock_page(page);
		pages[i] = page;
	}
	pthread_mutex_lock(&st->lock);
	i_size = st->i_size;
	pthread_mutex_unlock(&st->lock);

	chunk_max = compress_type_of(st, &wi->wopts) ? UBT_MAX_COMPRESSED_CHUNK : UBT_WRITEBACK_MAX;
	for (u64 pos = s; !ret && pos <= e;) {
		u64 n = ubt_min(e - pos + 1, chunk_max), bytenr = 0;
		u64 max_inline = ubt_min((u64)(wi->wopts.max_inline ? wi->wopts.max_inline : UBT_DEFAULT_MAX_INLINE),
					 (u64)ubt_max_inline_size(fs_info));
		bool make_inline = pos == 0 && n == e - s + 1 && i_size > 0 && i_size <= max_inline && i_size <= n;
		bool plain = !make_inline && !compress_type_of(st, &wi->wopts);

		if (plain) {
			/*
			 * Free space may be in pieces: like btrfs, take a smaller extent when a large one is
			 * not there (the space was reserved, so some extent of at least a sector is).
			 */
			for (;;) {
				ret = alloc_data(fs_info, n, &bytenr);
				if (ret != -ENOSPC || n == PS)
					break;
				n = ubt_max(PS, ALIGN_DOWN(n / 2, PS));
			}
			if (ret)
				break;
		}
		oe = calloc(1, sizeof(*oe));
		if (!oe) {
			ret = -ENOMEM;
			if (bytenr)
				free_data(fs_info, bytenr, n);
			break;
		}
		oe->st = st;
		oe->file_offset = pos;
		oe->num_bytes = oe->ram_bytes = oe->disk_num_bytes = n;
		oe->disk_bytenr = bytenr;
		oe->datasum = datasum;
		oe->nr_pages = (u32)(n / PS);
		oe->pages = calloc(oe->nr_pages, sizeof(*oe->pages));
		oe->data = malloc((size_t)n);
		if (!oe->pages || !oe->data) {
			oe_free(oe);
			ret = -ENOMEM;
			if (bytenr)
				free_data(fs_info, bytenr, n);
			break;
		}
		for (u32 i = 0; i < oe->nr_pages; i++) {
			oe->pages[i] = pages[(pos - s) / PS + i];
			pages[(pos - s) / PS + i] = NULL;
			memcpy(oe->data + (u64)i * PS, ubt_page_data(oe->pages[i]), PS);
		}
		if (make_inline) {
			/* A small file that starts and ends here becomes an inline extent. */
			oe->is_inline = true;
			oe->inline_len = i_size;
		} else {
			if (!plain) {
				maybe_compress(oe, &wi->wopts, ss);
				ret = alloc_data(fs_info, oe->disk_num_bytes, &oe->disk_bytenr);
			}
			if (!ret && oe->datasum) {
				u64 nsec = oe->disk_num_bytes / ss;

				oe->csums = malloc((size_t)(nsec * (u64)fs_info->csum_size));
				if (!oe->csums)
					ret = -ENOMEM;
				for (u64 i = 0; oe->csums && i < nsec; i++) {
					u8 c[UBT_CSUM_MAX];
					ubt_csum(fs_info->csum_type, oe->data + i * ss, ss, c);
					memcpy(oe->csums + i * (u64)fs_info->csum_size, c, (size_t)fs_info->csum_size);
				}
			}
			if (ret) {
				/* Give the pages back with the error (space was reserved: this is unexpected). */
				if (oe->disk_bytenr)
					free_data(fs_info, oe->disk_bytenr, oe->disk_num_bytes);
				for (u32 i = 0; i < oe->nr_pages; i++) {
					ubt_end_page_writeback(oe->pages[i], ret);
					ubt_put_page(oe->pages[i]);
				}
				oe->nr_pages = 0;
				oe_free(oe);
				break;
			}
		}
		oe->meta_items = items_for(n);
		*tail = oe;
		tail = &oe->next;
		pos += n;
	}
	/* Pages not handed to an ordered extent (an error above) end writeback with it. */
	for (u64 i = 0; i < nr; i++) {
		if (pages[i]) {
			ubt_end_page_writeback(pages[i], ret ? ret : -EIO);
			ubt_put_page(pages[i]);
		}
	}
	free(pages);
	return publish_ordered(st, list, s, e, ret);
}


/* ---- async compressed writeback (seed 002) ---- */

/*
 * A delalloc range to compress is cut into chunks of at most 512 KiB. Each chunk owns the pages of
 * its own range and nothing else: they are locked (dirty cleared for I/O) when the range is taken,
 * compressed in parallel by the compress pool (func), and submitted strictly in range order
 * (ordered_func): ordered extents created, pages set to writeback and unlocked — by their chunk
 * only, including the page writeback started from (the first page of the range, owned by the
 * first chunk). A chunk that does not compress falls back to plain extents for its own pages.
 *
 * Hook points (point_arg: the chunk): "compress.chunk.before_compress",
 * "compress.chunk.before_submit".
 */
#define UBT_ASYNC_CHUNK (512 * 1024ULL)
#define UBT_PIECES_PER_CHUNK ((int)(UBT_ASYNC_CHUNK / UBT_MAX_COMPRESSED_CHUNK))

struct ubt_async_chunk {
	struct ubt_inode_state *st;
	u64 start, end;          /* inclusive */
	struct ubt_page **pages; /* locked; this chunk's only */
	u32 nr_pages;
	bool owns_first_page;    /* the page writeback started from */
	u8 *data;                /* the chunk's bytes */
	u8 *cdata[UBT_PIECES_PER_CHUNK];
	u64 cdisk[UBT_PIECES_PER_CHUNK]; /* 0: store the piece as is */
	int error;
	struct ubt_work work;
};

static void chunk_compress_fn(struct ubt_work *work)
{
	struct ubt_async_chunk *c = (struct ubt_async_chunk *)((u8 *)work - offsetof(struct ubt_async_chunk, work));
	struct ubt_inode_state *st = c->st;
	struct ubt_write_info *wi = st->wi;
	u32 ss = wi->fs_info->sectorsize;
	int type = compress_type_of(st, &wi->wopts);
	u64 len = c->end - c->start + 1;
	bool any = false;

	c->error = ubt_hook_point("compress.chunk.before_compress", c);
	/* The same, for the chunks that do not own the page writeback started from (seed 002). */
	if (!c->error && !c->owns_first_page)
		c->error = ubt_hook_point("compress.chunk.later.before_compress", c);
	if (c->error)
		return;
	c->data = malloc((size_t)len);
	if (!c->data) {
		c->error = -ENOMEM;
		return;
	}
	for (u32 i = 0; i < c->nr_pages; i++)
		memcpy(c->data + (u64)i * PS, ubt_page_data(c->pages[i]), PS);
	for (int p = 0; p * UBT_MAX_COMPRESSED_CHUNK < len; p++) {
		u64 off = (u64)p * UBT_MAX_COMPRESSED_CHUNK, n = ubt_min(len - off, UBT_MAX_COMPRESSED_CHUNK);
		u8 *out = malloc((size_t)n);
		ssize_t cs;

		if (!out)
			continue;
		cs = ubt_compress(type, type == wi->wopts.compress_type ? wi->wopts.compress_level : 0, c->data + off,
				  (size_t)n, out, (size_t)n, ss);
		if (cs > 0 && ALIGN_UP((u64)cs, (u64)ss) < n) {
			memset(out + cs, 0, (size_t)(ALIGN_UP((u64)cs, (u64)ss) - (u64)cs));
			c->cdata[p] = out;
			c->cdisk[p] = ALIGN_UP((u64)cs, (u64)ss);
			any = true;
		} else {
			free(out);
		}
	}
	if (!any && !wi->wopts.compress_force) {
		/* As btrfs: data that does not compress marks the file, later writes go plain. */
		pthread_mutex_lock(&st->lock);
		st->inode_flags |= BTRFS_INODE_NOCOMPRESS;
		st->flags_dirty = true;
		pthread_mutex_unlock(&st->lock);
	}
}

/* One ordered extent for piece [off, off + n) of @c: compressed when it paid, else plain. */
static struct ubt_ordered_extent *chunk_piece_oe(struct ubt_async_chunk *c, int p, u64 off, u64 n, int *err)
{
	struct ubt_inode_state *st = c->st;
	struct ubt_fs_info *fs_info = st->wi->fs_info;
	u32 ss = fs_info->sectorsize;
	struct ubt_ordered_extent *oe = calloc(1, sizeof(*oe));

	if (!oe) {
		*err = -ENOMEM;
		return NULL;
	}
	oe->st = st;
	oe->file_offset = c->start + off;
	oe->num_bytes = oe->ram_bytes = n;
	oe->datasum = true;
	if (c->cdata[p]) {
		oe->data = c->cdata[p];
		c->cdata[p] = NULL;
		oe->disk_num_bytes = c->cdisk[p];
		oe->compress_type = compress_type_of(st, &st->wi->wopts);
	} else {
		oe->data = malloc((size_t)n);
		if (!oe->data) {
			free(oe);
			*err = -ENOMEM;
			return NULL;
		}
		memcpy(oe->data, c->data + off, (size_t)n);
		oe->disk_num_bytes = n;
	}
	*err = alloc_data(fs_info, oe->disk_num_bytes, &oe->disk_bytenr);
	if (!*err) {
		u64 nsec = oe->disk_num_bytes / ss;

		oe->csums = malloc((size_t)(nsec * (u64)fs_info->csum_size));
		if (!oe->csums) {
			*err = -ENOMEM;
			free_data(fs_info, oe->disk_bytenr, oe->disk_num_bytes);
		}
		for (u64 i = 0; oe->csums && i < nsec; i++) {
			u8 sum[UBT_CSUM_MAX];
			ubt_csum(fs_info->csum_type, oe->data + i * ss, ss, sum);
			memcpy(oe->csums + i * (u64)fs_info->csum_size, sum, (size_t)fs_info->csum_size);
		}
	}
	if (*err) {
		oe_free(oe);
		return NULL;
	}
	oe->meta_items = items_for(n);
	oe->nr_pages = (u32)(n / PS);
	oe->pages = calloc(oe->nr_pages, sizeof(*oe->pages));
	if (!oe->pages) {
		free_data(fs_info, oe->disk_bytenr, oe->disk_num_bytes);
		oe_free(oe);
		*err = -ENOMEM;
		return NULL;
	}
	return oe;
}

static void chunk_submit_fn(struct ubt_work *work)
{
	struct ubt_async_chunk *c = (struct ubt_async_chunk *)((u8 *)work - offsetof(struct ubt_async_chunk, work));
	struct ubt_inode_state *st = c->st;
	struct ubt_ordered_extent *list = NULL, **tail = &list;
	u64 len = c->end - c->start + 1;
	int ret = c->error;

	if (!ret)
		ret = ubt_hook_point("compress.chunk.before_submit", c);
	for (int p = 0; !ret && (u64)p * UBT_MAX_COMPRESSED_CHUNK < len; p++) {
		u64 off = (u64)p * UBT_MAX_COMPRESSED_CHUNK, n = ubt_min(len - off, UBT_MAX_COMPRESSED_CHUNK);
		struct ubt_ordered_extent *oe = chunk_piece_oe(c, p, off, n, &ret);

		if (!oe)
			break;
		/* This chunk's pages, and only them: writeback on, unlocked. */
		for (u32 i = 0; i < oe->nr_pages; i++) {
			struct ubt_page *page = c->pages[off / PS + i];

			c->pages[off / PS + i] = NULL;
			ubt_set_page_writeback(page);
			ubt_unlock_page(page);
			oe->pages[i] = page;
		}
		*tail = oe;
		tail = &oe->next;
	}
	/* Pages of a failed chunk: the error goes to the file; their data is not written. */
	for (u32 i = 0; i < c->nr_pages; i++) {
		if (c->pages[i]) {
			ubt_set_page_writeback(c->pages[i]);
			ubt_unlock_page(c->pages[i]);
			ubt_end_page_writeback(c->pages[i], ret ? ret : -EIO);
			ubt_put_page(c->pages[i]);
			c->pages[i] = NULL;
		}
	}
	publish_ordered(st, list, c->start, c->end, ret);
	pthread_mutex_lock(&st->lock);
	st->nr_async--;
	pthread_cond_broadcast(&st->cond);
	pthread_mutex_unlock(&st->lock);
}

static void chunk_free_fn(struct ubt_work *work)
{
	struct ubt_async_chunk *c = (struct ubt_async_chunk *)((u8 *)work - offsetof(struct ubt_async_chunk, work));
	struct ubt_inode_state *st = c->st;

	for (int p = 0; p < UBT_PIECES_PER_CHUNK; p++)
		free(c->cdata[p]);
	free(c->data);
	free(c->pages);
	free(c);
	ubt_inode_state_put(st);
}

/* Take the locked delalloc range [s, e] for compression: lock its pages, queue its chunks. */
static int cow_range_async(struct ubt_inode_state *st, u64 s, u64 e)
{
	struct ubt_write_info *wi = st->wi;
	int ret = 0;

	for (u64 pos = s; pos <= e;) {
		u64 n = ubt_min(e - pos + 1, UBT_ASYNC_CHUNK);
		struct ubt_async_chunk *c = calloc(1, sizeof(*c));
		u32 got = 0;

		if (c)
			c->pages = calloc((size_t)(n / PS), sizeof(*c->pages));
		if (!c || !c->pages) {
			free(c);
			ret = -ENOMEM;
			s = pos; /* the rest [pos, e] is unlocked below */
			break;
		}
		c->st = st;
		c->start = pos;
		c->end = pos + n - 1;
		c->nr_pages = (u32)(n / PS);
		c->owns_first_page = pos == s;
		for (u32 i = 0; i < c->nr_pages; i++) {
			struct ubt_page *page = ubt_find_get_page(st->mapping, pos / PS + i);

			if (!page) {
				c->error = -EUCLEAN;
				ubt_err("root %" PRIu64 " ino %" PRIu64 ": delalloc page %" PRIu64 " missing", st->root->objectid,
					st->ino, pos / PS + i);
				continue;
			}
			ubt_lock_page(page);
			ubt_clear_page_dirty_for_io(page);
			c->pages[i] = page;
			got++;
		}
		if (got < c->nr_pages && !c->error)
			c->error = -EUCLEAN;
		pthread_mutex_lock(&wi->lock);
		st->refs++; /* the chunk holds the state until freed */
		pthread_mutex_unlock(&wi->lock);
		pthread_mutex_lock(&st->lock);
		st->nr_async++;
		pthread_mutex_unlock(&st->lock);
		ubt_init_work(&c->work, chunk_compress_fn, chunk_submit_fn, chunk_free_fn);
		ubt_queue_work(wi->compress_wq, &c->work);
		pos += n;
	}
	if (ret) {
		/* What could not be queued stays dirty and delalloc for a later writeback; unlock it. */
		ubt_unlock_extent(&st->io_tree, s, e, NULL);
	}
	return ret;
}

/* Compressed writeback goes async, except a small file that will be one inline extent. */
static bool use_async(struct ubt_inode_state *st, u64 s, u64 e)
{
	u64 i_size;

	if (!compress_type_of(st, &st->wi->wopts) || (st->inode_flags & (BTRFS_INODE_NODATASUM | BTRFS_INODE_NODATACOW)) ||
	    (!st->wi->wopts.compress_force && (st->inode_flags & BTRFS_INODE_NOCOMPRESS)))
		return false;
	pthread_mutex_lock(&st->lock);
	i_size = st->i_size;
	pthread_mutex_unlock(&st->lock);
	return !(s == 0 && i_size <= ubt_min((u64)UBT_DEFAULT_MAX_INLINE, (u64)ubt_max_inline_size(st->wi->fs_info)) &&
		 e + 1 >= i_size);
}

/* Is [start, end] covered by an ordered extent still in flight? */
static bool ordered_covers(struct ubt_inode_state *st, u64 start, u64 end)
{
	bool found = false;

	pthread_mutex_lock(&st->lock);
	for (struct ubt_ordered_extent *o = st->ordered; o && !found; o = o->next)
		found = o->file_offset <= end && o->file_offset + o->num_bytes > start;
	pthread_mutex_unlock(&st->lock);
	return found;
}

/*
 * Dirty pages of [start, end] that have neither DELALLOC nor an ordered extent were dirtied
 * without the write path (invariant 1): never written as they are, never cleaned — each is marked
 * CHECKED and queued, once, to the fixup worker, and stays dirty. A range locked by a writer is
 * being set up right now and is left alone.
 */
static void find_unprepared_pages(struct ubt_inode_state *st, u64 start, u64 end)
{
	u64 idx = start / PS;
	struct ubt_page *page;

	while (!ubt_mapping_next_dirty(st->mapping, idx, &page)) {
		u64 pstart = page->index * PS, pend = pstart + PS - 1;

		if (pstart > end) {
			ubt_put_page(page);
			break;
		}
		idx = page->index + 1;
		if (!ubt_try_lock_extent(&st->io_tree, pstart, pend, NULL)) {
			if (!ubt_test_range_bit(&st->io_tree, pstart, pend, UBT_EXTENT_DELALLOC, UBT_TEST_ANY) &&
			    !ordered_covers(st, pstart, pend)) {
				ubt_lock_page(page);
				if (PageDirty(page) && !PageChecked(page) && ubt_page_mapping(page)) {
					SetPageChecked(page);
					ubt_fixup_queue(st, page);
				}
				ubt_unlock_page(page);
			}
			ubt_unlock_extent(&st->io_tree, pstart, pend, NULL);
		}
		ubt_put_page(page);
		if (!idx)
			break;
	}
}

int ubt_writeback_range(struct ubt_inode_state *st, u64 start, u64 end)
{
	u64 pos = start;
	int ret = 0;

	while (pos <= end) {
		u64 s = pos, e = end;
		int r;

		if (!ubt_find_lock_delalloc_range(&st->io_tree, &s, &e, UBT_WRITEBACK_MAX, NULL))
			break;
		r = use_async(st, s, e) ? cow_range_async(st, s, e) : cow_range(st, s, e);
		if (r && !ret)
			ret = r;
		if (e == (u64)-1)
			break;
		pos = e + 1;
	}
	find_unprepared_pages(st, start, end);
	return ret;
}

void ubt_wait_ordered_range(struct ubt_inode_state *st, u64 start, u64 end)
{
	pthread_mutex_lock(&st->lock);
	for (;;) {
		bool busy = false;

		for (struct ubt_ordered_extent *o = st->ordered; o; o = o->next) {
			if (o->file_offset <= end && o->file_offset + o->num_bytes > start) {
				busy = true;
				break;
			}
		}
		if (st->nr_async)
			busy = true; /* compressed chunks not yet turned into ordered extents */
		if (!busy)
			break;
		pthread_cond_wait(&st->cond, &st->lock);
	}
	pthread_mutex_unlock(&st->lock);
}

struct ubt_inode_state *ubt_write_prepare_change(struct ubt_fs_info *fs_info, struct ubt_root *root, u64 ino,
						 u64 drop_start, u64 drop_end)
{
	struct ubt_inode_state *st = ubt_inode_state_find(fs_info, root, ino);

	if (!st)
		return NULL;
	pthread_mutex_lock(&st->io_mutex);
	ubt_settle_range(st, 0, (u64)-1, true);
	if (drop_start <= drop_end)
		ubt_drop_cached_range(st, drop_start, drop_end);
	return st;
}

bool ubt_settle_range(struct ubt_inode_state *st, u64 start, u64 end, bool io_locked)
{
	for (int round = 0; round < 200; round++) {
		struct ubt_page *page = NULL;
		bool dirty;

		ubt_writeback_range(st, start, end);
		/*
		 * Pages dirtied behind the write path's back were refused (CHECKED): with the io lock
		 * held, set them up here; without it, let the fixup pool do it. Then write them too.
		 */
		if (io_locked)
			ubt_fixup_range(st, start, end);
		else
			ubt_wq_flush(st->wi->fixup_wq);
		ubt_writeback_range(st, start, end);
		ubt_wait_ordered_range(st, start, end);
		dirty = !ubt_mapping_next_dirty(st->mapping, start / PS, &page) && page->index * PS <= end;
		if (page)
			ubt_put_page(page);
		if (!dirty)
			return true;
		/* A page another writeback holds the range of was skipped: let that one finish. */
		if (round >= 2)
			usleep(1000);
	}
	return false;
}

void ubt_drop_cached_range(struct ubt_inode_state *st, u64 start, u64 end)
{
	u64 lo = ALIGN_DOWN(start, PS), hi = end == (u64)-1 ? (u64)-1 : ALIGN_UP(end + 1, PS) - 1;
	u64 full_lo = ALIGN_UP(start, PS), full_hi = end == (u64)-1 ? (u64)-1 : ALIGN_DOWN(end + 1, PS) - 1;

	/*
	 * Under the extent lock nobody (a fixup, a writeback) sets up these pages meanwhile; what is
	 * still delalloc on the pages that go entirely was dirtied since the caller's writeback and is
	 * discarded with them (its reservation goes back), so no delalloc is ever left without a page.
	 */
	ubt_lock_extent(&st->io_tree, lo, hi, NULL);
	if (full_lo <= full_hi)
		ubt_clear_extent_bit(&st->io_tree, full_lo, full_hi, UBT_EXTENT_DELALLOC, NULL);
	ubt_truncate_inode_pages_range(st->mapping, start, end);
	ubt_unlock_extent(&st->io_tree, lo, hi, NULL);
}

void ubt_write_finish_change(struct ubt_inode_state *st, struct ubt_root *root, u64 ino)
{
	struct btrfs_inode_item ii;

	if (!st)
		return;
	/* The tree is the truth now: take size and times from the inode item. */
	ubt_tree_read_lock(st->wi->fs_info);
	if (!ubt_inode_read(root, ino, &ii)) {
		pthread_mutex_lock(&st->lock);
		st->i_size = st->disk_i_size = st->done_end = le64toh(ii.size);
		st->mtime = ii.mtime;
		st->ctime = ii.ctime;
		st->times_dirty = false;
		st->inode_flags = le64toh(ii.flags);
		pthread_mutex_unlock(&st->lock);
	}
	ubt_tree_read_unlock(st->wi->fs_info);
	pthread_mutex_unlock(&st->io_mutex);
	ubt_inode_state_put(st);
}

/* ---- for direct.c (write-internal.h): the same allocation and finish path ---- */

int ubt_write_alloc_data(struct ubt_fs_info *fs_info, u64 len, u64 *bytenr)
{
	return alloc_data(fs_info, len, bytenr);
}

void ubt_write_free_data(struct ubt_fs_info *fs_info, u64 bytenr, u64 len)
{
	free_data(fs_info, bytenr, len);
}

int ubt_ordered_finish(struct ubt_ordered_extent *oe)
{
	return finish_ordered(oe);
}

void ubt_ordered_fail(struct ubt_ordered_extent *oe)
{
	fail_ordered(oe);
}
