/*
 * ubt_fuse.h — the FUSE adapter's internal interface: the per-mount context handed to libfuse as
 * userdata, the low-level ops table, POSIX ACL xattrs, option parsing, the runtime pid records that let
 * `ubtrfs umount` wait for a daemon, and the CLI entry points of `mount` and `umount`.
 */
#ifndef UBT_FUSE_UBT_FUSE_H
#define UBT_FUSE_UBT_FUSE_H

#define FUSE_USE_VERSION 314
#include <fuse_lowlevel.h>

#include <stdbool.h>
#include <stdio.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "ubtrfs.h"

/* Exit statuses of the CLI. */
enum { UBTF_EXIT_OK = 0, UBTF_EXIT_FAIL = 1, UBTF_EXIT_USAGE = 2 };

/* One mount: the libfuse userdata. Owned by the mount command; no globals. */
struct ubtf_ctx {
	ubt_fs *fs;             /* set before the session is mounted; NULL after destroy */
	struct fuse_session *se; /* for notifications to the kernel */
	double entry_timeout;   /* seconds the kernel may cache a name -> inode */
	double attr_timeout;    /* seconds the kernel may cache attributes */
	double negative_timeout;/* seconds the kernel may cache a missing name */
	bool rdonly;
	bool debug;
	bool acl;               /* -o acl: the kernel enforces POSIX ACLs (FUSE_CAP_POSIX_ACL) */
	bool acl_active;        /* ... and the kernel granted it: we get the umask and inherit ACLs */
	bool writeback_cache;   /* -o writeback_cache, granted: writes arrive after the kernel accepted them */
	int unmount_ret;        /* result of ubt_unmount() in destroy */
};

extern const struct fuse_lowlevel_ops ubtf_ops;

/* POSIX ACL xattrs (acl.c): set one with the mode bits kept in step, as btrfs does. */
bool ubtf_is_acl_xattr(const char *name);
int ubtf_set_acl_xattr(fuse_req_t req, ubt_fs *fs, ubt_ino ino, const char *name,
		       const void *value, size_t size, int flags);

/*
 * Default ACL inheritance (with acl_active): ubtf_acl_inherit turns the requested mode of a new
 * inode in @parent into its final mode (the umask when the directory has no default ACL, else
 * the default ACL's permissions) and fills @init with the ACLs the inode gets: an access ACL
 * when the default ACL names users or groups, and for a directory the default ACL itself.
 * ubtf_acl_apply stores them on the new inode; ubtf_acl_init_free releases @init.
 */
struct ubtf_acl_init {
	void *access, *dflt;
	size_t access_size, dflt_size;
};
int ubtf_acl_inherit(fuse_req_t req, ubt_fs *fs, ubt_ino parent, mode_t *mode, struct ubtf_acl_init *init);
int ubtf_acl_apply(ubt_fs *fs, ubt_ino ino, const struct ubtf_acl_init *init);
void ubtf_acl_init_free(struct ubtf_acl_init *init);

/* Parsed `ubtrfs mount` command line. */
struct ubtf_mount_args {
	const char *image;      /* as given */
	const char *mntpoint;   /* as given */
	bool foreground;
	bool debug;
	bool ro;
	bool rw;                /* "rw" given explicitly */
	bool acl;               /* -o acl / noacl */
	bool writeback_cache;   /* -o writeback_cache */
	char *subvol;
	uint64_t subvolid;
	bool nologreplay;
	bool nodatacow, nodatasum; /* nodatacow/nodatasum (datacow/datasum undo them) */
	size_t cache_bytes;
	size_t page_cache_bytes;
	unsigned commit_interval; /* commit=SECS; 0 = the library's default */
	char *compress;         /* compress=/compress-force= ALG[:LEVEL], NULL = none */
	bool compress_force;    /* compress-force=: parsed, not yet passed (no library field) */
	double entry_timeout;
	double attr_timeout;
	double negative_timeout;
	double lock_timeout;    /* seconds to wait for a busy image */
	unsigned max_threads;
	char *logfile;          /* logfile=PATH: messages appended there, NULL = none */
	bool have_fsname;
	bool have_subtype;
	char *fuse_opts;        /* comma-separated, escaped options passed on to libfuse */
};

/* Parse argv (argv[0] is "mount"). Prints the reason and returns -EINVAL on a usage error. */
int ubtf_parse_mount_args(int argc, char **argv, struct ubtf_mount_args *a);
void ubtf_mount_args_free(struct ubtf_mount_args *a);
/* Parse a size with an optional k/m/g/t suffix (powers of 1024). */
int ubtf_parse_size(const char *s, size_t *out);

/* Runtime record of a daemon, keyed by the real path of its mountpoint. */
struct ubtf_pidfile {
	int fd;                 /* holds an exclusive flock for the daemon's lifetime */
	char *path;
};
int ubtf_pidfile_create(const char *mnt_real, const char *image_real, struct ubtf_pidfile *pf);
void ubtf_pidfile_remove(struct ubtf_pidfile *pf);
/* Read the record for @mnt_real; -ENOENT when there is none. */
int ubtf_pidfile_lookup(const char *mnt_real, pid_t *pid);
/* Wait until the daemon recorded for @mnt_real released its record and exited; -ETIMEDOUT. */
int ubtf_pidfile_wait(const char *mnt_real, pid_t pid, double timeout);

/*
 * Messages (daemon_log.c): on stderr, prefixed "ubtrfs: "; once the daemon is in the background
 * in syslog instead; and appended to the logfile= file when one is open.
 */
void ubtf_err(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* An informational line (mounted, unmounted) for syslog and the log file, not for stderr. */
void ubtf_note(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Open logfile (may be NULL) and route the library's log through these sinks. */
int ubtf_log_open(const char *logfile);
/* The daemon detached its stdio: messages go to syslog (and the log file), not stderr. */
void ubtf_log_daemonize(void);
/* A crash (SIGSEGV, SIGABRT, ...) logs the signal and a backtrace before the default action. */
void ubtf_log_install_crash_handler(void);
void ubtf_log_close(void);

/* Canonical path of a mountpoint, even when it is a stale (disconnected) FUSE mount. */
char *ubtf_mnt_realpath(const char *dir, int *err);

/* Subcommands. */
int ubtf_cmd_mount(int argc, char **argv);
int ubtf_cmd_umount(int argc, char **argv);
void ubtf_mount_usage(FILE *out);
void ubtf_umount_usage(FILE *out);

#endif
