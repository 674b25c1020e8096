/*
 * acl.c — POSIX ACL xattrs through FUSE. Without FUSE_CAP_POSIX_ACL the kernel passes
 * system.posix_acl_access/_default through as plain setxattr requests and leaves it to the daemon
 * to keep the mode bits in step, which btrfs's own set_acl does this way: an access ACL sets the
 * permission bits (the mask entry stands for the group bits, set-group-id is dropped for a caller
 * outside the file's group), and an access ACL that says no more than the mode bits is not
 * stored at all. Default ACLs are stored as given, on directories only. Without -o acl ACLs are
 * stored but neither enforced (the kernel checks the mode bits) nor inherited. With -o acl the
 * kernel enforces them and a new inode inherits its directory's default ACL here, as btrfs's
 * init_acl does it (ubtf_acl_inherit; the kernel then leaves the umask to us).
 *
 * The value is the kernel's xattr form: a little-endian u32 version (2), then entries of
 * { u16 tag, u16 perm, u32 id }.
 */
#include <endian.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "fuse/ubt_fuse.h"

#define ACL_XATTR_VERSION 2
#define TAG_USER_OBJ 0x01
#define TAG_USER 0x02
#define TAG_GROUP_OBJ 0x04
#define TAG_GROUP 0x08
#define TAG_MASK 0x10
#define TAG_OTHER 0x20

#define NAME_ACCESS "system.posix_acl_access"
#define NAME_DEFAULT "system.posix_acl_default"

bool ubtf_is_acl_xattr(const char *name)
{
	return !strcmp(name, NAME_ACCESS) || !strcmp(name, NAME_DEFAULT);
}

struct acl_summary {
	int user_obj, group_obj, other, mask; /* permission bits, or -1 when absent */
	bool extended;                        /* named users or groups */
};

/* Check the xattr form of an ACL and pick out the entries that map to mode bits. */
static int acl_parse(const void *value, size_t size, struct acl_summary *s)
{
	const unsigned char *p = value;
	uint32_t version;

	s->user_obj = s->group_obj = s->other = s->mask = -1;
	s->extended = false;
	if (size < 4 || (size - 4) % 8)
		return -EINVAL;
	memcpy(&version, p, 4);
	if (le32toh(version) != ACL_XATTR_VERSION)
		return -EOPNOTSUPP;
	for (size_t off = 4; off < size; off += 8) {
		uint16_t tag, perm;
		int *slot = NULL;

		memcpy(&tag, p + off, 2);
		memcpy(&perm, p + off + 2, 2);
		tag = le16toh(tag);
		perm = le16toh(perm);
		if (perm & ~7u)
			return -EINVAL;
		switch (tag) {
		case TAG_USER_OBJ:
			slot = &s->user_obj;
			break;
		case TAG_GROUP_OBJ:
			slot = &s->group_obj;
			break;
		case TAG_OTHER:
			slot = &s->other;
			break;
		case TAG_MASK:
			slot = &s->mask;
			break;
		case TAG_USER:
		case TAG_GROUP:
			s->extended = true;
			continue;
		default:
			return -EINVAL;
		}
		if (*slot >= 0)
			return -EINVAL; /* each of these at most once */
		*slot = perm;
	}
	if (s->user_obj < 0 || s->group_obj < 0 || s->other < 0 || (s->extended && s->mask < 0))
		return -EINVAL;
	return 0;
}

/* Is the caller of @req in group @gid (primary or supplementary)? */
static bool caller_in_group(fuse_req_t req, gid_t gid)
{
	const struct fuse_ctx *fc = fuse_req_ctx(req);
	gid_t groups[64];
	int n;

	if (fc->gid == gid)
		return true;
	n = fuse_req_getgroups(req, 64, groups);
	for (int i = 0; i < n && i < 64; i++) {
		if (groups[i] == gid)
			return true;
	}
	return false;
}

int ubtf_set_acl_xattr(fuse_req_t req, ubt_fs *fs, ubt_ino ino, const char *name,
		       const void *value, size_t size, int flags)
{
	const struct fuse_ctx *fc = fuse_req_ctx(req);
	struct acl_summary s;
	struct stat st, attr;
	int ret;

	ret = acl_parse(value, size, &s);
	if (ret)
		return ret;
	ret = ubt_getattr(fs, ino, &st);
	if (ret)
		return ret;
	if (!strcmp(name, NAME_DEFAULT)) {
		if (!S_ISDIR(st.st_mode))
			return -EACCES;
		return ubt_setxattr(fs, ino, name, value, size, flags);
	}

	/* The access ACL: its base entries are the permission bits. */
	memset(&attr, 0, sizeof(attr));
	attr.st_mode = (st.st_mode & ~(mode_t)0777) | (mode_t)(s.user_obj << 6) |
		       (mode_t)((s.mask >= 0 ? s.mask : s.group_obj) << 3) | (mode_t)s.other;
	if ((attr.st_mode & S_ISGID) && fc->uid != 0 && !caller_in_group(req, st.st_gid))
		attr.st_mode &= ~(mode_t)S_ISGID;
	if (!s.extended && s.mask < 0) {
		/* Nothing beyond the mode bits: keep no ACL, as btrfs does. */
		ret = ubt_removexattr(fs, ino, name);
		if (ret && ret != -ENODATA)
			return ret;
	} else {
		ret = ubt_setxattr(fs, ino, name, value, size, flags);
		if (ret)
			return ret;
	}
	return ubt_setattr(fs, ino, &attr, UBT_SET_MODE, NULL);
}

