/*
 * mmap.c — mapped access, the library's mmap: a mapping is a page-aligned private buffer holding
 * a window of the file (read through the cache, zeros past EOF). ubt_write_msync and
 * ubt_write_munmap hand the bytes the caller changed back to the page cache the way the kernel's
 * unmap path does: each changed page is found or created, made uptodate (from the cache or the
 * disk), changed, and marked dirty — with no space reserved and no DELALLOC, behind the write
 * path's back. Writeback then refuses such a page and the fixup worker sets it up (fixup.c,
 * invariant 1); the flusher is kicked so that happens soon. Bytes past EOF are dropped: the file
 * never grows through a mapping.
 *
 * Only changed bytes go back (each mapping keeps a copy of what it last handed back or read), so
 * an unchanged page is never dirtied and a write to the file after the map is not undone.
 * Mappings are kept in a small side table keyed by the buffer, with their owner (the file
 * handle); lookups and removals are under one mutex, the hand-back under the inode's io lock.
 */
#include <stdlib.h>
#include <sys/stat.h>

#include "../transaction/transaction.h"
#include "write-internal.h"

#define PS ((u64)UBT_PAGE_SIZE)

struct map {
	struct map *next;
	const void *owner;
	struct ubt_root *root;
	u64 ino;
	u64 off;    /* file offset of the first byte (page aligned) */
	size_t len; /* page multiple */
	u8 *addr;   /* the caller's buffer */
	u8 *orig;   /* the bytes as last read or handed back */
};

static pthread_mutex_t maps_lock = PTHREAD_MUTEX_INITIALIZER;
static struct map *maps;

void *ubt_write_mmap(struct ubt_fs_info *fs_info, struct ubt_root *root, u64 ino, const void *owner, u64 off,
		     size_t len)
{
	struct btrfs_inode_item ii;
	struct map *m;
	size_t alen;
	ssize_t n;
	int ret;

	if (off % PS || !len || len > SIZE_MAX - PS)
		return ERR_PTR(-EINVAL);
	alen = ALIGN_UP(len, (size_t)PS);
	m = calloc(1, sizeof(*m));
	if (!m)
		return ERR_PTR(-ENOMEM);
	ret = -ENOMEM;
	if (posix_memalign((void **)&m->addr, PS, alen))
		goto fail;
	m->orig = malloc(alen);
	if (!m->orig)
		goto fail;
	ubt_tree_read_lock(fs_info);
	ret = ubt_inode_read(root, ino, &ii);
	if (!ret && !S_ISREG(le32toh(ii.mode)))
		ret = -ENODEV;
	n = ret ? ret : ubt_write_read(fs_info, root, ino, &ii, m->addr, alen, off);
	ubt_tree_read_unlock(fs_info);
	if (n < 0) {
		ret = (int)n;
		goto fail;
	}
	memset(m->addr + n, 0, alen - (size_t)n);
	memcpy(m->orig, m->addr, alen);
	m->owner = owner;
	m->root = root;
	m->ino = ino;
	m->off = off;
	m->len = alen;
	pthread_mutex_lock(&maps_lock);
	m->next = maps;
	maps = m;
	pthread_mutex_unlock(&maps_lock);
	return m->addr;
fail:
	free(m->addr);
	free(m->orig);
	free(m);
	return ERR_PTR(ret);
}

/* The mapping of @owner containing @addr (unlinked from the table when @unlink), or NULL. */
static struct map *map_find(const void *owner, const void *addr, bool unlink)
{
	struct map **pp, *m = NULL;

	pthread_mutex_lock(&maps_lock);
	for (pp = &maps; *pp; pp = &(*pp)->next) {
		struct map *c = *pp;

		if (c->owner == owner && (const u8 *)addr >= c->addr && (const u8 *)addr < c->addr + c->len) {
			m = c;
			if (unlink)
				*pp = c->next;
			break;
		}
	}
	pthread_mutex_unlock(&maps_lock);
	return m;
}

/* Make locked @page (at @pos, below @i_size) uptodate from the disk. */
static int read_page(struct ubt_fs_info *fs_info, struct map *m, const struct btrfs_inode_item *ii, u64 i_size,
		     struct ubt_page *page, u64 pos)
{
	struct btrfs_inode_item tmp = *ii;
	ssize_t n;

	memset(ubt_page_data(page), 0, PS);
	tmp.size = htole64(i_size);
	ubt_tree_read_lock(fs_info);
	n = ubt_file_read(m->root, m->ino, &tmp, ubt_page_data(page), (size_t)ubt_min(PS, i_size - pos), pos);
	ubt_tree_read_unlock(fs_info);
	return n < 0 ? (int)n : 0;
}

/*
 * Hand the changed bytes of pages [first, last) of @m back to the page cache, dirtying the pages
 * without reservation. @refuse: the error to return when something changed but the caller may
 * not write (read-only handle or mount), else 0.
 */
