/*
 * ubtrfs.h — the public API of libubtrfs: btrfs in userspace, as a library.
 *
 * Conventions:
 *  - Every call returns 0 (or a byte count for ssize_t calls) on success and a negative errno on
 *    failure. -EUCLEAN means the image is corrupt where the call looked; -EIO a device error or a
 *    data checksum mismatch; ubt_strerror() names both.
 *  - Inode numbers (ubt_ino) are the library's own handles, as FUSE's low-level API uses them:
 *    UBT_ROOT_INO is the root of the mounted subvolume; each inode of each subvolume has one
 *    number, unique across subvolumes. `struct stat.st_ino` reports btrfs's inode number, made
 *    unique across subvolumes (the subvolume's index in the high 16 bits; 0 for the mounted one).
 *  - All calls are thread-safe on one ubt_fs; a ubt_file may be used from several threads.
 */
#ifndef UBTRFS_H
#define UBTRFS_H

#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/types.h>

#ifdef __cplusplus
extern "C" {
#endif

#define UBT_VERSION "0.1.0"

typedef struct ubt_fs ubt_fs;
typedef struct ubt_file ubt_file;
typedef uint64_t ubt_ino;

#define UBT_ROOT_INO 1

/* Mount flags. */
#define UBT_MOUNT_RDONLY (1u << 0)     /* read-only: nothing is ever written to the image */
#define UBT_MOUNT_NOLOGREPLAY (1u << 1) /* ignore a log tree (data fsync'd after the last commit) */
#define UBT_MOUNT_NODATACOW (1u << 2)   /* new files: no copy-on-write, no checksums (btrfs nodatacow) */
#define UBT_MOUNT_NODATASUM (1u << 3)   /* new files: no data checksums (btrfs nodatasum) */

/*
 * Mount options. Zeroed means defaults; the caller owns the struct and may free it after
 * ubt_mount() returns.
 */
struct ubt_mount_opts {
	unsigned flags;        /* UBT_MOUNT_* */
	const char *subvol;    /* path of the subvolume to mount, from the top level; NULL = default */
	uint64_t subvolid;     /* id of the subvolume to mount; 0 = default (or @subvol) */
	size_t cache_bytes;    /* metadata cache limit in bytes; 0 = 64 MiB */
	size_t page_cache_bytes; /* file data cache limit (read-write mounts); 0 = 256 MiB */
	unsigned commit_interval; /* seconds between automatic commits (read-write); 0 = 30 */
	const char *compress;  /* "zlib[:level]", "lzo", "zstd[:level]" for new data; NULL = none */
	int compress_force;    /* compress-force=: try every write, not only data that looks compressible */
};

/* Mount the btrfs image or block device at @path. On success *@out owns the open device. */
int ubt_mount(const char *path, const struct ubt_mount_opts *opts, ubt_fs **out);
/* Unmount: wait for everything under way, release the device. @fs is freed even on error. */
int ubt_unmount(ubt_fs *fs);

/* A message for a (negative) error code this library returned. */
const char *ubt_strerror(int err);

/* Look up @name in directory @parent; fills @st (st_ino as described above) and *@ino. */
int ubt_lookup(ubt_fs *fs, ubt_ino parent, const char *name, ubt_ino *ino, struct stat *st);
/* Resolve an absolute path inside the mount ("/" is UBT_ROOT_INO); symlinks are not followed. */
int ubt_resolve(ubt_fs *fs, const char *path, ubt_ino *ino, struct stat *st);
int ubt_getattr(ubt_fs *fs, ubt_ino ino, struct stat *st);

/*
 * Directory listing. @filler gets each entry ("." and ".." included) with the offset to pass to
 * ubt_readdir to resume after it; a non-zero return from @filler stops the listing (and is not an
 * error). Entries come in btrfs's DIR_INDEX order.
 */
typedef int (*ubt_filldir_t)(void *ctx, const char *name, size_t name_len, ubt_ino ino,
			     unsigned d_type, uint64_t next_off);
int ubt_readdir(ubt_fs *fs, ubt_ino dir, uint64_t off, ubt_filldir_t filler, void *ctx);

/* Symlink target into @buf (not NUL-terminated); returns its length, -ERANGE if @size is short. */
ssize_t ubt_readlink(ubt_fs *fs, ubt_ino ino, char *buf, size_t size);

/* Extended attributes, with getxattr(2)/listxattr(2) semantics (size 0 asks for the length). */
ssize_t ubt_getxattr(ubt_fs *fs, ubt_ino ino, const char *name, void *buf, size_t size);
ssize_t ubt_listxattr(ubt_fs *fs, ubt_ino ino, char *buf, size_t size);

/* Open a regular file. The handle stays valid until ubt_close(). */
int ubt_open(ubt_fs *fs, ubt_ino ino, int flags, ubt_file **out);
/* Read up to @size bytes at @off; returns the bytes read (0 at end of file). */
ssize_t ubt_pread(ubt_file *f, void *buf, size_t size, uint64_t off);
int ubt_close(ubt_file *f);

/* Filesystem statistics (f_bsize = sectorsize, blocks from the device and block group usage). */
int ubt_statfs(ubt_fs *fs, struct statvfs *st);

/* Drop a reference the caller no longer needs on @ino (FUSE forget); nlookup references. */
void ubt_forget(ubt_fs *fs, ubt_ino ino, uint64_t nlookup);

/*
 * ---- Changing the filesystem (read-write mounts) ----
 * Every call below returns -EROFS on a read-only mount or after a fatal write error. Changes
 * are durable after ubt_sync(), ubt_fsync() or ubt_unmount() (and every commit_interval).
 * Ownership: @uid/@gid are the creating user's (the FUSE adapter passes the caller's).
 */

/* Create a regular file, device node, fifo or socket (mknod(2)); -EEXIST if @name exists. */
int ubt_mknod(ubt_fs *fs, ubt_ino parent, const char *name, mode_t mode, dev_t rdev, uid_t uid, gid_t gid,
	      ubt_ino *ino, struct stat *st);
int ubt_mkdir(ubt_fs *fs, ubt_ino parent, const char *name, mode_t mode, uid_t uid, gid_t gid, ubt_ino *ino,
	      struct stat *st);
int ubt_symlink(ubt_fs *fs, ubt_ino parent, const char *name, const char *target, uid_t uid, gid_t gid,
		ubt_ino *ino, struct stat *st);
/* New name @newname in @newparent for @ino (link(2)). */
int ubt_link(ubt_fs *fs, ubt_ino ino, ubt_ino newparent, const char *newname, struct stat *st);
/*
 * Remove a name (unlink(2)). An inode whose last name goes while it is still open or looked up
 * (ubt_open / ubt_lookup without ubt_forget) lives on until ubt_close/ubt_forget release it; a
 * crash in between is cleaned up at the next read-write mount (orphan items).
 */
int ubt_unlink(ubt_fs *fs, ubt_ino parent, const char *name);
int ubt_rmdir(ubt_fs *fs, ubt_ino parent, const char *name); /* -ENOTEMPTY */

#define UBT_RENAME_NOREPLACE (1u << 0)
#define UBT_RENAME_EXCHANGE (1u << 1)
int ubt_rename(ubt_fs *fs, ubt_ino parent, const char *name, ubt_ino newparent, const char *newname,
	       unsigned flags);

/* setattr: which fields of @attr to apply. */
#define UBT_SET_MODE (1u << 0)
#define UBT_SET_UID (1u << 1)
#define UBT_SET_GID (1u << 2)
#define UBT_SET_SIZE (1u << 3)
#define UBT_SET_ATIME (1u << 4)
#define UBT_SET_MTIME (1u << 5)
#define UBT_SET_CTIME (1u << 6)
#define UBT_SET_ATIME_NOW (1u << 7)
#define UBT_SET_MTIME_NOW (1u << 8)
int ubt_setattr(ubt_fs *fs, ubt_ino ino, const struct stat *attr, unsigned to_set, struct stat *out);

/* setxattr(2)/removexattr(2) semantics (XATTR_CREATE -> -EEXIST, XATTR_REPLACE -> -ENODATA). */
int ubt_setxattr(ubt_fs *fs, ubt_ino ino, const char *name, const void *value, size_t size, int flags);
int ubt_removexattr(ubt_fs *fs, ubt_ino ino, const char *name);

/* Write @size bytes at @off (O_APPEND handles write at end); returns bytes written. */
ssize_t ubt_pwrite(ubt_file *f, const void *buf, size_t size, uint64_t off);
/*
 * Write data the caller has already acknowledged to its own writer (a page cache writing back,
 * as FUSE's writeback cache does): at @off always (no O_APPEND), and never -ENOSPC for want of
 * space to reserve — the pages are then dirtied without a reservation, as mapped pages are
 * (ubt_msync), and space is found at writeback; if there is none, the next ubt_fsync or
 * ubt_flush reports -ENOSPC. Unlike ubt_pwrite it leaves mtime and ctime alone: the caller
 * accepted the write and owns its times (set them with ubt_setattr). Other errors as ubt_pwrite.
 */
ssize_t ubt_pwrite_accepted(ubt_file *f, const void *buf, size_t size, uint64_t off);
/* Make the file's data and metadata durable (@datasync: fdatasync semantics). */
int ubt_fsync(ubt_file *f, int datasync);
/* Commit everything (sync(2)). */
int ubt_sync(ubt_fs *fs);

/*
 * ---- Data: space, flags, direct IO, mapped access ----
 */

/* fallocate(2) modes (the values of FALLOC_FL_*). */
#define UBT_FALLOC_KEEP_SIZE 0x01
#define UBT_FALLOC_PUNCH_HOLE 0x02 /* with KEEP_SIZE, as Linux requires */
#define UBT_FALLOC_ZERO_RANGE 0x10
/*
 * Preallocate (PREALLOC extents, read as zeros, converted when written), punch a hole, or zero
 * a range. -EOPNOTSUPP for other modes; -ENOSPC when the space is not there (nothing changed).
 */
int ubt_fallocate(ubt_file *f, int mode, uint64_t off, uint64_t len);

/*
 * Inode flags with the values of FS_IOC_GETFLAGS/SETFLAGS (chattr): FS_NOCOW_FL ('C', no
 * copy-on-write and no checksums; only on empty files, as btrfs), FS_COMPR_FL ('c'),
 * FS_NOCOMP_FL ('m'), FS_SYNC_FL, FS_IMMUTABLE_FL, FS_APPEND_FL, FS_NODUMP_FL, FS_NOATIME_FL,
 * FS_DIRSYNC_FL. Unknown bits give -EOPNOTSUPP.
 */
int ubt_get_flags(ubt_fs *fs, ubt_ino ino, unsigned *flags);
int ubt_set_flags(ubt_fs *fs, ubt_ino ino, unsigned flags);

/*
 * Direct IO: bypasses the page cache (cached pages of the range are written back and dropped
 * first). Offsets and lengths aligned to the sector size (4096) go direct; unaligned requests
 * fall back to buffered IO, as btrfs does. A short source (the caller's buffer ends early, or an
 * injected fault) returns the bytes that reached the disk, and those read back as written.
 */
ssize_t ubt_pwrite_direct(ubt_file *f, const void *buf, size_t size, uint64_t off);
ssize_t ubt_pread_direct(ubt_file *f, void *buf, size_t size, uint64_t off);

/*
 * Mapped access, the library's mmap: ubt_mmap returns a buffer holding file bytes
 * [@off, @off + @len) (@off page aligned; past EOF reads as zeros); the caller may change it.
 * ubt_msync/ubt_munmap hand the changed pages back as the kernel's unmap path does: they are
 * marked dirty *without* a space reservation, and writeback sets them up (the fixup worker)
 * before writing them. The file does not grow through a mapping (bytes past EOF are dropped).
 */
void *ubt_mmap(ubt_file *f, uint64_t off, size_t len);
int ubt_msync(ubt_file *f, void *addr, size_t len);
int ubt_munmap(ubt_file *f, void *addr, size_t len);

/* Start writeback of the file's dirty data and wait for it (no commit; see ubt_fsync). */
int ubt_flush(ubt_file *f);

/* Library log: 0 error, 1 warning (default), 2 info, 3 debug. */
void ubt_set_log_level(int level);
/*
 * Where the library's log lines go: @sink gets each line (no trailing newline) with its level;
 * calls are serialized. NULL restores the default, "ubtrfs: LEVEL: line" on stderr.
 */
void ubt_set_log_sink(void (*sink)(int level, const char *line, void *ctx), void *ctx);

#ifdef __cplusplus
}
#endif
#endif
