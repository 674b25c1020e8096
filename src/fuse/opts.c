/*
 * opts.c — the `ubtrfs mount` command line: flags, the -o option list (ours are consumed, the
 * rest are passed on to libfuse, which rejects what it does not know), sizes and timeouts.
 */
#include <ctype.h>
#include <errno.h>
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuse/ubt_fuse.h"

#define UBTF_DEFAULT_TIMEOUT 1.0
#define UBTF_DEFAULT_LOCK_TIMEOUT 5.0
#define UBTF_DEFAULT_MAX_THREADS 10

void ubtf_mount_usage(FILE *out)
{
	fprintf(out,
		"usage: ubtrfs mount [-f] [-d] [-o OPTION[,OPTION...]] IMAGE DIR\n"
		"\n"
		"Mount the btrfs image or block device IMAGE on DIR through FUSE.\n"
		"\n"
		"  -f                 stay in the foreground\n"
		"  -d                 debug: log every FUSE request (implies -f)\n"
		"  -o OPTIONS         comma-separated mount options:\n"
		"     rw                 read-write (the default)\n"
		"     ro                 read-only: nothing is written to the image\n"
		"     commit=SECS        seconds between automatic commits (default 30)\n"
		"     compress[=ALG[:LEVEL]]  compress new data: zlib (level 1-9, the default\n"
		"                        algorithm), lzo, zstd (level 1-15); compress=no: none\n"
		"     compress-force[=ALG[:LEVEL]]  the same, also for data that compresses badly\n"
		"     subvol=PATH        mount the subvolume at PATH (from the top level)\n"
		"     subvolid=N         mount the subvolume with id N\n"
		"     nologreplay        ignore the log tree\n"
		"     nodatacow, nodatasum  new files: no copy-on-write (and no checksums) / no\n"
		"                        data checksums (datacow, datasum undo them)\n"
		"     cache=SIZE         metadata cache limit, bytes or with k/m/g suffix\n"
		"     page_cache=SIZE    file data cache limit (read-write; default 256m)\n"
		"     timeout=SECS       kernel entry and attribute cache timeout (default 1)\n"
		"     entry_timeout=SECS, attr_timeout=SECS, negative_timeout=SECS\n"
		"     lock_timeout=SECS  how long to wait for an image in use (default 5)\n"
		"     max_threads=N      FUSE worker threads (default 10)\n"
		"     logfile=PATH       the daemon's messages are appended to PATH (in the\n"
		"                        background they also go to syslog)\n"
		"     allow_other        let other users see the mount (needs user_allow_other\n"
		"                        in /etc/fuse.conf when not root)\n"
		"     default_permissions  the kernel checks file modes (always on)\n"
		"     acl                the kernel also enforces POSIX ACLs (noacl: the default)\n"
		"     writeback_cache    the kernel caches writes and sends them in larger batches\n"
		"                        (space errors then show at fsync, as for mapped writes)\n"
		"     any other FUSE mount option (fsname=, nosuid, nodev, ...) is passed on\n");
}

int ubtf_parse_size(const char *s, size_t *out)
{
	unsigned long long v;
	unsigned shift = 0;
	char *end;

	if (!s || !isdigit((unsigned char)*s))
		return -EINVAL;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno)
		return -EINVAL;
	switch (tolower((unsigned char)*end)) {
	case '\0':
		break;
	case 'k':
		shift = 10;
		break;
	case 'm':
		shift = 20;
		break;
	case 'g':
		shift = 30;
		break;
	case 't':
		shift = 40;
		break;
	default:
		return -EINVAL;
	}
	if (*end) {
		end++;
		if (tolower((unsigned char)*end) == 'i' && tolower((unsigned char)end[1]) == 'b')
			end += 2;
		else if (tolower((unsigned char)*end) == 'b')
			end++;
		if (*end)
			return -EINVAL;
	}
	if (shift && v > (SIZE_MAX >> shift))
		return -ERANGE;
	if (v > SIZE_MAX)
		return -ERANGE;
	*out = (size_t)(v << shift);
	return 0;
}

static int parse_seconds(const char *s, double max, double *out)
{
	char *end;
	double v;

	if (!s || !*s)
		return -EINVAL;
	errno = 0;
	v = strtod(s, &end);
	if (errno || *end || !isfinite(v) || v < 0 || v > max)
		return -EINVAL;
	*out = v;
	return 0;
}

static int parse_u64(const char *s, uint64_t *out)
{
	unsigned long long v;
	char *end;

	if (!s || !isdigit((unsigned char)*s))
		return -EINVAL;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno || *end)
		return -EINVAL;
	*out = v;
	return 0;
}