/* ---- inheritance: a new inode in a directory with a default ACL ---- */

void ubtf_acl_init_free(struct ubtf_acl_init *init)
{
	free(init->access);
	free(init->dflt);
	memset(init, 0, sizeof(*init));
}

/*
 * The access ACL of a new inode made from the directory's default ACL and the mode asked for:
 * the owner, owning-group (or mask, when there is one) and other entries keep only the
 * permissions the mode grants, and those entries become the mode's permission bits. The umask is
 * not applied: a default ACL replaces it. The result is stored only when it names users or
 * groups; otherwise the mode says all of it.
 */
static int acl_from_default(const unsigned char *dflt, size_t size, mode_t *mode, struct ubtf_acl_init *init)
{
	struct acl_summary s;
	unsigned char *acl;
	int *group_slot;
	int ret;

	ret = acl_parse(dflt, size, &s);
	if (ret)
		return ret;
	acl = malloc(size);
	if (!acl)
		return -ENOMEM;
	memcpy(acl, dflt, size);
	group_slot = s.mask >= 0 ? &s.mask : &s.group_obj;
	s.user_obj &= (int)((*mode >> 6) & 7);
	*group_slot &= (int)((*mode >> 3) & 7);
	s.other &= (int)(*mode & 7);
	for (size_t off = 4; off < size; off += 8) {
		uint16_t tag, perm;

		memcpy(&tag, acl + off, 2);
		tag = le16toh(tag);
		if (tag == TAG_USER_OBJ)
			perm = (uint16_t)s.user_obj;
		else if (tag == TAG_OTHER)
			perm = (uint16_t)s.other;
		else if (tag == (s.mask >= 0 ? TAG_MASK : TAG_GROUP_OBJ))
			perm = (uint16_t)*group_slot;
		else
			continue;
		perm = htole16(perm);
		memcpy(acl + off + 2, &perm, 2);
	}
	*mode = (*mode & ~(mode_t)0777) | (mode_t)(s.user_obj << 6) | (mode_t)(*group_slot << 3) | (mode_t)s.other;
	if (s.extended) {
		init->access = acl;
		init->access_size = size;
	} else {
		free(acl);
	}
	return 0;
}

int ubtf_acl_inherit(fuse_req_t req, ubt_fs *fs, ubt_ino parent, mode_t *mode, struct ubtf_acl_init *init)
{
	unsigned char *dflt = NULL;
	ssize_t size;
	int ret = 0;

	memset(init, 0, sizeof(*init));
	if (S_ISLNK(*mode))
		return 0; /* symlinks have no ACLs, and their mode is 0777 */
	size = ubt_getxattr(fs, parent, NAME_DEFAULT, NULL, 0);
	if (size == -ENODATA || size == 0) {
		/* No default ACL: the umask applies, as the kernel applies it elsewhere. */
		*mode &= ~(mode_t)(fuse_req_ctx(req)->umask & 0777);
		return 0;
	}
	if (size < 0)
		return (int)size;
	dflt = malloc((size_t)size);
	if (!dflt)
		return -ENOMEM;
	size = ubt_getxattr(fs, parent, NAME_DEFAULT, dflt, (size_t)size);
	if (size < 0) {
		ret = (int)size; /* -ERANGE if it grew meanwhile: the caller's request fails, retryable */
		goto out;
	}
	ret = acl_from_default(dflt, (size_t)size, mode, init);
	if (ret)
		goto out;
	if (S_ISDIR(*mode)) {
		init->dflt = dflt;
		init->dflt_size = (size_t)size;
		dflt = NULL;
	}
out:
	free(dflt);
	if (ret)
		ubtf_acl_init_free(init);
	return ret;
}

int ubtf_acl_apply(ubt_fs *fs, ubt_ino ino, const struct ubtf_acl_init *init)
{
	int ret = 0;

	if (init->access)
		ret = ubt_setxattr(fs, ino, NAME_ACCESS, init->access, init->access_size, 0);
	if (!ret && init->dflt)
		ret = ubt_setxattr(fs, ino, NAME_DEFAULT, init->dflt, init->dflt_size, 0);
	return ret;
}