static int hand_back(struct ubt_fs_info *fs_info, struct map *m, size_t first, size_t last, int refuse)
{
	struct ubt_write_info *wi = ubt_wi(fs_info);
	struct btrfs_inode_item ii;
	struct ubt_inode_state *st;
	size_t p;
	u64 i_size;
	bool dirtied = false;
	int ret = 0;

	for (p = first; p < last; p++)
		if (memcmp(m->addr + p * PS, m->orig + p * PS, PS))
			break;
	if (p == last)
		return 0;
	if (refuse)
		return refuse;
	if (!wi)
		return -EROFS;
	st = ubt_inode_state_get(fs_info, m->root, m->ino);
	if (!st)
		return -ENOMEM;
	pthread_mutex_lock(&st->io_mutex);
	ubt_tree_read_lock(fs_info);
	ret = ubt_inode_read(m->root, m->ino, &ii);
	ubt_tree_read_unlock(fs_info);
	if (ret)
		goto out;
	if (le64toh(ii.flags) & (BTRFS_INODE_IMMUTABLE | BTRFS_INODE_APPEND)) {
		ret = -EPERM;
		goto out;
	}
	pthread_mutex_lock(&st->lock);
	i_size = st->i_size;
	pthread_mutex_unlock(&st->lock);
	for (; p < last; p++) {
		u8 *src = m->addr + p * PS, *old = m->orig + p * PS, *dst;
		u64 pos = m->off + p * PS, n;
		struct ubt_page *page;

		if (!memcmp(src, old, PS))
			continue;
		if (pos >= i_size) {
			/* Past EOF: dropped, the file does not grow. */
			memcpy(old, src, PS);
			continue;
		}
		n = ubt_min(PS, i_size - pos);
		page = ubt_find_or_create_page(st->mapping, pos / PS);
		if (IS_ERR(page)) {
			ret = (int)PTR_ERR(page);
			break;
		}
		/* Stable pages: data under writeback changes only once its ordered extent finished. */
		ubt_wait_on_page_writeback(page);
		if (!PageUptodate(page))
			ret = read_page(fs_info, m, &ii, i_size, page, pos);
		if (!ret) {
			dst = ubt_page_data(page);
			for (u64 i = 0; i < n; i++)
				if (src[i] != old[i])
					dst[i] = src[i];
			memset(dst + n, 0, PS - n);
			SetPageUptodate(page);
			/* The kernel's unmap path: dirty, and nothing else (invariant 1 catches it). */
			ubt_set_page_dirty(page);
			memcpy(old, src, PS);
			dirtied = true;
		}
		ubt_unlock_page(page);
		ubt_put_page(page);
		if (ret)
			break;
	}
	if (dirtied) {
		pthread_mutex_lock(&st->lock);
		ubt_timespec_now(&st->mtime);
		st->ctime = st->mtime;
		st->times_dirty = true;
		pthread_mutex_unlock(&st->lock);
	}
out:
	pthread_mutex_unlock(&st->io_mutex);
	if (dirtied)
		ubt_write_kick_flusher(wi);
	ubt_inode_state_put(st);
	return ret;
}

int ubt_write_msync(struct ubt_fs_info *fs_info, const void *owner, void *addr, size_t len, int refuse)
{
	struct map *m = map_find(owner, addr, false);
	size_t first, last;

	if (!m || ((u8 *)addr - m->addr) % PS)
		return -EINVAL;
	first = (size_t)((u8 *)addr - m->addr) / PS;
	last = ubt_min((size_t)(m->len / PS), first + (size_t)(ALIGN_UP((u64)len, PS) / PS));
	return hand_back(fs_info, m, first, last, refuse);
}

int ubt_write_munmap(struct ubt_fs_info *fs_info, const void *owner, void *addr, int refuse)
{
	struct map *m = map_find(owner, addr, true);
	int ret;

	if (!m)
		return -EINVAL;
	if (m->addr != addr) {
		/* Only whole mappings are unmapped: put it back. */
		pthread_mutex_lock(&maps_lock);
		m->next = maps;
		maps = m;
		pthread_mutex_unlock(&maps_lock);
		return -EINVAL;
	}
	ret = hand_back(fs_info, m, 0, m->len / PS, refuse);
	free(m->addr);
	free(m->orig);
	free(m);
	return ret;
}

int ubt_write_munmap_all(struct ubt_fs_info *fs_info, const void *owner, int refuse)
{
	int ret = 0;

	for (;;) {
		void *addr = NULL;
		int r;

		pthread_mutex_lock(&maps_lock);
		for (struct map *c = maps; c; c = c->next) {
			if (c->owner == owner) {
				addr = c->addr;
				break;
			}
		}
		pthread_mutex_unlock(&maps_lock);
		if (!addr)
			return ret;
		r = ubt_write_munmap(fs_info, owner, addr, refuse);
		if (r && !ret)
			ret = r;
	}
}