/*
 * compress= / compress-force= values, as btrfs takes them: "zlib", "lzo", "zstd", optionally
 * ":LEVEL" (zlib 1-9, zstd 1-15); no value means zlib; "no"/"none" turns compression off.
 */
static int parse_compress(struct ubtf_mount_args *a, const char *val, bool force)
{
	static const struct {
		const char *name;
		int max_level; /* 0: takes no level */
	} algs[] = { { "zlib", 9 }, { "lzo", 0 }, { "zstd", 15 } };
	const char *colon;
	size_t nlen;

	free(a->compress);
	a->compress = NULL;
	a->compress_force = false;
	if (!val || !*val)
		val = "zlib";
	if (!strcmp(val, "no") || !strcmp(val, "none"))
		return 0;
	colon = strchr(val, ':');
	nlen = colon ? (size_t)(colon - val) : strlen(val);
	for (size_t i = 0; i < sizeof(algs) / sizeof(algs[0]); i++) {
		if (strlen(algs[i].name) != nlen || strncmp(val, algs[i].name, nlen))
			continue;
		if (colon) {
			char *end;
			long lvl;

			if (!algs[i].max_level || !isdigit((unsigned char)colon[1]))
				return -EINVAL;
			errno = 0;
			lvl = strtol(colon + 1, &end, 10);
			if (errno || *end || lvl < 1 || lvl > algs[i].max_level)
				return -EINVAL;
		}
		a->compress = strdup(val);
		if (!a->compress)
			return -ENOMEM;
		a->compress_force = force;
		return 0;
	}
	return -EINVAL;
}

/* Append @opt to the libfuse option string, escaping ',' and '\'. */
static int pass_on(struct ubtf_mount_args *a, const char *opt)
{
	return fuse_opt_add_opt_escaped(&a->fuse_opts, opt) ? -ENOMEM : 0;
}

static int bad_value(const char *opt)
{
	ubtf_err("invalid value in mount option '%s'", opt);
	return -EINVAL;
}

/* Handle one option of a -o list (unescaped). */
static int parse_one(struct ubtf_mount_args *a, const char *opt)
{
	const char *eq = strchr(opt, '=');
	size_t klen = eq ? (size_t)(eq - opt) : strlen(opt);
	const char *val = eq ? eq + 1 : NULL;
	double secs;

#define KEY(k) (klen == strlen(k) && strncmp(opt, k, klen) == 0)
	if (klen == 0)
		return 0;
	if (KEY("ro") && !val) {
		/* The last of ro/rw wins; build_fuse_args() passes "ro" on to the kernel mount. */
		a->ro = true;
		a->rw = false;
		return 0;
	}
	if (KEY("rw") && !val) {
		a->rw = true;
		a->ro = false;
		return 0;
	}
	if ((KEY("acl") || KEY("noacl")) && !val) {
		a->acl = KEY("acl");
		return 0;
	}
	if ((KEY("writeback_cache") || KEY("no_writeback_cache")) && !val) {
		a->writeback_cache = KEY("writeback_cache");
		return 0;
	}
	if (KEY("subvol")) {
		if (!val || !*val)
			return bad_value(opt);
		free(a->subvol);
		a->subvol = strdup(val);
		return a->subvol ? 0 : -ENOMEM;
	}
	if (KEY("subvolid"))
		return parse_u64(val, &a->subvolid) ? bad_value(opt) : 0;
	if (KEY("nologreplay") && !val) {
		a->nologreplay = true;
		return 0;
	}
	/* As btrfs: nodatacow implies nodatasum; datacow/datasum undo them. */
	if (KEY("nodatacow") && !val) {
		a->nodatacow = a->nodatasum = true;
		return 0;
	}
	if (KEY("datacow") && !val) {
		a->nodatacow = false;
		return 0;
	}
	if (KEY("nodatasum") && !val) {
		a->nodatasum = true;
		return 0;
	}
	if (KEY("datasum") && !val) {
		a->nodatasum = a->nodatacow = false;
		return 0;
	}
	if (KEY("commit")) {
		uint64_t n;

		if (parse_u64(val, &n) || n > 86400)
			return bad_value(opt);
		a->commit_interval = (unsigned)n;
		return 0;
	}
	if (KEY("compress") || KEY("compress-force")) {
		int ret = parse_compress(a, val, KEY("compress-force"));

		return ret == -EINVAL ? bad_value(opt) : ret;
	}
	if (KEY("cache"))
		return ubtf_parse_size(val, &a->cache_bytes) ? bad_value(opt) : 0;
	if (KEY("page_cache"))
		return ubtf_parse_size(val, &a->page_cache_bytes) ? bad_value(opt) : 0;
	if (KEY("timeout")) {
		if (parse_seconds(val, 1e6, &secs))
			return bad_value(opt);
		a->entry_timeout = a->attr_timeout = a->negative_timeout = secs;
		return 0;
	}
	if (KEY("entry_timeout"))
		return parse_seconds(val, 1e6, &a->entry_timeout) ? bad_value(opt) : 0;
	if (KEY("attr_timeout"))
		return parse_seconds(val, 1e6, &a->attr_timeout) ? bad_value(opt) : 0;
	if (KEY("negative_timeout"))
		return parse_seconds(val, 1e6, &a->negative_timeout) ? bad_value(opt) : 0;
	if (KEY("lock_timeout"))
		return parse_seconds(val, 3600, &a->lock_timeout) ? bad_value(opt) : 0;
	if (KEY("max_threads")) {
		uint64_t n;

		if (parse_u64(val, &n) || n == 0 || n > 1024)
			return bad_value(opt);
		a->max_threads = (unsigned)n;
		return 0;
	}
	if (KEY("logfile")) {
		if (!val || !*val)
			return bad_value(opt);
		free(a->logfile);
		a->logfile = strdup(val);
		return a->logfile ? 0 : -ENOMEM;
	}
	if (KEY("default_permissions") && !val)
		return 0; /* always passed on */
	if (KEY("debug") && !val) {
		a->debug = a->foreground = true;
		return 0;
	}
	if (KEY("fsname"))
		a->have_fsname = true;
	if (KEY("subtype"))
		a->have_subtype = true;
#undef KEY
	return pass_on(a, opt);
}

/* Split a -o list at unescaped commas; a backslash escapes the next character. */
static int parse_opt_list(struct ubtf_mount_args *a, const char *list)
{
	size_t len = strlen(list);
	char *cur = malloc(len + 1);
	size_t n = 0;
	int ret = 0;

	if (!cur)
		return -ENOMEM;
	for (size_t i = 0; i <= len && !ret; i++) {
		char c = list[i];

		if (c == '\\' && i + 1 < len) {
			cur[n++] = list[++i];
			continue;
		}
		if (c == ',' || c == '\0') {
			cur[n] = '\0';
			ret = parse_one(a, cur);
			n = 0;
			continue;
		}
		cur[n++] = c;
	}
	free(cur);
	return ret;
}

int ubtf_parse_mount_args(int argc, char **argv, struct ubtf_mount_args *a)
{
	const char *pos[2];
	int npos = 0;
	bool dashdash = false;
	int ret = 0;

	memset(a, 0, sizeof(*a));
	a->entry_timeout = a->attr_timeout = a->negative_timeout = UBTF_DEFAULT_TIMEOUT;
	a->lock_timeout = UBTF_DEFAULT_LOCK_TIMEOUT;
	a->max_threads = UBTF_DEFAULT_MAX_THREADS;

	for (int i = 1; i < argc; i++) {
		const char *arg = argv[i];

		if (!dashdash && arg[0] == '-' && arg[1]) {
			if (!strcmp(arg, "--")) {
				dashdash = true;
			} else if (!strcmp(arg, "-f") || !strcmp(arg, "--foreground")) {
				a->foreground = true;
			} else if (!strcmp(arg, "-d") || !strcmp(arg, "--debug")) {
				a->debug = a->foreground = true;
			} else if (!strcmp(arg, "-o")) {
				if (i + 1 >= argc) {
					ubtf_err("option -o needs an argument");
					return -EINVAL;
				}
				ret = parse_opt_list(a, argv[++i]);
			} else if (!strncmp(arg, "-o", 2)) {
				ret = parse_opt_list(a, arg + 2);
			} else {
				ubtf_err("mount: unknown option '%s'", arg);
				return -EINVAL;
			}
			if (ret)
				return ret;
			continue;
		}
		if (npos == 2) {
			ubtf_err("mount: too many arguments ('%s')", arg);
			return -EINVAL;
		}
		pos[npos++] = arg;
	}
	if (npos != 2) {
		ubtf_err("mount: expected IMAGE and DIR");
		return -EINVAL;
	}
	a->image = pos[0];
	a->mntpoint = pos[1];
	return 0;
}

void ubtf_mount_args_free(struct ubtf_mount_args *a)
{
	free(a->subvol);
	free(a->fuse_opts);
	free(a->compress);
	free(a->logfile);
	a->logfile = NULL;
	a->subvol = NULL;
	a->fuse_opts = NULL;
	a->compress = NULL;
}
